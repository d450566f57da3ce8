package fs

import (
	"context"
	"errors"
	"maps"
	"strconv"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/fs/content"
)

// File is a regular file. While it has open handles it holds one
// content.File shared by all of them, so every handle of this mount sees
// the others' writes; the last release drops it.
type File struct {
	gofs.Inode
	attrs // attrs.mu also guards the fields below
	fsys  *FS

	cf        *content.File
	opens     int
	metaDirty bool   // attr has changes the stored object lacks
	metaGen   uint64 // bumped on every attr change, so a sync only clears what it stored
	mtimeSet  bool   // mtime was set by utimes since the last write: store it as given
	deleted   bool   // unlinked or replaced: never store again
	// lastETag is the version the kernel's page cache holds, so an
	// unchanged object can be reopened with FOPEN_KEEP_CACHE.
	lastETag string

	// syncMu serializes uploads with the operations that move or remove
	// the object (rename, unlink, truncate), so a sync never lands on a key
	// that was just renamed away or deleted.
	syncMu sync.Mutex
}

func (fl *File) nodeKind() kind { return kindFile }

func (fl *File) refresh(a attr) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.cf == nil {
		fl.attr = a
		fl.fetched = time.Now()
	}
}

// openAttr returns the live attributes of an open file (size including
// unsynced writes) and whether the file is open and not deleted.
func (fl *File) openAttr() (attr, bool) {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.cf == nil || fl.deleted {
		return attr{}, false
	}
	a := fl.attr
	a.size = fl.cf.Size()
	return a, true
}

func (fl *File) markDeleted() {
	fl.mu.Lock()
	fl.deleted = true
	fl.mu.Unlock()
}

// key is the object key: the open content's key, else the tree path.
func (fl *File) key() string {
	fl.mu.Lock()
	cf := fl.cf
	fl.mu.Unlock()
	if cf != nil {
		return cf.Key()
	}
	return keyOf(&fl.Inode)
}

// sync makes the file's data and attributes durable.
func (fl *File) sync(ctx context.Context) error {
	fl.syncMu.Lock()
	defer fl.syncMu.Unlock()
	return fl.syncLocked(ctx)
}

// syncLocked is sync with syncMu held. It uploads only when there is
// something the store lacks: dirty data, changed attributes, or a file
// created here and never stored.
func (fl *File) syncLocked(ctx context.Context) error {
	fl.mu.Lock()
	cf := fl.cf
	if !fl.needsSyncLocked() {
		fl.mu.Unlock()
		return nil
	}
	a, gen, pin := fl.attr, fl.metaGen, fl.mtimeSet
	fl.mu.Unlock()
	meta := a.meta()
	cf.PinStreamMeta(pin)
	info, err := cf.Sync(detach(ctx), meta)
	if err != nil {
		return err
	}
	fl.stored(info, gen, meta)
	return nil
}

// needsSyncLocked reports whether the store lacks something of the file:
// dirty data, changed attributes, or the object itself. fl.mu held.
func (fl *File) needsSyncLocked() bool {
	cf := fl.cf
	return cf != nil && !fl.deleted && (fl.metaDirty || cf.Dirty() || fl.attr.info.Key == "")
}

// dropIfIdle lets the content go once no handle is open and nothing is
// left to upload (after a write-back upload; release does it otherwise).
func (fl *File) dropIfIdle() {
	fl.mu.Lock()
	defer fl.mu.Unlock()
	if fl.opens == 0 && fl.cf != nil && !fl.needsSyncLocked() {
		fl.cf = nil
		fl.metaDirty = false
		fl.fsys.trackOpen(fl, false)
	}
}

