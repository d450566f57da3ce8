package content

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cache/disk"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// File is the content state of one inode, shared by all its handles; safe
// for concurrent use.
//
// States (all guarded by mu; mutators are serialised by wmu):
//
//   - clean: no dirty blocks, size == base size; reads come from the cache
//     or ranged GETs of the base object (If-Match its ETag).
//   - dirty (rewrite mode): some blocks in dirty (in memory or spilled to
//     the spool), possibly a new size. Block i reads from dirty[i], else
//     from the base object if it lies below baseValid, else as zeros (a hole
//     or a grown tail). Sync uploads a whole new object: dirty blocks sealed
//     fresh, untouched full non-final blocks copied verbatim from the base.
//   - streaming: the file was empty (new, or truncated to 0) and has only
//     been appended to. A Put of the new object runs in the background
//     reading from a pipe; every completed block is sealed into the pipe
//     (blocks [0, st.next)); the tail is in dirty. While the stream is
//     within the replay window (Engine.streamReplay, 16 MiB) the blocks in
//     the pipe stay in dirty too, so a failed upload can be redone by a
//     later Sync (rewrite mode), and another mutation (write elsewhere,
//     truncate) aborts the upload (nothing is stored) and continues in
//     rewrite mode. Past the window (st.dropped) blocks leave dirty once
//     sealed: memory and spool stay bounded for any file size and each
//     block is sealed once. Then another mutation, or a read of a dropped
//     block, first completes the upload as it stands (rewrite mode over
//     the stored object follows), and a failed upload loses the file
//     (lost: every operation reports the error; Truncate to 0 starts
//     afresh). Sync seals the tail as final and waits for the Put.
//
// Invariants: a dirty block never holds bytes at or past size; a block that
// straddles baseValid with baseValid < base size is dirty (so base bytes
// past baseValid, cut by a truncate, are never read).
type File struct {
	e *Engine

	// wmu serialises WriteAt, Truncate and Sync; it may be held across I/O
	// (a sync's upload, backpressure of a streaming upload), so readers
	// never take it.
	wmu sync.Mutex
	// hmu serialises loads of the base object's header.
	hmu sync.Mutex

	mu   sync.Mutex // guards everything below; not held across network I/O
	key  string
	meta map[string]string // the stored object's metadata; nil = unknown
	// pinMeta: the caller set the StreamKeepsMeta keys on purpose (an
	// explicit utimes); a finished stream must store them as asked.
	pinMeta bool
	// excl: the file was created exclusively (O_EXCL) and has not been
	// stored yet: its first upload must not replace an object another
	// writer stored meanwhile (If-None-Match: *).
	excl      bool
	base      version // the stored object this state builds on
	baseValid int64   // base bytes below this are still file content
	size      int64
	dirty     map[uint64]*dblock
	modified  bool // content differs from base (or never stored)
	// seqFromZero: the file holds nothing but bytes appended from offset 0
	// since it was empty, so it may stream (see states above).
	seqFromZero bool
	st          *stream
	// lost: a streamed upload failed after its blocks had left dirty (see
	// pushBlock); the content is gone and every operation reports it.
	lost     error
	inflight map[fetchKey]*fetch
	moved    bool // SetKey ran; the next Refresh describes the copy

	// ready holds blocks fetched by readahead until a read takes them
	// (FIFO-bounded by readyLimit). Handing them over through the cache
	// alone fails exactly when it matters: a full TinyLFU cache refuses
	// new blocks seen only once, and the reader would GET them again.
	ready      map[fetchKey][]byte
	readyOrder []fetchKey
	readyBytes int64
	// consumed: blocks a reader already got from the cache while the
	// readahead GET that fetches them was still running; when that GET
	// completes they are not parked in ready, where nobody would take
	// them and they would hold readahead budget until evicted (which
	// starved readahead into 128 KiB reads once the cache admitted
	// blocks). Entries live only while their GET is in flight.
	consumed map[fetchKey]struct{}
	handles  int // open Handles; the last one to close clears ready
}

