package miniotest

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// These tests need no MinIO and run under -short.

func TestCertificate(t *testing.T) {
	dir := t.TempDir()
	if err := ensureCert(dir); err != nil {
		t.Fatal(err)
	}
	crtPEM, err := os.ReadFile(filepath.Join(dir, "public.crt"))
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(crtPEM)
	if blk == nil {
		t.Fatal("public.crt holds no PEM block")
	}
	crt, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(crt)
	for _, host := range []string{"127.0.0.1", "localhost", "::1"} {
		if _, err := crt.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("certificate not valid for %s: %v", host, err)
		}
	}
	if crt.VerifyHostname("example.com") == nil {
		t.Error("certificate valid for example.com")
	}
	if _, err := os.Stat(filepath.Join(dir, "private.key")); err != nil {
		t.Error(err)
	}
	// A second call keeps the valid certificate (make minio -dir reuses it).
	if err := ensureCert(dir); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(filepath.Join(dir, "public.crt"))
	if string(again) != string(crtPEM) {
		t.Error("a valid certificate was regenerated")
	}
}

func TestMissingBinary(t *testing.T) {
	t.Setenv("S3CRYPTFS_MINIO_BIN", "/nonexistent/minio-server")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := Start(ctx, Options{})
	if err == nil || !strings.Contains(err.Error(), "S3CRYPTFS_MINIO_BIN=/nonexistent/minio-server does not exist") {
		t.Fatalf("Start with a missing binary: err = %v, want it named", err)
	}
}

// TestStartupFailureShowsLog: when MinIO cannot start, the error carries
// the tail of its log.
func TestStartupFailureShowsLog(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "minio")
	script := "#!/bin/sh\necho 'FATAL Unable to start: disk is on fire' >&2\nexit 1\n"
	if err := os.WriteFile(fake, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("S3CRYPTFS_MINIO_BIN", fake)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := Start(ctx, Options{})
	if err == nil || !strings.Contains(err.Error(), "disk is on fire") || !strings.Contains(err.Error(), "exited during startup") {
		t.Fatalf("Start with a failing binary: err = %v, want the exit and the log tail", err)
	}
}

func TestFreePort(t *testing.T) {
	p, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
	if err != nil {
		t.Fatalf("port %d not free: %v", p, err)
	}
	l.Close()
}

func TestTail(t *testing.T) {
	p := filepath.Join(t.TempDir(), "log")
	var sb strings.Builder
	for i := range 2000 {
		sb.WriteString("line ")
		sb.WriteString(strconv.Itoa(i))
		sb.WriteByte('\n')
	}
	if err := os.WriteFile(p, []byte(sb.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	got := tail(p)
	if len(got) > 4096 || !strings.HasSuffix(got, "line 1999\n") || !strings.HasPrefix(got, "line ") {
		t.Errorf("tail = %d bytes starting %.20q, want at most 4 KiB of whole lines ending at the last", len(got), got)
	}
	if got := tail(filepath.Join(t.TempDir(), "none")); !strings.Contains(got, "cannot read log") {
		t.Errorf("tail of a missing file = %q", got)
	}
}
