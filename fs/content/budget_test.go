package content

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// budgetWatch records the highest readahead memory seen at any Get.
type budgetWatch struct {
	backend.Store
	eng  atomic.Pointer[Engine]
	peak atomic.Int64
}

func (w *budgetWatch) Get(ctx context.Context, key string, off, n int64, o backend.GetOptions) (io.ReadCloser, error) {
	if e := w.eng.Load(); e != nil {
		for {
			cur, p := e.raMem.Load(), w.peak.Load()
			if cur <= p || w.peak.CompareAndSwap(p, cur) {
				break
			}
		}
	}
	return w.Store.Get(ctx, key, off, n, o)
}

// TestReadaheadBudget: several handles reading several files sequentially
// at once never hold more readahead memory than the engine's bound, every
// byte read is right, and closing the handles gives all of it back (also
// for a reader that stopped halfway, whose prefetched blocks were never
// taken).
func TestReadaheadBudget(t *testing.T) {
	ctx := testCtx(t)
	w := &budgetWatch{Store: stores()[0].new(t)}
	v := newEnv(t, w, testKeys(t, 4096), func(o *Options) { o.Readahead = 1 << 20 })
	w.eng.Store(v.eng)
	const files, size = 4, 6 << 20
	data := make([][]byte, files)
	for k := range files {
		data[k] = pattern(size, 20+k)
		f := v.eng.Create(fmt.Sprint("f", k), nil)
		writeSeq(t, f, data[k], 1<<20)
		mustSync(t, f)
	}
	if v.eng.raMax <= 0 || v.eng.raMax > 2<<20+readaheadPar*minReadaheadChunk {
		t.Fatalf("readahead bound %d for a 1 MiB window", v.eng.raMax)
	}
	c2, err := cache.New(1 << 20) // far smaller than what is read: no help from the cache
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c2.Close)
	v.eng.cache = c2

	var wg sync.WaitGroup
	errs := make(chan error, files)
	for k := range files {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := v.reopen(ctx, fmt.Sprint("f", k))
			h := f.NewHandle()
			defer h.Close()
			stop := int64(size)
			if k == 0 {
				stop = size / 2 // stops halfway, readahead ahead of it
			}
			buf := make([]byte, 128<<10)
			for off := int64(0); off < stop; off += int64(len(buf)) {
				n, err := h.ReadAt(ctx, buf, off)
				if err != nil || !bytes.Equal(buf[:n], data[k][off:off+int64(n)]) {
					errs <- fmt.Errorf("file %d: read at %d: %v", k, off, err)
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
	if p := w.peak.Load(); p > v.eng.raMax {
		t.Fatalf("readahead held %d bytes, bound %d", p, v.eng.raMax)
	}
	if p := w.peak.Load(); p == 0 {
		t.Fatal("readahead never held anything: the test measured nothing")
	}
	if n := v.eng.raMem.Load(); n != 0 {
		t.Fatalf("%d bytes of readahead budget still held after every handle closed", n)
	}
}

// TestReadaheadReordered: a sequential reader whose reads arrive pairwise
// swapped (as the kernel's concurrent READs do) still gets readahead: far
// fewer GETs than reads, each byte fetched once.
func TestReadaheadReordered(t *testing.T) {
	ctx := testCtx(t)
	v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), func(o *Options) { o.Readahead = 2 << 20 })
	const size = 8 << 20
	data := pattern(size, 31)
	f := v.eng.Create("ro", nil)
	writeSeq(t, f, data, 1<<20)
	mustSync(t, f)
	v.freshCache(t)
	f = v.reopen(ctx, "ro")
	h := f.NewHandle()
	defer h.Close()
	const rs = 128 << 10
	g0, b0 := v.store.gets.Load(), v.store.getBytes.Load()
	reads := 0
	buf := make([]byte, rs)
	for pair := int64(0); pair < size; pair += 2 * rs {
		for _, off := range []int64{pair + rs, pair} {
			n, err := h.ReadAt(ctx, buf, off)
			if err != nil || !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
				t.Fatalf("read at %d: %v", off, err)
			}
			reads++
		}
	}
	h.wg.Wait()
	gets, fetched := v.store.gets.Load()-g0, v.store.getBytes.Load()-b0
	t.Logf("%d reads, %d GETs, %d bytes fetched", reads, gets, fetched)
	if gets > int64(reads/2) { // without readahead: one GET per read
		t.Fatalf("%d reordered sequential reads took %d GETs: no readahead", reads, gets)
	}
	if fetched > v.eng.ObjectSize(size) {
		t.Fatalf("fetched %d bytes of a %d-byte object", fetched, v.eng.ObjectSize(size))
	}
}

