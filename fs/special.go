package fs

import (
	"context"
	"errors"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// Special is a FIFO, a unix socket or a character or block device: a
// zero-length object whose metadata holds the type, mode, owner, times and
// device number. The kernel never asks the filesystem for its data: it
// opens a FIFO as a pipe of its own, binds sockets in memory and sends
// device I/O to the driver (and refuses device nodes on a nodev mount, as
// s3cryptfs mounts are). The object has no content, not even an encrypted
// header: there is nothing secret in it, and nothing ever reads it.
type Special struct {
	gofs.Inode
	attrs
	fsys *FS
}

func (s *Special) nodeKind() kind { return s.get().kind }
func (s *Special) refresh(a attr) { s.set(a) }

// mknodSpecial stores the special file name of kind k in d.
func (d *Dir) mknodSpecial(ctx context.Context, name string, k kind, mode, dev uint32, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	f := d.fsys
	e, errno := d.checkNew(name)
	if errno != 0 {
		return nil, errno
	}
	uid, gid := f.callerOwner(ctx)
	a := attr{kind: k, mode: mode & 0o7777, uid: uid, gid: gid, mtime: time.Now(), ino: newIno()}
	if k == kindChar || k == kindBlock {
		a.dev = dev
	}
	a.lmeta = withLong(nil, e)
	key := e.Key
	defer d.noteSeg(e.Seg, true)
	info, err := f.putNew(detach(ctx), key, a.meta())
	if err != nil {
		return nil, f.errno("mknod", key, err)
	}
	a.info = info
	f.cache.del(f.names.Marker(key))
	f.cache.put(key, a, f.ttl)
	f.idx.stored(key, info, a.meta())
	s := &Special{fsys: f}
	s.set(a)
	ch := d.newNode(ctx, name, s, a)
	f.entryOut(a, out)
	return ch, 0
}

// Getattr of a special file, refreshed after the TTL.
func (s *Special) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := s.fsys
	if s.stale(f.ttl) {
		key := keyOf(&s.Inode)
		info, err := f.store.Stat(detach(ctx), key)
		switch {
		case err == nil:
			if a := f.attrFromObject(info, false); a.kind == s.get().kind {
				s.refresh(a)
			}
		case errors.Is(err, backend.ErrNotFound):
			return syscall.ENOENT
		default:
			return f.errno("getattr", key, err)
		}
	}
	s.get().fill(&out.Attr)
	out.SetTimeout(f.ttl)
	return 0
}

// Setattr of a special file (chmod, chown, utimes): a metadata copy. A
// truncate is accepted and changes nothing, as on a local filesystem
// (open(O_TRUNC) of a FIFO).
func (s *Special) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := s.fsys
	if f.ro {
		return syscall.EROFS
	}
	a := s.get()
	if setattrMeta(&a, in) {
		key := keyOf(&s.Inode)
		info, err := f.store.Copy(detach(ctx), key, key, backend.CopyOptions{ReplaceMetadata: true, Metadata: a.meta()})
		if err != nil {
			return f.errno("setattr", key, err)
		}
		a.info = info
		s.set(a)
		f.cache.put(key, a, f.ttl)
		f.idx.stored(key, info, a.meta())
	}
	a.fill(&out.Attr)
	out.Ino = s.StableAttr().Ino // go-fuse leaves it 0 in SETATTR replies, and the kernel shows it
	out.SetTimeout(f.ttl)
	return 0
}
