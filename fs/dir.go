package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/fs/content"
	"github.com/s3cryptfs/s3cryptfs/fs/names"
)

// Dir is a directory: the key prefix "<path>/" (empty for the root).
type Dir struct {
	gofs.Inode
	attrs
	fsys *FS

	// subdirs counts the subdirectories seen by the last listing (kept up
	// to date by this mount's mkdir, rmdir and renames), valid until
	// listedAt plus the TTL, for st_nlink. Guarded by attrs.mu.
	subdirs  int
	listedAt time.Time

	// loc is where the entries are stored with encrypted names (the
	// directory's id) and at the root; location() derives it from the path
	// otherwise. Guarded by attrs.mu.
	loc names.Dir
	// known answers lookups of absent names (negative.go). Guarded by
	// attrs.mu.
	known knownSegs
}

// nlink is the directory's st_nlink: 2 plus its subdirectories when a
// listing within the TTL counted them, else 1, which tools read as "not
// counted" (btrfs and several network filesystems report 1 too) rather than
// a wrong count: find's leaf optimisation trusts nlink-2 subdirectories.
func (d *Dir) nlink() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.listedAt.IsZero() || time.Since(d.listedAt) >= d.fsys.ttl {
		return 1
	}
	return uint32(2 + d.subdirs)
}

// setSubdirs records the subdirectory count of a listing that started at
// t.
func (d *Dir) setSubdirs(n int, t time.Time) {
	d.mu.Lock()
	d.subdirs, d.listedAt = n, t
	d.mu.Unlock()
}

// addSubdirs adjusts a known subdirectory count by delta (mkdir, rmdir,
// rename in this mount).
func (d *Dir) addSubdirs(delta int) {
	d.mu.Lock()
	if !d.listedAt.IsZero() {
		d.subdirs += delta
		if d.subdirs < 0 {
			d.subdirs, d.listedAt = 0, time.Time{}
		}
	}
	d.mu.Unlock()
}

// fillNlink sets the link count of the node ch if it is a directory.
func fillNlink(ch *gofs.Inode, out *fuse.Attr) {
	if dd, ok := ch.Operations().(*Dir); ok {
		out.Nlink = dd.nlink()
	}
}

func (d *Dir) nodeKind() kind { return kindDir }
func (d *Dir) refresh(a attr) { d.set(a) }

// markerKey is the key of the directory's marker ("" for the root, which
// has none).
func (d *Dir) markerKey() string {
	if d.IsRoot() {
		return ""
	}
	return d.fsys.names.Marker(keyOf(&d.Inode))
}

// Lookup finds a child: a node that is open here (possibly not stored yet)
// first, then the attribute cache filled by Readdir, then the store.
func (d *Dir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	f := d.fsys
	if len(name) > f.maxName {
		return nil, syscall.ENAMETOOLONG
	}
	if reserved(d.location().Prefix, name) || !validName(name) {
		return nil, syscall.ENOENT
	}
	if ch := d.GetChild(name); ch != nil {
		if fl, ok := ch.Operations().(*File); ok {
			if a, open := fl.openAttr(); open {
				d.fsys.entryOut(a, out)
				return ch, 0
			}
		}
	}
	e, err := d.entry(name)
	if err != nil {
		return nil, syscall.ENAMETOOLONG
	}
	if d.GetChild(name) == nil && !f.cache.seen(e.Key, f.names.Marker(e.Key)) && d.knownAbsent(ctx, e.Seg) {
		return nil, syscall.ENOENT // negative.go: no request
	}
	a, err := f.lookupKey(ctx, e.Key)
	if err != nil {
		return nil, f.errno("lookup", e.Key, err)
	}
	ch, err := d.newChild(ctx, name, a)
	if err != nil {
		f.log.Error("lookup: directory marker without a valid id", "object", f.names.Marker(e.Key), "err", err)
		return nil, syscall.EIO
	}
	f.entryOut(a, out)
	fillNlink(ch, &out.Attr)
	return ch, 0
}

