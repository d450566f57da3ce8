package fs_test

import (
	"bytes"
	"math"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/fs/content"
)

// TestMaxFileSizeInProcess runs the handlers' bounds under the race
// detector (tests/bounds_test.go checks the same through the real binary
// on MinIO and the local store): EFBIG for writes at and past the maximum
// and for truncates past it, a short count for a write straddling it, 0
// bytes for reads past EOF, and a file that is still usable afterwards.
func TestMaxFileSizeInProcess(t *testing.T) {
	dir, st := mountMem(t, false)
	p := filepath.Join(dir, "f")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	fd := int(f.Fd())
	defer func() {
		unix.Ftruncate(fd, 5) // never store a 4 TiB file, even on failure
		f.Close()
	}()
	if _, err := f.WriteString("hello"); err != nil {
		t.Fatal(err)
	}
	const maxSize = content.MaxFileSize
	for _, off := range []int64{maxSize, maxSize + 1, math.MaxInt64 - 4096} {
		if n, err := unix.Pwrite(fd, make([]byte, 4096), off); n > 0 || err != syscall.EFBIG {
			t.Fatalf("pwrite at %d: %d, %v; want EFBIG", off, n, err)
		}
	}
	for _, size := range []int64{maxSize + 1, math.MaxInt64} {
		if err := unix.Ftruncate(fd, size); err != syscall.EFBIG {
			t.Fatalf("ftruncate to %d: %v; want EFBIG", size, err)
		}
	}
	if n, err := unix.Pwrite(fd, []byte("0123456789ABCDEF"), maxSize-10); n != 10 || err != nil {
		t.Fatalf("pwrite of 16 bytes at max-10: %d, %v; want 10, nil", n, err)
	}
	dfd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(dfd)
	for _, c := range []struct {
		off  int64
		want string
	}{{maxSize - 10, "0123456789"}, {maxSize, ""}, {math.MaxInt64 - 4096, ""}} {
		buf := bytes.Repeat([]byte{0xa5}, 4096)
		n, err := unix.Pread(dfd, buf, c.off)
		if err != nil || string(buf[:n]) != c.want {
			t.Fatalf("O_DIRECT pread at %d: %d bytes %q, %v; want %q", c.off, n, buf[:max(n, 0)], err, c.want)
		}
	}
	if err := unix.Ftruncate(fd, 5); err != nil {
		t.Fatal(err)
	}
	unix.Close(dfd)
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got, err := os.ReadFile(p); err != nil || string(got) != "hello" {
		t.Fatalf("read back %q, %v", got, err)
	}
	if n := len(readObject(t, st, "f")); n != 132+5+28 {
		t.Fatalf("stored object has %d bytes, want %d", n, 132+5+28)
	}
}
