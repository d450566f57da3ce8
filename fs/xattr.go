package fs

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// Extended attributes.
//
// A node's extended attributes are kept together in one user metadata
// value of its object ("xattr"), so setting one is a server-side metadata
// copy like chmod and a rename keeps them. The value is base64 (without
// padding) of the encoded set, which on a client-encrypted vault is
// encrypted in the object format (cipher.NewWriter: a fresh key per
// version, authenticated): names and values stay secret from the bucket.
// The encoded set starts with the object's inode number, checked on read,
// so a set moved onto another object's metadata is refused (EIO) rather
// than believed.
//
// Only the user.* namespace is stored. security.* names belong to security
// modules and file capabilities that a nosuid FUSE mount cannot honour,
// trusted.* and other system.* names to kernel-internal users: setting them
// fails with EOPNOTSUPP, reading them finds nothing (ENODATA). POSIX ACLs
// (system.posix_acl_*) are refused by the kernel itself (EOPNOTSUPP): the
// mount does not ask for FUSE ACL support. The kernel allows user.* only on
// regular files and directories.
//
// S3 allows 2 KiB of user metadata per object (keys and values), which
// leaves about 1.2 KiB for names and values on an encrypted vault (the
// object header and a block's nonce and tag take 160 bytes before base64);
// a set that would not fit is refused with ENOSPC, as ext4 does when an
// inode's xattr space is full, and nothing is cut.

const (
	xattrPrefix = "user."
	// maxMetaBytes is S3's limit on user metadata: the sum of the lengths
	// of every key and value (without the x-amz-meta- prefix).
	maxMetaBytes = 2048
	xattrVersion = 1
)

var errXattrCorrupt = errors.New("extended attributes do not decode")

// xattrSet maps names to values.
type xattrSet map[string][]byte

// encodeXattrs is version, inode number, then per name (sorted): length,
// name, length, value.
func encodeXattrs(ino uint64, x xattrSet) []byte {
	names := make([]string, 0, len(x))
	for n := range x {
		names = append(names, n)
	}
	sort.Strings(names)
	b := []byte{xattrVersion}
	b = binary.BigEndian.AppendUint64(b, ino)
	for _, n := range names {
		b = binary.AppendUvarint(b, uint64(len(n)))
		b = append(b, n...)
		b = binary.AppendUvarint(b, uint64(len(x[n])))
		b = append(b, x[n]...)
	}
	return b
}

func decodeXattrs(b []byte) (uint64, xattrSet, error) {
	if len(b) < 9 || b[0] != xattrVersion {
		return 0, nil, errXattrCorrupt
	}
	ino := binary.BigEndian.Uint64(b[1:9])
	b = b[9:]
	x := xattrSet{}
	next := func() ([]byte, bool) {
		n, k := binary.Uvarint(b)
		if k <= 0 || n > uint64(len(b)-k) {
			return nil, false
		}
		v := b[k : k+int(n)]
		b = b[k+int(n):]
		return v, true
	}
	for len(b) > 0 {
		name, ok1 := next()
		val, ok2 := next()
		if !ok1 || !ok2 {
			return 0, nil, errXattrCorrupt
		}
		x[string(name)] = bytes.Clone(val)
	}
	return ino, x, nil
}

// xattrsStorable reports whether this mount can store extended attributes:
// sealed with the vault's keys, or in plaintext on a mount without
// client-side encryption. An encrypting mount not given its keys cannot.
func (f *FS) xattrsStorable() bool {
	return f.keys != nil || f.engine.ObjectSize(0) == 0
}

// sealXattrs encodes x for the object with inode number ino; an empty set
// is "" (no metadata at all).
func (f *FS) sealXattrs(ino uint64, x xattrSet) (string, error) {
	if len(x) == 0 {
		return "", nil
	}
	b := encodeXattrs(ino, x)
	if f.keys != nil {
		var buf bytes.Buffer
		w, err := cipher.NewWriter(&buf, f.keys)
		if err != nil {
			return "", err
		}
		if _, err := w.Write(b); err != nil {
			return "", err
		}
		if err := w.Close(); err != nil {
			return "", err
		}
		b = buf.Bytes()
	}
	return base64.RawStdEncoding.EncodeToString(b), nil
}

