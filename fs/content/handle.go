package content

import (
	"context"
	"sync"
)

// Handle is one open file handle: it detects sequential reading and then
// fetches ahead of the reader, in parallel ranged GETs, into the cache.
// Random access fetches only the blocks it touches.
type Handle struct {
	f      *File
	ctx    context.Context // readahead; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{} // readahead GETs in flight

	mu      sync.Mutex
	lastEnd int64 // where the previous read ended; -1 before the first
	window  int64 // current readahead window; 0 = not sequential
	raEnd   int64 // readahead issued up to here
}

// NewHandle returns a handle on f. Close it when the file handle closes.
func (f *File) NewHandle() *Handle {
	ctx, cancel := context.WithCancel(f.e.ctx)
	return &Handle{f: f, ctx: ctx, cancel: cancel, sem: make(chan struct{}, readaheadPar), lastEnd: -1}
}

// ReadAt reads like File.ReadAt, with readahead for sequential readers.
func (h *Handle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	h.readahead(off, int64(len(p)))
	return h.f.ReadAt(ctx, p, off)
}

// Close stops this handle's readahead and waits for it.
func (h *Handle) Close() {
	h.cancel()
	h.wg.Wait()
}

// readahead grows the window while reads continue where the previous one
// ended (256 KiB, doubling up to Options.Readahead) and starts GETs of up to
// readaheadChunk bytes for what lies ahead and was not requested yet. The
// read itself then waits for blocks already in flight instead of fetching
// them again.
func (h *Handle) readahead(off, n int64) {
	e := h.f.e
	if e.cache == nil || e.readahead <= 0 || n <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if off != h.lastEnd {
		h.lastEnd, h.window, h.raEnd = off+n, 0, 0
		return
	}
	h.lastEnd = off + n
	if h.window == 0 {
		h.window = min(int64(minReadahead), e.readahead)
	} else {
		h.window = min(2*h.window, e.readahead)
	}
	f := h.f
	f.mu.Lock()
	limit := min(f.size, f.baseValid) // only stored data is fetched
	f.mu.Unlock()
	start := max(h.raEnd, off+n)
	start -= start % e.bs // whole blocks; the part before start is already requested
	target := min(off+n+h.window, limit)
	for start < target {
		end := min(start+readaheadChunk, target)
		select {
		case h.sem <- struct{}{}:
		default:
			return // enough in flight; the next read continues from raEnd
		}
		h.wg.Add(1)
		go func(start, end int64) {
			defer h.wg.Done()
			defer func() { <-h.sem }()
			h.f.prefetch(h.ctx, start, end)
		}(start, end)
		start = end
		h.raEnd = end
	}
}

// prefetch fetches the stored blocks covering [start, end) that are not
// dirty, cached or in flight. Errors are left to the read that needs the
// data.
func (f *File) prefetch(ctx context.Context, start, end int64) {
	v, err := f.baseSnapshot(ctx)
	if err != nil {
		return
	}
	e := f.e
	var idxs []uint64
	f.mu.Lock()
	if f.base.info.ETag != v.info.ETag {
		f.mu.Unlock()
		return
	}
	for i := uint64(start / e.bs); int64(i)*e.bs < min(end, f.baseValid); i++ {
		if f.dirty[i] == nil {
			idxs = append(idxs, i)
		}
	}
	f.mu.Unlock()
	if len(idxs) == 0 {
		return
	}
	if _, err := f.fetchBlocks(ctx, v, idxs, false); err != nil && ctx.Err() == nil {
		e.log.Debug("readahead failed", "key", v.info.Key, "err", err)
	}
}
