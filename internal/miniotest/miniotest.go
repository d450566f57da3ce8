// Package miniotest runs a real MinIO server over TLS, with a static KMS key,
// for the tests of any package that needs S3: one server per test binary,
// started on first use and stopped by Main.
//
// The server is the pinned MinIO binary the Makefile builds (make minio-bin).
// Its certificate is generated here with crypto/x509, so SSE-C (which MinIO
// refuses without TLS) works, and a static KMS key makes SSE-S3 and SSE-KMS
// work too. Typical use:
//
//	func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		srv := miniotest.Get(t) // skips under -short
//		bucket := srv.NewBucket(t)
//		...
//	}
package miniotest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// MinIOVersion is the pinned MinIO module version installed when no binary is
// found; keep it equal to MINIO_VERSION in the Makefile.
const MinIOVersion = "v0.0.0-20260212201848-7aac2a2c5b7c"

// Server is a running MinIO. Its fields are what a client needs to talk to it.
type Server struct {
	Endpoint  string // https://127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Region    string
	CAFile    string // PEM of the self-signed certificate the server uses (it is its own CA)
	KMSKeyID  string // the static KMS key name, usable as an SSE-KMS key id

	// DataDir holds the objects; LogFile collects MinIO's stdout and stderr.
	DataDir string
	LogFile string

	proc     *process
	ownsDirs []string // removed by Stop
	stopOnce sync.Once
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
)

// Main runs the tests and then stops the shared server, if one was started.
// Call it from TestMain: os.Exit(miniotest.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Stop()
		shared = nil
	}
	return code
}

// Get returns the shared server of this test binary, starting it on first
// use. Under -short the test is skipped; if the server cannot be started the
// test fails with the reason and the tail of MinIO's log.
func Get(t testing.TB) *Server {
	t.Helper()
	if !flag.Parsed() {
		flag.Parse()
	}
	if testing.Short() {
		t.Skip("needs MinIO: skipped under -short")
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // includes a possible go install
		shared, sharedErr = Start(ctx, Options{Logf: t.Logf})
		cancel()
	}
	if sharedErr != nil {
		t.Fatalf("miniotest: %v", sharedErr)
	}
	if err := shared.proc.exited(); err != nil {
		t.Fatalf("miniotest: MinIO is no longer running (%v); log %s ends with:\n%s", err, shared.LogFile, tail(shared.LogFile))
	}
	return shared
}

// Options configure Start. The zero value is what tests use.
type Options struct {
	// Dir, when set, keeps certificates and data there across runs (make
	// minio); otherwise a temporary directory is used and removed by Stop.
	Dir string
	// Port and ConsolePort, when set, fix the listening ports; otherwise
	// free loopback ports are chosen.
	Port, ConsolePort int
	// AccessKey and SecretKey default to fixed test credentials.
	AccessKey, SecretKey string
	// Logf, when set, receives progress messages (installing, starting).
	Logf func(format string, args ...any)
}

// Start launches a MinIO server and waits until it serves requests. The
// caller must Stop it. Most tests want Get instead.
func Start(ctx context.Context, opts Options) (*Server, error) {
	logf := opts.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	bin, err := minioBinary(ctx, logf)
	if err != nil {
		return nil, err
	}
	s := &Server{
		AccessKey: opts.AccessKey,
		SecretKey: opts.SecretKey,
		Region:    "us-east-1",
		KMSKeyID:  "miniotest-key",
	}
	if s.AccessKey == "" {
		s.AccessKey = "miniotest"
	}
	if s.SecretKey == "" {
		s.SecretKey = "miniotest-secret-key"
	}
	dir := opts.Dir
	if dir == "" {
		dir, err = os.MkdirTemp("", "miniotest-")
		if err != nil {
			return nil, fmt.Errorf("miniotest: %w", err)
		}
		s.ownsDirs = append(s.ownsDirs, dir)
	}
	certsDir := filepath.Join(dir, "certs")
	s.DataDir = filepath.Join(dir, "data")
	s.LogFile = filepath.Join(dir, "minio.log")
	for _, d := range []string{certsDir, s.DataDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			s.Stop()
			return nil, fmt.Errorf("miniotest: %w", err)
		}
	}
	s.CAFile = filepath.Join(certsDir, "public.crt")
	if err := ensureCert(certsDir); err != nil {
		s.Stop()
		return nil, err
	}
	kmsKey, err := kmsSecret(dir)
	if err != nil {
		s.Stop()
		return nil, err
	}

	// A free port found by listening and closing can be taken by another
	// process (another test binary starting its own MinIO) before MinIO binds
	// it; when MinIO exits early on a port clash, try again with new ports.
	const attempts = 4
	for i := 1; ; i++ {
		port, cport := opts.Port, opts.ConsolePort
		if port == 0 {
			if port, err = freePort(); err != nil {
				s.Stop()
				return nil, err
			}
		}
		if cport == 0 {
			if cport, err = freePort(); err != nil {
				s.Stop()
				return nil, err
			}
		}
		s.Endpoint = fmt.Sprintf("https://127.0.0.1:%d", port)
		logf("miniotest: starting %s at %s (log %s)", bin, s.Endpoint, s.LogFile)
		env := append(os.Environ(),
			"MINIO_ROOT_USER="+s.AccessKey,
			"MINIO_ROOT_PASSWORD="+s.SecretKey,
			"MINIO_KMS_SECRET_KEY="+s.KMSKeyID+":"+kmsKey,
			"MINIO_REGION="+s.Region,
			"MINIO_UPDATE=off",
			"MINIO_BROWSER=off",
			"MINIO_CI_CD=on",
			// Keep scanners and heal off the tests' path.
			"MINIO_SCANNER_SPEED=slowest",
		)
		args := []string{"server", "--quiet", "--anonymous",
			"--address", fmt.Sprintf("127.0.0.1:%d", port),
			"--console-address", fmt.Sprintf("127.0.0.1:%d", cport),
			"--certs-dir", certsDir,
			s.DataDir}
		s.proc, err = startProcess(bin, args, env, s.LogFile)
		if err != nil {
			s.Stop()
			return nil, err
		}
		err = s.waitReady(ctx)
		if err == nil {
			return s, nil
		}
		s.proc.stop()
		clash := strings.Contains(tail(s.LogFile), "address already in use")
		if !clash || i == attempts || opts.Port != 0 {
			err = fmt.Errorf("%w; log %s ends with:\n%s", err, s.LogFile, tail(s.LogFile))
			s.Stop()
			return nil, err
		}
		logf("miniotest: port clash, retrying")
	}
}

