package content

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cache"
)

// WriteAt writes p at off. The data is held (memory, then the encrypted
// spool) until Sync; a file written sequentially from empty streams to the
// store meanwhile. On error the count says how much was accepted; nothing
// accepted is lost. A write whose end would pass MaxFileSize is refused
// whole (ErrFileTooBig); a caller that wants POSIX's short count clips first.
func (f *File) WriteAt(ctx context.Context, p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("content: write %q at negative offset %d", f.Key(), off)
	}
	if len(p) == 0 {
		return 0, nil
	}
	if off > MaxFileSize-int64(len(p)) { // not off+len(p): that can overflow
		return 0, fmt.Errorf("content: write %q: %d bytes at %d would pass the maximum file size (%d): %w",
			f.Key(), len(p), off, int64(MaxFileSize), ErrFileTooBig)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	e := f.e

	f.mu.Lock()
	if err := f.lost; err != nil {
		f.mu.Unlock()
		return 0, err
	}
	appending := off == f.size
	if !appending {
		f.seqFromZero = false
	}
	streaming := f.st != nil
	f.mu.Unlock()
	if streaming && !appending {
		if err := f.endStream(ctx, "write out of sequence"); err != nil {
			return 0, err
		}
	}
	// A write blocked on a stalled streaming upload (backpressure) ends
	// with its context: the upload is cancelled, the data stays in dirty.
	// Not once blocks were dropped (past the replay window): cancelling
	// would lose them, so the write waits for the store, whose own
	// timeouts bound the wait.
	stop := context.AfterFunc(ctx, func() {
		f.mu.Lock()
		st := f.st
		dropped := st != nil && st.dropped
		f.mu.Unlock()
		if st != nil && !dropped {
			st.cancel()
		}
	})
	defer stop()

	written := 0
	for written < len(p) {
		pos := off + int64(written)
		i := uint64(pos / e.bs)
		bo := int64(i) * e.bs
		n := int(min(int64(len(p)-written), bo+e.bs-pos))
		if err := f.beforeBlockWrite(ctx, i, appending); err != nil {
			return written, err
		}
		if err := f.writeBlock(ctx, i, pos-bo, p[written:written+n]); err != nil {
			return written, err
		}
		written += n
	}
	return written, nil
}