// listed is one entry of a directory listing.
type listed struct {
	name string // "" until a shortened segment's metadata is known
	seg  string // the key segment: the name, or its encrypted form
	a    attr
	stat bool // attributes still need a HEAD
	// obj is the listed object (files and symlinks), for the index.
	obj *backend.ObjectInfo
}

// Readdir lists the directory with one delimited listing and, in parallel,
// reads its attribute index (see IndexRoot). Entries found in the attribute
// cache or, with the same ETag and size, in the index need no request; the
// metadata (mode, owner, mtime, symlink type) of the others is fetched with
// parallel HEADs, so that the Lookups the kernel sends next are answered
// from the cache. What the HEADs taught, and names the index lists that are
// gone, are written back to the index later.
func (d *Dir) Readdir(ctx context.Context) (gofs.DirStream, syscall.Errno) {
	f := d.fsys
	ctx = detach(ctx)
	loc := d.location()
	pfx := loc.Prefix
	mark := f.idx.begin()
	started := time.Now()
	idxc := make(chan map[string]idxEntry, 1)
	go func() { idxc <- f.idx.load(ctx, pfx) }()
	var ents []listed
	index := map[string]int{} // by key segment
	// name decodes a listed segment; "" (and true) when a shortened
	// segment's name must wait for its metadata, false to skip the entry.
	name := func(key, seg string) (string, bool) {
		n, err := f.names.Name(loc, seg, "")
		switch {
		case errors.Is(err, names.ErrNeedMeta):
			return "", true
		case err != nil:
			f.badName(key, "listing: an entry's name does not decrypt in this directory (copied from another directory or vault, or tampered with): not listed", err)
			return "", false
		}
		return n, validName(n) && !reserved(pfx, n)
	}
	err := f.store.List(ctx, pfx, "/", func(obj *backend.ObjectInfo, p string) error {
		if obj != nil {
			if obj.Key == pfx {
				return nil // our own marker
			}
			seg := strings.TrimPrefix(obj.Key, pfx)
			n, ok := name(obj.Key, seg)
			if !ok {
				return nil
			}
			o := *obj
			a := f.attrFromObject(o, false)
			cached, ok := f.cache.get(obj.Key)
			if ok && cached.info.ETag == obj.ETag {
				a = cached
			}
			index[seg] = len(ents)
			ents = append(ents, listed{name: n, seg: seg, a: a, stat: !ok || cached.info.ETag != obj.ETag, obj: &o})
			return nil
		}
		seg := strings.TrimSuffix(strings.TrimPrefix(p, pfx), "/")
		n, ok := name(p, seg)
		if !ok {
			return nil
		}
		a, ok := f.cache.get(p)
		if !ok {
			a = f.implicitDir(p)
		}
		e := listed{name: n, seg: seg, a: a, stat: !ok}
		if i, dup := index[seg]; dup {
			ents[i] = e // a directory hides a file of the same name
			return nil
		}
		index[seg] = len(ents)
		ents = append(ents, e)
		return nil
	})
	stored := <-idxc
	if err != nil {
		return nil, f.errno("readdir", pfx, err)
	}
	if len(index) <= 100000 {
		segs := make(map[string]struct{}, len(index))
		for seg := range index {
			segs[seg] = struct{}{}
		}
		d.setKnown(segs, started)
	}
	f.reval.noteListing(pfx, len(ents))
	hits := f.fromIndex(loc, ents, f.idx.view(pfx, stored))
	heads := f.statAll(ctx, loc, ents)
	f.log.Debug("readdir", "dir", pfx, "entries", len(ents), "index_entries", len(stored), "from_index", hits, "heads", heads)
	f.indexListing(pfx, mark, ents, stored)
	if f.names.Encrypted() {
		f.checkEncrypted(loc, ents)
	}

	// Files created here but not stored yet are part of the directory too.
	byName := make(map[string]bool, len(ents))
	for _, e := range ents {
		byName[e.name] = true
	}
	for name, ch := range d.Children() {
		if byName[name] {
			continue
		}
		if fl, ok := ch.Operations().(*File); ok {
			if a, open := fl.openAttr(); open {
				ents = append(ents, listed{name: name, a: a})
			}
		}
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].name < ents[j].name })
	out := make([]fuse.DirEntry, 0, len(ents)+2)
	out = append(out, fuse.DirEntry{Name: ".", Mode: syscall.S_IFDIR, Ino: d.StableAttr().Ino})
	pino := d.StableAttr().Ino
	if _, parent := d.Parent(); parent != nil {
		pino = parent.StableAttr().Ino
	}
	out = append(out, fuse.DirEntry{Name: "..", Mode: syscall.S_IFDIR, Ino: pino})
	subdirs := 0
	for _, e := range ents {
		if e.a.kind == 0 || e.name == "" {
			continue // vanished between the listing and its HEAD, or not a name of this directory
		}
		if e.a.kind == kindDir {
			subdirs++
		}
		// d_ino as stat will show it: a live node's number, which differs
		// from the stored one only after a collision (ino.go).
		ino := e.a.ino
		if ch := d.GetChild(e.name); ch != nil && ch.StableAttr().Mode == e.a.kind.typeBits() {
			ino = ch.StableAttr().Ino
		}
		out = append(out, fuse.DirEntry{Name: e.name, Mode: e.a.kind.typeBits(), Ino: ino})
	}
	d.setSubdirs(subdirs, started)
	return gofs.NewListDirStream(out), 0
}

