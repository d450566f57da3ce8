package fs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs/names"
)

// IndexRoot is the hidden namespace at the store root that holds the
// per-directory attribute indexes: the index of directory "a/b/" is the
// object ".s3cryptfs.idx/a/b/_", the root's is ".s3cryptfs.idx/_". Like
// ConfigKey, the name is hidden from the root listing and refused for new
// entries at the root.
//
// Why an index: mode, owner, mtime and the symlink type live in object user
// metadata, which a listing does not return, so a directory listed on a
// fresh mount would cost one HEAD per entry. The index is one object per
// directory remembering, per entry name, the stored object's ETag, size and
// (when seen in a listing) LastModified together with the attributes that
// object carries. It is only ever a cache: an entry is used only when the
// listed object still has the recorded ETag and size (and LastModified when
// recorded), so a stale, missing or corrupt index costs HEADs, never wrong
// attributes (docs/SEMANTICS.md has the one race where it can).
//
// Directories are not indexed: a delimited listing shows a subdirectory as a
// common prefix, without its marker's ETag, so an indexed entry for it could
// not be validated; subdirectory markers are still HEADed.
const IndexRoot = names.IndexRoot

const (
	// indexVersion 2 added inode numbers, atime, special files and
	// extended attributes; a version-1 index is replaced, not trusted, since
	// its entries would yield key-hash inode numbers for objects that
	// carry their own.
	indexVersion = 2
	// maxIndexSize bounds what is read of an index object (a directory of
	// about 300,000 entries); a larger one is ignored.
	maxIndexSize = 64 << 20
	// indexDelay is how long after the last change in a directory its index
	// is written, so that a burst of writes (cp -r, untar) costs one Put per
	// directory, not one per file.
	indexDelay = time.Second
	// indexFlushPar bounds the index writes in flight.
	indexFlushPar = 8
)

// errBadIndex marks an index object that was read but cannot be used
// (corrupt, undecryptable, another directory's, too large): a write replaces
// it, where a failed read keeps the changes for a later attempt.
var errBadIndex = errors.New("unusable attribute index")

// indexKey is the object holding the index of the directory with key
// prefix dirPrefix ("" for the root), or "" if that key would be too long.
func indexKey(dirPrefix string) string {
	k := names.IndexKey(dirPrefix)
	if len(k) > maxKeyLen {
		return ""
	}
	return k
}

// idxEntry is what the index knows about one child: the stored object it
// saw and the attributes that object carries.
type idxEntry struct {
	ETag string `json:"e"`
	Size int64  `json:"s"`
	// LM is the object's LastModified as a listing reports it, in unix
	// nanoseconds; 0 when the entry was learned from a Put or Copy answer,
	// whose times need not match a listing's.
	LM    int64  `json:"lm,omitempty"`
	Kind  string `json:"k"` // "f" file, "l" symlink, "p" FIFO, "s" socket, "c"/"b" devices, "d" directory (encrypted names)
	Mode  uint32 `json:"m"`
	UID   uint32 `json:"u"`
	GID   uint32 `json:"g"`
	Mtime int64  `json:"t"` // unix nanoseconds
	// The optional attributes, as stored (absent when the object lacks
	// them): atime, inode number, device number, sealed xattrs.
	Atime int64  `json:"a,omitempty"`
	Ino   uint64 `json:"i,omitempty"`
	Dev   uint32 `json:"d,omitempty"`
	Xattr string `json:"x,omitempty"`
	// Long is a shortened entry's full encoded name (names.MetaLongName),
	// so that a listing learns the name with no request; fs/names checks it
	// against the segment it is listed under.
	Long string `json:"n,omitempty"`
	// DirID is an encrypted-name directory's sealed id (names.MetaDirID):
	// such a directory is an object with an ETag, so the index vouches
	// for it like for a file, and a listing needs no HEAD for it.
	DirID string `json:"di,omitempty"`
}

// Index kind codes, by metadata type.
var (
	idxKinds = map[string]string{"": "f", typeSymlink: "l", typeFifo: "p", typeSocket: "s", typeChar: "c", typeBlock: "b", typeDir: "d"}
	idxTypes = map[string]string{"f": "", "l": typeSymlink, "p": typeFifo, "s": typeSocket, "c": typeChar, "b": typeBlock, "d": typeDir}
)

