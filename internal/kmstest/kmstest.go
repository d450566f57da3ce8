// Package kmstest runs a real AWS KMS emulator, local-kms
// (github.com/nsmithuk/local-kms, pinned; `make localkms-bin` installs it
// into .tools/bin), for tests that need KMS: one server per test binary,
// started on first use and stopped by Main. Typical use:
//
//	func TestMain(m *testing.M) { os.Exit(kmstest.Main(m)) }
//
//	func TestX(t *testing.T) {
//		srv := kmstest.Get(t) // skips under -short
//		keyID := srv.CreateKey(t)
//		...
//	}
//
// local-kms speaks the KMS JSON API over plain http and keeps its keys in
// a temporary directory removed by Stop. It listens on a port the kernel
// picks (found in its log, so no port is raced for); it binds every
// interface, as it has no option for an address, but holds only throwaway
// test keys and lives as long as the test binary.
package kmstest

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
)

// Version is the pinned local-kms module version installed when no binary
// is found; keep it equal to LOCALKMS_VERSION in the Makefile.
const Version = "v0.0.0-20260228092603-2a5e92d09ab6"

// Server is a running local-kms.
type Server struct {
	Endpoint  string // http://127.0.0.1:PORT
	Region    string
	AccountID string
	// AccessKey and SecretKey are what clients sign with; local-kms does
	// not check them, but the SDK needs some.
	AccessKey, SecretKey string
	LogFile              string

	dir      string
	cmd      *exec.Cmd
	done     chan struct{}
	stopOnce sync.Once
}

var (
	sharedMu  sync.Mutex
	shared    *Server
	sharedErr error
)

// Main runs the tests and then stops the shared server, if one was started.
func Main(m *testing.M) int {
	code := m.Run()
	StopShared()
	return code
}

// StopShared stops the shared server, if one was started: for a TestMain
// that also runs another package's Main (such as miniotest.Main).
func StopShared() {
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared != nil {
		shared.Stop()
		shared = nil
	}
}

// Get returns the shared server, starting it on first use. Under -short the
// test is skipped; if the server cannot start, the test fails with why.
func Get(t testing.TB) *Server {
	t.Helper()
	if !flag.Parsed() {
		flag.Parse()
	}
	if testing.Short() {
		t.Skip("needs local-kms: skipped under -short")
	}
	sharedMu.Lock()
	defer sharedMu.Unlock()
	if shared == nil && sharedErr == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute) // includes a possible go install
		shared, sharedErr = Start(ctx, t.Logf)
		cancel()
	}
	if sharedErr != nil {
		t.Fatalf("kmstest: %v", sharedErr)
	}
	select {
	case <-shared.done:
		t.Fatalf("kmstest: local-kms is no longer running; log %s:\n%s", shared.LogFile, readTail(shared.LogFile))
	default:
	}
	return shared
}

var startedLine = regexp.MustCompile(`Local KMS started on [0-9.]+:([0-9]+)`)