// readyLimit bounds the bytes a File keeps in ready (the engine-wide
// readahead budget bounds all Files together too).
func (e *Engine) readyLimit() int64 {
	return e.readaheadMem()
}

// keepReadyLocked adds prefetched blocks of content version cv and returns
// how many it added (each holds one block of readahead budget until taken
// or evicted). f.mu held.
func (f *File) keepReadyLocked(cv string, blocks map[uint64][]byte) int {
	if f.ready == nil {
		f.ready = make(map[fetchKey][]byte)
	}
	added := 0
	for i, b := range blocks {
		k := fetchKey{cv, i}
		if _, dup := f.ready[k]; dup {
			continue
		}
		if _, done := f.consumed[k]; done {
			continue
		}
		f.ready[k] = b
		f.readyOrder = append(f.readyOrder, k)
		f.readyBytes += int64(len(b))
		added++
	}
	for f.readyBytes > f.e.readyLimit() && len(f.readyOrder) > 0 {
		k := f.readyOrder[0]
		f.readyOrder = f.readyOrder[1:]
		if b, ok := f.ready[k]; ok {
			delete(f.ready, k)
			f.readyBytes -= int64(len(b))
			f.e.raRelease(1)
		}
	}
	if len(f.readyOrder) > 2*len(f.ready)+64 { // drop keys already taken
		order := f.readyOrder[:0:0]
		for _, k := range f.readyOrder {
			if _, ok := f.ready[k]; ok {
				order = append(order, k)
			}
		}
		f.readyOrder = order
	}
	return added
}

// takeReadyLocked removes and returns a prefetched block. f.mu held.
func (f *File) takeReadyLocked(cv string, i uint64) ([]byte, bool) {
	k := fetchKey{cv, i}
	b, ok := f.ready[k]
	if ok {
		delete(f.ready, k)
		f.readyBytes -= int64(len(b))
		f.e.raRelease(1)
	}
	return b, ok
}

// clearReadyLocked drops every prefetched block (the base changed). f.mu held.
func (f *File) clearReadyLocked() {
	f.e.raRelease(len(f.ready))
	f.ready, f.readyOrder, f.readyBytes = nil, nil, 0
}

// version is one stored object as the reader path needs it.
type version struct {
	exists bool
	info   backend.ObjectInfo
	size   int64 // plaintext size
	codec  codec // nil until the header was read (encrypted objects)
	// content names the bytes in cache keys: the ETag of the upload that
	// wrote them. A metadata-only Copy changes the ETag (If-Match uses the
	// new one) but not the bytes, so cached blocks stay valid.
	content string
}

// dblock is a dirty block: in memory (data != nil, cap = block size) or in
// the spool (data == nil). len(data) may be less than the block's length
// under the current size: the rest reads as zeros.
type dblock struct {
	data    []byte
	ref     spoolRef
	spilled bool
	// written is nil for a whole block. For a partial block (a write into
	// a stored block whose base bytes were not fetched) it lists the
	// ranges of data that were written; the rest of the block is the
	// base's (below baseValid) or zeros (see extents).
	written extents
}

// partial reports whether the block still needs its base bytes merged in.
func (d *dblock) partial() bool { return d.written != nil }

type fetchKey struct {
	etag  string
	block uint64
}

// fetch is one ranged GET in flight; readers of its blocks wait for it
// instead of issuing their own.
type fetch struct {
	done     chan struct{}
	blocks   map[uint64][]byte // set before done is closed
	err      error
	prefetch bool // a readahead GET: parks its blocks in ready
}