// indexDoc is the stored form (JSON, encrypted when the mount encrypts).
// Dir names the directory the index is for, so that an index copied to
// another directory's key is not believed there.
type indexDoc struct {
	V       int                 `json:"v"`
	Dir     string              `json:"dir"`
	Entries map[string]idxEntry `json:"entries"`
}

// entryFromStored builds the index entry of an object whose stored user
// metadata is meta; lm is its listing LastModified or zero. It reports false
// when meta lacks any attribute, since a HEAD would then fill defaults the
// index does not record.
func entryFromStored(info backend.ObjectInfo, meta map[string]string, lm time.Time) (idxEntry, bool) {
	mode, err1 := strconv.ParseUint(meta[metaMode], 8, 32)
	uid, err2 := strconv.ParseUint(meta[metaUID], 10, 32)
	gid, err3 := strconv.ParseUint(meta[metaGID], 10, 32)
	mt, err4 := strconv.ParseInt(meta[metaMtime], 10, 64)
	kind, ok := idxKinds[meta[metaType]]
	if info.ETag == "" || err1 != nil || err2 != nil || err3 != nil || err4 != nil || !ok {
		return idxEntry{}, false
	}
	e := idxEntry{ETag: info.ETag, Size: info.Size, Kind: kind, Mode: uint32(mode) & 0o7777, UID: uint32(uid), GID: uint32(gid), Mtime: mt, Xattr: meta[metaXattr]}
	// Optional values are recorded only when well-formed, so that the entry
	// yields what a HEAD would: a malformed one reads as absent both ways.
	if v, err := strconv.ParseInt(meta[metaAtime], 10, 64); err == nil && v != 0 {
		e.Atime = v
	} else if meta[metaAtime] != "" {
		return idxEntry{}, false // malformed, or 0, which the entry cannot tell from none
	}
	if v := meta[metaIno]; v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n < 2 || n > inoMask {
			return idxEntry{}, false
		}
		e.Ino = n
	}
	if v := meta[metaDev]; v != "" {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return idxEntry{}, false
		}
		e.Dev = uint32(n)
	}
	if !lm.IsZero() {
		e.LM = lm.UnixNano()
	}
	e.Long = meta[names.MetaLongName]
	e.DirID = meta[names.MetaDirID]
	return e, true
}

// matches reports whether the listed object is the one the entry recorded.
func (e idxEntry) matches(obj *backend.ObjectInfo) bool {
	if e.ETag == "" || e.ETag != obj.ETag || e.Size != obj.Size {
		return false
	}
	return e.LM == 0 || (!obj.LastModified.IsZero() && obj.LastModified.UnixNano() == e.LM)
}

// meta is the user metadata the recorded object carries, in the form
// attrFromObject reads, so that an indexed entry yields exactly the
// attributes a HEAD would.
func (e idxEntry) meta() map[string]string {
	m := map[string]string{
		metaMode:  strconv.FormatUint(uint64(e.Mode), 8),
		metaUID:   strconv.FormatUint(uint64(e.UID), 10),
		metaGID:   strconv.FormatUint(uint64(e.GID), 10),
		metaMtime: strconv.FormatInt(e.Mtime, 10),
	}
	if t := idxTypes[e.Kind]; t != "" {
		m[metaType] = t
	}
	if e.Atime != 0 {
		m[metaAtime] = strconv.FormatInt(e.Atime, 10)
	}
	if e.Ino != 0 {
		m[metaIno] = strconv.FormatUint(e.Ino, 10)
	}
	if e.Kind == "c" || e.Kind == "b" {
		m[metaDev] = strconv.FormatUint(uint64(e.Dev), 10)
	}
	if e.Xattr != "" {
		m[metaXattr] = e.Xattr
	}
	if e.Long != "" {
		m[names.MetaLongName] = e.Long
	}
	if e.DirID != "" {
		m[names.MetaDirID] = e.DirID
	}
	return m
}

