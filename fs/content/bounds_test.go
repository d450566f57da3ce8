package content

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

// hugeOffsets are offsets a caller (the kernel: FUSE lets them reach
// 2^63-1) can pass that lie at or past MaxFileSize.
var hugeOffsets = []int64{
	MaxFileSize, MaxFileSize + 1, MaxFileSize + 4096, maxObjectSize,
	math.MaxInt64 - 65536, math.MaxInt64 - 4096, math.MaxInt64 - 1, math.MaxInt64,
}

// poisoned returns a buffer of n bytes that are never file content here,
// so a read that reports bytes it did not fill is caught.
func poisoned(n int) []byte { return bytes.Repeat([]byte{0xa5}, n) }

// TestBoundsEngine: writes and truncates beyond MaxFileSize fail with
// ErrFileTooBig and change nothing, whatever the offset (no int64
// overflow, no panic); a file can grow to exactly MaxFileSize; reads at
// and past EOF return 0 bytes and reads near the maximum exactly the
// file's bytes; the File stays usable (its locks free) afterwards.
func TestBoundsEngine(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			v := newEnv(t, stores()[0].new(t), m.keys, nil)
			ctx := testCtx(t)
			f := v.eng.Create("f", nil)
			if _, err := f.WriteAt(ctx, []byte("hello"), 0); err != nil {
				t.Fatal(err)
			}
			for _, off := range hugeOffsets {
				for _, n := range []int{1, 4095, 4096, 65536} {
					got, err := f.WriteAt(ctx, make([]byte, n), off)
					if got != 0 || !errors.Is(err, ErrFileTooBig) {
						t.Fatalf("WriteAt(%d bytes at %d) = %d, %v; want 0, ErrFileTooBig", n, off, got, err)
					}
				}
				if off > MaxFileSize { // exactly MaxFileSize is allowed (below)
					if err := f.Truncate(ctx, off); !errors.Is(err, ErrFileTooBig) {
						t.Fatalf("Truncate(%d) = %v; want ErrFileTooBig", off, err)
					}
				}
				// Reads past EOF: nothing, and the buffer untouched.
				p := poisoned(4096)
				if got, err := f.ReadAt(ctx, p, off); got != 0 || err != nil {
					t.Fatalf("ReadAt(4096 at %d) = %d, %v; want 0, nil", off, got, err)
				}
				h := f.NewHandle()
				got, err := h.ReadAt(ctx, p, off)
				h.Close()
				if got != 0 || err != nil {
					t.Fatalf("Handle.ReadAt(4096 at %d) = %d, %v; want 0, nil", off, got, err)
				}
			}
			if f.Size() != 5 {
				t.Fatalf("size %d after refused writes and truncates, want 5", f.Size())
			}

			// A write that straddles the maximum is refused whole (the
			// filesystem clips it first: see fs.handle.Write).
			if got, err := f.WriteAt(ctx, []byte("0123456789ABCDEF"), MaxFileSize-10); got != 0 || !errors.Is(err, ErrFileTooBig) {
				t.Fatalf("straddling WriteAt = %d, %v; want 0, ErrFileTooBig", got, err)
			}
			// Up to exactly the maximum is fine.
			if got, err := f.WriteAt(ctx, []byte("0123456789"), MaxFileSize-10); got != 10 || err != nil {
				t.Fatalf("WriteAt(10 bytes at max-10) = %d, %v", got, err)
			}
			if f.Size() != MaxFileSize {
				t.Fatalf("size %d, want %d", f.Size(), int64(MaxFileSize))
			}
			p := poisoned(4096)
			got, err := f.ReadAt(ctx, p, MaxFileSize-10)
			if got != 10 || err != nil || string(p[:got]) != "0123456789" {
				t.Fatalf("ReadAt(4096 at max-10) = %d, %v, %q", got, err, p[:got])
			}
			// The hole before it reads as zeros, page-aligned or not.
			p = poisoned(8192)
			got, err = f.ReadAt(ctx, p, MaxFileSize-8192)
			if got != 8192 || err != nil || !bytes.Equal(p[:8182], make([]byte, 8182)) || string(p[8182:]) != "0123456789" {
				t.Fatalf("ReadAt(8192 at max-8192) = %d, %v", got, err)
			}
			for _, off := range hugeOffsets {
				p := poisoned(4096)
				if got, err := f.ReadAt(ctx, p, off); got != 0 || err != nil {
					t.Fatalf("ReadAt(4096 at %d) of a file of the maximum size = %d, %v; want 0, nil", off, got, err)
				}
			}
			if err := f.Truncate(ctx, MaxFileSize+1); !errors.Is(err, ErrFileTooBig) {
				t.Fatalf("Truncate(max+1) = %v; want ErrFileTooBig", err)
			}
			if err := f.Truncate(ctx, MaxFileSize); err != nil {
				t.Fatalf("Truncate(max) = %v", err)
			}

			// Still usable: cut back, store, read back.
			if err := f.Truncate(ctx, 5); err != nil {
				t.Fatal(err)
			}
			if _, err := f.Sync(ctx, nil); err != nil {
				t.Fatal(err)
			}
			if got := readAll(t, ctx, v.reopen(ctx, "f")); string(got) != "hello" {
				t.Fatalf("stored %q, want %q", got, "hello")
			}
		})
	}
}

