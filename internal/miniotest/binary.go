package miniotest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
)

// minioBinary finds the MinIO binary: $S3CRYPTFS_MINIO_BIN, else
// <module root>/.tools/bin/minio, installing the pinned version there if it
// is missing. Concurrent test binaries serialize the install on a lock file
// so it happens once.
func minioBinary(ctx context.Context, logf func(string, ...any)) (string, error) {
	if p := os.Getenv("S3CRYPTFS_MINIO_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		// The Makefile exports the default location even before the
		// binary is built; fall through to the install below when that is
		// where it points.
		if filepath.Base(p) != "minio" || filepath.Base(filepath.Dir(p)) != "bin" {
			return "", fmt.Errorf("miniotest: S3CRYPTFS_MINIO_BIN=%s does not exist", p)
		}
		return install(ctx, filepath.Dir(p), logf)
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	return install(ctx, filepath.Join(root, ".tools", "bin"), logf)
}

// install returns binDir/minio, building the pinned MinIO into binDir first
// if it is not there.
func install(ctx context.Context, binDir string, logf func(string, ...any)) (string, error) {
	bin := filepath.Join(binDir, "minio")
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return "", fmt.Errorf("miniotest: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(binDir, ".minio-install.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", fmt.Errorf("miniotest: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("miniotest: locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck
	if _, err := os.Stat(bin); err == nil {
		return bin, nil // another process installed it while we waited
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("miniotest: %s is missing and no go command is on PATH to build it (run `make minio-bin`): %w", bin, err)
	}
	logf("miniotest: %s is missing; installing MinIO %s (4-5 minutes the first time; `make minio-bin` does the same)", bin, MinIOVersion)
	cmd := exec.CommandContext(ctx, goBin, "install", "github.com/minio/minio@"+MinIOVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+binDir, "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("miniotest: installing MinIO into %s failed (%w):\n%s", binDir, err, out)
	}
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("miniotest: go install succeeded but %s is missing: %w", bin, err)
	}
	return bin, nil
}

// moduleRoot finds the directory holding go.mod, from the working directory
// (a test runs in its package's directory) or, failing that, from this
// source file's location at build time.
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
	return "", errors.New("miniotest: cannot find the module root (go.mod); set S3CRYPTFS_MINIO_BIN to a MinIO binary")
}