// Open returns the File of an existing object. info must carry Key, Size and
// ETag (as from Stat, List, Put or Copy). An encrypted object's header is
// read at once, together with its first block.
func (e *Engine) Open(ctx context.Context, info backend.ObjectInfo) (*File, error) {
	if info.Key == "" || info.ETag == "" {
		return nil, fmt.Errorf("content: open %q: object info without key or ETag", info.Key)
	}
	size, err := e.PlainSize(info.Size)
	if err != nil {
		e.logCorrupt(info.Key, info.ETag, -1, err)
		return nil, fmt.Errorf("content: open %q: %w", info.Key, err)
	}
	f := e.newFile(info.Key, info.Metadata)
	f.base = version{exists: true, info: info, size: size, content: info.ETag}
	f.baseValid, f.size = size, size
	f.seqFromZero = size == 0
	if e.keys == nil {
		f.base.codec = plainCodec{id: "p:" + info.Key}
		return f, nil
	}
	// The header and block 0 in one GET covers small files; with a disk
	// cache a larger file's block 0 may be on disk (known only once the
	// header names the version), so only the header is read.
	withBlock0 := e.disk == nil || e.blockCount(size) == 1
	if err := f.loadHeader(ctx, f.base, withBlock0); err != nil {
		return nil, err
	}
	return f, nil
}

// OpenChecks reports whether Open reads the object (with If-Match its
// ETag), so that it fails with backend.ErrPreconditionFailed or
// backend.ErrNotFound when info no longer describes the stored object:
// true with client-side encryption (Open reads the header). Then a caller
// that knows the object's info needs no Stat first to be sure it opens
// the current version.
func (e *Engine) OpenChecks() bool { return e.keys != nil }

// Create returns the File of a new, empty file, stored on its first Sync.
func (e *Engine) Create(key string, meta map[string]string) *File {
	f := e.newFile(key, maps.Clone(meta))
	f.modified = true
	f.seqFromZero = true
	return f
}

func (e *Engine) newFile(key string, meta map[string]string) *File {
	return &File{
		e:        e,
		key:      key,
		meta:     meta,
		dirty:    make(map[uint64]*dblock),
		inflight: make(map[fetchKey]*fetch),
	}
}

// Key returns the object key the file is stored under.
func (f *File) Key() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.key
}

// Moved records that the filesystem moved the object to key (it syncs
// dirty files first); copied is what the store reported for the copy, if
// known: a copy may carry a new ETag (multipart copies, local and mem
// stores), which the file adopts as the same bytes, since reads check it
// (If-Match). The one call a rename makes.
func (f *File) Moved(key string, copied *backend.ObjectInfo) {
	f.SetKey(key)
	if copied != nil {
		f.Refresh(*copied)
	}
}

// SetKey records that the filesystem renamed the object (it syncs dirty
// files first). Follow with Refresh(info of the copy): a copy may carry a
// new ETag, and reads check it (If-Match).
func (f *File) SetKey(key string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.key = key
	f.base.info.Key = key
	f.moved = f.base.exists
}

// Size returns the plaintext size, including unsynced writes.
func (f *File) Size() int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.size
}

// Dirty reports whether the file has changes not yet stored.
func (f *File) Dirty() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.modified
}

// Info returns the last known stored object; Key is the current key, and
// ETag is empty if the file was never stored.
func (f *File) Info() backend.ObjectInfo {
	f.mu.Lock()
	defer f.mu.Unlock()
	info := f.base.info
	info.Key = f.key
	info.Metadata = maps.Clone(f.meta)
	return info
}

// Refresh adopts a newer stored version seen by the filesystem (a Stat or
// List with another ETag); a non-empty info.Key is adopted too. Ignored
// while the file has unsynced changes or a mutation is running: the local
// state is the newer one then.
//
// Right after SetKey, Refresh(info of the rename's copy) is taken as the
// same bytes at a new address: adopted even while the file is dirty, and
// cached blocks stay valid.
func (f *File) Refresh(info backend.ObjectInfo) {
	if f.adoptMove(info) {
		return
	}
	if !f.wmu.TryLock() {
		return
	}
	defer f.wmu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	if info.Key != "" {
		f.key = info.Key
	}
	if f.modified || info.ETag == "" {
		return
	}
	if info.ETag == f.base.info.ETag {
		f.base.info.Key = f.key
		if info.Metadata != nil {
			f.meta = maps.Clone(info.Metadata)
		}
		return
	}
	size, err := f.e.PlainSize(info.Size)
	if err != nil {
		f.e.logCorrupt(info.Key, info.ETag, -1, err)
		size = 0
	}
	info.Key = f.key
	f.clearReadyLocked()
	f.base = version{exists: true, info: info, size: size, content: info.ETag}
	if f.e.keys == nil {
		f.base.codec = plainCodec{id: "p:" + f.key}
	}
	f.baseValid, f.size = size, size
	f.meta = maps.Clone(info.Metadata)
	f.seqFromZero = size == 0
}