// trickle slows the bodies of Gets down (a sleep per 16 KiB), so that a
// readahead GET is still running while the reader takes its first blocks
// from the cache, as on a real network.
type trickle struct{ backend.Store }

func (s trickle) Get(ctx context.Context, key string, off, n int64, o backend.GetOptions) (io.ReadCloser, error) {
	rc, err := s.Store.Get(ctx, key, off, n, o)
	if err != nil {
		return nil, err
	}
	return &trickleReader{rc}, nil
}

type trickleReader struct{ io.ReadCloser }

func (r *trickleReader) Read(p []byte) (int, error) {
	time.Sleep(50 * time.Microsecond)
	return r.ReadCloser.Read(p[:min(len(p), 16<<10)])
}

// TestReadaheadWholeChunks: a sequential reader with a cache that admits
// every block gets its data in whole readahead chunks once the window is
// open: no GET smaller than a chunk except at the end of the file, each
// byte fetched once, and all readahead budget back after Close. Two
// defects once split the stream into 128 KiB GETs (about twice MinIO's CPU
// per byte read): topping up the window at every read, and prefetched
// blocks that the reader had already taken from the cache staying parked
// in ready, holding the budget.
func TestReadaheadWholeChunks(t *testing.T) {
	ctx := testCtx(t)
	const window = 8 << 20
	v := newEnv(t, trickle{stores()[0].new(t)}, testKeys(t, cipher.DefaultBlockSize), func(o *Options) { o.Readahead = window })
	const size = 64 << 20
	data := pattern(size, 41)
	f := v.eng.Create("seq", nil)
	writeSeq(t, f, data, 1<<20)
	mustSync(t, f)
	v.freshCacheOf(t, 2*size) // admits everything read
	f = v.reopenLogged(ctx, "seq")
	b0 := v.store.getBytes.Load()
	h := f.NewHandle()
	buf := make([]byte, 128<<10)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n, err := h.ReadAt(ctx, buf, off)
		if err != nil || !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
			t.Fatalf("read at %d: %v", off, err)
		}
		// A reader a little slower than the store: it finds the first
		// blocks of a running GET in the cache.
		time.Sleep(200 * time.Microsecond)
	}
	h.wg.Wait()
	// Everything was read: no prefetched block may still hold budget.
	if n := v.eng.raMem.Load(); n != 0 {
		t.Errorf("%d bytes of readahead budget held after the whole file was read (blocks parked that the reader already had)", n)
	}
	h.Close()
	chunk := readaheadChunk(window)
	objSize := v.eng.ObjectSize(size)
	sealedChunk := chunk / v.eng.bs * (v.eng.bs + v.eng.overhead)
	small := 0
	v.store.mu.Lock()
	gets := len(v.store.getLog)
	for _, g := range v.store.getLog {
		// Past the ramp-up of the window (two windows in) every GET is
		// a whole chunk, except the one that ends the object.
		if g[0] > 2*window && g[1] < sealedChunk && g[0]+g[1] < objSize {
			small++
		}
	}
	v.store.mu.Unlock()
	t.Logf("%d GETs, %d of them short of a %d-byte chunk past the ramp-up", gets, small, sealedChunk)
	if small > 0 {
		t.Errorf("%d GETs shorter than a readahead chunk in the middle of a sequential read", small)
	}
	if got := v.store.getBytes.Load() - b0; got > objSize {
		t.Errorf("fetched %d bytes of a %d-byte object", got, objSize)
	}
	if n := v.eng.raMem.Load(); n != 0 {
		t.Errorf("%d bytes of readahead budget still held after Close", n)
	}
}