// openXattrs decodes the stored set of a; a set made for another inode
// number is corrupt.
func (f *FS) openXattrs(a attr) (xattrSet, error) {
	if a.xattr == "" {
		return xattrSet{}, nil
	}
	b, err := base64.RawStdEncoding.DecodeString(a.xattr)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errXattrCorrupt, cipher.ErrCorrupt)
	}
	if f.keys != nil {
		r, err := cipher.NewReader(bytes.NewReader(b), int64(len(b)), f.keys)
		if err != nil {
			return nil, fmt.Errorf("extended attributes: %w", err)
		}
		plain := make([]byte, r.Size())
		if n, err := r.ReadAt(plain, 0); n != len(plain) {
			return nil, fmt.Errorf("extended attributes: %w", err)
		}
		b = plain
	}
	ino, x, err := decodeXattrs(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, cipher.ErrCorrupt)
	}
	if ino != a.ino {
		return nil, fmt.Errorf("extended attributes of inode %d on inode %d: %w", ino, a.ino, cipher.ErrCorrupt)
	}
	return x, nil
}

// metaBytes is what S3 counts against its user metadata limit.
func metaBytes(m map[string]string) int {
	n := 0
	for k, v := range m {
		n += len(k) + len(v)
	}
	return n
}

// xattrNode is what every node type offers the shared xattr code.
type xattrNode interface {
	gofs.InodeEmbedder
	// current returns the node's attributes, refreshed from the store
	// when older than the TTL.
	current(ctx context.Context) (attr, syscall.Errno)
	// storeAttr stores a (a metadata copy) and makes it the node's.
	storeAttr(ctx context.Context, a attr) syscall.Errno
}

func (f *FS) getxattr(ctx context.Context, n xattrNode, name string, dest []byte) (uint32, syscall.Errno) {
	if !strings.HasPrefix(name, xattrPrefix) {
		// Nothing outside user.* is ever stored. Answered without a
		// request: the kernel asks for security.capability before every
		// write.
		return 0, syscall.ENODATA
	}
	a, errno := n.current(ctx)
	if errno != 0 {
		return 0, errno
	}
	if a.xattr == "" {
		return 0, syscall.ENODATA
	}
	x, err := f.openXattrs(a)
	if err != nil {
		return 0, f.errno("getxattr", keyOf(n.EmbeddedInode()), err)
	}
	v, ok := x[name]
	if !ok {
		return 0, syscall.ENODATA
	}
	if len(dest) < len(v) {
		return uint32(len(v)), syscall.ERANGE
	}
	return uint32(copy(dest, v)), 0
}

func (f *FS) listxattr(ctx context.Context, n xattrNode, dest []byte) (uint32, syscall.Errno) {
	a, errno := n.current(ctx)
	if errno != 0 {
		return 0, errno
	}
	x, err := f.openXattrs(a)
	if err != nil {
		return 0, f.errno("listxattr", keyOf(n.EmbeddedInode()), err)
	}
	names := make([]string, 0, len(x))
	for k := range x {
		names = append(names, k)
	}
	sort.Strings(names)
	var b []byte
	for _, k := range names {
		b = append(append(b, k...), 0)
	}
	if len(dest) < len(b) {
		return uint32(len(b)), syscall.ERANGE
	}
	return uint32(copy(dest, b)), 0
}

