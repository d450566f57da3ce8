package tests

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"
)

// TestBucketPolicy: on MinIO over TLS, bucket-policy --dry-run prints the
// merged policy and changes nothing; a real run leaves a policy that reads
// back with the deny statements (plain http; puts without SSE) and the
// bucket's existing statement kept; the vault is still used normally over
// HTTPS afterwards; a second run replaces its own statements, not others.
func TestBucketPolicy(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := st.srv.SDKClient(t)
	existing := `{"Version":"2012-10-17","Statement":[{"Sid":"PublicRead","Effect":"Allow","Principal":{"AWS":["*"]},` +
		`"Action":["s3:GetObject"],"Resource":["arn:aws:s3:::` + st.bucket + `/public/*"]}]}`
	if _, err := c.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(st.bucket), Policy: aws.String(existing)}); err != nil {
		t.Fatal(err)
	}
	current := func() string {
		t.Helper()
		out, err := c.GetBucketPolicy(ctx, &s3.GetBucketPolicyInput{Bucket: aws.String(st.bucket)})
		if err != nil {
			t.Fatal(err)
		}
		return aws.ToString(out.Policy)
	}
	type statement struct {
		Sid       string
		Effect    string
		Condition map[string]map[string]any
	}
	sids := func(doc string) map[string]statement {
		t.Helper()
		var p struct{ Statement []statement }
		if err := json.Unmarshal([]byte(doc), &p); err != nil {
			t.Fatalf("policy %q: %v", doc, err)
		}
		out := map[string]statement{}
		for _, s := range p.Statement {
			out[s.Sid] = s
		}
		return out
	}
	before := current()

	r := st.mustRun(t, "bucket-policy", "--sse", "kms", "--dry-run")
	dry := sids(r.stdout)
	if len(dry) != 3 || dry["PublicRead"].Effect != "Allow" || dry["S3cryptfsDenyInsecureTransport"].Effect != "Deny" || dry["S3cryptfsDenyPutWithOtherSSE"].Effect != "Deny" {
		t.Fatalf("dry run printed:\n%s", r.stdout)
	}
	if now := current(); now != before {
		t.Fatalf("--dry-run changed the policy:\n%s\n->\n%s", before, now)
	}

	st.mustRun(t, "bucket-policy", "--sse", "kms")
	got := sids(current())
	tls, sse := got["S3cryptfsDenyInsecureTransport"], got["S3cryptfsDenyPutWithOtherSSE"]
	if len(got) != 3 || got["PublicRead"].Effect != "Allow" || tls.Effect != "Deny" || sse.Effect != "Deny" {
		t.Fatalf("policy read back: %s", current())
	}
	if v := tls.Condition["Bool"]["aws:SecureTransport"]; !strings.Contains(strings.ToLower(jsonString(v)), "false") {
		t.Fatalf("TLS statement condition: %+v", tls.Condition)
	}
	if v := sse.Condition["StringNotEquals"]["s3:x-amz-server-side-encryption"]; !strings.Contains(jsonString(v), "aws:kms") {
		t.Fatalf("SSE statement condition: %+v", sse.Condition)
	}

	// Ordinary use over HTTPS still works.
	m := st.mount(t)
	writeFile(t, m.path("after-policy"), "still works")
	wantContent(t, m.path("after-policy"), "still works")
	m.unmount()

	// Again without --sse: its own SSE statement goes, the other one stays.
	st.mustRun(t, "bucket-policy")
	got = sids(current())
	if len(got) != 2 || got["PublicRead"].Effect != "Allow" || got["S3cryptfsDenyInsecureTransport"].Effect != "Deny" {
		t.Fatalf("policy after a second run: %s", current())
	}
	if r := st.run(t, nil, st.cmd("bucket-policy", "--sse", "c")...); r.code != 2 {
		t.Fatalf("--sse c: exit %d: %s", r.code, r.stderr)
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// anonClient is an S3 client of the server with no credentials: the
// requests MinIO evaluates bucket policies for (it authorises the root user
// and IAM users by their IAM policies alone, see CONFIGURATION.md).
func anonClient(t *testing.T, st *store) *s3.Client {
	t.Helper()
	pem, err := os.ReadFile(st.srv.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatal("no certificate in the CA file")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	t.Cleanup(tr.CloseIdleConnections)
	return s3.New(s3.Options{Region: st.srv.Region, BaseEndpoint: aws.String(st.srv.Endpoint), UsePathStyle: true,
		Credentials: aws.AnonymousCredentials{}, HTTPClient: &http.Client{Transport: tr},
		RetryMaxAttempts: 1})
}

// TestBucketPolicyEnforced: what bucket-policy --sse kms enforces, checked
// on MinIO's policy engine with the requests it applies bucket policies to
// (anonymous ones, allowed to write under anon/ by a statement of the
// bucket's own, which the command keeps). A write asking for SSE-S3 is
// denied, one asking for SSE-KMS is stored, and so is a multipart upload
// with SSE-KMS: its UploadPart and CompleteMultipartUpload requests carry
// no encryption header. The statement of the usual example policies (deny
// unless the header equals aws:kms) denies that UploadPart: which is why
// the command's statement denies only a header with another value.
func TestBucketPolicyEnforced(t *testing.T) {
	st := newStore(t, "minio")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	root := st.srv.SDKClient(t)
	arn := "arn:aws:s3:::" + st.bucket
	allowAnon := `{"Sid":"AnonWrites","Effect":"Allow","Principal":{"AWS":["*"]},` +
		`"Action":["s3:PutObject","s3:AbortMultipartUpload"],"Resource":["` + arn + `/anon/*"]}`
	setPolicy := func(statements ...string) {
		t.Helper()
		doc := `{"Version":"2012-10-17","Statement":[` + strings.Join(statements, ",") + `]}`
		if _, err := root.PutBucketPolicy(ctx, &s3.PutBucketPolicyInput{Bucket: aws.String(st.bucket), Policy: aws.String(doc)}); err != nil {
			t.Fatalf("put policy %s: %v", doc, err)
		}
	}
	anon := anonClient(t, st)
	put := func(key string, sse types.ServerSideEncryption) error {
		_, err := anon.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key),
			Body: strings.NewReader("x"), ServerSideEncryption: sse})
		return err
	}
	// multipart uploads parts of these sizes (all but the last at least 5
	// MiB, S3's minimum) with SSE-KMS asked for when it is created; it says
	// which step failed.
	multipart := func(key string, sizes ...int) (string, error) {
		out, err := anon.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(st.bucket), Key: aws.String(key),
			ServerSideEncryption: types.ServerSideEncryptionAwsKms})
		if err != nil {
			return "CreateMultipartUpload", err
		}
		var parts []types.CompletedPart
		for i, size := range sizes {
			n := int32(i + 1)
			p, err := anon.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(st.bucket), Key: aws.String(key),
				UploadId: out.UploadId, PartNumber: aws.Int32(n), Body: bytes.NewReader(make([]byte, size))})
			if err != nil {
				root.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: aws.String(st.bucket), Key: aws.String(key), UploadId: out.UploadId})
				return "UploadPart", err
			}
			parts = append(parts, types.CompletedPart{ETag: p.ETag, PartNumber: aws.Int32(n)})
		}
		_, err = anon.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(st.bucket), Key: aws.String(key),
			UploadId: out.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
		if err != nil {
			return "CompleteMultipartUpload", err
		}
		return "", nil
	}
	denied := func(err error) bool {
		var ae smithy.APIError
		return errors.As(err, &ae) && ae.ErrorCode() == "AccessDenied"
	}

	// Without any deny statement, anonymous writes under anon/ work (else
	// the checks below would prove nothing).
	setPolicy(allowAnon)
	if err := put("anon/plain", ""); err != nil {
		t.Fatalf("anonymous put allowed by the bucket's own statement: %v", err)
	}
	// The usual statement: deny PutObject unless the header says aws:kms.
	setPolicy(allowAnon, `{"Sid":"Usual","Effect":"Deny","Principal":"*","Action":"s3:PutObject","Resource":"`+arn+`/*",`+
		`"Condition":{"StringNotEquals":{"s3:x-amz-server-side-encryption":"aws:kms"}}}`)
	// (A small part: MinIO answers a denied part before reading its body
	// and closes the connection, which a large body turns into a reset.)
	if step, err := multipart("anon/usual", 1000); step != "UploadPart" || !denied(err) {
		t.Fatalf("multipart upload under the usual SSE statement: %s: %v; want UploadPart denied", step, err)
	}

	// The command's policy, merged with the bucket's statement.
	setPolicy(allowAnon)
	st.mustRun(t, "bucket-policy", "--sse", "kms")
	if err := put("anon/s3", types.ServerSideEncryptionAes256); !denied(err) {
		t.Fatalf("put asking for SSE-S3 under --sse kms: %v; want AccessDenied", err)
	}
	if err := put("anon/kms", types.ServerSideEncryptionAwsKms); err != nil {
		t.Fatalf("put asking for SSE-KMS under --sse kms: %v", err)
	}
	if step, err := multipart("anon/big", 5<<20, 1000); err != nil {
		t.Fatalf("multipart upload with SSE-KMS under --sse kms: %s: %v", step, err)
	}
	head, err := root.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.bucket), Key: aws.String("anon/big")})
	if err != nil || head.ServerSideEncryption != types.ServerSideEncryptionAwsKms || aws.ToInt64(head.ContentLength) != 5<<20+1000 {
		t.Fatalf("multipart object: %v, %+v", err, head)
	}
	// What the policy does not deny (documented): a write naming no
	// encryption; it gets the bucket's default encryption.
	if err := put("anon/none", ""); err != nil {
		t.Fatalf("put naming no SSE under --sse kms: %v; the statement should deny only another SSE", err)
	}
}
