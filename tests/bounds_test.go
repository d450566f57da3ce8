package tests

import (
	"bytes"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/fs/content"
)

const maxSize = content.MaxFileSize

// poisoned is a read buffer of bytes no test file holds, so a read that
// reports bytes it never filled shows.
func poisoned(n int) []byte { return bytes.Repeat([]byte{0xa5}, n) }

// wantPread preads len(want)+extra bytes at off and fails unless it gets
// exactly want (nil: 0 bytes, end of file).
func wantPread(t *testing.T, what string, fd int, off int64, n int, want []byte) {
	t.Helper()
	buf := poisoned(n)
	got, err := unix.Pread(fd, buf, off)
	if err != nil {
		t.Fatalf("%s: pread(%d bytes at %d): %v", what, n, off, err)
	}
	if !bytes.Equal(buf[:got], want) {
		t.Fatalf("%s: pread(%d bytes at %d) returned %d bytes %q, want %d bytes %q",
			what, n, off, got, trunc(buf[:got]), len(want), trunc(want))
	}
}

// TestMaxFileSize: through a real mount, writes, truncates and
// copy_file_range past the maximum file size fail with EFBIG (also near
// 2^63, which the kernel lets through to FUSE), a write straddling it
// writes what fits (POSIX's short count, as on ext4), reads there return 0
// bytes, nothing of it is stored, and the mount keeps working and
// unmounts cleanly. See SEMANTICS.md, Limits.
func TestMaxFileSize(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		p := m.path("big")
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		fd := int(f.Fd())
		// Every descriptor is opened now and closed only once the file is
		// cut back to 5 bytes, even when the test fails: a close stores
		// the file, and storing 4 TiB would take hours and fill the disk.
		src, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		app, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		// O_DIRECT reads skip the page cache: within the size the kernel
		// caches they reach the READ handler (past it the kernel answers
		// 0 itself; TestReadPastStaleEOF gets past that).
		dfd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECT, 0)
		if err != nil {
			t.Fatal(err)
		}
		closed := false
		defer func() {
			if !closed {
				unix.Ftruncate(fd, 5)
				unix.Close(dfd)
				app.Close()
				src.Close()
				f.Close()
			}
		}()
		if _, err := f.WriteString("hello"); err != nil {
			t.Fatal(err)
		}

		// At 2^63-4096 the kernel passes at most 4095 bytes to FUSE (one
		// more and off+len overflows: EINVAL before any filesystem).
		for _, w := range []struct{ off, n int64 }{
			{math.MaxInt64 - 4095, 4095}, {math.MaxInt64 - 4096, 4096}, {maxSize, 4096}, {maxSize + 1, 4096},
		} {
			n, err := unix.Pwrite(fd, make([]byte, w.n), w.off)
			wantErrno(t, "pwrite at "+strconv.FormatInt(w.off, 10), err, syscall.EFBIG)
			if n > 0 {
				t.Fatalf("pwrite at %d wrote %d bytes", w.off, n)
			}
			wantPread(t, "past EOF", fd, w.off, int(w.n), nil)
			wantPread(t, "O_DIRECT past EOF", dfd, w.off, int(w.n), nil)
		}
		wantErrno(t, "ftruncate to max+1", unix.Ftruncate(fd, maxSize+1), syscall.EFBIG)
		wantErrno(t, "truncate to max+1", unix.Truncate(p, maxSize+1), syscall.EFBIG)
		wantErrno(t, "ftruncate to 2^63-1", unix.Ftruncate(fd, math.MaxInt64), syscall.EFBIG)
		// Not implemented at all: refused, nothing allocated.
		wantErrno(t, "fallocate at max", unix.Fallocate(fd, 0, maxSize, 4096), syscall.EOPNOTSUPP)
		// copy_file_range to the maximum: the kernel falls back to writes
		// through the mount, which refuse it.
		srcOff, dstOff := int64(0), int64(maxSize)
		n, err := unix.CopyFileRange(int(src.Fd()), &srcOff, fd, &dstOff, 5, 0)
		wantErrno(t, "copy_file_range to max", err, syscall.EFBIG)
		if n > 0 {
			t.Fatalf("copy_file_range to max copied %d bytes", n)
		}
		var stt unix.Stat_t
		if err := unix.Fstat(fd, &stt); err != nil || stt.Size != 5 {
			t.Fatalf("size %d (%v) after refused calls, want 5", stt.Size, err)
		}
		wantPread(t, "file", fd, 0, 4096, []byte("hello"))

		// Straddling the maximum: the part that fits is written.
		n, err = unix.Pwrite(fd, []byte("0123456789ABCDEF"), maxSize-10)
		if n != 10 || err != nil {
			t.Fatalf("pwrite of 16 bytes at max-10: %d, %v; want 10, nil", n, err)
		}
		if err := unix.Fstat(fd, &stt); err != nil || stt.Size != maxSize {
			t.Fatalf("size %d (%v), want %d", stt.Size, err, int64(maxSize))
		}
		for _, r := range []struct {
			what string
			fd   int
		}{{"buffered", fd}, {"O_DIRECT", dfd}} {
			wantPread(t, r.what+" at max-10", r.fd, maxSize-10, 4096, []byte("0123456789"))
			wantPread(t, r.what+" hole", r.fd, maxSize-4096, 4096, append(make([]byte, 4086), "0123456789"...))
			wantPread(t, r.what+" at max", r.fd, maxSize, 4096, nil)
			wantPread(t, r.what+" at 2^63-4096", r.fd, math.MaxInt64-4096, 4096, nil)
		}
		n, err = unix.Pwrite(fd, []byte("x"), maxSize)
		wantErrno(t, "pwrite of 1 byte at max", err, syscall.EFBIG)
		if n > 0 {
			t.Fatalf("pwrite at max wrote %d bytes", n)
		}
		// O_APPEND at the maximum: nowhere to go.
		_, err = app.Write([]byte("x"))
		wantErrno(t, "append at max", err, syscall.EFBIG)

		// Truncating to exactly the maximum is fine; cut back before
		// closing, and only the 5 bytes are stored.
		if err := unix.Ftruncate(fd, maxSize); err != nil {
			t.Fatalf("ftruncate to max: %v", err)
		}
		if err := unix.Ftruncate(fd, 5); err != nil {
			t.Fatal(err)
		}
		closed = true
		unix.Close(dfd)
		app.Close()
		src.Close()
		if err := f.Close(); err != nil {
			t.Fatalf("close: %v", err)
		}
		wantContent(t, p, "hello")

		// The mount still works, and unmounts cleanly.
		writeFile(t, m.path("other"), "still works")
		wantContent(t, m.path("other"), "still works")
		m = m.remount()
		wantContent(t, m.path("big"), "hello")
		wantContent(t, m.path("other"), "still works")
		if got := len(st.raw(t, "big")); got != 132+5+28 {
			t.Fatalf("object big has %d bytes, want %d (header, 5 bytes, one block's overhead)", got, 132+5+28)
		}
		m.unmount()
	})
}

