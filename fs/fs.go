// Package fs is the FUSE side of s3cryptfs: a go-fuse node tree that maps
// directories, files and symlinks onto the objects of a backend.Store.
//
// The mapping (docs/SEMANTICS.md has the user-facing version):
//   - a file "a/b/c" is the object "a/b/c", its content managed by
//     fs/content (encryption, cache, dirty data, uploads);
//   - a directory is a zero-length marker object "a/b/"; a prefix without a
//     marker (written by another tool) is a directory too;
//   - mode, uid, gid and mtime live in the object's user metadata, so
//     chmod/chown/utimes are a server-side copy, never a re-upload;
//   - a symlink is a small object with metadata type=symlink whose content
//     (encrypted like any file) is the target.
//
// This package owns the tree, attributes, errno mapping and the rules of
// when data becomes durable (close and fsync); it never touches bytes of
// content itself.
package fs

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs/content"
	"github.com/s3cryptfs/s3cryptfs/fs/names"
)

// ConfigKey is the vault config object at the store root. The mount hides it
// and refuses to create anything under that name at the root.
const ConfigKey = names.ConfigKey

// Options configure a mounted tree.
type Options struct {
	Store  backend.Store
	Engine *content.Engine
	// Keys encrypt the per-directory attribute indexes (see IndexRoot); they
	// must be the engine's. Nil with an encrypting engine disables the
	// indexes rather than store names in plaintext; nil with a plaintext
	// engine (--client-encryption=false) stores them as plaintext JSON.
	Keys *cipher.Keys
	// Names maps entries to object keys (fs/names); nil: plaintext names,
	// keys that mirror paths.
	Names *names.Layout
	// NoIndex disables the attribute indexes: listings on a fresh mount
	// then HEAD every entry.
	NoIndex bool
	// ReadOnly refuses every change with EROFS.
	ReadOnly bool
	// NoXattrs turns extended attributes off in the kernel (EOPNOTSUPP for
	// every xattr call, as before they were supported). With them on, the
	// kernel asks for security.capability before every write(2): one more
	// round trip through FUSE per write, answered from memory, which costs
	// daemon CPU on workloads of small writes.
	NoXattrs bool
	// UID and GID own objects that carry no ownership metadata (written by
	// other tools) and directories without a marker.
	UID, GID uint32
	// AttrTimeout is how long attributes fetched from the store are trusted,
	// by this package and by the kernel (entry and attribute timeouts).
	// 0 means one second; a negative value disables caching.
	AttrTimeout time.Duration
	// StatConcurrency bounds the parallel HEADs issued when a directory is
	// listed; 0 means 32.
	StatConcurrency int
	// MaxNameLen is the longest entry name accepted (ENAMETOOLONG beyond);
	// 0 means 255. The local store holds only 251 bytes per segment.
	MaxNameLen int
	// CopyConcurrency bounds the parallel server-side copies of a directory
	// rename; 0 means 16.
	CopyConcurrency int
	// WriteBack makes close(2) return before the upload (see writeback.go);
	// WriteBackParallel uploads run at once (0: 16) and close waits while
	// more than WriteBackMaxBytes are pending (0: 1 GiB).
	WriteBack         bool
	WriteBackParallel int
	WriteBackMaxBytes int64
	Logger            *slog.Logger
}

// FS is the state shared by every node of one mount.
type FS struct {
	store     backend.Store
	engine    *content.Engine
	ro        bool
	noXattrs  bool
	uid, gid  uint32
	ttl       time.Duration
	statPar   int
	copyPar   int
	maxName   int
	log       *slog.Logger
	mountTime time.Time

	names *names.Layout // the only builder of object keys
	paths keyPaths      // for log lines, with encrypted names

	badMu     sync.Mutex
	badLogged map[string]bool // keys of names that do not decrypt, logged once

	cache attrCache
	reval revalidator
	idx   *indexer
	inos  inoTable
	keys  *cipher.Keys // seal extended attributes; nil: plaintext mount (or none)

	openMu sync.Mutex
	open   map[*File]struct{} // files with content open (handles alive) or awaiting upload, for SyncAll

	wb *writeBack // nil: close waits for the upload
}