// TestBoundsShortReadAtEOF: a read running past EOF of a file whose size
// is not a multiple of the page or block size returns exactly the file's
// bytes, from dirty blocks and from the stored object.
func TestBoundsShortReadAtEOF(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			v := newEnv(t, stores()[0].new(t), m.keys, nil)
			ctx := testCtx(t)
			want := pattern(5000, 1)
			f := v.eng.Create("f", nil)
			if _, err := f.WriteAt(ctx, want, 0); err != nil {
				t.Fatal(err)
			}
			check := func(f *File, what string) {
				t.Helper()
				for _, off := range []int64{0, 4096, 4999, 5000, 8192} {
					p := poisoned(4096)
					got, err := f.ReadAt(ctx, p, off)
					wantN := int(max(0, min(4096, 5000-off)))
					if err != nil || got != wantN || !bytes.Equal(p[:got], want[min(off, 5000):min(off, 5000)+int64(wantN)]) {
						t.Fatalf("%s: ReadAt(4096 at %d) = %d, %v; want %d bytes of the file", what, off, got, err, wantN)
					}
				}
			}
			check(f, "dirty")
			if _, err := f.Sync(ctx, nil); err != nil {
				t.Fatal(err)
			}
			v.freshCache(t)
			check(v.reopen(ctx, "f"), "stored")
		})
	}
}

// TestBoundsObjectSize: an object too large for the engine's offset
// arithmetic (possible only on the local store, or by tampering) is
// refused at Open and in listings' PlainSize with ErrFileTooBig, instead
// of overflowing block offsets later.
func TestBoundsObjectSize(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			v := newEnv(t, stores()[0].new(t), m.keys, nil)
			ctx := testCtx(t)
			f := v.eng.Create("f", nil)
			if _, err := f.WriteAt(ctx, []byte("hello"), 0); err != nil {
				t.Fatal(err)
			}
			info, err := f.Sync(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, size := range []int64{maxObjectSize + 1, math.MaxInt64} {
				if _, err := v.eng.PlainSize(size); !errors.Is(err, ErrFileTooBig) {
					t.Errorf("PlainSize(%d) = %v; want ErrFileTooBig", size, err)
				}
				huge := info
				huge.Size = size
				if _, err := v.eng.Open(ctx, huge); !errors.Is(err, ErrFileTooBig) {
					t.Errorf("Open(object of %d bytes) = %v; want ErrFileTooBig", size, err)
				}
			}
			// Objects up to the bound still open (a plaintext vault may
			// hold large objects written by other tools).
			if n, err := v.eng.PlainSize(v.eng.ObjectSize(MaxFileSize)); err != nil || n != MaxFileSize {
				t.Errorf("PlainSize(ObjectSize(max)) = %d, %v", n, err)
			}
		})
	}
}