// badName logs, once per key for the life of the mount, an object left out
// of a listing because it is not a name of its directory.
func (f *FS) badName(key, msg string, err error) {
	f.badMu.Lock()
	if f.badLogged == nil || len(f.badLogged) > 10000 {
		f.badLogged = map[string]bool{}
	}
	seen := f.badLogged[key]
	f.badLogged[key] = true
	f.badMu.Unlock()
	if !seen {
		f.log.Warn(msg, "object", key, "err", err)
	}
}

// checkEncrypted finishes the entries of an encrypted-name listing: a
// shortened segment gets its name from the metadata its HEAD or the index
// gave, and a subdirectory whose marker does not hold an id sealed for this
// place (a marker copied from elsewhere) is dropped, with a log line naming
// the object either way.
func (f *FS) checkEncrypted(loc names.Dir, ents []listed) {
	for i := range ents {
		e := &ents[i]
		if e.a.kind == 0 {
			continue
		}
		key := loc.Key(e.seg)
		if e.name == "" {
			n, err := f.names.Name(loc, e.seg, e.a.lmeta[names.MetaLongName])
			if err != nil || !validName(n) {
				f.badName(key, "listing: a shortened entry's full name is missing or does not decrypt here: not listed", err)
				continue
			}
			e.name = n
		}
		if e.a.kind == kindDir {
			if _, err := f.names.Child(loc, e.name, e.a.info.Metadata); err != nil {
				f.badName(f.names.Marker(key), "listing: a directory marker does not hold an id for this place: not listed", err)
				e.name = ""
			}
		}
	}
}

// fromIndex takes the attributes of listed files and symlinks that still
// need a HEAD from the index ix, where the entry records the very object
// listed (same ETag and size, and LastModified when recorded), and caches
// them. The attributes are built from the recorded metadata exactly as a
// HEAD's would be. It returns how many entries it filled.
func (f *FS) fromIndex(pfx names.Dir, ents []listed, ix map[string]idxEntry) int {
	if len(ix) == 0 {
		return 0
	}
	n := 0
	for i := range ents {
		e := &ents[i]
		if !e.stat || e.obj == nil {
			continue
		}
		ie, ok := ix[e.seg]
		if !ok || !ie.matches(e.obj) {
			continue
		}
		info := *e.obj
		info.Metadata = ie.meta()
		e.a = f.attrFromObject(info, false)
		e.stat = false
		f.cache.put(pfx.Key(e.seg), e.a, f.ttl)
		n++
	}
	return n
}