// beforeBlockWrite runs before block i is written: it streams completed
// blocks and spills memory over the budget, so that a failure (a full spool
// disk) refuses the new write before any of it is applied.
func (f *File) beforeBlockWrite(ctx context.Context, i uint64, appending bool) error {
	f.mu.Lock()
	start := appending && f.st == nil && f.seqFromZero && i >= 1
	f.mu.Unlock()
	if start {
		if err := f.startStream(ctx); err != nil {
			f.e.log.Warn("streaming upload not started; the file is uploaded at sync", "key", f.Key(), "err", err)
			f.mu.Lock()
			f.seqFromZero = false
			f.mu.Unlock()
		}
	}
	for {
		f.mu.Lock()
		st := f.st
		if st == nil || st.next >= i {
			f.mu.Unlock()
			break
		}
		f.mu.Unlock()
		if err := f.pushBlock(st, st.next, false); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.spillLocked(i)
}

// spillLocked moves this file's in-memory dirty blocks (except block keep)
// to the spool while the engine is over its memory budget. f.mu held.
func (f *File) spillLocked(keep uint64) error {
	e := f.e
	for i, d := range f.dirty {
		if e.memDirty.Load() <= e.maxDirty {
			return nil
		}
		if i == keep || d.spilled {
			continue
		}
		if err := f.spillBlockLocked(i, d); err != nil {
			return err
		}
	}
	return nil
}

func (f *File) spillBlockLocked(i uint64, d *dblock) error {
	ref, err := f.e.spool.put(i, d.data)
	if err != nil {
		return fmt.Errorf("content: write %q: %w", f.key, err)
	}
	f.e.putBlockBuf(d.data)
	d.data, d.ref, d.spilled = nil, ref, true
	f.e.memDirty.Add(-f.e.bs)
	return nil
}

// dropLocked forgets dirty block i. f.mu held.
func (f *File) dropLocked(i uint64) {
	d := f.dirty[i]
	if d == nil {
		return
	}
	if d.spilled {
		f.e.spool.release(d.ref)
	} else {
		f.e.putBlockBuf(d.data)
		f.e.memDirty.Add(-f.e.bs)
	}
	delete(f.dirty, i)
}

// loadDirtyLocked returns dirty block i in memory, creating it (as empty,
// or from the base: baseNeeded) and bringing it back from the spool as
// needed; with baseNeeded a partial block gets its base bytes merged in.
// f.mu held; it is released around a base fetch, which is safe because wmu
// keeps other mutators out.
func (f *File) loadDirtyLocked(ctx context.Context, i uint64, baseNeeded bool) (*dblock, error) {
	e := f.e
	if d := f.dirty[i]; d != nil {
		if d.spilled {
			data, err := e.spool.get(d.ref, i)
			if err != nil {
				return nil, err
			}
			buf := append(e.getBlockBuf(), data...)
			e.spool.release(d.ref)
			d.data, d.spilled = buf, false
			e.memDirty.Add(e.bs)
		}
		if baseNeeded && d.partial() {
			base, err := f.baseBlockLocked(ctx, i)
			if err != nil {
				return nil, err
			}
			buf := append(e.getBlockBuf(), base...)
			buf = buf[:max(len(buf), len(d.data))]
			clear(buf[len(base):])
			d.written.apply(buf, d.data)
			e.putBlockBuf(d.data)
			d.data, d.written = buf, nil
		}
		return d, nil
	}
	buf := e.getBlockBuf()
	if baseNeeded {
		base, err := f.baseBlockLocked(ctx, i)
		if err != nil {
			e.putBlockBuf(buf)
			return nil, err
		}
		buf = append(buf, base...)
	}
	d := &dblock{data: buf}
	f.dirty[i] = d
	e.memDirty.Add(e.bs)
	return d, nil
}

// baseBlockLocked returns the base bytes of block i that are still file
// content (cut at baseValid; nil past it), fetched with f.mu released.
// The result is shared (cache): read only.
func (f *File) baseBlockLocked(ctx context.Context, i uint64) ([]byte, error) {
	bo := int64(i) * f.e.bs
	if bo >= f.baseValid {
		return nil, nil
	}
	f.mu.Unlock()
	v, err := f.baseSnapshot(ctx)
	var blocks map[uint64][]byte
	if err == nil {
		blocks, err = f.fetchBlocks(ctx, v, []uint64{i})
	}
	f.mu.Lock()
	if err != nil {
		return nil, err
	}
	data := blocks[i]
	return data[:min(int64(len(data)), max(f.baseValid-bo, 0))], nil
}

// writeBlock applies data at inOff of block i.
func (f *File) writeBlock(ctx context.Context, i uint64, inOff int64, data []byte) error {
	e := f.e
	f.mu.Lock()
	defer f.mu.Unlock()
	bo := int64(i) * e.bs
	end := inOff + int64(len(data))
	// Base bytes of this block the write does not cover are not fetched:
	// a new dirty block is partial (see extents) unless the cache has the
	// base block at hand.
	baseInBlock := min(e.bs, f.baseValid-bo)
	needBase := baseInBlock > 0 && (inOff > 0 || end < baseInBlock)
	var d *dblock
	if f.dirty[i] == nil && needBase && !f.baseCachedLocked(i) {
		d = &dblock{data: e.getBlockBuf(), written: extents{}}
		f.dirty[i] = d
		e.memDirty.Add(e.bs)
	} else {
		var err error
		if d, err = f.loadDirtyLocked(ctx, i, f.dirty[i] == nil && needBase); err != nil {
			return fmt.Errorf("content: write %q: %w", f.key, err)
		}
	}
	if int64(len(d.data)) < end {
		old := len(d.data)
		d.data = d.data[:end]
		clear(d.data[old:])
	}
	copy(d.data[inOff:], data)
	if d.partial() {
		if d.written = d.written.add(int(inOff), int(end)); d.written.covers(int(baseInBlock)) {
			d.written = nil // every base byte is overwritten
		}
	}
	f.size = max(f.size, bo+end)
	f.modified = true
	return nil
}

// Truncate sets the plaintext size. Shrinking cuts the new last block and
// forgets everything past it; growing leaves a hole that reads as zeros.
func (f *File) Truncate(ctx context.Context, size int64) error {
	if size < 0 {
		return fmt.Errorf("content: truncate %q to negative size %d", f.Key(), size)
	}
	if size > MaxFileSize {
		return fmt.Errorf("content: truncate %q to %d: over the maximum file size (%d): %w",
			f.Key(), size, int64(MaxFileSize), ErrFileTooBig)
	}
	f.wmu.Lock()
	defer f.wmu.Unlock()
	e := f.e
	f.mu.Lock()
	if f.lost != nil && size == 0 {
		// Nothing of the lost content remains: the file is usable again.
		f.lost = nil
		f.size, f.baseValid = 0, 0
		for i := range f.dirty {
			f.dropLocked(i)
		}
		f.modified, f.seqFromZero = true, true
		f.mu.Unlock()
		return nil
	}
	if err := f.lost; err != nil {
		f.mu.Unlock()
		return err
	}
	if size == f.size {
		f.mu.Unlock()
		return nil
	}
	streaming := f.st != nil
	f.mu.Unlock()
	if streaming {
		if err := f.endStream(ctx, "truncate"); err != nil {
			return err
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if size < f.size {
		if cut := size % e.bs; cut != 0 {
			i := uint64(size / e.bs)
			bo := int64(i) * e.bs
			if f.dirty[i] != nil || (bo < f.baseValid && f.baseValid > size) {
				d, err := f.loadDirtyLocked(ctx, i, true)
				if err != nil {
					return fmt.Errorf("content: truncate %q: %w", f.key, err)
				}
				d.data = d.data[:min(int64(len(d.data)), cut)]
			}
		}
		for i := range f.dirty {
			if int64(i)*e.bs >= size {
				f.dropLocked(i)
			}
		}
		f.baseValid = min(f.baseValid, size)
	}
	f.size = size
	f.modified = true
	f.seqFromZero = size == 0
	return nil
}

// stream is a streaming upload in progress (see File).
type stream struct {
	pw     *io.PipeWriter
	cancel context.CancelFunc
	done   chan struct{}
	next   uint64 // blocks below next are in the pipe
	// dropped: the blocks below next are no longer in dirty (the stream
	// went past the replay window); only the upload holds them. f.mu.
	dropped bool
	sealBuf []byte
	key     string
	meta    map[string]string
	codec   codec

	info backend.ObjectInfo // result of Put, set before done is closed
	err  error
}

var (
	errStreamAborted = errors.New("streaming upload aborted")
	errUploadEnded   = errors.New("upload ended")
)

// CreateExclusive makes the file's first upload conditional on its key
// being free (If-None-Match: *), for O_EXCL creates, mkdir-like entries and
// symlinks: if another writer (another mount) stored the key first, the
// upload fails with ErrExists and stores nothing.
func (f *File) CreateExclusive() {
	f.mu.Lock()
	f.excl = true
	f.mu.Unlock()
}

// put uploads a new version of the file's object from r (size unknown),
// conditionally while the file is an exclusive create not yet stored.
func (f *File) put(ctx context.Context, key string, r io.Reader, meta map[string]string) (backend.ObjectInfo, error) {
	f.mu.Lock()
	excl := f.excl
	f.mu.Unlock()
	if !excl {
		return f.e.store.Put(ctx, key, r, -1, meta)
	}
	info, err := f.e.store.PutWith(ctx, key, r, -1, backend.PutOptions{Metadata: meta, IfNoneMatch: "*"})
	if errors.Is(err, backend.ErrPreconditionFailed) {
		return info, fmt.Errorf("%w: %w", ErrExists, err)
	}
	if err == nil {
		f.mu.Lock()
		f.excl = false
		f.mu.Unlock()
	}
	return info, err
}

// startStream starts the background Put and sends the header. wmu held.
func (f *File) startStream(ctx context.Context) error {
	c, err := f.e.newCodec(f.Key())
	if err != nil {
		return err
	}
	meta, err := f.knownMeta(ctx)
	if err != nil {
		return err
	}
	e := f.e
	pr, pw := io.Pipe()
	sctx, cancel := context.WithCancel(e.ctx)
	f.mu.Lock()
	st := &stream{pw: pw, cancel: cancel, done: make(chan struct{}), key: f.key, meta: meta, codec: c}
	f.st = st
	f.mu.Unlock()
	go func() {
		defer cancel()
		info, err := f.put(sctx, st.key, pr, st.meta)
		// Unblock a writer still in pw.Write after the store gave up.
		pr.CloseWithError(errors.Join(err, errStreamAborted))
		st.info, st.err = info, err
		close(st.done)
	}()
	if h := c.header(); len(h) > 0 {
		if _, err := pw.Write(h); err != nil {
			f.failStream(st, err)
		}
	}
	return nil
}

// pushBlock seals block i of the stream into the pipe. Within the replay
// window (the first streamReplay bytes) the block stays in dirty, so a
// failed upload can be redone by a later Sync (rewrite mode). Past it,
// every block in the pipe leaves dirty: memory and spool stay bounded for
// any file size, and the upload is the only copy (backend/s3 retries each
// part itself; if the upload fails anyway, the file is lost: see lose).
// A spool read error refuses the block; a failed upload ends streaming.
// wmu held.
func (f *File) pushBlock(st *stream, i uint64, final bool) error {
	e := f.e
	f.mu.Lock()
	d := f.dirty[i]
	var plain []byte
	if d != nil {
		var err error
		if plain, err = f.dirtyData(i, d); err != nil {
			f.mu.Unlock()
			return err
		}
	}
	if n := e.blockLen(i, f.size); len(plain) != n {
		buf := make([]byte, n) // zeros past the data
		copy(buf, plain)
		plain = buf
	}
	// pw.Write returns only once the reader has copied everything, so one
	// buffer per stream serves every block.
	st.sealBuf = st.codec.seal(st.sealBuf[:0], plain, i, final)
	sealed := st.sealBuf
	if !final && int64(i+1)*e.bs > e.streamReplay {
		if !st.dropped {
			for j := range f.dirty {
				if j < i {
					f.dropLocked(j)
				}
			}
			st.dropped = true
		}
		// The sealed copy is made: the plaintext is not needed any more.
		f.dropLocked(i)
	}
	st.next = i + 1
	f.mu.Unlock()
	if _, err := st.pw.Write(sealed); err != nil {
		f.failStream(st, err)
	}
	return nil
}

// endStream ends a streaming upload before a mutation other than an
// append (wmu held): within the replay window it is aborted (nothing is
// stored, the data is all in dirty); past it, it is completed as it
// stands, since only the upload holds the dropped blocks, and the file
// continues in rewrite mode over the stored object.
func (f *File) endStream(ctx context.Context, why string) error {
	f.mu.Lock()
	st := f.st
	dropped := st != nil && st.dropped
	f.mu.Unlock()
	if st == nil {
		return nil
	}
	if !dropped {
		f.abortStream(why)
		return nil
	}
	if _, ok, _ := f.finishStream(context.WithoutCancel(ctx), st); !ok {
		f.mu.Lock()
		err := f.lost
		f.mu.Unlock()
		return err
	}
	f.e.log.Debug("streaming upload completed early", "key", st.key, "why", why)
	return nil
}

// lose records that a streamed upload failed after its blocks left memory:
// the data written is gone. Every later WriteAt, ReadAt, Truncate (except
// to 0, which starts afresh) and Sync returns the error (EIO for the
// filesystem); nothing is stored. f.mu held.
func (f *File) loseLocked(st *stream, err error) {
	if f.lost != nil {
		return
	}
	f.lost = fmt.Errorf("content: %q: the streaming upload failed after %d MiB had been handed to it "+
		"and no other copy is kept (replay window %d MiB); the data written is lost: %w",
		st.key, int64(st.next)*f.e.bs>>20, f.e.streamReplay>>20, err)
	f.modified = true
	f.e.log.Error("streaming upload failed; file content lost", "key", st.key, "err", err)
}

// failStream ends a stream whose upload failed; the data stays in dirty.
func (f *File) failStream(st *stream, err error) {
	st.cancel()
	<-st.done
	if st.err != nil {
		err = st.err
	}
	f.mu.Lock()
	if f.st == st {
		f.st = nil
		f.seqFromZero = false
	}
	if st.dropped {
		f.loseLocked(st, err)
		f.mu.Unlock()
		return
	}
	f.mu.Unlock()
	f.e.log.Warn("streaming upload failed; the file will be uploaded whole at sync", "key", st.key, "err", err)
}

// abortStream cancels a streaming upload (nothing is stored); the data
// stays in dirty and the file continues in rewrite mode. wmu held.
func (f *File) abortStream(why string) {
	f.mu.Lock()
	st := f.st
	f.st = nil
	f.seqFromZero = false
	f.mu.Unlock()
	if st == nil {
		return
	}
	st.pw.CloseWithError(errStreamAborted)
	st.cancel()
	<-st.done
	if st.dropped {
		f.mu.Lock()
		f.loseLocked(st, fmt.Errorf("%s: %w", why, errStreamAborted))
		f.mu.Unlock()
	}
	f.e.log.Debug("streaming upload aborted", "key", st.key, "why", why)
}

// Sync makes everything written so far durable in the store with the given
// user metadata (nil: keep the stored metadata) and returns the stored
// object's info. A clean file is not uploaded; if only the metadata differs
// it is replaced by a server-side copy. On failure the dirty data is kept,
// so a later Sync can succeed; the error wraps the store's error.
func (f *File) Sync(ctx context.Context, meta map[string]string) (backend.ObjectInfo, error) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	f.mu.Lock()
	st, modified, key, lost := f.st, f.modified, f.key, f.lost
	f.mu.Unlock()
	if lost != nil {
		return backend.ObjectInfo{}, fmt.Errorf("content: sync %q: %w", key, lost)
	}
	switch {
	case st != nil:
		info, ok, err := f.finishStream(ctx, st)
		if ok {
			f.mu.Lock()
			pin := f.pinMeta
			f.mu.Unlock()
			if !pin {
				meta = f.e.keepStreamMeta(info.Metadata, meta)
			}
			return f.syncMeta(ctx, info, meta)
		}
		f.mu.Lock()
		lost = f.lost
		f.mu.Unlock()
		if lost != nil {
			return backend.ObjectInfo{}, fmt.Errorf("content: sync %q: %w", key, lost)
		}
		if err != nil && ctx.Err() != nil {
			return backend.ObjectInfo{}, fmt.Errorf("content: sync %q: %w", key, err)
		}
		// The streamed upload failed; its data is all in dirty: fall
		// through to a whole upload, which reports its own error.
		f.e.log.Warn("streaming upload failed; uploading again", "key", key, "err", err)
	case !modified:
		return f.syncMeta(ctx, f.Info(), meta)
	}
	info, err := f.rewrite(ctx, meta)
	if err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("content: sync %q: %w", key, err)
	}
	return info, nil
}

// PinStreamMeta says whether the StreamKeepsMeta keys of the next Sync's
// metadata were set on purpose (true: an explicit utimes) and must be stored
// as given even if that costs a copy, or may keep a stream's values (false,
// the default).
func (f *File) PinStreamMeta(pin bool) {
	f.mu.Lock()
	f.pinMeta = pin
	f.mu.Unlock()
}

// keepStreamMeta returns meta with the StreamKeepsMeta keys as a finished
// stream stored them, so that differences in those keys alone cost no copy.
func (e *Engine) keepStreamMeta(stored, meta map[string]string) map[string]string {
	if meta == nil || len(e.keepMeta) == 0 {
		return meta
	}
	meta = maps.Clone(meta)
	for _, k := range e.keepMeta {
		if v, ok := stored[k]; ok {
			meta[k] = v
		} else {
			delete(meta, k)
		}
	}
	return meta
}

// syncMeta makes the stored object (clean, described by info) carry meta.
func (f *File) syncMeta(ctx context.Context, info backend.ObjectInfo, meta map[string]string) (backend.ObjectInfo, error) {
	if meta == nil {
		return info, nil
	}
	stored := info.Metadata
	if stored == nil {
		st, err := f.e.store.Stat(ctx, info.Key)
		if err != nil {
			return backend.ObjectInfo{}, fmt.Errorf("content: sync %q: %w", info.Key, err)
		}
		if st.ETag != info.ETag {
			return backend.ObjectInfo{}, fmt.Errorf("content: sync %q: replaced by someone else: %w",
				info.Key, backend.ErrPreconditionFailed)
		}
		stored = st.Metadata
	}
	if maps.Equal(stored, meta) {
		f.mu.Lock()
		f.meta = maps.Clone(stored)
		f.mu.Unlock()
		info.Metadata = maps.Clone(stored)
		return info, nil
	}
	ninfo, err := f.e.store.Copy(ctx, info.Key, info.Key, backend.CopyOptions{
		ReplaceMetadata: true, Metadata: meta, IfMatch: info.ETag,
	})
	if err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("content: sync %q metadata: %w", info.Key, err)
	}
	f.mu.Lock()
	if f.base.info.ETag == info.ETag {
		// Same bytes, new ETag: base.content keeps naming the bytes, so
		// the cached blocks stay in use.
		f.base.info = ninfo
		f.meta = maps.Clone(ninfo.Metadata)
		if f.meta == nil {
			f.meta = maps.Clone(meta)
		}
	}
	f.mu.Unlock()
	return ninfo, nil
}