// adoptMove applies Refresh after SetKey (see Refresh).
func (f *File) adoptMove(info backend.ObjectInfo) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.moved || (info.Key != "" && info.Key != f.key) {
		return false
	}
	f.moved = false
	if info.ETag == "" || info.Size != f.base.info.Size {
		return false // not the copy of our object: an ordinary Refresh
	}
	f.base.info.ETag = info.ETag
	f.base.info.LastModified = info.LastModified
	if info.Metadata != nil {
		f.base.info.Metadata = info.Metadata
		if !f.modified {
			f.meta = maps.Clone(info.Metadata)
		}
	}
	return true
}

// loadHeader reads v's header and installs its codec as the base codec if v
// is still the base. withBlock0 also fetches (and caches) the first block in
// the same GET, which covers whole small files.
func (f *File) loadHeader(ctx context.Context, v version, withBlock0 bool) error {
	e := f.e
	n := e.hdr
	if withBlock0 {
		n = e.blockOff(1)
	}
	rc, err := e.store.Get(ctx, v.info.Key, 0, n, backend.GetOptions{IfMatch: v.info.ETag})
	if err != nil {
		return fmt.Errorf("content: read header of %q: %w", v.info.Key, err)
	}
	// Exactly the bytes asked for, never what a server might send beyond.
	data := make([]byte, min(n, v.info.Size))
	got, err := io.ReadFull(rc, data)
	rc.Close()
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return fmt.Errorf("content: read header of %q: %w", v.info.Key, err)
	}
	data = data[:got]
	if int64(len(data)) < e.hdr {
		err := fmt.Errorf("content: header of %q: object too short: %w", v.info.Key, cipher.ErrCorrupt)
		e.logCorrupt(v.info.Key, v.info.ETag, -1, err)
		return err
	}
	fk, err := e.keys.OpenHeader(data[:e.hdr])
	if err != nil {
		if errors.Is(err, cipher.ErrCorrupt) {
			e.logCorrupt(v.info.Key, v.info.ETag, -1, err)
		}
		return fmt.Errorf("content: header of %q: %w", v.info.Key, err)
	}
	c := newCryptCodec(fk)
	if withBlock0 && int64(len(data)) == min(n, v.info.Size) {
		// Best effort: a bad block 0 is reported by the read that needs it.
		final := e.blockCount(v.size) == 1
		if plain, err := c.open(nil, data[e.hdr:], 0, final); err == nil {
			e.cache.Set(cache.Key{File: c.cacheID(), Version: v.content, Block: 0}, plain)
			e.cache.Wait() // the first read, right after Open, should find it
		}
	}
	f.mu.Lock()
	if f.base.info.ETag == v.info.ETag && f.base.codec == nil {
		f.base.codec = c
	}
	f.mu.Unlock()
	return nil
}