// NewRoot returns the root directory node of a tree over opts.Store, ready
// for gofs.Mount, and the FS shared by its nodes.
func NewRoot(opts Options) (*Dir, *FS, error) {
	if opts.Store == nil || opts.Engine == nil {
		return nil, nil, fmt.Errorf("fs: Store and Engine are required")
	}
	f := &FS{
		store:     opts.Store,
		engine:    opts.Engine,
		ro:        opts.ReadOnly,
		noXattrs:  opts.NoXattrs,
		uid:       opts.UID,
		gid:       opts.GID,
		ttl:       opts.AttrTimeout,
		statPar:   opts.StatConcurrency,
		copyPar:   opts.CopyConcurrency,
		maxName:   opts.MaxNameLen,
		log:       opts.Logger,
		mountTime: time.Now(),
		open:      map[*File]struct{}{},
		names:     opts.Names,
	}
	if f.names == nil {
		f.names = names.Plain()
	}
	if f.ttl == 0 {
		f.ttl = time.Second
	}
	if f.ttl < 0 {
		f.ttl = 0
	}
	if f.statPar <= 0 {
		f.statPar = 32
	}
	if f.maxName <= 0 || f.maxName > maxNameLen {
		f.maxName = maxNameLen
	}
	if f.copyPar <= 0 {
		f.copyPar = 16
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	f.cache.entries = map[string]cachedAttr{}
	f.idx = newIndexer(f, opts.Keys, opts.NoIndex)
	if opts.WriteBack {
		f.wb = newWriteBack(f, opts.WriteBackParallel, opts.WriteBackMaxBytes)
	}
	root := &Dir{fsys: f, loc: f.names.Root()}
	f.keys = opts.Keys
	root.attr = attr{kind: kindDir, mode: 0o755, uid: f.uid, gid: f.gid, mtime: f.mountTime, ino: 1}
	return root, f, nil
}

// MountOptions returns the go-fuse options matching this tree's timeouts.
// The caller adds mount-level settings (allow_other, read-only flags...).
func (f *FS) MountOptions() *gofs.Options {
	ttl := f.ttl
	neg := time.Duration(0)
	o := &gofs.Options{
		EntryTimeout:    &ttl,
		AttrTimeout:     &ttl,
		NegativeTimeout: &neg,
		// The root's inode number, as on most filesystems (ino.go).
		RootStableAttr: &gofs.StableAttr{Ino: 1},
		// Attributes are shown as stored. Without this go-fuse shows mode
		// 0000 as 0644 (0755 for directories); open(O_CREAT, 0) must make
		// a file nobody but root can open. go-fuse's UID/GID options are
		// not set for the same reason: they would show a file owned by
		// root as owned by the mounting user. Objects without an owner
		// get --uid/--gid from attrFromObject instead.
		NullPermissions: true,
	}
	// Reads answer with data in memory, never a file descriptor: with
	// splicing on, go-fuse still tried a splice for every READ (a pipe,
	// a write of the header into it, then the fallback to a plain write),
	// and for 1 MiB READs it also logged a failure each time, the reply
	// being larger than a pipe may grow.
	o.DisableSplice = true
	// go-fuse then answers every xattr request with ENOSYS, after which the
	// kernel sends none (see Options.NoXattrs).
	o.DisableXAttrs = f.noXattrs
	return o
}

// SyncAll makes every open file's data durable, for a clean shutdown
// (SIGTERM), after the write-back uploads under way, then writes the
// pending attribute indexes. It returns the first
// error and keeps going past it; an index that cannot be written is only
// logged, since it is a cache.
func (f *FS) SyncAll(ctx context.Context) error {
	if f.wb != nil {
		if err := f.wb.wait(ctx); err != nil {
			return err
		}
	}
	f.openMu.Lock()
	files := make([]*File, 0, len(f.open))
	for fl := range f.open {
		files = append(files, fl)
	}
	f.openMu.Unlock()
	var first error
	for _, fl := range files {
		if err := fl.sync(ctx); err != nil {
			f.log.Error("sync at shutdown failed", "object", fl.key(), "err", err)
			if first == nil {
				first = err
			}
		}
	}
	f.idx.flushAll(ctx)
	return first
}

func (f *FS) trackOpen(fl *File, open bool) {
	f.openMu.Lock()
	if open {
		f.open[fl] = struct{}{}
	} else {
		delete(f.open, fl)
	}
	f.openMu.Unlock()
}

// detach returns a context that ignores the kernel's interrupts. go-fuse
// cancels a request's context on any signal to the caller, including the Go
// runtime's preemption signal (SIGURG); a half-done upload or copy must not
// be abandoned for that, so store calls run to completion (the store's own
// timeouts and retries bound them).
func detach(ctx context.Context) context.Context {
	return context.WithoutCancel(ctx)
}

// reserved reports whether name may not be created in the directory with
// key prefix dirPrefix: the vault config and the index namespace at the
// root of a plaintext-name vault (with encrypted names the root's entries
// live under "d/", apart from both).
func reserved(dirPrefix, name string) bool {
	return dirPrefix == "" && (name == ConfigKey || name == IndexRoot)
}

// validName rejects names the object namespace cannot represent.
func validName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.Contains(name, "/")
}