// finishStream seals the tail as the final block, completes the upload and
// commits. ok false: the upload failed (err says why) and the file is now
// in rewrite mode with all data in dirty. wmu held.
func (f *File) finishStream(ctx context.Context, st *stream) (backend.ObjectInfo, bool, error) {
	stop := context.AfterFunc(ctx, st.cancel)
	defer stop()
	f.mu.Lock()
	count := f.e.blockCount(f.size)
	f.mu.Unlock()
	for i := st.next; i < count; i++ {
		if err := f.pushBlock(st, i, i == count-1); err != nil {
			f.abortStream("spool: " + err.Error())
			return backend.ObjectInfo{}, false, err
		}
		f.mu.Lock()
		alive := f.st == st
		f.mu.Unlock()
		if !alive {
			return backend.ObjectInfo{}, false, st.err
		}
	}
	st.pw.Close()
	<-st.done
	f.mu.Lock()
	f.st = nil
	f.seqFromZero = false
	if st.err != nil && st.dropped {
		f.loseLocked(st, st.err)
	}
	f.mu.Unlock()
	if st.err != nil {
		return backend.ObjectInfo{}, false, st.err
	}
	info := st.info
	if info.Metadata == nil {
		info.Metadata = st.meta
	}
	f.commit(info, st.codec)
	return info, true, nil
}

