package tests

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
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
	if len(dry) != 3 || dry["PublicRead"].Effect != "Allow" || dry["S3cryptfsDenyInsecureTransport"].Effect != "Deny" || dry["S3cryptfsDenyPutWithoutSSE"].Effect != "Deny" {
		t.Fatalf("dry run printed:\n%s", r.stdout)
	}
	if now := current(); now != before {
		t.Fatalf("--dry-run changed the policy:\n%s\n->\n%s", before, now)
	}

	st.mustRun(t, "bucket-policy", "--sse", "kms")
	got := sids(current())
	tls, sse := got["S3cryptfsDenyInsecureTransport"], got["S3cryptfsDenyPutWithoutSSE"]
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