// baseSnapshot returns the base version with its codec loaded.
func (f *File) baseSnapshot(ctx context.Context) (version, error) {
	f.mu.Lock()
	v := f.base
	f.mu.Unlock()
	if !v.exists || v.codec != nil {
		return v, nil
	}
	f.hmu.Lock()
	defer f.hmu.Unlock()
	f.mu.Lock()
	v = f.base
	f.mu.Unlock()
	if v.codec != nil {
		return v, nil
	}
	if err := f.loadHeader(ctx, v, false); err != nil {
		return v, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.base.info.ETag != v.info.ETag {
		return v, fmt.Errorf("content: %q changed while reading its header: %w", v.info.Key, backend.ErrPreconditionFailed)
	}
	return f.base, nil
}

// ReadAt reads plaintext at off (short count at EOF, nil error).
func (f *File) ReadAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("content: read %q at negative offset %d", f.Key(), off)
	}
	for attempt := 0; ; attempt++ {
		n, etag, err := f.readOnce(ctx, p, off)
		if errors.Is(err, errInUpload) {
			// Blocks only the streaming upload holds: complete it, then
			// read them from the store.
			if err := f.completeStream(ctx); err != nil {
				return 0, err
			}
			continue
		}
		// Our own Sync may have replaced the object under a concurrent
		// read: retry on the new version. A replacement by anyone else is
		// reported.
		if err != nil && errors.Is(err, backend.ErrPreconditionFailed) && attempt < 3 {
			f.mu.Lock()
			changed := f.base.info.ETag != etag
			f.mu.Unlock()
			if changed {
				continue
			}
		}
		return n, err
	}
}

func (f *File) readOnce(ctx context.Context, p []byte, off int64) (int, string, error) {
	v, err := f.baseSnapshot(ctx)
	if err != nil {
		return 0, v.info.ETag, err
	}
	e := f.e
	f.mu.Lock()
	if f.base.info.ETag != v.info.ETag {
		// Replaced (by a Sync) since the snapshot: let the caller retry.
		f.mu.Unlock()
		return 0, v.info.ETag, fmt.Errorf("content: read %q: %w", v.info.Key, backend.ErrPreconditionFailed)
	}
	v = f.base
	if f.lost != nil {
		f.mu.Unlock()
		return 0, v.info.ETag, f.lost
	}
	if off >= f.size || len(p) == 0 {
		f.mu.Unlock()
		return 0, v.info.ETag, nil
	}
	// off < f.size here, so f.size-off cannot overflow; off+len(p) can (a
	// read near 2^63 once claimed len(p) bytes it never filled).
	end := f.size
	if int64(len(p)) < f.size-off {
		end = off + int64(len(p))
	}
	p = p[:end-off]
	valid := f.baseValid
	var need []uint64
	overlays := map[uint64]overlay{}
	for i := uint64(off / e.bs); int64(i)*e.bs < end; i++ {
		bo := int64(i) * e.bs
		seg := p[max(bo, off)-off : min(bo+e.bs, end)-off]
		inOff := max(off-bo, 0)
		if d := f.dirty[i]; d != nil {
			data, err := f.dirtyData(i, d)
			if err != nil {
				f.mu.Unlock()
				return 0, v.info.ETag, err
			}
			if d.partial() {
				// Merged with the base block below, as the block is now.
				overlays[i] = overlay{bytes.Clone(data), d.written}
				need = append(need, i)
				continue
			}
			copyBlock(seg, data, inOff)
		} else if bo < valid {
			need = append(need, i)
		} else if st := f.st; st != nil && st.dropped && i < st.next {
			f.mu.Unlock()
			return 0, v.info.ETag, errInUpload
		} else {
			clear(seg)
		}
	}
	f.mu.Unlock()
	if len(need) > 0 {
		blocks, err := f.fetchBlocks(ctx, v, need)
		if err != nil {
			return 0, v.info.ETag, err
		}
		for _, i := range need {
			bo := int64(i) * e.bs
			seg := p[max(bo, off)-off : min(bo+e.bs, end)-off]
			data := blocks[i]
			data = data[:min(int64(len(data)), max(valid-bo, 0))]
			if ov, ok := overlays[i]; ok {
				merged := make([]byte, max(len(data), len(ov.data)))
				copy(merged, data)
				ov.written.apply(merged, ov.data)
				data = merged
			}
			copyBlock(seg, data, max(off-bo, 0))
		}
	}
	return len(p), v.info.ETag, nil
}

// overlay is a copy of a partial dirty block taken by a read.
type overlay struct {
	data    []byte
	written extents
}

