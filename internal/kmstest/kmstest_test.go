package kmstest

import (
	"os"
	"regexp"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

func TestMain(m *testing.M) { os.Exit(Main(m)) }

// TestVersionMatchesMakefile: the version installed on demand is the one
// `make localkms-bin` pins.
func TestVersionMatchesMakefile(t *testing.T) {
	b, err := os.ReadFile("../../Makefile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^LOCALKMS_VERSION := (\S+)$`).FindSubmatch(b)
	if m == nil || string(m[1]) != Version {
		t.Fatalf("Makefile pins %q, kmstest.Version is %q", m, Version)
	}
}

// TestServer: a started server answers KMS requests, and Stop ends the
// process and removes its directory.
func TestServer(t *testing.T) {
	if testing.Short() {
		t.Skip("starts local-kms")
	}
	s, err := Start(t.Context(), t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	c := s.Client()
	out, err := c.CreateKey(t.Context(), &kms.CreateKeyInput{})
	if err != nil {
		t.Fatalf("CreateKey: %v", err)
	}
	enc, err := c.Encrypt(t.Context(), &kms.EncryptInput{KeyId: out.KeyMetadata.KeyId, Plaintext: []byte("x")})
	if err != nil || len(enc.CiphertextBlob) == 0 {
		t.Fatalf("Encrypt: %v", err)
	}
	if _, err := c.ListKeys(t.Context(), &kms.ListKeysInput{Limit: aws.Int32(1)}); err != nil {
		t.Fatal(err)
	}
	s.Stop()
	select {
	case <-s.done:
	default:
		t.Fatal("process still running after Stop")
	}
	if _, err := os.Stat(s.dir); !os.IsNotExist(err) {
		t.Errorf("directory %s left behind: %v", s.dir, err)
	}
}