// indexListing hands the index what this listing learned: entries HEADed
// (with the listing's LastModified when the HEAD saw the listed object) and
// segments the stored index has that the listing does not.
func (f *FS) indexListing(pfx string, mark uint64, ents []listed, stored map[string]idxEntry) {
	set := map[string]idxEntry{}
	seen := make(map[string]bool, len(ents))
	for _, e := range ents {
		if e.obj == nil || e.a.kind == 0 {
			continue
		}
		seen[e.seg] = true
		if !e.stat || e.a.info.Metadata == nil {
			continue // not HEADed here, or the HEAD failed
		}
		var lm time.Time
		if e.a.info.ETag == e.obj.ETag && e.a.info.Size == e.obj.Size {
			lm = e.obj.LastModified
		}
		if ie, ok := entryFromStored(e.a.info, e.a.info.Metadata, lm); ok {
			set[e.seg] = ie
		}
	}
	var gone []string
	for n := range stored {
		if !seen[n] {
			gone = append(gone, n)
		}
	}
	f.idx.listed(pfx, mark, set, gone)
}

// statAll fills the attributes of listed entries that need a HEAD, at most
// statPar at a time, and caches them. An entry that disappeared in between
// gets kind 0; other errors keep the listing's defaults. It returns the
// number of HEADs.
func (f *FS) statAll(ctx context.Context, pfx names.Dir, ents []listed) int {
	sem := make(chan struct{}, f.statPar)
	var wg sync.WaitGroup
	n := 0
	for i := range ents {
		if !ents[i].stat {
			continue
		}
		n++
		wg.Add(1)
		sem <- struct{}{}
		go func(e *listed) {
			defer func() { <-sem; wg.Done() }()
			isDir := e.a.kind == kindDir
			key := pfx.Key(e.seg)
			if isDir {
				key = f.names.Marker(key)
			}
			info, err := f.store.Stat(ctx, key)
			switch {
			case err == nil:
				e.a = f.attrFromObject(info, isDir)
			case errors.Is(err, backend.ErrNotFound):
				if !isDir || f.names.Encrypted() {
					e.a.kind = 0
					return
				}
				// no marker: an implicit directory
			default:
				f.log.Warn("stat during readdir failed", "object", key, "err", err)
				return
			}
			f.cache.put(key, e.a, f.ttl)
		}(&ents[i])
	}
	wg.Wait()
	return n
}

// Getattr of a directory: the marker's metadata, refreshed after the TTL.
func (d *Dir) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	if !d.IsRoot() && d.stale(d.fsys.ttl) {
		key := keyOf(&d.Inode)
		a, err := d.fsys.lookupKey(ctx, key)
		if err == nil && a.kind == kindDir && (!d.fsys.names.Encrypted() || a.lmeta[names.MetaDirID] == d.get().lmeta[names.MetaDirID]) {
			d.set(a)
		}
	}
	d.get().fill(&out.Attr)
	out.Nlink = d.nlink()
	out.SetTimeout(d.fsys.ttl)
	return 0
}

// Setattr of a directory stores mode/owner/mtime on its marker (creating
// the marker if the directory had none).
func (d *Dir) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := d.fsys
	if f.ro {
		return syscall.EROFS
	}
	if _, ok := in.GetSize(); ok {
		return syscall.EISDIR
	}
	a := d.get()
	switch {
	case !setattrMeta(&a, in):
	case d.IsRoot():
		// The root has no marker object to carry metadata: keep the change
		// for the life of the mount rather than fail tools such as rsync -a
		// that set the attributes of the target directory.
		d.set(a)
	default:
		ctx = detach(ctx)
		key := d.markerKey()
		var info backend.ObjectInfo
		var err error
		if a.info.Key != "" {
			info, err = f.store.Copy(ctx, key, key, backend.CopyOptions{ReplaceMetadata: true, Metadata: a.meta()})
		}
		if a.info.Key == "" || errors.Is(err, backend.ErrNotFound) {
			info, err = f.store.Put(ctx, key, bytes.NewReader(nil), 0, a.meta())
		}
		if err != nil {
			return f.errno("setattr", key, err)
		}
		a.info = info
		d.set(a)
		f.cache.put(key, a, f.ttl)
		if !f.names.SeparateMarkers() {
			f.idx.stored(key, info, a.meta())
		}
	}
	a.fill(&out.Attr)
	out.Nlink = d.nlink()
	out.Ino = d.StableAttr().Ino // go-fuse leaves it 0 in SETATTR replies, and the kernel shows it
	out.SetTimeout(f.ttl)
	return 0
}