// stored records a successful upload or metadata copy that stored the
// user metadata meta.
func (fl *File) stored(info backend.ObjectInfo, gen uint64, meta map[string]string) {
	fl.mu.Lock()
	if fl.metaGen == gen {
		fl.metaDirty = false
		// A streamed upload may have kept the mtime it started with
		// (StreamKeepsMeta): show what is stored, as a remount would.
		if v, ok := info.Metadata[metaMtime]; ok && v != meta[metaMtime] {
			if ns, err := strconv.ParseInt(v, 10, 64); err == nil {
				fl.attr.mtime = time.Unix(0, ns)
				meta = maps.Clone(meta)
				meta[metaMtime] = v
			}
		}
	}
	fl.attr.info = info
	if fl.cf != nil {
		fl.attr.size = fl.cf.Size()
	}
	fl.lastETag = info.ETag
	fl.fetched = time.Now()
	a := fl.attr
	fl.mu.Unlock()
	fl.fsys.cache.put(info.Key, a, fl.fsys.ttl)
	fl.fsys.idx.stored(info.Key, info, meta)
}

// touch records a data change: mtime moves to now.
func (fl *File) touch() {
	fl.mu.Lock()
	fl.attr.mtime = time.Now()
	fl.mtimeSet = false
	fl.metaDirty = true
	fl.metaGen++
	fl.mu.Unlock()
}

// Open attaches a handle, opening the content on first use. When no handle
// is open the object is always checked against the store (close-to-open
// consistency): with client-side encryption by the header GET that opening
// needs anyway, sent If-Match the ETag of the attributes we hold (a HEAD
// follows only when that fails: the object changed or went); without, by
// a HEAD. The kernel keeps its page cache only if the ETag is the one it
// cached.
func (fl *File) Open(ctx context.Context, flags uint32) (gofs.FileHandle, uint32, syscall.Errno) {
	f := fl.fsys
	write := flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0
	if write && f.ro {
		return nil, 0, syscall.EROFS
	}
	ctx = detach(ctx)
	fl.mu.Lock()
	if fl.deleted {
		fl.mu.Unlock()
		return nil, 0, syscall.ENOENT
	}
	keep := true
	if fl.cf == nil {
		key := keyOf(&fl.Inode)
		info, cf, headed, err := fl.openCurrent(ctx, key)
		if err != nil {
			fl.mu.Unlock()
			return nil, 0, f.errno("open", key, err)
		}
		keep = info.ETag == fl.lastETag
		fl.lastETag = info.ETag
		fl.attr = f.attrFromObject(info, false)
		if headed {
			// Only a HEAD read the metadata now; the If-Match GET
			// confirmed the content, not a metadata-only copy that kept
			// the ETag, so the attributes keep their age.
			fl.fetched = time.Now()
		}
		fl.cf = cf
		fl.metaDirty = false
		fl.mtimeSet = false
		f.trackOpen(fl, true)
	}
	fl.opens++
	cf := fl.cf
	fl.mu.Unlock()
	h := fl.newHandle(flags)
	if flags&syscall.O_TRUNC != 0 && cf.Size() != 0 {
		if err := cf.Truncate(ctx, 0); err != nil {
			h.Release(ctx)
			return nil, 0, f.errno("open", cf.Key(), err)
		}
		fl.touch()
		keep = false
	}
	var fuseFlags uint32
	if keep {
		fuseFlags |= fuse.FOPEN_KEEP_CACHE
	}
	return h, fuseFlags, 0
}

// openCurrent opens the content of the object stored under key as it is
// now (see Open); headed says whether it HEADed the object. fl.mu held.
func (fl *File) openCurrent(ctx context.Context, key string) (info backend.ObjectInfo, cf *content.File, headed bool, err error) {
	f := fl.fsys
	if known := fl.attr.info; f.engine.OpenChecks() && known.Key == key && known.ETag != "" {
		cf, err := f.engine.Open(ctx, known)
		if err == nil {
			return known, cf, false, nil
		}
		if !errors.Is(err, backend.ErrPreconditionFailed) && !errors.Is(err, backend.ErrNotFound) {
			return known, nil, false, err
		}
		// Replaced or removed since we learnt of it: ask the store.
	}
	if info, err = f.store.Stat(ctx, key); err != nil {
		return info, nil, true, err
	}
	cf, err = f.engine.Open(ctx, info)
	return info, cf, true, err
}

