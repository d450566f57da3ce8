package s3

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/storetest"
	"github.com/s3cryptfs/s3cryptfs/internal/miniotest"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

var envOnce sync.Once

// server returns the shared MinIO and points the AWS credential chain of
// this test process at it, isolated from any ~/.aws of the machine.
func server(t testing.TB) *miniotest.Server {
	t.Helper()
	srv := miniotest.Get(t)
	envOnce.Do(func() {
		dir, err := os.MkdirTemp("", "s3test-aws-")
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range map[string]string{
			"AWS_ACCESS_KEY_ID":           srv.AccessKey,
			"AWS_SECRET_ACCESS_KEY":       srv.SecretKey,
			"AWS_EC2_METADATA_DISABLED":   "true",
			"AWS_CONFIG_FILE":             filepath.Join(dir, "config"),
			"AWS_SHARED_CREDENTIALS_FILE": filepath.Join(dir, "credentials"),
		} {
			os.Setenv(k, v)
		}
		for _, k := range []string{"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_CA_BUNDLE", "AWS_REGION"} {
			os.Unsetenv(k)
		}
	})
	return srv
}

// baseConfig is a store on bucket of srv, with small parts so that
// multipart paths run on modest sizes.
func baseConfig(srv *miniotest.Server, bucket string) Config {
	return Config{
		Bucket:      bucket,
		Endpoint:    srv.Endpoint,
		Region:      srv.Region,
		PathStyle:   true,
		CABundle:    srv.CAFile,
		PartSize:    5 << 20,
		Concurrency: 4,
	}
}

func newStoreT(t testing.TB, cfg Config) *Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := New(ctx, cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// minioCannot lists the conformance cases that need S3 semantics MinIO
// lacks (see the skip message).
var minioCannot = map[string]bool{"CoexistingKeys": true}

// TestConformance runs the backend contract suite against MinIO, with a
// prefix per subtest (so each starts empty) and 5 MiB parts.
func TestConformance(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) backend.Store {
		if minioCannot[path.Base(t.Name())] {
			t.Skip("MinIO limitation, not an S3 one: an object whose key is a path prefix of other keys " +
				`("a/b" beside "a/b/c") hides them from listings; TestMinIOKeyLayout checks what MinIO does support`)
		}
		cfg := baseConfig(srv, bucket)
		cfg.Prefix = fmt.Sprintf("conformance/%d", n.Add(1))
		return newStoreT(t, cfg)
	})
}

func writeFile(p string, b []byte) error { return os.WriteFile(p, b, 0o600) }

// testCtx bounds a test's store calls: with retries and per-attempt
// timeouts a call against a dead server could otherwise take many minutes
// to fail.
func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}