// Statfs reports large fixed numbers (see statfs).
func (d *Dir) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	return statfs(out, d.fsys.maxName)
}

// Mkdir stores the zero-length marker "<path>/" carrying the new
// directory's mode and owner.
func (d *Dir) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	f := d.fsys
	if f.ro {
		return nil, syscall.EROFS
	}
	e, errno := d.checkNew(name)
	if errno != 0 {
		return nil, errno
	}
	uid, gid := f.callerOwner(ctx)
	a := attr{kind: kindDir, mode: mode & 0o7777, uid: uid, gid: gid, mtime: time.Now(), ino: newIno()}
	loc, lmeta, err := f.names.NewDir(d.location(), name)
	if err != nil {
		return nil, f.errno("mkdir", e.Key, err)
	}
	a.lmeta = withLong(lmeta, e)
	key := f.names.Marker(e.Key)
	info, err := f.putNew(detach(ctx), key, a.meta())
	if err != nil {
		return nil, f.errno("mkdir", key, err)
	}
	if info.Metadata == nil {
		info.Metadata = a.meta()
	}
	a.info = info
	f.cache.put(key, a, f.ttl)
	if !f.names.SeparateMarkers() {
		f.idx.stored(key, info, a.meta()) // an entry object like a file's
	}
	dd := &Dir{fsys: f, loc: loc}
	dd.set(a)
	dd.setKnown(map[string]struct{}{}, time.Now()) // a new directory is empty
	d.noteSeg(e.Seg, true)
	ch := d.newNode(ctx, name, dd, a)
	if dd, ok := ch.Operations().(*Dir); ok {
		dd.setSubdirs(0, time.Now()) // empty: nothing can be under a new marker's prefix
	}
	d.addSubdirs(1)
	f.entryOut(a, out)
	fillNlink(ch, &out.Attr)
	return ch, 0
}

// Create makes a new empty file, stored at its first sync (close or fsync).
// Until then it exists only in this mount.
func (d *Dir) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*gofs.Inode, gofs.FileHandle, uint32, syscall.Errno) {
	f := d.fsys
	if f.ro {
		return nil, nil, 0, syscall.EROFS
	}
	e, errno := d.checkNew(name)
	if errno != 0 {
		return nil, nil, 0, errno
	}
	uid, gid := f.callerOwner(ctx)
	a := attr{kind: kindFile, mode: mode & 0o7777, uid: uid, gid: gid, mtime: time.Now(), ino: newIno(), lmeta: withLong(nil, e)}
	key := e.Key
	fl := &File{fsys: f}
	fl.set(a)
	fl.cf = f.engine.Create(key, a.meta())
	if flags&syscall.O_EXCL != 0 {
		// Exclusive against other mounts too: the first upload fails
		// with EEXIST if another mount stored the name meanwhile.
		fl.cf.CreateExclusive()
	}
	fl.opens = 1
	fl.metaDirty = true
	f.trackOpen(fl, true)
	f.cache.del(key, f.names.Marker(key))
	d.noteSeg(e.Seg, true)
	ch := d.newNode(ctx, name, fl, a)
	f.entryOut(a, out)
	return ch, fl.newHandle(flags), 0, 0
}