// indexer keeps this mount's changes to directory indexes until they are
// written. Only changes are kept, never a whole index: a write is a
// read-modify-write of the stored index where this mount's changes win and
// other entries are kept.
type indexer struct {
	f    *FS
	keys *cipher.Keys // nil: indexes stored as plaintext JSON
	on   bool
	sem  chan struct{}

	mu   sync.Mutex
	seq  uint64 // counts changes this mount made, for listed()
	dirs map[string]*dirIndex
}

// dirIndex is the pending state of one directory's index. It is never
// removed from indexer.dirs, so that flushMu serializes every write of one
// index key made by this mount.
type dirIndex struct {
	set       map[string]idxEntry
	gone      map[string]struct{}
	timer     *time.Timer
	lastWrite uint64 // indexer.seq at this mount's last change in the directory

	flushMu sync.Mutex
}

func newIndexer(f *FS, keys *cipher.Keys, disabled bool) *indexer {
	i := &indexer{f: f, keys: keys, sem: make(chan struct{}, indexFlushPar), dirs: map[string]*dirIndex{}}
	switch {
	case disabled:
	case keys == nil && f.engine.ObjectSize(0) != 0:
		// The engine encrypts but we were not given its keys: an index in
		// plaintext would reveal names, so there is none.
		f.log.Warn("attribute index disabled: encrypted mount without index keys")
	default:
		i.on = true
	}
	return i
}

// dir returns the state of pfx; i.mu must be held.
func (i *indexer) dir(pfx string) *dirIndex {
	d := i.dirs[pfx]
	if d == nil {
		d = &dirIndex{set: map[string]idxEntry{}, gone: map[string]struct{}{}}
		i.dirs[pfx] = d
	}
	return d
}

// splitKey returns the directory prefix and the name of key.
func splitKey(key string) (string, string) {
	j := strings.LastIndexByte(key, '/')
	return key[:j+1], key[j+1:]
}

// stored records that this mount stored key (a file or symlink) as info
// with user metadata meta. An object whose state cannot be recorded drops
// the entry, so that no older state of it is kept.
func (i *indexer) stored(key string, info backend.ObjectInfo, meta map[string]string) {
	if !i.on || key == "" || strings.HasSuffix(key, "/") {
		return
	}
	e, ok := entryFromStored(info, meta, time.Time{})
	i.record(key, e, ok)
}

// removed records that this mount deleted the object key.
func (i *indexer) removed(key string) {
	if !i.on {
		return
	}
	i.record(key, idxEntry{}, false)
}

// record sets key's entry to e (ok) or marks it gone (!ok), and schedules
// the write of its directory's index.
func (i *indexer) record(key string, e idxEntry, ok bool) {
	pfx, name := splitKey(key)
	i.mu.Lock()
	defer i.mu.Unlock()
	d := i.dir(pfx)
	if ok {
		d.set[name] = e
		delete(d.gone, name)
	} else {
		delete(d.set, name)
		d.gone[name] = struct{}{}
	}
	i.seq++
	d.lastWrite = i.seq
	i.schedule(pfx, d)
}

