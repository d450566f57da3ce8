package miniotest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// process is a running MinIO whose exit is observed in the background.
type process struct {
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	mu   sync.Mutex
	err  error // set when done is closed
}

func startProcess(bin string, args, env []string, logPath string) (*process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("miniotest: %w", err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout = log
	cmd.Stderr = log
	// If the test binary dies without running Main's cleanup (a panic, a
	// timeout, kill -9), the kernel kills MinIO too instead of leaving it
	// running with its port and temp dir.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := startOnSpawnerThread(cmd); err != nil {
		log.Close()
		return nil, fmt.Errorf("miniotest: starting %s: %w", bin, err)
	}
	p := &process{cmd: cmd, log: log, done: make(chan struct{})}
	go func() {
		err := cmd.Wait()
		if err == nil {
			err = errors.New("exited with status 0")
		}
		p.mu.Lock()
		p.err = err
		p.mu.Unlock()
		log.Close()
		close(p.done)
	}()
	return p, nil
}

// Pdeathsig is delivered when the thread that forked the child exits, not
// the process. Go can end a thread (a goroutine that exits while locked to
// it, as FUSE or namespace code does), which would kill MinIO in the middle
// of the tests. So MinIO is forked from a thread that a goroutine holds
// locked for the life of the process and never exits.
var (
	spawnOnce sync.Once
	spawnCh   chan func()
)

func startOnSpawnerThread(cmd *exec.Cmd) error {
	spawnOnce.Do(func() {
		spawnCh = make(chan func())
		go func() {
			runtime.LockOSThread() // never unlocked: the thread lives as long as the process
			for f := range spawnCh {
				f()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnCh <- func() { errc <- cmd.Start() }
	return <-errc
}

// exited returns nil while the process runs, else how it ended.
func (p *process) exited() error {
	select {
	case <-p.done:
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.err
	default:
		return nil
	}
}

// stop asks MinIO to shut down (SIGTERM) and kills it if it has not gone
// after a few seconds.
func (p *process) stop() {
	if p.exited() != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// waitReady polls MinIO's readiness endpoint over TLS until it answers 200,
// MinIO exits, or ctx ends (bounded to one minute).
func (s *Server) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	pool, err := loadCA(s.CAFile)
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true,
		},
	}
	url := s.Endpoint + "/minio/health/ready"
	delay := 20 * time.Millisecond
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s.waitS3(ctx)
			}
		}
		select {
		case <-s.proc.done:
			return fmt.Errorf("MinIO exited during startup: %v", s.proc.exited())
		case <-ctx.Done():
			return fmt.Errorf("MinIO not ready at %s: %w (last: %v)", url, ctx.Err(), err)
		case <-time.After(delay):
		}
		if delay < 200*time.Millisecond {
			delay *= 2
		}
	}
}

// waitS3 waits until MinIO accepts an authenticated bucket operation: it
// reports ready before every subsystem (bucket metadata, IAM) has started,
// and meanwhile answers 503 XMinioServerNotInitialized.
func (s *Server) waitS3(ctx context.Context) error {
	c, tr, err := s.newSDKClient()
	if err != nil {
		return err
	}
	defer tr.CloseIdleConnections()
	const probe = "miniotest-ready"
	for {
		_, err := c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(probe)})
		if err == nil {
			_, err = c.DeleteBucket(ctx, &s3.DeleteBucketInput{Bucket: aws.String(probe)})
		}
		if err == nil {
			return nil
		}
		select {
		case <-s.proc.done:
			return fmt.Errorf("MinIO exited during startup: %v", s.proc.exited())
		case <-ctx.Done():
			return fmt.Errorf("MinIO at %s does not accept S3 requests: %w (last: %v)", s.Endpoint, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("miniotest: finding a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// loadCA returns a certificate pool holding the PEM certificates in path.
func loadCA(path string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("miniotest: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("miniotest: no certificate in %s", path)
	}
	return pool, nil
}

// tail returns the last few KiB of the file at path, for error messages.
func tail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read log: %v)", err)
	}
	const max = 4096
	if len(b) > max {
		b = b[len(b)-max:]
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	if len(b) == 0 {
		return "(empty)"
	}
	return string(b)
}