// errInUpload: a read needs blocks that only a streaming upload holds.
var errInUpload = errors.New("block held only by the streaming upload")

// completeStream completes a streaming upload past its replay window so
// that a reader can read back what it dropped (rare: reading a file while
// it is being written). Appends after that continue in rewrite mode. The
// upload is not cancelled with ctx: that would lose the data.
func (f *File) completeStream(ctx context.Context) error {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	st, lost := f.st, f.lost
	f.mu.Unlock()
	if lost != nil {
		return lost
	}
	if st == nil {
		return nil // completed meanwhile
	}
	if _, ok, err := f.finishStream(context.WithoutCancel(ctx), st); !ok {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.lost != nil {
			return f.lost
		}
		return fmt.Errorf("content: read %q: %w", st.key, err)
	}
	return nil
}

// copyBlock fills seg with block bytes from inOff on, zeros past the data.
func copyBlock(seg, data []byte, inOff int64) {
	n := 0
	if inOff < int64(len(data)) {
		n = copy(seg, data[inOff:])
	}
	clear(seg[n:])
}

// dirtyData returns a dirty block's bytes (f.mu held; the result may alias
// the block: copy before releasing mu).
func (f *File) dirtyData(i uint64, d *dblock) ([]byte, error) {
	if !d.spilled {
		return d.data, nil
	}
	return f.e.spool.get(d.ref, i)
}

// fetchBlocks returns the plaintext of base blocks idxs of version v: from
// the blocks readahead prefetched, the cache, a GET already in flight, or
// one new ranged GET per run of consecutive missing blocks. The returned
// slices are shared (cache, other readers): read only.
func (f *File) fetchBlocks(ctx context.Context, v version, idxs []uint64) (map[uint64][]byte, error) {
	e := f.e
	res := make(map[uint64][]byte, len(idxs))
	for attempt := 0; ; attempt++ {
		// Prefetched blocks first: taking them frees their memory even
		// when the cache has a copy too.
		f.mu.Lock()
		for _, i := range idxs {
			if b, ok := f.takeReadyLocked(v.content, i); ok {
				res[i] = b
			}
		}
		f.mu.Unlock()
		var missing, cached []uint64
		for _, i := range idxs {
			if _, ok := res[i]; ok {
				continue
			}
			if b, ok := e.cache.Get(cache.Key{File: v.codec.cacheID(), Version: v.content, Block: i}); ok {
				res[i] = b
				cached = append(cached, i)
				continue
			}
			missing = append(missing, i)
		}
		if len(cached) > 0 {
			f.mu.Lock()
			f.consumeLocked(v, cached)
			f.mu.Unlock()
		}
		if len(missing) == 0 {
			return res, nil
		}
		waits := make(map[uint64]*fetch)
		f.mu.Lock()
		var claim []uint64
		for _, i := range missing {
			if b, ok := f.takeReadyLocked(v.content, i); ok {
				res[i] = b
			} else if fl := f.inflight[fetchKey{v.info.ETag, i}]; fl != nil {
				waits[i] = fl
			} else {
				claim = append(claim, i)
			}
		}
		runs, mine := f.claimLocked(v, claim)
		f.mu.Unlock()
		var firstErr error
		for k, r := range runs {
			f.doFetch(ctx, v, r[0], r[1], mine[k], false)
			if mine[k].err != nil && firstErr == nil {
				firstErr = mine[k].err
			}
			maps.Copy(res, mine[k].blocks)
		}
		if firstErr != nil {
			return nil, firstErr
		}
		retry := false
		for i, fl := range waits {
			select {
			case <-fl.done:
			case <-ctx.Done():
				return nil, fmt.Errorf("content: read %q: %w", v.info.Key, ctx.Err())
			}
			if fl.err != nil {
				// Another reader's cancelled fetch is not our failure.
				if ctx.Err() == nil && attempt < 3 &&
					(errors.Is(fl.err, context.Canceled) || errors.Is(fl.err, context.DeadlineExceeded)) {
					retry = true
					continue
				}
				return nil, fl.err
			}
			if b, ok := fl.blocks[i]; ok {
				res[i] = b
			} else {
				retry = true
			}
		}
		f.mu.Lock()
		for i := range waits {
			// A readahead fetch also parked the block in ready: taken.
			if _, ok := res[i]; ok {
				f.takeReadyLocked(v.content, i)
			}
		}
		f.mu.Unlock()
		if !retry {
			return res, nil
		}
	}
}

