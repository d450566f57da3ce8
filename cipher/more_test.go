package cipher

import (
	"bytes"
	"errors"
	"io"
	mrand "math/rand/v2"
	"strings"
	"sync"
	"testing"
)

// TestCipherRangeMatchesBruteForce compares CipherRange with a block-by-block
// computation for random ranges and sizes.
func TestCipherRangeMatchesBruteForce(t *testing.T) {
	l := NewLayout(tB)
	rng := mrand.New(mrand.NewPCG(3, 4))
	for range 20000 {
		size := rng.Int64N(6 * tB)
		off := rng.Int64N(size + 2)
		n := rng.Int64N(3*tB) - 2
		cOff, cLen, first, last := l.CipherRange(off, n, size)
		end := min(off+n, size)
		if end <= off {
			if cLen != 0 {
				t.Fatalf("CipherRange(%d, %d, %d): empty range with length %d", off, n, size, cLen)
			}
			continue
		}
		// Brute force: the union of the sealed extents of the blocks
		// that hold any byte of [off, end).
		var bFirst, bLast uint64
		found := false
		nblocks := l.BlockCount(size)
		for i := uint64(0); i < nblocks; i++ {
			ps, pe := int64(i)*tB, min(int64(i+1)*tB, size)
			if ps < end && pe > off {
				if !found {
					bFirst, found = i, true
				}
				bLast = i
			}
		}
		wantOff := tH + int64(bFirst)*tS
		lastEnd := tH + int64(bLast)*tS + min(int64(tB), size-int64(bLast)*tB) + BlockOverhead
		if first != bFirst || last != bLast || cOff != wantOff || cOff+cLen != lastEnd {
			t.Fatalf("CipherRange(%d, %d, %d) = (%d, %d, %d, %d), brute force (%d, %d, %d, %d)",
				off, n, size, cOff, cLen, first, last, wantOff, lastEnd-wantOff, bFirst, bLast)
		}
	}
}

func TestSealOpenDoNotAllocate(t *testing.T) {
	k := testKeys(t, DefaultBlockSize)
	fk, _ := k.NewFile()
	plain := pattern(DefaultBlockSize, 1)
	buf := make([]byte, 0, DefaultBlockSize+BlockOverhead)
	out := make([]byte, 0, DefaultBlockSize)
	if a := testing.AllocsPerRun(20, func() { buf = fk.Seal(buf[:0], plain, 1, false) }); a != 0 {
		t.Errorf("Seal into a large enough buffer: %v allocations", a)
	}
	if a := testing.AllocsPerRun(20, func() {
		var err error
		if out, err = fk.Open(out[:0], buf, 1, false); err != nil {
			t.Fatal(err)
		}
	}); a != 0 {
		t.Errorf("Open into a large enough buffer: %v allocations", a)
	}
}

