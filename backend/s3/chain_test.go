package s3

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestCredentialChain reaches MinIO with the configuration coming from the
// standard AWS places instead of Config fields: a named profile in a shared
// credentials file, AWS_PROFILE, and the environment alone (endpoint, CA
// bundle, region and keys, as miniotest's Env gives them).
func TestCredentialChain(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	dir := t.TempDir()
	creds := filepath.Join(dir, "credentials")
	content := "[mini]\naws_access_key_id = " + srv.AccessKey + "\naws_secret_access_key = " + srv.SecretKey + "\n"
	if err := os.WriteFile(creds, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	noEnvKeys := func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "")
		t.Setenv("AWS_SHARED_CREDENTIALS_FILE", creds)
	}
	check := func(t *testing.T, cfg Config) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		s, err := New(ctx, cfg)
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		if _, err := s.Put(ctx, "k", strings.NewReader("v"), 1, nil); err != nil {
			t.Fatalf("Put: %v", err)
		}
	}
	t.Run("profile option", func(t *testing.T) {
		noEnvKeys(t)
		cfg := baseConfig(srv, bucket)
		cfg.Profile = "mini"
		check(t, cfg)
	})
	t.Run("AWS_PROFILE", func(t *testing.T) {
		noEnvKeys(t)
		t.Setenv("AWS_PROFILE", "mini")
		check(t, baseConfig(srv, bucket))
	})
	t.Run("environment only", func(t *testing.T) {
		for _, kv := range srv.Env() {
			k, v, _ := strings.Cut(kv, "=")
			t.Setenv(k, v)
		}
		check(t, Config{Bucket: bucket, PathStyle: true})
	})
}