// consumeLocked notes that a reader got blocks idxs of v from the cache: a
// prefetched copy is dropped now, or, with the GET still running, when it
// completes (see consumed). f.mu held.
func (f *File) consumeLocked(v version, idxs []uint64) {
	for _, i := range idxs {
		if _, ok := f.takeReadyLocked(v.content, i); ok {
			continue
		}
		if fl := f.inflight[fetchKey{v.info.ETag, i}]; fl != nil && fl.prefetch {
			if f.consumed == nil {
				f.consumed = make(map[fetchKey]struct{})
			}
			f.consumed[fetchKey{v.content, i}] = struct{}{}
		}
	}
}

// claimLocked registers one fetch per run of consecutive indexes in idxs
// (sorted) as in flight. f.mu held.
func (f *File) claimLocked(v version, idxs []uint64) (runs [][2]uint64, fls []*fetch) {
	for _, i := range idxs {
		if n := len(runs); n > 0 && runs[n-1][1]+1 == i {
			runs[n-1][1] = i
		} else {
			runs = append(runs, [2]uint64{i, i})
			fls = append(fls, &fetch{done: make(chan struct{}), blocks: make(map[uint64][]byte)})
		}
		f.inflight[fetchKey{v.info.ETag, i}] = fls[len(fls)-1]
	}
	return runs, fls
}

// doFetch GETs blocks [first, last] of v, opens them, caches them and
// completes fl; keep (readahead, which reserved one block of readahead
// budget for each) also holds them in ready for the reader.
func (f *File) doFetch(ctx context.Context, v version, first, last uint64, fl *fetch, keep bool) {
	e := f.e
	fl.err = f.getBlocks(ctx, v, first, last, fl.blocks)
	// Make the blocks visible in the cache before the in-flight entry
	// goes, so a reader arriving now does not GET them again.
	e.cache.Wait()
	f.mu.Lock()
	if keep {
		kept := 0
		if fl.err == nil && f.base.content == v.content {
			kept = f.keepReadyLocked(v.content, fl.blocks)
		}
		e.raRelease(int(last-first+1) - kept)
	}
	for i := first; i <= last; i++ {
		if f.inflight[fetchKey{v.info.ETag, i}] == fl {
			delete(f.inflight, fetchKey{v.info.ETag, i})
		}
		delete(f.consumed, fetchKey{v.content, i})
	}
	f.mu.Unlock()
	close(fl.done)
}

// getBlocks fetches, opens and caches blocks [first, last] of v: from the
// disk cache where it holds them, else by one ranged GET per run of blocks
// it does not.
func (f *File) getBlocks(ctx context.Context, v version, first, last uint64, out map[uint64][]byte) error {
	e := f.e
	obj := e.diskObject(v)
	if obj == "" {
		return f.getRange(ctx, v, "", first, last, out)
	}
	for i := first; i <= last; {
		if f.readDisk(v, obj, i, out) {
			i++
			continue
		}
		j := i
		for j < last && !e.disk.Has(disk.Key{Object: obj, Block: j + 1}) {
			j++
		}
		if err := f.getRange(ctx, v, obj, i, j, out); err != nil {
			return err
		}
		i = j + 1
	}
	return nil
}

