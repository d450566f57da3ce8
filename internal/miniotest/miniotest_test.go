package miniotest

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestServer checks what other packages rely on: TLS with the CA file, the
// credentials, buckets, and the three SSE modes (SSE-KMS with the static key).
func TestServer(t *testing.T) {
	srv := Get(t)
	if !strings.HasPrefix(srv.Endpoint, "https://127.0.0.1:") {
		t.Fatalf("endpoint %q is not https on loopback", srv.Endpoint)
	}
	c := srv.SDKClient(t)
	bucket := srv.NewBucket(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	ssecKey := bytes.Repeat([]byte{7}, 32)
	cases := []struct {
		name string
		in   s3.PutObjectInput
		want types.ServerSideEncryption
	}{
		{name: "none"},
		{name: "s3", in: s3.PutObjectInput{ServerSideEncryption: types.ServerSideEncryptionAes256}, want: types.ServerSideEncryptionAes256},
		{name: "kms", in: s3.PutObjectInput{ServerSideEncryption: types.ServerSideEncryptionAwsKms, SSEKMSKeyId: aws.String(srv.KMSKeyID)}, want: types.ServerSideEncryptionAwsKms},
	}
	for _, tc := range cases {
		in := tc.in
		in.Bucket, in.Key, in.Body = aws.String(bucket), aws.String(tc.name), strings.NewReader("hello "+tc.name)
		if _, err := c.PutObject(ctx, &in); err != nil {
			t.Fatalf("put %s: %v", tc.name, err)
		}
		head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(tc.name)})
		if err != nil {
			t.Fatalf("head %s: %v", tc.name, err)
		}
		if head.ServerSideEncryption != tc.want {
			t.Errorf("%s: SSE %q, want %q", tc.name, head.ServerSideEncryption, tc.want)
		}
	}

	// SSE-C needs TLS, which is the point of serving it.
	sum := md5sum(ssecKey)
	_, err := c.PutObject(ctx, &s3.PutObjectInput{
		Bucket: aws.String(bucket), Key: aws.String("c"), Body: strings.NewReader("secret"),
		SSECustomerAlgorithm: aws.String("AES256"), SSECustomerKey: aws.String(b64(ssecKey)), SSECustomerKeyMD5: aws.String(sum),
	})
	if err != nil {
		t.Fatalf("put SSE-C: %v", err)
	}
	out, err := c.GetObject(ctx, &s3.GetObjectInput{
		Bucket: aws.String(bucket), Key: aws.String("c"),
		SSECustomerAlgorithm: aws.String("AES256"), SSECustomerKey: aws.String(b64(ssecKey)), SSECustomerKeyMD5: aws.String(sum),
	})
	if err != nil {
		t.Fatalf("get SSE-C: %v", err)
	}
	got, _ := io.ReadAll(out.Body)
	out.Body.Close()
	if string(got) != "secret" {
		t.Fatalf("SSE-C round trip: got %q", got)
	}

	env := strings.Join(srv.Env(), "\n")
	for _, k := range []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_REGION=", "AWS_CA_BUNDLE=" + srv.CAFile, "AWS_ENDPOINT_URL_S3=" + srv.Endpoint} {
		if !strings.Contains(env, k) {
			t.Errorf("Env() lacks %s", k)
		}
	}
}

// TestGetShared checks that every Get returns the same running server.
func TestGetShared(t *testing.T) {
	a, b := Get(t), Get(t)
	if a != b {
		t.Fatal("Get started a second server")
	}
}
