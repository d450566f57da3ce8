package fs

import (
	"context"
	"errors"
	"maps"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/fs/names"
)

// Rename moves a file, symlink or directory. A file is a server-side copy
// then a delete of the source, after its dirty data is synced; a directory
// is a copy of every key under it (in parallel) and then a delete of the
// sources, which is NOT atomic: a crash or error in between leaves both
// trees, or part of the target (docs/SEMANTICS.md). RENAME_NOREPLACE is
// honoured; RENAME_EXCHANGE is refused with EINVAL because two objects
// cannot be swapped without a window where one is missing or duplicated.
func (d *Dir) Rename(ctx context.Context, name string, newParent gofs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	f := d.fsys
	if f.ro {
		return syscall.EROFS
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		return syscall.EINVAL
	}
	if flags&^uint32(unix.RENAME_NOREPLACE) != 0 {
		return syscall.EINVAL
	}
	nd, ok := newParent.(*Dir)
	if !ok {
		return syscall.EXDEV
	}
	de, errno := nd.checkNew(newName)
	if errno != 0 {
		return errno
	}
	se, err := d.entry(name)
	if err != nil {
		return syscall.ENOENT
	}
	ctx = detach(ctx)
	srcKey, dstKey := se.Key, de.Key
	if srcKey == dstKey {
		return 0
	}

	src := d.GetChild(name)
	var srcKind kind
	if src != nil {
		if n, ok := src.Operations().(node); ok {
			srcKind = n.nodeKind()
		}
	}
	if srcKind == 0 {
		a, err := f.lookupKey(ctx, srcKey)
		if err != nil {
			return f.errno("rename", srcKey, err)
		}
		srcKind = a.kind
	}

	// What is at the target? The kernel checked its own dentries; check
	// the store too, since another client may have written it.
	var dstKind kind
	if ch := nd.GetChild(newName); ch != nil {
		if fl, ok := ch.Operations().(*File); ok {
			if _, open := fl.openAttr(); open {
				dstKind = kindFile
			}
		}
	}
	if dstKind == 0 {
		a, err := f.lookupKey(ctx, dstKey)
		switch {
		case err == nil:
			dstKind = a.kind
		case !errors.Is(err, backend.ErrNotFound):
			return f.errno("rename", dstKey, err)
		}
	}
	if dstKind != 0 {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return syscall.EEXIST
		}
		switch {
		case srcKind == kindDir && dstKind != kindDir:
			return syscall.ENOTDIR
		case srcKind != kindDir && dstKind == kindDir:
			return syscall.EISDIR
		}
	}
	if srcKind == kindDir {
		if names.Under(dstKey, srcKey) {
			return syscall.EINVAL // into its own subtree
		}
		for p := &nd.Inode; src != nil && p != nil; _, p = p.Parent() {
			if p == src {
				return syscall.EINVAL // into its own subtree
			}
		}
		var errno syscall.Errno
		if f.names.Encrypted() {
			errno = f.moveDir(ctx, d, nd, src, name, newName, se, de, dstKind != 0)
		} else {
			errno = f.renameDir(ctx, d, nd, src, f.names.Marker(se.Key), f.names.Marker(de.Key), newName, dstKind != 0)
		}
		if errno == 0 {
			d.addSubdirs(-1)
			if dstKind == 0 {
				nd.addSubdirs(1)
			}
		}
		d.renamed(nd, se, de, errno)
		return errno
	}
	errno = f.renameObject(ctx, src, nd, srcKey, de, newName)
	d.renamed(nd, se, de, errno)
	return errno
}

// renamed keeps the known segments of both directories (negative.go) in
// step with a rename from d's se to nd's de: moved when it succeeded,
// unknown when it failed part way.
func (d *Dir) renamed(nd *Dir, se, de names.Entry, errno syscall.Errno) {
	if errno != 0 {
		d.forgetKnown()
		nd.forgetKnown()
		return
	}
	d.noteSeg(se.Seg, false)
	nd.noteSeg(de.Seg, true)
}