// dirsRemoved forgets the pending changes of the directory pfx and every
// directory below it (removed or renamed away), so that no index is written
// for a directory that no longer exists.
func (i *indexer) dirsRemoved(pfx string) {
	if !i.on {
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	for p, d := range i.dirs {
		if strings.HasPrefix(p, pfx) {
			clear(d.set)
			clear(d.gone)
			if d.timer != nil {
				d.timer.Stop()
			}
		}
	}
}

// deleteIndex removes the stored index of the directory pfx (rmdir).
// Failure is only logged: a leftover index is ignored where it is wrong.
func (i *indexer) deleteIndex(ctx context.Context, pfx string) {
	if !i.on {
		return
	}
	i.dirsRemoved(pfx)
	k := indexKey(pfx)
	if k == "" {
		return
	}
	i.lockDir(pfx)
	defer i.unlockDir(pfx)
	if err := i.f.store.Delete(ctx, k); err != nil {
		i.f.log.Debug("delete attribute index failed", "object", k, "err", err)
	}
}

func (i *indexer) lockDir(pfx string) {
	i.mu.Lock()
	d := i.dir(pfx)
	i.mu.Unlock()
	d.flushMu.Lock()
}

func (i *indexer) unlockDir(pfx string) {
	i.mu.Lock()
	d := i.dirs[pfx]
	i.mu.Unlock()
	d.flushMu.Unlock()
}

// begin returns a mark to pass to listed: changes this mount makes in the
// directory after it make the listing's findings too old to record.
func (i *indexer) begin() uint64 {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.seq
}

// listed records what a readdir learned with HEADs (set) and the names it
// found gone (gone), unless this mount changed the directory since mark:
// a HEAD answered before a chmod here could otherwise overwrite the chmod's
// entry with the old attributes under the same ETag.
func (i *indexer) listed(pfx string, mark uint64, set map[string]idxEntry, gone []string) {
	if !i.on || i.f.ro || (len(set) == 0 && len(gone) == 0) {
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	d := i.dir(pfx)
	if d.lastWrite > mark {
		return
	}
	for n, e := range set {
		d.set[n] = e
		delete(d.gone, n)
	}
	for _, n := range gone {
		delete(d.set, n)
		d.gone[n] = struct{}{}
	}
	i.schedule(pfx, d)
}

// schedule (re)arms the delayed write of pfx's index; i.mu must be held.
func (i *indexer) schedule(pfx string, d *dirIndex) {
	if d.timer != nil {
		d.timer.Reset(indexDelay)
		return
	}
	d.timer = time.AfterFunc(indexDelay, func() {
		i.sem <- struct{}{}
		defer func() { <-i.sem }()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		i.flush(ctx, pfx)
	})
}

// view returns the stored index of pfx overlaid with this mount's pending
// changes, for a readdir.
func (i *indexer) view(pfx string, stored map[string]idxEntry) map[string]idxEntry {
	i.mu.Lock()
	defer i.mu.Unlock()
	d := i.dirs[pfx]
	if d == nil || (len(d.set) == 0 && len(d.gone) == 0) {
		return stored
	}
	v := make(map[string]idxEntry, len(stored)+len(d.set))
	for n, e := range stored {
		if _, g := d.gone[n]; !g {
			v[n] = e
		}
	}
	for n, e := range d.set {
		v[n] = e
	}
	return v
}

// load reads the stored index of pfx. A missing, unreadable, corrupt or
// undecryptable index is nil: the caller falls back to HEADs.
func (i *indexer) load(ctx context.Context, pfx string) map[string]idxEntry {
	if !i.on {
		return nil
	}
	k := indexKey(pfx)
	if k == "" {
		return nil
	}
	doc, err := i.read(ctx, k, pfx)
	if err != nil {
		if !errors.Is(err, backend.ErrNotFound) {
			i.f.log.Debug("attribute index ignored", "object", k, "err", err)
		}
		return nil
	}
	return doc.Entries
}

// read fetches, decrypts and decodes the index object k of directory pfx.
func (i *indexer) read(ctx context.Context, k, pfx string) (*indexDoc, error) {
	rc, err := i.f.store.Get(ctx, k, 0, -1, backend.GetOptions{})
	if err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(rc, maxIndexSize+1))
	rc.Close()
	if err != nil {
		return nil, fmt.Errorf("index: read: %w", err)
	}
	if len(b) > maxIndexSize {
		return nil, fmt.Errorf("index: over %d bytes: %w", maxIndexSize, errBadIndex)
	}
	if i.keys != nil {
		r, err := cipher.NewReader(bytes.NewReader(b), int64(len(b)), i.keys)
		if err != nil {
			return nil, fmt.Errorf("index: %w: %w", errBadIndex, err)
		}
		plain := make([]byte, r.Size())
		if n, err := r.ReadAt(plain, 0); n != len(plain) {
			return nil, fmt.Errorf("index: decrypt: %w: %w", errBadIndex, err)
		}
		b = plain
	}
	var doc indexDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("index: decode: %w: %w", errBadIndex, err)
	}
	if doc.V != indexVersion || doc.Dir != pfx {
		return nil, fmt.Errorf("index: version %d of directory %q, want %d of %q: %w", doc.V, doc.Dir, indexVersion, pfx, errBadIndex)
	}
	return &doc, nil
}