// knownMeta returns (a copy of) the stored object's metadata, asking the
// store if the file was opened from a listing, which carries none: an
// upload must not drop mode, owner and times kept there.
func (f *File) knownMeta(ctx context.Context) (map[string]string, error) {
	f.mu.Lock()
	meta, exists, key := maps.Clone(f.meta), f.base.exists, f.key
	f.mu.Unlock()
	if meta != nil || !exists {
		return meta, nil
	}
	st, err := f.e.store.Stat(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("metadata of %q: %w", key, err)
	}
	meta = st.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	f.mu.Lock()
	if f.meta == nil {
		f.meta = maps.Clone(meta)
	}
	f.mu.Unlock()
	return meta, nil
}

// rewrite uploads the whole file as a new object, a new version under a
// key of its own (Engine.newCodec): every block is sealed anew, those the
// file did not change too, after they were authenticated under the base
// version's key. So no block of an earlier version can authenticate in the
// new one, unchanged blocks do not show as unchanged ciphertext, and a
// tampered base block fails the sync (nothing is stored) instead of being
// carried into the new version. wmu held.
func (f *File) rewrite(ctx context.Context, meta map[string]string) (backend.ObjectInfo, error) {
	e := f.e
	c, err := e.newCodec(f.Key())
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	if meta == nil {
		if meta, err = f.knownMeta(ctx); err != nil {
			return backend.ObjectInfo{}, err
		}
	}
	f.mu.Lock()
	key, size, v, valid := f.key, f.size, f.base, f.baseValid
	f.mu.Unlock()
	if valid > 0 {
		if v, err = f.baseSnapshot(ctx); err != nil {
			return backend.ObjectInfo{}, err
		}
	}

	count := e.blockCount(size)
	// fromBase: block i is the base's block (its bytes below valid are
	// content; the rest of it, if any, is zeros), untouched or under a
	// partial block's written bytes.
	fromBase := func(i uint64) bool {
		f.mu.Lock()
		d := f.dirty[i]
		f.mu.Unlock()
		return (d == nil || d.partial()) && int64(i)*e.bs < valid
	}
	var cached []uint64 // base blocks the cache held: their plaintext moves to the new version

	pr, pw := io.Pipe()
	produced := make(chan error, 1)
	go func() {
		err := func() error {
			if _, err := pw.Write(c.header()); err != nil {
				return err
			}
			for i := uint64(0); i < count; {
				if fromBase(i) {
					j := i + 1
					for j < count && fromBase(j) && e.blockOff(j+1)-e.blockOff(i) <= maxResealRange {
						j++
					}
					hit, err := f.reseal(ctx, v, resealRange{i, j, valid, size, count}, c, pw)
					if err != nil {
						return err
					}
					cached = append(cached, hit...)
					i = j
					continue
				}
				plain, err := f.blockForUpload(ctx, v, valid, size, i)
				if err != nil {
					return err
				}
				if _, err := pw.Write(c.seal(nil, plain, i, i == count-1)); err != nil {
					return err
				}
				i++
			}
			return nil
		}()
		pw.CloseWithError(err)
		produced <- err
	}()
	info, err := f.put(ctx, key, pr, meta)
	pr.CloseWithError(errUploadEnded)
	if perr := <-produced; perr != nil && err != nil && !errors.Is(perr, errUploadEnded) {
		// The producer's error is the cause; the store only saw a broken body.
		return backend.ObjectInfo{}, perr
	}
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	if info.Metadata == nil {
		info.Metadata = meta
	}
	// Write-through: cached untouched blocks keep their plaintext under the
	// new version.
	for _, i := range cached {
		if b, ok := e.cache.Get(cache.Key{File: v.codec.cacheID(), Version: v.content, Block: i}); ok {
			e.cache.Set(cache.Key{File: c.cacheID(), Version: info.ETag, Block: i}, b)
		}
	}
	f.commit(info, c)
	return info, nil
}