// readDisk takes block i of v from the disk cache, authenticated like a
// block from the store. An entry that fails (torn by a crash, damaged,
// tampered with) is logged and removed, and the caller fetches the block
// from the store, which replaces it.
func (f *File) readDisk(v version, obj string, i uint64, out map[uint64][]byte) bool {
	e := f.e
	k := disk.Key{Object: obj, Block: i}
	want := min(e.bs+e.overhead, v.info.Size-e.blockOff(i))
	bp, _ := e.sealedBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer e.sealedBufs.Put(bp)
	sealed, ok := e.disk.Get(k, (*bp)[:0])
	if !ok {
		return false
	}
	*bp = sealed
	var plain []byte
	var err error
	if int64(len(sealed)) == want {
		plain, err = v.codec.open(make([]byte, 0, len(sealed)-int(e.overhead)), sealed, i, i == e.blockCount(v.size)-1)
	} else {
		err = fmt.Errorf("%d bytes, want %d: %w", len(sealed), want, cipher.ErrCorrupt)
	}
	if err != nil {
		e.disk.Remove(k)
		e.log.Warn("disk cache: entry failed authentication; removed, fetching the block from the store",
			"key", v.info.Key, "block", i, "etag", v.info.ETag, "err", err)
		return false
	}
	e.cache.Set(cache.Key{File: v.codec.cacheID(), Version: v.content, Block: i}, plain)
	out[i] = plain
	return true
}

// getRange GETs blocks [first, last] of v, opens and caches them, and hands
// each one that authenticates to the disk cache under obj (if not "").
func (f *File) getRange(ctx context.Context, v version, obj string, first, last uint64, out map[uint64][]byte) error {
	e := f.e
	off := e.blockOff(first)
	end := min(e.blockOff(last+1), v.info.Size)
	if e.log.Enabled(ctx, slog.LevelDebug) {
		e.log.Debug("get blocks", "key", v.info.Key, "first", first, "last", last, "bytes", end-off)
	}
	rc, err := e.store.Get(ctx, v.info.Key, off, end-off, backend.GetOptions{IfMatch: v.info.ETag})
	if err != nil {
		return fmt.Errorf("content: read %q blocks %d-%d: %w", v.info.Key, first, last, err)
	}
	defer rc.Close()
	count := e.blockCount(v.size)
	sealed := e.bs + e.overhead
	// One sealed block at a time: a GET of many blocks needs one block of
	// buffer, not its whole range, and the first blocks are opened while
	// the rest is still arriving.
	buf := make([]byte, min(sealed, end-off))
	for i := first; i <= last; i++ {
		s := buf[:min(sealed, end-e.blockOff(i))]
		if obj != "" {
			s = e.disk.Buffer(len(s)) // handed to the disk cache below
		}
		if _, err := io.ReadFull(rc, s); err != nil {
			return fmt.Errorf("content: read %q blocks %d-%d: %w", v.info.Key, first, last, err)
		}
		// Exactly the plaintext's capacity: a 64 KiB block sized like its
		// sealed form (64 KiB + 28) takes a 72 KiB allocation, and a full
		// cache then held 12.5% more heap than its byte budget, which
		// pushed the heap against the mount's soft memory limit.
		plain, err := v.codec.open(make([]byte, 0, len(s)-int(e.overhead)), s, i, i == count-1)
		if err != nil {
			e.logCorrupt(v.info.Key, v.info.ETag, int64(i), err)
			return fmt.Errorf("content: read %q block %d: %w", v.info.Key, i, err)
		}
		e.cache.Set(cache.Key{File: v.codec.cacheID(), Version: v.content, Block: i}, plain)
		out[i] = plain
		if obj != "" {
			e.disk.Put(disk.Key{Object: obj, Block: i}, s)
		}
	}
	return nil
}

// baseCachedLocked reports whether base block i is at hand (cache or
// readahead), so that merging it into a write costs no request. f.mu held.
func (f *File) baseCachedLocked(i uint64) bool {
	v := f.base
	if !v.exists || v.codec == nil {
		return false
	}
	if _, ok := f.ready[fetchKey{v.content, i}]; ok {
		return true
	}
	_, ok := f.e.cache.Get(cache.Key{File: v.codec.cacheID(), Version: v.content, Block: i})
	return ok
}