// write encodes, encrypts and stores doc under k.
func (i *indexer) write(ctx context.Context, k string, doc *indexDoc) error {
	b, err := json.Marshal(doc)
	if err != nil {
		return fmt.Errorf("index: encode: %w", err)
	}
	if i.keys != nil {
		var buf bytes.Buffer
		w, err := cipher.NewWriter(&buf, i.keys)
		if err != nil {
			return fmt.Errorf("index: %w", err)
		}
		if _, err := w.Write(b); err != nil {
			return fmt.Errorf("index: encrypt: %w", err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("index: encrypt: %w", err)
		}
		b = buf.Bytes()
	}
	if _, err := i.f.store.Put(ctx, k, bytes.NewReader(b), int64(len(b)), nil); err != nil {
		return fmt.Errorf("index: %w", err)
	}
	return nil
}

// flush writes pfx's pending changes: read the stored index, apply ours
// (they win; names we know are gone are dropped; other entries are kept),
// store it. On failure the changes are kept for the next attempt. Errors
// are only logged: the index is a cache.
func (i *indexer) flush(ctx context.Context, pfx string) {
	if !i.on {
		return
	}
	i.mu.Lock()
	d := i.dir(pfx)
	i.mu.Unlock()
	d.flushMu.Lock()
	defer d.flushMu.Unlock()

	i.mu.Lock()
	set, gone := d.set, d.gone
	if len(set) == 0 && len(gone) == 0 {
		i.mu.Unlock()
		return
	}
	d.set, d.gone = map[string]idxEntry{}, map[string]struct{}{}
	i.mu.Unlock()

	k := indexKey(pfx)
	if k == "" {
		return
	}
	doc, err := i.read(ctx, k, pfx)
	switch {
	case err == nil:
	case errors.Is(err, backend.ErrNotFound):
		doc = &indexDoc{}
	case errors.Is(err, errBadIndex):
		i.f.log.Debug("attribute index replaced", "object", k, "err", err)
		doc = &indexDoc{}
	default:
		// Writing only our entries would drop the other mounts' ones.
		i.restore(k, d, set, gone, err)
		return
	}
	if doc.Entries == nil {
		doc.Entries = map[string]idxEntry{}
	}
	doc.V, doc.Dir = indexVersion, pfx
	for n := range gone {
		delete(doc.Entries, n)
	}
	for n, e := range set {
		doc.Entries[n] = e
	}
	if len(doc.Entries) == 0 {
		err = i.f.store.Delete(ctx, k)
	} else {
		err = i.write(ctx, k, doc)
	}
	if err != nil {
		i.restore(k, d, set, gone, err)
	}
}

// restore puts back the changes a failed flush took, unless newer ones
// replaced them, for the next write of the directory or SyncAll. After a
// permanent error (e.g. no write access to the index) they are dropped.
func (i *indexer) restore(k string, d *dirIndex, set map[string]idxEntry, gone map[string]struct{}, err error) {
	i.f.log.Warn("attribute index not written (listings cost HEADs until it is)", "object", k, "err", err)
	if backend.IsPermanent(err) {
		return
	}
	i.mu.Lock()
	defer i.mu.Unlock()
	for n, e := range set {
		if _, newer := d.set[n]; !newer {
			if _, g := d.gone[n]; !g {
				d.set[n] = e
			}
		}
	}
	for n := range gone {
		if _, newer := d.set[n]; !newer {
			d.gone[n] = struct{}{}
		}
	}
}

// flushAll writes every pending index now (shutdown, SyncAll), at most
// indexFlushPar at a time.
func (i *indexer) flushAll(ctx context.Context) {
	if !i.on {
		return
	}
	i.mu.Lock()
	var pfxs []string
	for p, d := range i.dirs {
		if len(d.set) > 0 || len(d.gone) > 0 {
			pfxs = append(pfxs, p)
		}
	}
	i.mu.Unlock()
	var wg sync.WaitGroup
	for _, p := range pfxs {
		wg.Add(1)
		i.sem <- struct{}{}
		go func() {
			defer func() { <-i.sem; wg.Done() }()
			i.flush(ctx, p)
		}()
	}
	wg.Wait()
}
