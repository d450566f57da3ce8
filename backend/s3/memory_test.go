package s3

import (
	"context"
	"io"
	"runtime"
	"runtime/debug"
	"sync"
	"testing"
	"time"
)

// genReader yields n bytes of a cheap, non-constant pattern, without
// holding them: a stand-in for a pipe.
type genReader struct {
	n, off int64
	block  []byte
}

func newGenReader(n int64) *genReader {
	return &genReader{n: n, block: randomBytes(42, 64<<10)}
}

func (g *genReader) Read(p []byte) (int, error) {
	if g.off >= g.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), g.n-g.off)]
	for i := 0; i < len(p); {
		c := copy(p[i:], g.block[(g.off+int64(i))%int64(len(g.block)):])
		i += c
	}
	g.off += int64(len(p))
	return len(p), nil
}

// heapSampler records the peak HeapInuse while it runs.
type heapSampler struct {
	stop chan struct{}
	wg   sync.WaitGroup
	peak uint64
}

func sampleHeap(every time.Duration) *heapSampler {
	h := &heapSampler{stop: make(chan struct{})}
	h.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			h.peak = max(h.peak, ms.HeapInuse)
			select {
			case <-h.stop:
				return
			case <-t.C:
			}
		}
	})
	return h
}

func (h *heapSampler) done() uint64 {
	close(h.stop)
	h.wg.Wait()
	return h.peak
}

// TestStreamedUploadMemory uploads 1 GiB from a generated stream and checks
// that the heap never grows by more than the parts in flight: Concurrency
// uploading plus one being filled, plus one of slack for the SDK's and the
// TLS layer's own buffers.
func TestStreamedUploadMemory(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	cfg := baseConfig(srv, bucket)
	cfg.PartSize, cfg.Concurrency = 8<<20, 4
	s := newStoreT(t, cfg)

	const size = 1 << 30
	// Collect garbage eagerly, so that HeapInuse tracks what the upload
	// holds rather than how lazily the collector runs: under -race
	// crypto/tls allocates per record, and at the default GOGC that
	// garbage alone would double the heap.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	runtime.GC()
	debug.FreeOSMemory()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapInuse

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	h := sampleHeap(10 * time.Millisecond)
	start := time.Now()
	oi, err := s.Put(ctx, "gib", newGenReader(size), -1, nil)
	elapsed := time.Since(start)
	peak := h.done()
	if err != nil {
		t.Fatalf("Put 1 GiB: %v", err)
	}
	if oi.Size != size {
		t.Fatalf("Put returned size %d", oi.Size)
	}
	st, err := s.Stat(ctx, "gib")
	if err != nil || st.Size != size {
		t.Fatalf("Stat = %+v, %v", st, err)
	}
	growth := int64(peak) - int64(base)
	bound := int64(cfg.Concurrency+2)*cfg.PartSize + 8<<20
	t.Logf("1 GiB streamed in %v (%.0f MB/s): heap in use grew by %.1f MiB at peak (base %.1f MiB); bound (%d+2)×%d MiB + 8 MiB = %d MiB",
		elapsed.Round(time.Millisecond), float64(size)/elapsed.Seconds()/1e6, float64(growth)/(1<<20), float64(base)/(1<<20),
		cfg.Concurrency, cfg.PartSize>>20, bound>>20)
	if growth > bound {
		t.Errorf("heap grew by %d MiB during the upload, more than %d MiB", growth>>20, bound>>20)
	}
	// The check must be able to fail: the parts in flight alone are
	// Concurrency+1 part buffers, so a sampler that saw nothing is broken.
	if growth < int64(cfg.PartSize) {
		t.Errorf("heap grew by only %d KiB: the sampler did not observe the upload", growth>>10)
	}
}
