package content

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cache"
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
