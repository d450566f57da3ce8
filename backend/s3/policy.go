package s3

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// Bucket is the store's bucket name.
func (s *Store) Bucket() string { return s.bucket }

// BucketPolicy returns the bucket's policy document, or "" if it has none.
// It is for `s3cryptfs bucket-policy`, which merges its statements into it.
func (s *Store) BucketPolicy(ctx context.Context) (string, error) {
	out, err := s.client.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: aws.String(s.bucket)})
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "NoSuchBucketPolicy" {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("s3: get the policy of bucket %s: %w", s.bucket, err)
	}
	return aws.ToString(out.Policy), nil
}

// PutBucketPolicy replaces the bucket's policy with the given document.
func (s *Store) PutBucketPolicy(ctx context.Context, policy string) error {
	_, err := s.client.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(s.bucket), Policy: aws.String(policy)})
	if err != nil {
		return fmt.Errorf("s3: set the policy of bucket %s: %w", s.bucket, err)
	}
	return nil
}