// Mknod makes a regular file (stored at once, as creat+close would) or a
// special file (special.go). The kernel has checked CAP_MKNOD for devices.
func (d *Dir) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if d.fsys.ro {
		return nil, syscall.EROFS
	}
	switch k := kindOfMode(mode); {
	case k == 0:
		return nil, syscall.EINVAL
	case k != kindFile:
		return d.mknodSpecial(ctx, name, k, mode, dev, out)
	}
	ch, fh, _, errno := d.Create(ctx, name, syscall.O_WRONLY|syscall.O_EXCL, mode, out)
	if errno != 0 {
		return nil, errno
	}
	h := fh.(*handle)
	if errno := h.Flush(ctx); errno != 0 {
		h.Release(ctx)
		return nil, errno
	}
	h.Release(ctx)
	return ch, 0
}

// Link is refused: an object has exactly one key.
func (d *Dir) Link(ctx context.Context, target gofs.InodeEmbedder, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	return nil, syscall.EPERM
}

// Symlink stores the target as the (encrypted) content of an object marked
// type=symlink.
func (d *Dir) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	f := d.fsys
	if f.ro {
		return nil, syscall.EROFS
	}
	e, errno := d.checkNew(name)
	if errno != 0 {
		return nil, errno
	}
	uid, gid := f.callerOwner(ctx)
	a := attr{kind: kindSymlink, mode: 0o777, uid: uid, gid: gid, mtime: time.Now(), size: int64(len(target)), ino: newIno(), lmeta: withLong(nil, e)}
	key := e.Key
	ctx = detach(ctx)
	cf := f.engine.Create(key, a.meta())
	cf.CreateExclusive()
	if _, err := cf.WriteAt(ctx, []byte(target), 0); err != nil {
		return nil, f.errno("symlink", key, err)
	}
	info, err := cf.Sync(ctx, a.meta())
	if err != nil {
		return nil, f.errno("symlink", key, err)
	}
	a.info = info
	f.cache.put(key, a, f.ttl)
	f.idx.stored(key, info, a.meta())
	d.noteSeg(e.Seg, true)
	s := &Symlink{fsys: f, target: target}
	s.set(a)
	ch := d.newNode(ctx, name, s, a)
	f.entryOut(a, out)
	return ch, 0
}

// Unlink deletes the object. An open file stays readable and writable
// through its descriptors but is never stored again.
func (d *Dir) Unlink(ctx context.Context, name string) syscall.Errno {
	f := d.fsys
	if f.ro {
		return syscall.EROFS
	}
	e, err := d.entry(name)
	if err != nil {
		return syscall.ENOENT
	}
	key := e.Key
	var fl *File
	if ch := d.GetChild(name); ch != nil {
		fl, _ = ch.Operations().(*File)
	}
	if fl != nil {
		fl.syncMu.Lock()
		defer fl.syncMu.Unlock()
		fl.markDeleted()
	}
	if err := f.store.Delete(detach(ctx), key); err != nil {
		d.forgetKnown()
		return f.errno("unlink", key, err)
	}
	d.noteSeg(e.Seg, false)
	f.cache.del(key)
	f.idx.removed(key)
	return 0
}

// Rmdir removes an empty directory's marker; ENOTEMPTY if any key (or any
// file created here and not stored yet) remains under it.
func (d *Dir) Rmdir(ctx context.Context, name string) syscall.Errno {
	f := d.fsys
	if f.ro {
		return syscall.EROFS
	}
	e, err := d.entry(name)
	if err != nil {
		return syscall.ENOENT
	}
	key := f.names.Marker(e.Key)
	if ch := d.GetChild(name); ch != nil {
		if cd, ok := ch.Operations().(*Dir); ok && cd.hasPending() {
			return syscall.ENOTEMPTY
		}
	}
	ctx = detach(ctx)
	loc, errno := d.subdirLoc(ctx, name, e.Key)
	if errno != 0 {
		return errno
	}
	found, err := f.hasChildren(ctx, loc.Prefix)
	if err != nil {
		return f.errno("rmdir", key, err)
	}
	if found {
		return syscall.ENOTEMPTY
	}
	if err := f.store.Delete(ctx, key); err != nil {
		d.forgetKnown()
		return f.errno("rmdir", key, err)
	}
	d.noteSeg(e.Seg, false)
	d.addSubdirs(-1)
	f.cache.del(key)
	if !f.names.SeparateMarkers() {
		f.idx.removed(key)
	}
	f.idx.deleteIndex(ctx, loc.Prefix)
	return 0
}

