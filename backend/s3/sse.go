package s3

import (
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// The functions below put the store's server-side encryption on each kind
// of request. Objects are written (PutObject, CreateMultipartUpload,
// CopyObject destination) with the mode's headers; with SSE-C every request
// that reads or writes object data carries the key: UploadPart, GetObject,
// HeadObject, CompleteMultipartUpload, and the copy source of CopyObject and
// UploadPartCopy (both sides use the store's one key).

func (e *sse) dest() (types.ServerSideEncryption, *string, *bool) {
	switch e.mode {
	case SSES3:
		return types.ServerSideEncryptionAes256, nil, nil
	case SSEKMS:
		return types.ServerSideEncryptionAwsKms, e.kmsKeyID, e.bucketKey
	}
	return "", nil, nil
}

func (e *sse) put(in *s3.PutObjectInput) {
	in.ServerSideEncryption, in.SSEKMSKeyId, in.BucketKeyEnabled = e.dest()
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = e.cAlg, e.cKey, e.cKeyMD5
}

func (e *sse) create(in *s3.CreateMultipartUploadInput) {
	in.ServerSideEncryption, in.SSEKMSKeyId, in.BucketKeyEnabled = e.dest()
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = e.cAlg, e.cKey, e.cKeyMD5
}

func (e *sse) uploadPart(in *s3.UploadPartInput) {
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = e.cAlg, e.cKey, e.cKeyMD5
}

func (e *sse) complete(in *s3.CompleteMultipartUploadInput) {
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = e.cAlg, e.cKey, e.cKeyMD5
}

func (e *sse) get(in *s3.GetObjectInput) {
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = e.cAlg, e.cKey, e.cKeyMD5
}

func (e *sse) head(in *s3.HeadObjectInput) {
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = e.cAlg, e.cKey, e.cKeyMD5
}

func (e *sse) copy(in *s3.CopyObjectInput) {
	in.ServerSideEncryption, in.SSEKMSKeyId, in.BucketKeyEnabled = e.dest()
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = e.cAlg, e.cKey, e.cKeyMD5
	in.CopySourceSSECustomerAlgorithm, in.CopySourceSSECustomerKey, in.CopySourceSSECustomerKeyMD5 = e.cAlg, e.cKey, e.cKeyMD5
}

func (e *sse) uploadPartCopy(in *s3.UploadPartCopyInput) {
	in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = e.cAlg, e.cKey, e.cKeyMD5
	in.CopySourceSSECustomerAlgorithm, in.CopySourceSSECustomerKey, in.CopySourceSSECustomerKeyMD5 = e.cAlg, e.cKey, e.cKeyMD5
}