// resealRange is a run [first, end) of untouched base blocks that a
// rewrite re-encrypts: base content below valid, a new file of size bytes
// and count blocks.
type resealRange struct {
	first, end  uint64
	valid, size int64
	count       uint64
}

// reseal writes base blocks r.first..r.end-1 to w, sealed with c: each is
// opened (authenticated) with the base's key, cut at r.valid, padded with
// zeros to its length in the new file, overlaid with a partial dirty
// block's written bytes, and sealed with the new version's position (the
// final flag may move). Blocks in the cache are taken from there (and
// returned, if unchanged, for write-through); the others come from one ranged
// GET per run, one sealed block at a time, not cached (a rewrite of a large
// file would otherwise flush the cache for blocks nobody asked to read).
func (f *File) reseal(ctx context.Context, v version, r resealRange, c codec, w io.Writer) (hits []uint64, err error) {
	e := f.e
	baseCount := e.blockCount(v.size)
	// w is a pipe: Write returns once the reader has taken everything, so
	// one plaintext and one sealed buffer serve every block.
	buf, out := make([]byte, e.bs), make([]byte, 0, e.bs+e.overhead)
	// put seals block i: the base's plaintext, cut at valid, under the
	// written bytes of a partial dirty block. changed: there was one.
	put := func(i uint64, plain []byte) (changed bool, err error) {
		b := buf[:e.blockLen(i, r.size)]
		copyBlock(b, plain[:min(int64(len(plain)), max(r.valid-int64(i)*e.bs, 0))], 0)
		f.mu.Lock()
		if d := f.dirty[i]; d != nil && d.partial() {
			var data []byte
			if data, err = f.dirtyData(i, d); err == nil {
				d.written.apply(b, data)
				changed = true
			}
		}
		f.mu.Unlock()
		if err != nil {
			return changed, err
		}
		out = c.seal(out[:0], b, i, i == r.count-1)
		_, err = w.Write(out)
		return changed, err
	}
	for i := r.first; i < r.end; {
		if b, ok := e.cache.Get(cache.Key{File: v.codec.cacheID(), Version: v.content, Block: i}); ok {
			changed, err := put(i, b)
			if err != nil {
				return hits, err
			}
			if !changed {
				hits = append(hits, i)
			}
			i++
			continue
		}
		j := i + 1
		for j < r.end {
			if _, ok := e.cache.Get(cache.Key{File: v.codec.cacheID(), Version: v.content, Block: j}); ok {
				break
			}
			j++
		}
		off, end := e.blockOff(i), min(e.blockOff(j), v.info.Size)
		rc, err := e.store.Get(ctx, v.info.Key, off, end-off, backend.GetOptions{IfMatch: v.info.ETag})
		if err != nil {
			return hits, fmt.Errorf("read blocks %d-%d of %q: %w", i, j-1, v.info.Key, err)
		}
		sealed := make([]byte, 0, e.bs+e.overhead)
		plain := make([]byte, 0, e.bs)
		for k := i; k < j; k++ {
			s := sealed[:min(e.bs+e.overhead, end-e.blockOff(k))]
			if _, err := io.ReadFull(rc, s); err != nil {
				rc.Close()
				return hits, fmt.Errorf("read block %d of %q: %w", k, v.info.Key, err)
			}
			p, err := v.codec.open(plain[:0], s, k, k == baseCount-1)
			if err != nil {
				rc.Close()
				e.logCorrupt(v.info.Key, v.info.ETag, int64(k), err)
				return hits, fmt.Errorf("read block %d of %q: %w", k, v.info.Key, err)
			}
			if _, err := put(k, p); err != nil {
				rc.Close()
				return hits, err
			}
		}
		rc.Close()
		i = j
	}
	return hits, nil
}