// Name limits: a directory entry name, as on Linux filesystems, and an S3
// object key.
const (
	maxNameLen = 255
	maxKeyLen  = 1024
)

// checkNew vets name for a new entry in d and returns where it is stored:
// EPERM for the reserved root names, ENAMETOOLONG beyond the limits, EINVAL
// for names no key can hold.
func (d *Dir) checkNew(name string) (names.Entry, syscall.Errno) {
	loc := d.location()
	switch {
	case reserved(loc.Prefix, name):
		return names.Entry{}, syscall.EPERM
	case len(name) > d.fsys.maxName:
		return names.Entry{}, syscall.ENAMETOOLONG
	case !validName(name):
		return names.Entry{}, syscall.EINVAL
	}
	e, err := d.fsys.names.Entry(loc, name)
	if err != nil {
		return names.Entry{}, syscall.ENAMETOOLONG
	}
	return e, 0
}

// cachedAttr is an attribute fetched from the store, trusted until exp;
// seen is when the store last showed it (see renew).
type cachedAttr struct {
	a    attr
	exp  time.Time
	seen time.Time
}

// renewAfter: a listing may renew an entry only if the store showed it at
// least this long after the object's LastModified. A metadata-only copy
// keeps the ETag on S3, and LastModified counts whole seconds, so a copy
// in the same second as the write it follows would look like no change;
// an entry observed two seconds after that second cannot be followed by
// such a copy (allowing for a second of clock skew between us and the
// store).
const renewAfter = 2 * time.Second

// attrCache keeps attributes of keys seen by listings and lookups for the
// attribute TTL, so that the Lookup calls the kernel makes after a readdir
// cost no request. Keys are object keys; directories use their prefix
// ("a/b/").
type attrCache struct {
	mu      sync.Mutex
	entries map[string]cachedAttr
}

func (c *attrCache) get(key string) (attr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || time.Now().After(e.exp) {
		return attr{}, false
	}
	return e.a, true
}

// seen reports whether any of keys (a file's key, a directory's marker)
// has an entry, fresh or expired: the name existed lately, so a lookup of
// it is not a negative one to answer from a directory's known segments.
func (c *attrCache) seen(keys ...string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		if _, ok := c.entries[k]; ok {
			return true
		}
	}
	return false
}

// stale returns key's entry even if it has expired (see revalidated).
func (c *attrCache) stale(key string) (attr, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	return e.a, ok
}

// renew extends key's entry by ttl if it is a file or symlink whose object
// is the listed obj: same ETag, size and LastModified (to the second: HEAD
// reports whole seconds; S3 keeps the ETag of a metadata-only copy of a
// single-part object, so only LastModified tells such a copy apart), seen
// at least renewAfter after that LastModified. It works atomically, so a
// newer entry put meanwhile (a write stored a new version) is never
// replaced by the one a listing confirmed. listed is when the listing ran.
func (c *attrCache) renew(key string, obj *backend.ObjectInfo, listed time.Time, ttl time.Duration) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || ttl <= 0 || e.a.kind == kindDir {
		return false
	}
	i := e.a.info
	if i.ETag != obj.ETag || i.Size != obj.Size || i.LastModified.IsZero() ||
		i.LastModified.Unix() != obj.LastModified.Unix() ||
		e.seen.Sub(i.LastModified.Truncate(time.Second)) < renewAfter {
		return false
	}
	e.exp = time.Now().Add(ttl)
	e.seen = listed
	c.entries[key] = e
	return true
}

func (c *attrCache) put(key string, a attr, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) > 100000 {
		for k, e := range c.entries {
			if now.After(e.exp) {
				delete(c.entries, k)
			}
		}
	}
	c.entries[key] = cachedAttr{a: a, exp: now.Add(ttl), seen: now}
}

func (c *attrCache) del(keys ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, k := range keys {
		delete(c.entries, k)
	}
}

// delPrefix forgets every key under prefix (a renamed or removed directory).
func (c *attrCache) delPrefix(prefix string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.entries {
		if strings.HasPrefix(k, prefix) {
			delete(c.entries, k)
		}
	}
}