// renameObject moves a file or symlink: sync, copy, delete.
func (f *FS) renameObject(ctx context.Context, src *gofs.Inode, nd *Dir, srcKey string, de names.Entry, newName string) syscall.Errno {
	dstKey := de.Key
	var fl *File
	if src != nil {
		fl, _ = src.Operations().(*File)
	}
	if fl != nil {
		fl.syncMu.Lock()
		defer fl.syncMu.Unlock()
		if err := fl.syncLocked(ctx); err != nil {
			return f.errno("rename", srcKey, err)
		}
	}
	info, err := f.copyKeepIno(ctx, srcKey, dstKey, de.Long)
	if err != nil {
		return f.errno("rename", srcKey, err)
	}
	if err := f.store.Delete(ctx, srcKey); err != nil {
		return f.errno("rename", srcKey, err)
	}
	f.cache.del(srcKey, dstKey)
	f.idx.removed(srcKey)
	f.idx.stored(dstKey, info, info.Metadata)
	// The replaced target's open descriptors keep the old inode: it must
	// never be stored over the renamed file.
	if ch := nd.GetChild(newName); ch != nil && ch != src {
		if old, ok := ch.Operations().(*File); ok {
			old.markDeleted()
		}
	}
	if fl != nil {
		fl.mu.Lock()
		fl.attr.info = info
		fl.attr.lmeta = names.Keep(info.Metadata)
		if fl.cf != nil {
			fl.cf.Moved(dstKey, &info)
			fl.lastETag = info.ETag
		}
		fl.mu.Unlock()
	}
	return 0
}

// renameDir copies every key under the source prefix to the target prefix
// (at most copyPar copies in flight), then deletes the sources. Open files
// under the source are synced first and follow the move.
func (f *FS) renameDir(ctx context.Context, d, nd *Dir, src *gofs.Inode, srcPfx, dstPfx, newName string, dstExists bool) syscall.Errno {
	if dstExists {
		found, err := f.hasChildren(ctx, dstPfx)
		if err != nil {
			return f.errno("rename", dstPfx, err)
		}
		if found {
			return syscall.ENOTEMPTY
		}
		if ch := nd.GetChild(newName); ch != nil {
			if dd, ok := ch.Operations().(*Dir); ok && dd.hasPending() {
				return syscall.ENOTEMPTY
			}
		}
	}

	// Lock and sync every open file below, so nothing is uploaded to an
	// old key while the tree moves.
	var files []*File
	if src != nil {
		walkFiles(src, func(fl *File) { files = append(files, fl) })
	}
	// Lock in key order, so two overlapping directory renames cannot each
	// hold a lock the other waits for.
	paths := make(map[*File]string, len(files))
	for _, fl := range files {
		paths[fl] = keyOf(&fl.Inode)
	}
	sort.Slice(files, func(i, j int) bool { return paths[files[i]] < paths[files[j]] })
	for _, fl := range files {
		fl.syncMu.Lock()
		defer fl.syncMu.Unlock()
		if err := fl.syncLocked(ctx); err != nil {
			return f.errno("rename", fl.key(), err)
		}
	}

	var keys []string
	hasMarker := false
	err := f.store.List(ctx, srcPfx, "", func(obj *backend.ObjectInfo, _ string) error {
		if obj != nil {
			keys = append(keys, obj.Key)
			if obj.Key == srcPfx {
				hasMarker = true
			}
		}
		return nil
	})
	if err != nil {
		return f.errno("rename", srcPfx, err)
	}
	copied, err := f.copyAll(ctx, keys, srcPfx, dstPfx)
	if err != nil {
		return f.errno("rename", srcPfx, err)
	}
	if !hasMarker {
		// Keep the directory visible even if it held nothing stored.
		a := d.get()
		if src != nil {
			if sd, ok := src.Operations().(*Dir); ok {
				a = sd.get()
			}
		}
		a.kind = kindDir
		if _, err := f.store.Put(ctx, dstPfx, strings.NewReader(""), 0, a.meta()); err != nil {
			return f.errno("rename", dstPfx, err)
		}
	}
	if err := f.store.DeleteMany(ctx, keys); err != nil {
		return f.errno("rename", srcPfx, err)
	}
	f.cache.delPrefix(srcPfx)
	f.cache.delPrefix(dstPfx)
	f.indexRenamedDir(ctx, srcPfx, keys, copied)
	f.cache.del(strings.TrimSuffix(srcPfx, "/"), strings.TrimSuffix(dstPfx, "/")) // the markers' names without the slash
	if src != nil {
		for _, fl := range files {
			fl.mu.Lock()
			if fl.cf != nil {
				dst := names.Rebase(fl.cf.Key(), srcPfx, dstPfx)
				var cp *backend.ObjectInfo
				if info, ok := copied[dst]; ok {
					cp = &info
				}
				fl.cf.Moved(dst, cp)
			}
			fl.mu.Unlock()
		}
	}
	return 0
}

