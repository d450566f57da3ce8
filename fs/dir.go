package fs

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/s3cryptfs/s3cryptfs/backend"
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

// prefix is the key prefix of the directory's children.
func (d *Dir) prefix() string {
	p := keyOf(&d.Inode)
	if p == "" {
		return ""
	}
	return p + "/"
}

// Lookup finds a child: a node that is open here (possibly not stored yet)
// first, then the attribute cache filled by Readdir, then the store.
func (d *Dir) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	pfx := d.prefix()
	if len(name) > d.fsys.maxName {
		return nil, syscall.ENAMETOOLONG
	}
	if reserved(pfx, name) || !validName(name) {
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
	a, err := d.fsys.lookupKey(ctx, pfx+name)
	if err != nil {
		return nil, d.fsys.errno("lookup", pfx+name, err)
	}
	ch := d.newChild(ctx, name, a)
	d.fsys.entryOut(a, out)
	fillNlink(ch, &out.Attr)
	return ch, 0
}

// listed is one entry of a directory listing.
type listed struct {
	name string
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
	pfx := d.prefix()
	mark := f.idx.begin()
	started := time.Now()
	idxc := make(chan map[string]idxEntry, 1)
	go func() { idxc <- f.idx.load(ctx, pfx) }()
	var ents []listed
	index := map[string]int{}
	err := f.store.List(ctx, pfx, "/", func(obj *backend.ObjectInfo, p string) error {
		if obj != nil {
			if obj.Key == pfx {
				return nil // our own marker
			}
			name := strings.TrimPrefix(obj.Key, pfx)
			if !validName(name) || reserved(pfx, name) {
				return nil
			}
			o := *obj
			a := f.attrFromObject(o, false)
			cached, ok := f.cache.get(obj.Key)
			if ok && cached.info.ETag == obj.ETag {
				a = cached
			}
			index[name] = len(ents)
			ents = append(ents, listed{name: name, a: a, stat: !ok || cached.info.ETag != obj.ETag, obj: &o})
			return nil
		}
		name := strings.TrimSuffix(strings.TrimPrefix(p, pfx), "/")
		if !validName(name) || reserved(pfx, name) {
			return nil
		}
		a, ok := f.cache.get(p)
		if !ok {
			a = f.implicitDir(p)
		}
		e := listed{name: name, a: a, stat: !ok}
		if i, dup := index[name]; dup {
			ents[i] = e // a directory hides a file of the same name
			return nil
		}
		index[name] = len(ents)
		ents = append(ents, e)
		return nil
	})
	stored := <-idxc
	if err != nil {
		return nil, f.errno("readdir", pfx, err)
	}
	f.reval.noteListing(pfx, len(ents))
	hits := f.fromIndex(pfx, ents, f.idx.view(pfx, stored))
	heads := f.statAll(ctx, pfx, ents)
	f.log.Debug("readdir", "dir", pfx, "entries", len(ents), "index_entries", len(stored), "from_index", hits, "heads", heads)
	f.indexListing(pfx, mark, ents, stored)

	// Files created here but not stored yet are part of the directory too.
	for name, ch := range d.Children() {
		if _, ok := index[name]; ok {
			continue
		}
		if fl, ok := ch.Operations().(*File); ok {
			if a, open := fl.openAttr(); open {
				index[name] = len(ents)
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
		if e.a.kind == 0 {
			continue // vanished between the listing and its HEAD
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

// fromIndex takes the attributes of listed files and symlinks that still
// need a HEAD from the index ix, where the entry records the very object
// listed (same ETag and size, and LastModified when recorded), and caches
// them. The attributes are built from the recorded metadata exactly as a
// HEAD's would be. It returns how many entries it filled.
func (f *FS) fromIndex(pfx string, ents []listed, ix map[string]idxEntry) int {
	if len(ix) == 0 {
		return 0
	}
	n := 0
	for i := range ents {
		e := &ents[i]
		if !e.stat || e.obj == nil {
			continue
		}
		ie, ok := ix[e.name]
		if !ok || !ie.matches(e.obj) {
			continue
		}
		info := *e.obj
		info.Metadata = ie.meta()
		e.a = f.attrFromObject(info, false)
		e.stat = false
		f.cache.put(pfx+e.name, e.a, f.ttl)
		n++
	}
	return n
}

// indexListing hands the index what this listing learned: entries HEADed
// (with the listing's LastModified when the HEAD saw the listed object) and
// names the stored index has that the listing does not.
func (f *FS) indexListing(pfx string, mark uint64, ents []listed, stored map[string]idxEntry) {
	set := map[string]idxEntry{}
	seen := make(map[string]bool, len(ents))
	for _, e := range ents {
		if e.obj == nil || e.a.kind == 0 {
			continue
		}
		seen[e.name] = true
		if !e.stat || e.a.info.Metadata == nil {
			continue // not HEADed here, or the HEAD failed
		}
		var lm time.Time
		if e.a.info.ETag == e.obj.ETag && e.a.info.Size == e.obj.Size {
			lm = e.obj.LastModified
		}
		if ie, ok := entryFromStored(e.a.info, e.a.info.Metadata, lm); ok {
			set[e.name] = ie
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
func (f *FS) statAll(ctx context.Context, pfx string, ents []listed) int {
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
			key := pfx + e.name
			if isDir {
				key += "/"
			}
			info, err := f.store.Stat(ctx, key)
			switch {
			case err == nil:
				e.a = f.attrFromObject(info, isDir)
			case errors.Is(err, backend.ErrNotFound):
				if !isDir {
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
		if err == nil && a.kind == kindDir {
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
		key := d.prefix()
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
	pfx := d.prefix()
	if f.ro {
		return nil, syscall.EROFS
	}
	if errno := f.checkNew(pfx, name); errno != 0 {
		return nil, errno
	}
	uid, gid := f.callerOwner(ctx)
	a := attr{kind: kindDir, mode: mode & 0o7777, uid: uid, gid: gid, mtime: time.Now(), ino: newIno()}
	key := pfx + name + "/"
	info, err := f.store.Put(detach(ctx), key, bytes.NewReader(nil), 0, a.meta())
	if err != nil {
		return nil, f.errno("mkdir", key, err)
	}
	a.info = info
	f.cache.put(key, a, f.ttl)
	ch := d.newChild(ctx, name, a)
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
	pfx := d.prefix()
	if f.ro {
		return nil, nil, 0, syscall.EROFS
	}
	if errno := f.checkNew(pfx, name); errno != 0 {
		return nil, nil, 0, errno
	}
	uid, gid := f.callerOwner(ctx)
	a := attr{kind: kindFile, mode: mode & 0o7777, uid: uid, gid: gid, mtime: time.Now(), ino: newIno()}
	key := pfx + name
	fl := &File{fsys: f}
	fl.set(a)
	fl.cf = f.engine.Create(key, a.meta())
	fl.opens = 1
	fl.metaDirty = true
	f.trackOpen(fl, true)
	f.cache.del(key, key+"/")
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
	ch, fh, _, errno := d.Create(ctx, name, syscall.O_WRONLY, mode, out)
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
	pfx := d.prefix()
	if f.ro {
		return nil, syscall.EROFS
	}
	if errno := f.checkNew(pfx, name); errno != 0 {
		return nil, errno
	}
	uid, gid := f.callerOwner(ctx)
	a := attr{kind: kindSymlink, mode: 0o777, uid: uid, gid: gid, mtime: time.Now(), size: int64(len(target)), ino: newIno()}
	key := pfx + name
	ctx = detach(ctx)
	cf := f.engine.Create(key, a.meta())
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
	key := d.prefix() + name
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
		return f.errno("unlink", key, err)
	}
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
	key := d.prefix() + name + "/"
	if ch := d.GetChild(name); ch != nil {
		if cd, ok := ch.Operations().(*Dir); ok && cd.hasPending() {
			return syscall.ENOTEMPTY
		}
	}
	ctx = detach(ctx)
	found, err := f.hasChildren(ctx, key)
	if err != nil {
		return f.errno("rmdir", key, err)
	}
	if found {
		return syscall.ENOTEMPTY
	}
	if err := f.store.Delete(ctx, key); err != nil {
		return f.errno("rmdir", key, err)
	}
	d.addSubdirs(-1)
	f.cache.del(key)
	f.idx.deleteIndex(ctx, key)
	return 0
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
		d.fsys.idx.flush(detach(ctx), d.prefix())
	}
	return 0
}