// PID is the MinIO process's id (benchmarks read its CPU time).
func (s *Server) PID() int {
	if s.proc == nil || s.proc.cmd.Process == nil {
		return 0
	}
	return s.proc.cmd.Process.Pid
}

// Stop ends the server and removes the directories Start created. It is safe
// to call more than once.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.proc != nil {
			s.proc.stop()
		}
		for _, d := range s.ownsDirs {
			_ = os.RemoveAll(d)
		}
	})
}

// Env returns the environment a program needs to reach the server through
// the standard AWS configuration chain (credentials, region, endpoint, CA).
func (s *Server) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.SecretKey,
		"AWS_REGION=" + s.Region,
		"AWS_CA_BUNDLE=" + s.CAFile,
		"AWS_ENDPOINT_URL_S3=" + s.Endpoint,
	}
}

var bucketSeq atomic.Int64

var nonBucketChars = regexp.MustCompile(`[^a-z0-9-]+`)

// NewBucket creates a bucket with a fresh name derived from the test's name.
// The bucket is emptied and removed when the test ends, so large test objects
// do not pile up on disk.
func (s *Server) NewBucket(t testing.TB) string {
	t.Helper()
	name := nonBucketChars.ReplaceAllString(strings.ToLower(t.Name()), "-")
	suffix := fmt.Sprintf("-%d-%d", os.Getpid()%100000, bucketSeq.Add(1))
	if max := 63 - len(suffix) - 2; len(name) > max {
		name = name[:max]
	}
	name = "t-" + strings.Trim(name, "-") + suffix
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := s.SDKClient(t)
	if _, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		t.Fatalf("miniotest: create bucket %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := emptyAndRemove(ctx, c, name); err != nil {
			t.Logf("miniotest: removing bucket %s: %v", name, err)
		}
	})
	return name
}

// emptyAndRemove deletes every object and aborts every multipart upload in
// bucket, then the bucket.
func emptyAndRemove(ctx context.Context, c *s3.Client, bucket string) error {
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return err
		}
		if len(page.Contents) == 0 {
			continue
		}
		ids := make([]types.ObjectIdentifier, len(page.Contents))
		for i, o := range page.Contents {
			ids[i] = types.ObjectIdentifier{Key: o.Key}
		}
		if _, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{
			Bucket: aws.String(bucket), Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
		}); err != nil {
			return err
		}
	}
	ups, err := c.ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(bucket)})
	if err == nil {
		for _, u := range ups.Uploads {
			_, _ = c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{
				Bucket: aws.String(bucket), Key: u.Key, UploadId: u.UploadId,
			})
		}
	}
	_, err = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(bucket)})
	return err
}

// kmsSecret returns the base64 of the 32-byte static KMS key kept in dir, so a
// persistent directory (make minio) can still decrypt its SSE objects.
func kmsSecret(dir string) (string, error) {
	path := filepath.Join(dir, "kms.key")
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("miniotest: %w", err)
	}
	var key [32]byte
	if _, err := rand.Read(key[:]); err != nil {
		return "", fmt.Errorf("miniotest: %w", err)
	}
	enc := base64.StdEncoding.EncodeToString(key[:])
	if err := os.WriteFile(path, []byte(enc+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("miniotest: %w", err)
	}
	return enc, nil
}