// subdirLoc is where the entries of d's subdirectory name (stored at key)
// live: the child node's location if it is known here, else from its
// marker.
func (d *Dir) subdirLoc(ctx context.Context, name, key string) (names.Dir, syscall.Errno) {
	f := d.fsys
	if !f.names.Encrypted() {
		return names.PlainDir(key), 0
	}
	if ch := d.GetChild(name); ch != nil {
		if cd, ok := ch.Operations().(*Dir); ok {
			return cd.location(), 0
		}
	}
	a, err := f.lookupKey(ctx, key)
	if err != nil {
		return names.Dir{}, f.errno("lookup", key, err)
	}
	if a.kind != kindDir {
		return names.Dir{}, syscall.ENOTDIR
	}
	loc, err := d.childLoc(name, a)
	if err != nil {
		f.log.Error("directory marker without a valid id", "object", f.names.Marker(key), "err", err)
		return names.Dir{}, syscall.EIO
	}
	return loc, 0
}

// putNew stores a new zero-length object (a directory marker, a special
// file) unless the key exists: another mount that stored the same name
// first makes it fail with content.ErrExists (EEXIST), not be replaced.
func (f *FS) putNew(ctx context.Context, key string, meta map[string]string) (backend.ObjectInfo, error) {
	info, err := f.store.PutWith(ctx, key, bytes.NewReader(nil), 0, backend.PutOptions{Metadata: meta, IfNoneMatch: "*"})
	if errors.Is(err, backend.ErrPreconditionFailed) {
		return info, fmt.Errorf("%w: %w", content.ErrExists, err)
	}
	return info, err
}

// withLong adds a shortened entry's full name to the names layer's
// metadata m.
func withLong(m map[string]string, e names.Entry) map[string]string {
	if e.Long == "" {
		return m
	}
	if m == nil {
		m = map[string]string{}
	}
	m[names.MetaLongName] = e.Long
	return m
}

// hasPending reports whether a file created in this directory is open and
// not stored yet.
func (d *Dir) hasPending() bool {
	for _, ch := range d.Children() {
		if fl, ok := ch.Operations().(*File); ok {
			if a, open := fl.openAttr(); open && a.info.Key == "" {
				return true
			}
		}
	}
	return false
}

// Fsync of a directory (fsync on a descriptor of it, as editors and backup
// tools do after a rename): names created, removed or renamed are already
// durable, since those operations return only after the store call; what
// remains is files created here and not yet stored, which are stored now so
// that their entries exist, and the directory's attribute index, written now
// rather than after its delay. An fsync of the root writes every pending
// index: `s3cryptfs unmount` does it before detaching, so that the mount
// writes nothing after the unmount.
func (d *Dir) Fsync(ctx context.Context, fh gofs.FileHandle, flags uint32) syscall.Errno {
	if wb := d.fsys.wb; wb != nil && d.IsRoot() {
		// s3cryptfs unmount fsyncs the root before detaching: every
		// write-back upload is done (or has given up) when it returns.
		if err := wb.wait(detach(ctx)); err != nil {
			return d.fsys.errno("fsyncdir", "", err)
		}
	}
	for _, ch := range d.Children() {
		fl, ok := ch.Operations().(*File)
		if !ok {
			continue
		}
		if a, open := fl.openAttr(); open && a.info.Key == "" {
			if err := fl.sync(ctx); err != nil {
				return d.fsys.errno("fsyncdir", fl.key(), err)
			}
		}
	}
	if d.IsRoot() {
		d.fsys.idx.flushAll(detach(ctx))
	} else {
		d.fsys.idx.flush(detach(ctx), d.location().Prefix)
	}
	return 0
}