// release drops one handle; the last one syncs what is left (Flush has
// normally done it already) and frees the content.
func (fl *File) release(ctx context.Context) {
	fl.mu.Lock()
	fl.opens--
	last := fl.opens == 0
	fl.mu.Unlock()
	if !last {
		return
	}
	if fl.fsys.wb != nil && fl.fsys.wb.has(fl) {
		return // the upload lets the content go when it is done (dropIfIdle)
	}
	if err := fl.sync(ctx); err != nil {
		fl.fsys.log.Error("sync at release failed: unsynced data dropped", "object", fl.key(), "err", err)
	}
	fl.mu.Lock()
	if fl.opens == 0 && fl.cf != nil {
		fl.cf = nil
		fl.metaDirty = false
		fl.fsys.trackOpen(fl, false)
	}
	fl.mu.Unlock()
}

// Getattr answers from the open content (size includes unsynced writes) or
// from attributes at most one TTL old.
func (fl *File) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := fl.fsys
	fl.mu.Lock()
	if fl.cf != nil {
		a := fl.attr
		a.size = fl.cf.Size()
		deleted := fl.deleted
		fl.mu.Unlock()
		a.fill(&out.Attr)
		if deleted {
			out.Nlink = 0 // unlinked or replaced while open: no name left, as on a local filesystem
		}
		out.SetTimeout(f.ttl)
		return 0
	}
	stale := !fl.deleted && time.Since(fl.fetched) >= f.ttl
	fl.mu.Unlock()
	if stale {
		key := keyOf(&fl.Inode)
		info, err := f.store.Stat(detach(ctx), key)
		switch {
		case err == nil:
			fl.refresh(f.attrFromObject(info, false))
		case errors.Is(err, backend.ErrNotFound):
			return syscall.ENOENT
		default:
			return f.errno("getattr", key, err)
		}
	}
	fl.get().fill(&out.Attr)
	out.SetTimeout(f.ttl)
	return 0
}

// Setattr handles truncate, chmod, chown and utimes. Attribute changes are
// a server-side metadata copy; on a file with unsynced data they are only
// recorded and go out with the next sync. A truncate of a file that is not
// open rewrites it at once.
func (fl *File) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := fl.fsys
	if f.ro {
		return syscall.EROFS
	}
	size, hasSize := in.GetSize()
	if hasSize && size > content.MaxFileSize {
		// Before anything is changed: as on ext4, the whole call fails.
		// (A size over 2^63 would also turn negative as an int64.)
		return syscall.EFBIG
	}
	ctx = detach(ctx)
	fl.syncMu.Lock()
	defer fl.syncMu.Unlock()

	fl.mu.Lock()
	a := fl.attr
	metaChanged := setattrMeta(&a, in)
	if _, ok := in.GetMTime(); ok {
		fl.mtimeSet = true
	} else if hasSize {
		a.mtime = time.Now()
		fl.mtimeSet = false
	}
	fl.attr = a
	fl.metaGen++
	cf := fl.cf
	if cf != nil {
		fl.metaDirty = true
	}
	gen, deleted := fl.metaGen, fl.deleted
	fl.mu.Unlock()

	key := keyOf(&fl.Inode)
	if cf != nil {
		key = cf.Key()
	}
	switch {
	case hasSize:
		tmp := cf == nil
		if tmp {
			info, err := f.store.Stat(ctx, key)
			if err != nil {
				return f.errno("truncate", key, err)
			}
			if cf, err = f.engine.Open(ctx, info); err != nil {
				return f.errno("truncate", key, err)
			}
		}
		if err := cf.Truncate(ctx, int64(size)); err != nil {
			return f.errno("truncate", key, err)
		}
		if tmp && !deleted {
			info, err := cf.Sync(ctx, a.meta())
			if err != nil {
				return f.errno("truncate", key, err)
			}
			a.size = cf.Size()
			a.info = info
			fl.refresh(a)
			f.cache.put(key, a, f.ttl)
			f.idx.stored(key, info, a.meta())
		}
	case metaChanged && !deleted:
		if cf != nil {
			if !cf.Dirty() && a.info.Key != "" {
				meta := a.meta()
				info, err := cf.Sync(ctx, meta)
				if err != nil {
					return f.errno("setattr", key, err)
				}
				fl.stored(info, gen, meta)
			}
			break
		}
		info, err := f.store.Copy(ctx, key, key, backend.CopyOptions{ReplaceMetadata: true, Metadata: a.meta()})
		if err != nil {
			return f.errno("setattr", key, err)
		}
		a.info = info
		fl.refresh(a)
		f.cache.put(key, a, f.ttl)
		f.idx.stored(key, info, a.meta())
	}
	if oa, open := fl.openAttr(); open {
		a = oa
	} else {
		a = fl.get()
	}
	a.fill(&out.Attr)
	out.Ino = fl.StableAttr().Ino // go-fuse leaves it 0 in SETATTR replies, and the kernel shows it
	out.SetTimeout(f.ttl)
	return 0
}

