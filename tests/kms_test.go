package tests

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/s3cryptfs/s3cryptfs/internal/kmstest"
)

// TestKMSSlotMount: a vault whose slots are a KMS key and the recovery key
// mounts with no secret against a real KMS (local-kms), while the key is
// usable. KMS refusing (Decrypt denied, the key disabled) gives a one-line
// message naming the cause and the fix, exit 1, nothing mounted; the
// recovery key still opens it.
func TestKMSSlotMount(t *testing.T) {
	st := newStore(t, "minio")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	srv, err := kmstest.Start(ctx, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	keyID := srv.CreateKey(t)
	// The KMS endpoint comes the AWS way; region and plain http (a local
	// test KMS) by option, which the background mount receives too.
	st.env = append(st.env, "AWS_ENDPOINT_URL_KMS="+srv.Endpoint)
	kmsOpts := []string{"--kms-region", srv.Region, "--kms-allow-http"}

	args := append([]string{"init", "--kms-key-id", keyID}, kmsOpts...)
	r := st.run(t, nil, st.cmd(args...)...)
	if r.code != 0 {
		t.Fatalf("init --kms-key-id: exit %d: %s", r.code, r.stderr)
	}
	rec := recoveryFile(t, r.stdout)
	r = st.mustRun(t, "key", "list")
	if !strings.Contains(r.stdout, "KMS           "+keyID) || !strings.Contains(r.stdout, "recovery key") || strings.Contains(r.stdout, "passphrase") {
		t.Fatalf("key list of a KMS vault:\n%s", r.stdout)
	}

	// No secret option, no S3CRYPTFS_PASSPHRASE, no terminal: KMS opens it.
	m, r := st.tryMount(t, kmsOpts...)
	if r.code != 0 {
		t.Fatalf("mount by KMS: exit %d: %s\n%s", r.code, r.stderr, readLog(m.log))
	}
	writeFile(t, m.path("f"), "sealed by a KMS-held key")
	m.unmount()

	// A KMS that denies Decrypt (as AWS does for a missing kms:Decrypt
	// permission), in the JSON protocol's error form.
	deny := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.Header().Set("X-Amzn-Errortype", "AccessDeniedException")
		w.WriteHeader(http.StatusBadRequest)
		w.Write([]byte(`{"__type":"AccessDeniedException","message":"User is not authorized to perform: kms:Decrypt"}`))
	}))
	defer deny.Close()
	wantMountFails(t, st, "access denied (check the key policy and the IAM permissions", append(kmsOpts, "--kms-endpoint", deny.URL)...)

	if _, err := srv.Client().DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}
	wantMountFails(t, st, "the key is disabled (enable it, or unlock with another slot)", kmsOpts...)

	m, r = st.tryMount(t, "--recovery-key-file", rec)
	if r.code != 0 {
		t.Fatalf("mount with the recovery key: exit %d: %s", r.code, r.stderr)
	}
	wantContent(t, m.path("f"), "sealed by a KMS-held key")
	m.unmount()

	if _, err := srv.Client().EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}
	// A second KMS slot added to the vault (opened by the recovery key).
	key2 := srv.CreateKey(t)
	st.mustRun(t, append([]string{"key", "add", "--recovery-key-file", rec, "--kms-key-id", key2}, kmsOpts...)...)
	if _, err := srv.Client().DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}
	m, r = st.tryMount(t, kmsOpts...)
	if r.code != 0 {
		t.Fatalf("mount by the second KMS key with the first disabled: exit %d: %s", r.code, r.stderr)
	}
	wantContent(t, m.path("f"), "sealed by a KMS-held key")
	m.unmount()
}
