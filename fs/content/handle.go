package content

import (
	"context"
	"sync"

	"github.com/s3cryptfs/s3cryptfs/cache"
)

// Handle is one open file handle: it detects sequential reading and then
// fetches ahead of the reader, in parallel ranged GETs, into the cache and
// the File's ready set (bounded), where the read picks them up.
// Random access fetches only the blocks it touches.
type Handle struct {
	f      *File
	ctx    context.Context // readahead; cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{} // readahead GETs in flight

	closeOnce sync.Once

	mu      sync.Mutex
	lastEnd int64 // where the previous read ended; -1 before the first
	window  int64 // current readahead window; 0 = not sequential
	raEnd   int64 // readahead issued up to here
}

// NewHandle returns a handle on f. Close it when the file handle closes.
func (f *File) NewHandle() *Handle {
	ctx, cancel := context.WithCancel(f.e.ctx)
	f.mu.Lock()
	f.handles++
	f.mu.Unlock()
	return &Handle{f: f, ctx: ctx, cancel: cancel, sem: make(chan struct{}, readaheadPar), lastEnd: -1}
}

// ReadAt reads like File.ReadAt, with readahead for sequential readers.
func (h *Handle) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	// Past EOF there is nothing to read ahead, and skipping those reads
	// keeps readahead's sums (off+n+window) far from int64 overflow, since
	// sizes stay under maxObjectSize while offsets may reach 2^63-1.
	if off < h.f.Size() {
		h.readahead(off, int64(len(p)))
	}
	return h.f.ReadAt(ctx, p, off)
}

// Close stops this handle's readahead and waits for it. The last handle
// of a File also drops its unread prefetched blocks (they may still be in
// the cache): the File may be forgotten now, and with it the readahead
// budget those blocks hold.
func (h *Handle) Close() {
	h.closeOnce.Do(func() {
		h.cancel()
		h.wg.Wait()
		f := h.f
		f.mu.Lock()
		if f.handles--; f.handles == 0 {
			f.clearReadyLocked()
		}
		f.mu.Unlock()
	})
}

// seqSlack: a read starting up to this far (or the current window, if
// larger) past where the reads so far ended still counts as sequential, and
// one starting before that end does not reset the window. The kernel sends
// a sequential reader's READs several at a time (async readahead) and FUSE
// serves them concurrently, so they reach the handle slightly out of order;
// an exact match reset the window at every reordering.
const seqSlack = 1 << 20

// readahead grows the window while reads continue near where the previous
// ones ended (256 KiB, doubling up to Options.Readahead) and starts GETs of
// readaheadChunk(window) bytes for what lies ahead and was not requested
// yet, at most readaheadPar per handle and within the engine-wide
// readahead budget. The read itself then waits for blocks already in
// flight instead of fetching them again.
func (h *Handle) readahead(off, n int64) {
	e := h.f.e
	if e.readahead <= 0 || n <= 0 {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	slack := max(seqSlack, h.window)
	switch {
	case h.lastEnd < 0 || off < h.lastEnd-slack || off > h.lastEnd+slack:
		h.lastEnd, h.window, h.raEnd = off+n, 0, 0
		return
	case off < h.lastEnd:
		// A sibling READ arriving late, or a step back: neither proof
		// of a sequential reader nor of a random one. Keep the window.
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
	chunk := readaheadChunk(h.window)
	for start < target {
		end := min(start+chunk, target)
		if end-start < min(chunk, h.window) && end < limit {
			// Top up only by whole chunks: topping up the window at every
			// read issued GETs of a few blocks each, and a store pays per
			// request (MinIO: twice the CPU per byte for 1 MiB ranges as
			// for 4 MiB ones, more for smaller). A window still smaller
			// than a chunk (a reader that just started) is filled whole.
			return
		}
		select {
		case h.sem <- struct{}{}:
		default:
			return // enough in flight; the next read continues from raEnd
		}
		// Claim the blocks now, not in the goroutine: a read arriving
		// before the GET starts must find them in flight, not fetch them
		// a second time.
		v, runs, fls, covered := h.f.claimPrefetch(start, end)
		if len(runs) == 0 {
			<-h.sem
		} else {
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				defer func() { <-h.sem }()
				for k, r := range runs {
					h.f.doFetch(h.ctx, v, r[0], r[1], fls[k], true)
					if err := fls[k].err; err != nil && h.ctx.Err() == nil {
						e.log.Debug("readahead failed", "key", v.info.Key, "err", err)
					}
				}
			}()
		}
		if covered <= start {
			return // budget used up (or no header yet): continue at a later read
		}
		start = covered
		h.raEnd = covered
	}
}

// claimPrefetch registers as in flight the stored blocks covering
// [start, end) that are not dirty, prefetched, cached or in flight already,
// each holding one block of the engine's readahead budget, and returns the
// runs to GET and how far it got. It claims all of them or, when the budget
// cannot hold them all, none (covered = start): a partial claim would
// split the GET into small requests, each paying the store's per-request
// cost. Readahead needs the header read (Open does that); without it, it
// does nothing (covered = start).
func (f *File) claimPrefetch(start, end int64) (v version, runs [][2]uint64, fls []*fetch, covered int64) {
	e := f.e
	f.mu.Lock()
	defer f.mu.Unlock()
	v = f.base
	if !v.exists || v.codec == nil {
		return v, nil, nil, start
	}
	var idxs []uint64
	for i := uint64(start / e.bs); int64(i)*e.bs < min(end, f.baseValid); i++ {
		if f.dirty[i] != nil || f.inflight[fetchKey{v.info.ETag, i}] != nil {
			continue
		}
		if _, ok := f.ready[fetchKey{v.content, i}]; ok {
			continue
		}
		if _, ok := e.cache.Get(cache.Key{File: v.codec.cacheID(), Version: v.content, Block: i}); ok {
			continue
		}
		idxs = append(idxs, i)
	}
	if got := e.raAcquire(len(idxs)); got < len(idxs) {
		e.raRelease(got)
		return v, nil, nil, start
	}
	runs, fls = f.claimLocked(v, idxs)
	for _, fl := range fls {
		fl.prefetch = true
	}
	return v, runs, fls, end
}
