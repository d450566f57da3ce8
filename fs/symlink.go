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

// maxSymlink bounds the target read from a symlink object (PATH_MAX).
const maxSymlink = 4096

// Symlink is a symbolic link: an object with metadata type=symlink whose
// content is the target.
type Symlink struct {
	gofs.Inode
	attrs
	fsys   *FS
	target string // cached after the first read; "" = not read yet
}

func (s *Symlink) nodeKind() kind { return kindSymlink }

func (s *Symlink) refresh(a attr) {
	s.mu.Lock()
	if a.info.ETag != s.attr.info.ETag {
		s.target = ""
	}
	s.attr = a
	s.fetched = time.Now()
	s.mu.Unlock()
}

// Readlink decrypts the target (once; it is cached with the node).
func (s *Symlink) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	f := s.fsys
	s.mu.Lock()
	t := s.target
	s.mu.Unlock()
	if t != "" {
		return []byte(t), 0
	}
	ctx = detach(ctx)
	key := keyOf(&s.Inode)
	info, err := f.store.Stat(ctx, key)
	if err != nil {
		return nil, f.errno("readlink", key, err)
	}
	cf, err := f.engine.Open(ctx, info)
	if err != nil {
		return nil, f.errno("readlink", key, err)
	}
	h := cf.NewHandle()
	defer h.Close()
	buf := make([]byte, maxSymlink)
	n, err := h.ReadAt(ctx, buf, 0)
	if err != nil {
		return nil, f.errno("readlink", key, err)
	}
	s.mu.Lock()
	s.target = string(buf[:n])
	s.mu.Unlock()
	return buf[:n], 0
}

// Getattr of a symlink, refreshed after the TTL.
func (s *Symlink) Getattr(ctx context.Context, fh gofs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	f := s.fsys
	if s.stale(f.ttl) {
		key := keyOf(&s.Inode)
		info, err := f.store.Stat(detach(ctx), key)
		switch {
		case err == nil:
			s.refresh(f.attrFromObject(info, false))
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

// Setattr of a symlink (lchown, utimes with AT_SYMLINK_NOFOLLOW): a
// metadata copy.
func (s *Symlink) Setattr(ctx context.Context, fh gofs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	f := s.fsys
	if f.ro {
		return syscall.EROFS
	}
	if _, ok := in.GetSize(); ok {
		return syscall.EINVAL
	}
	a := s.get()
	if setattrMeta(&a, in) {
		key := keyOf(&s.Inode)
		info, err := f.store.Copy(detach(ctx), key, key, backend.CopyOptions{ReplaceMetadata: true, Metadata: a.meta()})
		if err != nil {
			return f.errno("setattr", key, err)
		}
		a.info = info
		s.mu.Lock()
		s.attr = a
		s.fetched = time.Now()
		s.mu.Unlock()
		f.cache.put(key, a, f.ttl)
		f.idx.stored(key, info, a.meta())
	}
	a.fill(&out.Attr)
	out.Ino = s.StableAttr().Ino // go-fuse leaves it 0 in SETATTR replies, and the kernel shows it
	out.SetTimeout(f.ttl)
	return 0
}