// changeXattr sets (val != nil) or removes name with setxattr's flags.
func (f *FS) changeXattr(ctx context.Context, n xattrNode, name string, val []byte, flags uint32) syscall.Errno {
	if f.ro {
		return syscall.EROFS
	}
	if !strings.HasPrefix(name, xattrPrefix) || len(name) == len(xattrPrefix) {
		if val == nil && strings.HasPrefix(name, xattrPrefix) {
			return syscall.ENODATA
		}
		return syscall.EOPNOTSUPP
	}
	if !f.xattrsStorable() {
		return syscall.EOPNOTSUPP
	}
	a, errno := n.current(ctx)
	if errno != 0 {
		return errno
	}
	key := keyOf(n.EmbeddedInode())
	x, err := f.openXattrs(a)
	if err != nil {
		return f.errno("setxattr", key, err)
	}
	_, exists := x[name]
	switch {
	case val == nil && !exists:
		return syscall.ENODATA
	case val != nil && flags&unix.XATTR_CREATE != 0 && exists:
		return syscall.EEXIST
	case val != nil && flags&unix.XATTR_REPLACE != 0 && !exists:
		return syscall.ENODATA
	}
	if val == nil {
		delete(x, name)
	} else {
		x[name] = bytes.Clone(val)
	}
	if a.xattr, err = f.sealXattrs(a.ino, x); err != nil {
		return f.errno("setxattr", key, err)
	}
	if metaBytes(a.meta()) > maxMetaBytes {
		return syscall.ENOSPC
	}
	return n.storeAttr(ctx, a)
}

// ---- per node type ----

func (d *Dir) current(ctx context.Context) (attr, syscall.Errno) {
	var out fuse.AttrOut
	if errno := d.Getattr(ctx, nil, &out); errno != 0 {
		return attr{}, errno
	}
	return d.get(), 0
}

// storeAttr of a directory: a metadata copy of its marker (a Put if it has
// none); the root has no marker, so its attributes last until unmount.
func (d *Dir) storeAttr(ctx context.Context, a attr) syscall.Errno {
	f := d.fsys
	if d.IsRoot() {
		d.set(a)
		return 0
	}
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
		return f.errno("setxattr", key, err)
	}
	a.info = info
	d.set(a)
	f.cache.put(key, a, f.ttl)
	if !f.names.SeparateMarkers() {
		f.idx.stored(key, info, a.meta())
	}
	return 0
}

func (s *Symlink) current(ctx context.Context) (attr, syscall.Errno) {
	var out fuse.AttrOut
	if errno := s.Getattr(ctx, nil, &out); errno != 0 {
		return attr{}, errno
	}
	return s.get(), 0
}

func (s *Symlink) storeAttr(ctx context.Context, a attr) syscall.Errno {
	f := s.fsys
	key := keyOf(&s.Inode)
	info, err := f.store.Copy(detach(ctx), key, key, backend.CopyOptions{ReplaceMetadata: true, Metadata: a.meta()})
	if err != nil {
		return f.errno("setxattr", key, err)
	}
	a.info = info
	s.refresh(a)
	f.cache.put(key, a, f.ttl)
	f.idx.stored(key, info, a.meta())
	return 0
}

func (s *Special) current(ctx context.Context) (attr, syscall.Errno) {
	var out fuse.AttrOut
	if errno := s.Getattr(ctx, nil, &out); errno != 0 {
		return attr{}, errno
	}
	return s.get(), 0
}

func (s *Special) storeAttr(ctx context.Context, a attr) syscall.Errno {
	f := s.fsys
	key := keyOf(&s.Inode)
	info, err := f.store.Copy(detach(ctx), key, key, backend.CopyOptions{ReplaceMetadata: true, Metadata: a.meta()})
	if err != nil {
		return f.errno("setxattr", key, err)
	}
	a.info = info
	s.set(a)
	f.cache.put(key, a, f.ttl)
	f.idx.stored(key, info, a.meta())
	return 0
}

// current of a file: the open file's live attributes, else the node's,
// refreshed after the TTL.
func (fl *File) current(ctx context.Context) (attr, syscall.Errno) {
	if a, open := fl.openAttr(); open {
		return a, 0
	}
	var out fuse.AttrOut
	if errno := fl.Getattr(ctx, nil, &out); errno != 0 {
		return attr{}, errno
	}
	return fl.get(), 0
}