// blockForUpload returns the plaintext of block i (exact length under size)
// as a fresh buffer.
func (f *File) blockForUpload(ctx context.Context, v version, valid, size int64, i uint64) ([]byte, error) {
	e := f.e
	buf := make([]byte, e.blockLen(i, size))
	bo := int64(i) * e.bs
	f.mu.Lock()
	if d := f.dirty[i]; d != nil {
		data, err := f.dirtyData(i, d)
		if err == nil {
			copyBlock(buf, data, 0)
		}
		f.mu.Unlock()
		return buf, err
	}
	f.mu.Unlock()
	if bo >= valid {
		return buf, nil // hole
	}
	blocks, err := f.fetchBlocks(ctx, v, []uint64{i})
	if err != nil {
		return nil, err
	}
	data := blocks[i]
	copyBlock(buf, data[:min(int64(len(data)), valid-bo)], 0)
	return buf, nil
}

// commit makes info (written with codec c) the base: every dirty block is
// now stored. In-memory dirty blocks go to the cache under the new version
// (write-through). wmu held.
func (f *File) commit(info backend.ObjectInfo, c codec) {
	e := f.e
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, d := range f.dirty {
		if !d.spilled && !d.partial() {
			if n := e.blockLen(i, f.size); n > 0 || i == 0 {
				block := d.data
				if len(block) < n {
					block = append(block, make([]byte, n-len(block))...)
				}
				e.cache.Set(cache.Key{File: c.cacheID(), Version: info.ETag, Block: i}, block[:n])
			}
			d.data = nil
		}
		f.dropLocked(i)
	}
	f.clearReadyLocked()
	f.base = version{exists: true, info: info, size: f.size, codec: c, content: info.ETag}
	f.base.info.Key = f.key
	f.baseValid = f.size
	f.meta = maps.Clone(info.Metadata)
	f.modified = false
	f.seqFromZero = f.size == 0
}