// TestReadPastEOF: reads of whole pages past EOF, at huge offsets, and
// running past the end of a file whose size is not page-aligned return
// exactly the file's bytes (0 past EOF), buffered and O_DIRECT, on a
// stored file and one still being written. (O_DIRECT reads running past
// EOF reach the READ handler; those starting past it the kernel answers
// itself, see TestReadPastStaleEOF.)
func TestReadPastEOF(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		data := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuv"), 5000/32+1)[:5000]
		check := func(what string, flags int) {
			t.Helper()
			fd, err := unix.Open(m.path("short"), flags, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			wantPread(t, what, fd, 0, 8192, data)
			wantPread(t, what, fd, 4096, 4096, data[4096:])
			wantPread(t, what, fd, 4999, 4096, data[4999:])
			wantPread(t, what, fd, 5000, 4096, nil)
			wantPread(t, what, fd, 8192, 4096, nil)
			wantPread(t, what, fd, 1<<40, 4096, nil)
			wantPread(t, what, fd, maxSize, 4096, nil)
			wantPread(t, what, fd, math.MaxInt64-4096, 4096, nil)
		}
		// Unsynced: the data is in the mount's dirty blocks.
		w, err := os.Create(m.path("short"))
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close() // on failure; closed below otherwise
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		check("dirty", unix.O_RDONLY)
		check("dirty, O_DIRECT", unix.O_RDONLY|unix.O_DIRECT)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		// Stored, read back through a fresh mount (no cached pages).
		m = m.remount()
		check("stored, O_DIRECT", unix.O_RDONLY|unix.O_DIRECT)
		check("stored", unix.O_RDONLY)
		m.unmount()
	})
}

// TestReadPastStaleEOF: when the kernel's cached size is larger than the
// file (another client shrank it; this mount's kernel keeps the old size
// until the attribute timeout), reads past the real EOF do reach the
// READ handler, which returns 0 bytes there and exactly the file's bytes
// before it, never the rest of its (pooled, reused) buffer.
func TestReadPastStaleEOF(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		a := st.mount(t, "--attr-timeout", "1h") // the kernel keeps its size
		b := st.mount(t)
		writeFile(t, b.path("f"), strings.Repeat("x", 12288))
		var stt unix.Stat_t
		if err := unix.Stat(a.path("f"), &stt); err != nil || stt.Size != 12288 {
			t.Fatalf("stat through a: size %d, %v", stt.Size, err)
		}
		data := bytes.Repeat([]byte("0123456789abcdefghijklmnopqrstuv"), 5000/32+1)[:5000]
		writeFile(t, b.path("f"), string(data))
		for _, flags := range []int{unix.O_RDONLY | unix.O_DIRECT, unix.O_RDONLY} {
			fd, err := unix.Open(a.path("f"), flags, 0)
			if err != nil {
				t.Fatal(err)
			}
			if flags&unix.O_DIRECT != 0 {
				// The kernel still believes the old size: these READs
				// reach the handler.
				if err := unix.Fstat(fd, &stt); err != nil || stt.Size != 12288 {
					unix.Close(fd)
					t.Fatalf("kernel's size %d, %v; the test needs the stale 12288", stt.Size, err)
				}
				wantPread(t, "O_DIRECT, stale size", fd, 8192, 4096, nil)
				wantPread(t, "O_DIRECT, stale size", fd, 4096, 8192, data[4096:])
				wantPread(t, "O_DIRECT, stale size", fd, 0, 12288, data)
			} else {
				wantPread(t, "buffered, stale size", fd, 4096, 8192, data[4096:])
				wantPread(t, "buffered, stale size", fd, 8192, 4096, nil)
			}
			unix.Close(fd)
		}
		a.unmount()
		b.unmount()
	})
}