// storeAttr of a file follows Setattr: on an open file with unsynced data
// (or never stored) the change is recorded and goes out with the next
// sync; otherwise it is a metadata copy now.
func (fl *File) storeAttr(ctx context.Context, a attr) syscall.Errno {
	f := fl.fsys
	ctx = detach(ctx)
	fl.syncMu.Lock()
	defer fl.syncMu.Unlock()
	fl.mu.Lock()
	if fl.deleted {
		fl.mu.Unlock()
		return 0
	}
	// Only the xattrs change here: keep whatever else changed meanwhile.
	fl.attr.xattr = a.xattr
	a = fl.attr
	fl.metaGen++
	gen, cf := fl.metaGen, fl.cf
	if cf != nil {
		fl.metaDirty = true
	}
	fl.mu.Unlock()
	key := keyOf(&fl.Inode)
	if cf != nil {
		if cf.Dirty() || a.info.Key == "" {
			return 0
		}
		meta := a.meta()
		info, err := cf.Sync(ctx, meta)
		if err != nil {
			return f.errno("setxattr", cf.Key(), err)
		}
		fl.stored(info, gen, meta)
		return 0
	}
	info, err := f.store.Copy(ctx, key, key, backend.CopyOptions{ReplaceMetadata: true, Metadata: a.meta()})
	if err != nil {
		return f.errno("setxattr", key, err)
	}
	a.info = info
	fl.refresh(a)
	f.cache.put(key, a, f.ttl)
	f.idx.stored(key, info, a.meta())
	return 0
}

// The go-fuse xattr methods of every node type.

func (d *Dir) Getxattr(ctx context.Context, name string, dest []byte) (uint32, syscall.Errno) {
	return d.fsys.getxattr(ctx, d, name, dest)
}
func (d *Dir) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return d.fsys.listxattr(ctx, d, dest)
}
func (d *Dir) Setxattr(ctx context.Context, name string, data []byte, flags uint32) syscall.Errno {
	return d.fsys.changeXattr(ctx, d, name, nonNil(data), flags)
}
func (d *Dir) Removexattr(ctx context.Context, name string) syscall.Errno {
	return d.fsys.changeXattr(ctx, d, name, nil, 0)
}

func (fl *File) Getxattr(ctx context.Context, name string, dest []byte) (uint32, syscall.Errno) {
	return fl.fsys.getxattr(ctx, fl, name, dest)
}
func (fl *File) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return fl.fsys.listxattr(ctx, fl, dest)
}
func (fl *File) Setxattr(ctx context.Context, name string, data []byte, flags uint32) syscall.Errno {
	return fl.fsys.changeXattr(ctx, fl, name, nonNil(data), flags)
}
func (fl *File) Removexattr(ctx context.Context, name string) syscall.Errno {
	return fl.fsys.changeXattr(ctx, fl, name, nil, 0)
}

func (s *Symlink) Getxattr(ctx context.Context, name string, dest []byte) (uint32, syscall.Errno) {
	return s.fsys.getxattr(ctx, s, name, dest)
}
func (s *Symlink) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return s.fsys.listxattr(ctx, s, dest)
}
func (s *Symlink) Setxattr(ctx context.Context, name string, data []byte, flags uint32) syscall.Errno {
	return s.fsys.changeXattr(ctx, s, name, nonNil(data), flags)
}
func (s *Symlink) Removexattr(ctx context.Context, name string) syscall.Errno {
	return s.fsys.changeXattr(ctx, s, name, nil, 0)
}

func (s *Special) Getxattr(ctx context.Context, name string, dest []byte) (uint32, syscall.Errno) {
	return s.fsys.getxattr(ctx, s, name, dest)
}
func (s *Special) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	return s.fsys.listxattr(ctx, s, dest)
}
func (s *Special) Setxattr(ctx context.Context, name string, data []byte, flags uint32) syscall.Errno {
	return s.fsys.changeXattr(ctx, s, name, nonNil(data), flags)
}
func (s *Special) Removexattr(ctx context.Context, name string) syscall.Errno {
	return s.fsys.changeXattr(ctx, s, name, nil, 0)
}

// nonNil keeps an empty value (setfattr -v "") apart from a removal.
func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