// handle is one open file descriptor.
type handle struct {
	fl     *File
	cf     *content.File
	h      *content.Handle
	append bool
	once   sync.Once
}

func (fl *File) newHandle(flags uint32) *handle {
	fl.mu.Lock()
	cf := fl.cf
	fl.mu.Unlock()
	return &handle{fl: fl, cf: cf, h: cf.NewHandle(), append: flags&syscall.O_APPEND != 0}
}

// Read reads through the handle (its own sequential detection and
// readahead). It returns exactly the n bytes ReadAt filled: dest is a
// buffer go-fuse reuses across requests (and users, on an --allow-other
// mount), so any byte of it past n is someone else's data. Past EOF n is 0.
func (h *handle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	n, err := h.h.ReadAt(detach(ctx), dest, off)
	if err != nil {
		return nil, h.fl.fsys.errno("read", h.cf.Key(), err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Write writes into the shared content; O_APPEND always writes at the end
// as the content sees it, whatever offset the kernel computed.
func (h *handle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if h.fl.fsys.ro {
		return 0, syscall.EROFS
	}
	if h.append {
		off = h.cf.Size()
	}
	// FUSE cannot tell the kernel our maximum file size (it lets offsets
	// reach 2^63-1), so it is enforced here as ext4 enforces its own: a
	// write starting at or past the maximum fails with EFBIG, one that
	// straddles it writes what fits and returns the short count.
	if off >= content.MaxFileSize {
		return 0, syscall.EFBIG
	}
	if room := content.MaxFileSize - off; int64(len(data)) > room {
		data = data[:room]
	}
	n, err := h.cf.WriteAt(detach(ctx), data, off)
	if n > 0 {
		h.fl.touch()
	}
	if err != nil {
		return uint32(n), h.fl.fsys.errno("write", h.cf.Key(), err)
	}
	return uint32(n), 0
}

// Flush runs at every close(2): it returns only once the data is durable
// in the store, and reports a failed upload as EIO. With write-back it
// queues the upload and returns (see writeback.go).
func (h *handle) Flush(ctx context.Context) syscall.Errno {
	if wb := h.fl.fsys.wb; wb != nil {
		h.fl.mu.Lock()
		need := h.fl.needsSyncLocked()
		h.fl.mu.Unlock()
		if need {
			wb.schedule(h.fl, h.cf.Size())
		}
		return 0
	}
	if err := h.fl.sync(ctx); err != nil {
		return h.fl.fsys.errno("flush", h.cf.Key(), err)
	}
	return 0
}

// Fsync makes the data durable in the store.
func (h *handle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	if err := h.fl.sync(ctx); err != nil {
		return h.fl.fsys.errno("fsync", h.cf.Key(), err)
	}
	return 0
}

// Release drops the handle.
func (h *handle) Release(ctx context.Context) syscall.Errno {
	h.once.Do(func() {
		h.h.Close()
		h.fl.release(ctx)
	})
	return 0
}

// Getattr on a handle is the node's.
func (h *handle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	return h.fl.Getattr(ctx, h, out)
}