// Start launches local-kms and waits until it has bound its port. The
// caller must Stop it.
func Start(ctx context.Context, logf func(string, ...any)) (*Server, error) {
	bin, err := binary(ctx, logf)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kmstest-")
	if err != nil {
		return nil, fmt.Errorf("kmstest: %w", err)
	}
	s := &Server{
		Region: "eu-west-2", AccountID: "111122223333", AccessKey: "kmstest", SecretKey: "kmstest-secret",
		LogFile: filepath.Join(dir, "local-kms.log"), dir: dir, done: make(chan struct{}),
	}
	log, err := os.Create(s.LogFile)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("kmstest: %w", err)
	}
	defer log.Close()
	s.cmd = exec.Command(bin)
	s.cmd.Env = append(os.Environ(),
		"PORT=0", "KMS_REGION="+s.Region, "KMS_ACCOUNT_ID="+s.AccountID,
		"KMS_DATA_PATH="+filepath.Join(dir, "data"), "KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"))
	s.cmd.Stdout, s.cmd.Stderr = log, log
	// Killed with the test binary even if Main's cleanup never runs.
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	runtime.LockOSThread() // Pdeathsig follows the thread that started the child
	err = s.cmd.Start()
	runtime.UnlockOSThread()
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("kmstest: start %s: %w", bin, err)
	}
	go func() {
		_ = s.cmd.Wait()
		close(s.done)
	}()
	deadline := time.NewTimer(30 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		b, _ := os.ReadFile(s.LogFile)
		if m := startedLine.FindSubmatch(b); m != nil {
			s.Endpoint = "http://127.0.0.1:" + string(m[1])
			return s, nil
		}
		select {
		case <-s.done:
			s.Stop()
			return nil, fmt.Errorf("kmstest: local-kms exited at start; its log:\n%s", b)
		case <-deadline.C:
			s.Stop()
			return nil, fmt.Errorf("kmstest: local-kms did not start within 30s; its log:\n%s", b)
		case <-ctx.Done():
			s.Stop()
			return nil, fmt.Errorf("kmstest: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

// Stop kills the server and removes its keys and log.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		if s.cmd.Process != nil {
			_ = s.cmd.Process.Kill()
			<-s.done
		}
		os.RemoveAll(s.dir)
	})
}

// Client returns an SDK client for the server (static test credentials),
// to create and manage keys in tests.
func (s *Server) Client() *kms.Client {
	return kms.New(kms.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
	})
}

// Env is the environment that points the standard AWS chain at the server.
func (s *Server) Env() map[string]string {
	return map[string]string{
		"AWS_ENDPOINT_URL_KMS":  s.Endpoint,
		"AWS_REGION":            s.Region,
		"AWS_ACCESS_KEY_ID":     s.AccessKey,
		"AWS_SECRET_ACCESS_KEY": s.SecretKey,
	}
}

// CreateKey creates a symmetric encryption key and returns its ARN.
func (s *Server) CreateKey(t testing.TB) string {
	t.Helper()
	out, err := s.Client().CreateKey(t.Context(), &kms.CreateKeyInput{Description: aws.String(t.Name())})
	if err != nil {
		t.Fatalf("kmstest: CreateKey: %v", err)
	}
	return aws.ToString(out.KeyMetadata.Arn)
}

// binary finds local-kms: $S3CRYPTFS_LOCALKMS_BIN, else <module
// root>/.tools/bin/local-kms, installing the pinned version there if it is
// missing (as `make localkms-bin` does).
func binary(ctx context.Context, logf func(string, ...any)) (string, error) {
	var binDir string
	if p := os.Getenv("S3CRYPTFS_LOCALKMS_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		// The Makefile exports the default location before the binary is
		// built: install there; anything else is a mistake to report.
		if filepath.Base(p) != "local-kms" {
			return "", fmt.Errorf("kmstest: S3CRYPTFS_LOCALKMS_BIN=%s does not exist", p)
		}
		binDir = filepath.Dir(p)
	} else {
		root, err := moduleRoot()
		if err != nil {
			return "", err
		}
		binDir = filepath.Join(root, ".tools", "bin")
	}
	bin := filepath.Join(binDir, "local-kms")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("kmstest: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(binDir, ".local-kms-install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("kmstest: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("kmstest: lock %s: %w", lock.Name(), err)
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // installed by another test binary meanwhile
	}
	logf("kmstest: %s is missing; installing local-kms %s (`make localkms-bin` does the same)", bin, Version)
	cmd := exec.CommandContext(ctx, "go", "install", "github.com/nsmithuk/local-kms@"+Version)
	cmd.Env = append(os.Environ(), "GOBIN="+binDir, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("kmstest: installing local-kms into %s failed (%w):\n%s", binDir, err, out)
	}
	return bin, nil
}

func moduleRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, d := range starts {
		for {
			if _, err := os.Stat(filepath.Join(d, "go.mod")); err == nil {
				return d, nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", errors.New("kmstest: cannot find the module root (go.mod)")
}

func readTail(path string) string {
	b, _ := os.ReadFile(path)
	if len(b) > 4096 {
		b = b[len(b)-4096:]
	}
	return string(b)
}