// copyAll copies keys from under srcPfx to the same names under dstPfx, at
// most f.copyPar at a time. It returns what the store reported for each
// copy, by destination key, or the first error.
func (f *FS) copyAll(ctx context.Context, keys []string, srcPfx, dstPfx string) (map[string]backend.ObjectInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, f.copyPar)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	var mu sync.Mutex
	copied := make(map[string]backend.ObjectInfo, len(keys))
	for _, k := range keys {
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		sem <- struct{}{}
		go func(k string) {
			defer func() { <-sem; wg.Done() }()
			dst := names.Rebase(k, srcPfx, dstPfx)
			info, err := f.copyKeepIno(ctx, k, dst, "")
			if err != nil {
				once.Do(func() { first = err; cancel() })
				return
			}
			mu.Lock()
			copied[dst] = info
			mu.Unlock()
		}(k)
	}
	wg.Wait()
	if first != nil {
		return nil, first
	}
	return copied, nil
}

// walkFiles calls fn for every File node (open or not) below n.
func walkFiles(n *gofs.Inode, fn func(*File)) {
	for _, ch := range n.Children() {
		switch op := ch.Operations().(type) {
		case *File:
			fn(op)
		case *Dir:
			walkFiles(ch, fn)
		}
	}
}

// indexRenamedDir keeps the attribute indexes in step with a directory
// rename: the moved files are recorded under their new keys (so the next
// fresh mount lists the new tree without HEADs), and the indexes of the old
// directories are deleted, best effort (a leftover one is only ignored
// where it is wrong).
func (f *FS) indexRenamedDir(ctx context.Context, srcPfx string, keys []string, copied map[string]backend.ObjectInfo) {
	if !f.idx.on {
		return
	}
	f.idx.dirsRemoved(srcPfx)
	for dst, info := range copied {
		if !strings.HasSuffix(dst, "/") {
			f.idx.stored(dst, info, info.Metadata)
		}
	}
	dirs := map[string]bool{srcPfx: true}
	for _, k := range keys {
		for j := len(srcPfx); j < len(k); j++ {
			if k[j] == '/' {
				dirs[k[:j+1]] = true
			}
		}
	}
	var idxKeys []string
	for d := range dirs {
		if k := indexKey(d); k != "" {
			idxKeys = append(idxKeys, k)
		}
	}
	if err := f.store.DeleteMany(ctx, idxKeys); err != nil {
		f.log.Debug("delete attribute indexes of a renamed directory failed", "dir", srcPfx, "err", err)
	}
}