// TestConcurrentUse exercises the "safe for concurrent use" promises of
// Keys, FileKey and Reader under the race detector.
func TestConcurrentUse(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	plain := pattern(10*MinBlockSize+3, 4)
	obj := writeAll(t, k, plain, 5000)
	r, err := NewReader(bytes.NewReader(obj), int64(len(obj)), k)
	if err != nil {
		t.Fatal(err)
	}
	fk := r.FileKey()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(g), 9))
			for range 50 {
				off := rng.Int64N(int64(len(plain)))
				p := make([]byte, rng.IntN(3*MinBlockSize))
				n, err := r.ReadAt(p, off)
				if err != nil && err != io.EOF {
					errs <- err
					return
				}
				if !bytes.Equal(p[:n], plain[off:off+int64(n)]) {
					errs <- errors.New("concurrent ReadAt returned wrong data")
					return
				}
				s := fk.Seal(nil, plain[:MinBlockSize], 3, false)
				if _, err := fk.Open(nil, s, 3, false); err != nil {
					errs <- err
					return
				}
				nf, err := k.NewFile()
				if err == nil {
					_, err = k.OpenHeader(nf.Header())
				}
				if err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

type failWriter struct {
	n   int // bytes accepted before failing
	got int
}

var errDisk = errors.New("disk full")

func (w *failWriter) Write(p []byte) (int, error) {
	if w.got+len(p) > w.n {
		return 0, errDisk
	}
	w.got += len(p)
	return len(p), nil
}

func TestWriterErrors(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	if _, err := NewWriter(&failWriter{n: 10}, k); !errors.Is(err, errDisk) {
		t.Fatalf("NewWriter with failing header write: %v", err)
	}
	w, err := NewWriter(&failWriter{n: HeaderSize + MinBlockSize}, k)
	if err != nil {
		t.Fatal(err)
	}
	// The first full block is held back until more data comes, then fails.
	if _, err := w.Write(pattern(MinBlockSize, 1)); err != nil {
		t.Fatalf("first block: %v", err)
	}
	if _, err := w.Write([]byte{1}); !errors.Is(err, errDisk) {
		t.Fatalf("write that flushes a block into a failing writer: %v", err)
	}
	if _, err := w.Write([]byte{1}); !errors.Is(err, errDisk) {
		t.Fatalf("error is not sticky: %v", err)
	}
	if err := w.Close(); !errors.Is(err, errDisk) {
		t.Fatalf("Close after a failed write: %v", err)
	}

	var buf bytes.Buffer
	w, _ = NewWriter(&buf, k)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Write([]byte{1}); err == nil {
		t.Fatal("Write after Close succeeded")
	}
	if int64(buf.Len()) != k.Layout().PlainSizeToCipherSize(0) {
		t.Fatalf("empty stream is %d bytes", buf.Len())
	}
}

// shortReaderAt returns fewer bytes than asked past a limit.
type shortReaderAt struct {
	r     io.ReaderAt
	limit int64
}

func (s shortReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > s.limit {
		n, _ := s.r.ReadAt(p[:max(0, s.limit-off)], off)
		return n, io.EOF
	}
	return s.r.ReadAt(p, off)
}

func TestReaderErrors(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	plain := pattern(3*MinBlockSize, 5)
	obj := writeAll(t, k, plain, MinBlockSize)
	r, err := NewReader(bytes.NewReader(obj), int64(len(obj)), k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.ReadAt(make([]byte, 1), -1); err == nil {
		t.Fatal("negative offset accepted")
	}
	if n, err := r.ReadAt(make([]byte, 1), r.Size()); n != 0 || err != io.EOF {
		t.Fatalf("read at EOF: %d, %v", n, err)
	}
	// The object shrank under us after NewReader: a clear error, no panic.
	sr := shortReaderAt{bytes.NewReader(obj), int64(len(obj)) - 100}
	r2, err := NewReader(sr, int64(len(obj)), k)
	if err == nil || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("NewReader over a short object: %v, %v", r2, err)
	}
	sr = shortReaderAt{bytes.NewReader(obj), int64(HeaderSize) + 10}
	if _, err := NewReader(sr, int64(len(obj)), k); err == nil {
		t.Fatal("NewReader over a short object succeeded")
	}
	// A corrupt middle block shows up in ReadAt, with its index.
	mut := bytes.Clone(obj)
	mut[k.Layout().BlockIndexToCipherOff(1)+40] ^= 1
	r3, err := NewReader(bytes.NewReader(mut), int64(len(mut)), k)
	if err != nil {
		t.Fatalf("NewReader checks only header and final block: %v", err)
	}
	n, err := r3.ReadAt(make([]byte, len(plain)), 0)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "block 1") || n != MinBlockSize {
		t.Fatalf("ReadAt over a corrupt block 1: n=%d err=%v", n, err)
	}
}

func TestParseConfigUnknownVersion(t *testing.T) {
	c, _ := newTestConfig(t, ConfigOptions{}, testPass)
	data := c.Marshal()
	data[9] = 3 // versions 1 and 2 exist
	_, err := parseConfig(data, true)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "unsupported version 3") {
		t.Fatalf("version 3: %v", err)
	}
}