// copyKeepIno copies src to dst with its metadata. An object that carried
// no inode number (written by another tool) showed the hash of its key,
// which the new key would change: the copy is given that number, by a
// second, metadata-only copy of dst onto itself that keeps every other
// value as it was (so no attribute this mount merely assumed is written).
// From then on the object keeps its number like any other.
//
// long is the destination's full encoded name when its key segment is a
// shortened one (names.Entry.Long): the copy carries it, and not the
// source's, in the same second copy.
func (f *FS) copyKeepIno(ctx context.Context, src, dst, long string) (backend.ObjectInfo, error) {
	info, err := f.store.Copy(ctx, src, dst, backend.CopyOptions{})
	if err != nil || info.Metadata == nil {
		return info, err
	}
	_, hasIno := info.Metadata[metaIno]
	if hasIno && info.Metadata[names.MetaLongName] == long {
		return info, nil
	}
	meta := maps.Clone(info.Metadata)
	if !hasIno {
		meta[metaIno] = strconv.FormatUint(keyIno(src), 10)
	}
	delete(meta, names.MetaLongName)
	if long != "" {
		meta[names.MetaLongName] = long
	}
	again, err := f.store.Copy(ctx, dst, dst, backend.CopyOptions{ReplaceMetadata: true, Metadata: meta})
	if err != nil {
		// The move itself succeeded; only the number will change.
		f.log.Warn("rename: could not store the inode number of an object that had none", "object", dst, "err", err)
		return info, nil
	}
	return again, nil
}

// moveDir renames a directory of an encrypted-name vault: its entries live
// under its id, which the rename keeps, so only the marker moves, in a
// constant number of requests whatever lies beneath (a Stat, a Copy carrying
// the id sealed for its new place, a Delete). A crash between the Copy and
// the Delete leaves both markers, naming the same directory: every entry is
// reachable under both names, none is lost (docs/SEMANTICS.md).
func (f *FS) moveDir(ctx context.Context, d, nd *Dir, src *gofs.Inode, name, newName string, se, de names.Entry, dstExists bool) syscall.Errno {
	srcMarker, dstMarker := f.names.Marker(se.Key), f.names.Marker(de.Key)
	loc, errno := d.subdirLoc(ctx, name, se.Key)
	if errno != 0 {
		return errno
	}
	var replaced names.Dir
	if dstExists {
		if ch := nd.GetChild(newName); ch != nil {
			if dd, ok := ch.Operations().(*Dir); ok && dd.hasPending() {
				return syscall.ENOTEMPTY
			}
		}
		if replaced, errno = nd.subdirLoc(ctx, newName, de.Key); errno != 0 {
			return errno
		}
		found, err := f.hasChildren(ctx, replaced.Prefix)
		if err != nil {
			return f.errno("rename", dstMarker, err)
		}
		if found {
			return syscall.ENOTEMPTY
		}
	}
	lmeta, err := f.names.MoveDir(loc, nd.location(), newName)
	if err != nil {
		return f.errno("rename", srcMarker, err)
	}
	info, err := f.store.Stat(ctx, srcMarker)
	if err != nil {
		return f.errno("rename", srcMarker, err)
	}
	meta := maps.Clone(info.Metadata)
	if meta == nil {
		meta = map[string]string{}
	}
	delete(meta, names.MetaLongName)
	for k, v := range withLong(lmeta, de) {
		meta[k] = v
	}
	if _, ok := meta[metaIno]; !ok {
		meta[metaIno] = strconv.FormatUint(keyIno(srcMarker), 10)
	}
	// A marker has no content: a new one is a Put, conditional on the name
	// being free when nothing was there (another mount may have made it).
	var moved backend.ObjectInfo
	if dstExists {
		moved, err = f.store.Copy(ctx, srcMarker, dstMarker, backend.CopyOptions{ReplaceMetadata: true, Metadata: meta})
	} else {
		moved, err = f.putNew(ctx, dstMarker, meta)
	}
	if err != nil {
		return f.errno("rename", dstMarker, err)
	}
	if moved.Metadata == nil {
		moved.Metadata = meta
	}
	if err := f.store.Delete(ctx, srcMarker); err != nil {
		return f.errno("rename", srcMarker, err)
	}
	f.cache.del(srcMarker, dstMarker, se.Key, de.Key)
	f.idx.removed(srcMarker)
	f.idx.stored(dstMarker, moved, meta)
	if dstExists && !replaced.Equal(loc) {
		f.idx.deleteIndex(ctx, replaced.Prefix)
	}
	if src != nil {
		if sd, ok := src.Operations().(*Dir); ok {
			a := sd.get()
			a.info = moved
			a.lmeta = names.Keep(meta)
			sd.set(a)
			f.cache.put(dstMarker, a, f.ttl)
		}
	}
	return 0
}
