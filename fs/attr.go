package fs

import (
	"context"
	"errors"
	"strconv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/fs/content"
	"github.com/s3cryptfs/s3cryptfs/fs/names"
)

// Object user metadata keys (x-amz-meta-* on S3). Values are decimal except
// mode, which is octal like chmod's argument.
const (
	metaMode  = "mode"
	metaUID   = "uid"
	metaGID   = "gid"
	metaMtime = "mtime" // unix nanoseconds
	metaAtime = "atime" // unix nanoseconds; only once set explicitly (utimensat, touch -a)
	metaIno   = "ino"   // decimal inode number below 2^63 (ino.go)
	metaType  = "type"  // see the type* values; absent for files and dirs
	metaDev   = "dev"   // decimal Linux dev_t of a character or block device
	metaXattr = "xattr" // extended attributes, sealed (xattr.go)

	typeSymlink = "symlink"
	// typeDir marks a directory's object: with encrypted names the only
	// sign of one (its key has no slash); with plaintext names the
	// marker's slash says so already.
	typeDir    = "dir"
	typeFifo   = "fifo"
	typeSocket = "socket"
	typeChar   = "chardev"
	typeBlock  = "blockdev"
)

// StreamKeepsMeta is what a mount passes as content.Options.StreamKeepsMeta:
// a file written in one sequential pass keeps the mtime of when its
// streamed upload began, rather than paying a server-side copy of the whole
// object at close just to move mtime by the duration of the write (S3
// fixes a multipart upload's metadata when it starts).
var StreamKeepsMeta = []string{metaMtime}

type kind uint8

const (
	kindFile kind = iota + 1
	kindDir
	kindSymlink
	// Special files: zero-length objects whose type, mode, owner and
	// device number live in the metadata. The kernel implements what they
	// do (a FIFO's pipe, a socket's endpoint, a device's driver); the
	// filesystem only stores the node.
	kindFifo
	kindSocket
	kindChar
	kindBlock
)

// typeBits is the S_IFMT part of a node's mode.
func (k kind) typeBits() uint32 {
	switch k {
	case kindDir:
		return syscall.S_IFDIR
	case kindSymlink:
		return syscall.S_IFLNK
	case kindFifo:
		return syscall.S_IFIFO
	case kindSocket:
		return syscall.S_IFSOCK
	case kindChar:
		return syscall.S_IFCHR
	case kindBlock:
		return syscall.S_IFBLK
	default:
		return syscall.S_IFREG
	}
}

// special reports whether k is a FIFO, socket or device.
func (k kind) special() bool { return k >= kindFifo && k <= kindBlock }

// typeName is the metadata "type" value of k ("" for files and dirs).
func (k kind) typeName() string {
	switch k {
	case kindDir:
		return typeDir
	case kindSymlink:
		return typeSymlink
	case kindFifo:
		return typeFifo
	case kindSocket:
		return typeSocket
	case kindChar:
		return typeChar
	case kindBlock:
		return typeBlock
	}
	return ""
}

// kindOfType is the kind an object with metadata type t has: a file for ""
// and for any value this version does not know.
func kindOfType(t string) kind {
	switch t {
	case typeDir:
		return kindDir
	case typeSymlink:
		return kindSymlink
	case typeFifo:
		return kindFifo
	case typeSocket:
		return kindSocket
	case typeChar:
		return kindChar
	case typeBlock:
		return kindBlock
	}
	return kindFile
}

// kindOfMode is the kind of the S_IFMT bits of a mknod mode (0 if none).
func kindOfMode(mode uint32) kind {
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG, 0:
		return kindFile
	case syscall.S_IFIFO:
		return kindFifo
	case syscall.S_IFSOCK:
		return kindSocket
	case syscall.S_IFCHR:
		return kindChar
	case syscall.S_IFBLK:
		return kindBlock
	}
	return 0
}

// attr is what the tree knows about one node.
type attr struct {
	kind  kind
	mode  uint32 // permission bits only (07777)
	uid   uint32
	gid   uint32
	mtime time.Time
	// atime is the access time set explicitly (utimensat); zero: never
	// set, read as mtime. Reads never change it (noatime).
	atime time.Time
	// ino is the stored inode number, or for an object without one the
	// hash of its key (ino.go). The node's StableAttr.Ino, what stat
	// shows, differs only when two live nodes claimed the same number.
	ino uint64
	// dev is the device number of a character or block device.
	dev uint32
	// xattr is the stored, sealed extended attributes ("" if none).
	xattr string
	size  int64 // plaintext size (files, symlinks)
	// lmeta is the names layer's metadata of the entry (a directory's
	// sealed id, a shortened entry's full name): every metadata write keeps
	// it (names.Keep).
	lmeta map[string]string
	// info is the stored object (file, symlink, or directory marker). An
	// empty Key means none: a directory without marker, or a file created
	// but not yet synced.
	info backend.ObjectInfo
}

// meta is the user metadata that stores a's mode, owner, times, inode
// number, type and extended attributes. An object that had no inode
// number gets its key-hash number stored by the next metadata write, so
// from then on it keeps it across renames.
func (a attr) meta() map[string]string {
	m := map[string]string{
		metaMode:  strconv.FormatUint(uint64(a.mode&0o7777), 8),
		metaUID:   strconv.FormatUint(uint64(a.uid), 10),
		metaGID:   strconv.FormatUint(uint64(a.gid), 10),
		metaMtime: strconv.FormatInt(a.mtime.UnixNano(), 10),
	}
	if t := a.kind.typeName(); t != "" {
		m[metaType] = t
	}
	if a.ino != 0 {
		m[metaIno] = strconv.FormatUint(a.ino, 10)
	}
	if !a.atime.IsZero() {
		m[metaAtime] = strconv.FormatInt(a.atime.UnixNano(), 10)
	}
	if a.kind == kindChar || a.kind == kindBlock {
		m[metaDev] = strconv.FormatUint(uint64(a.dev), 10)
	}
	if a.xattr != "" {
		m[metaXattr] = a.xattr
	}
	for k, v := range a.lmeta {
		m[k] = v
	}
	return m
}

// fill writes a into a FUSE attribute. Directories get nlink 1 ("not
// counted", as btrfs reports); Dir.nlink replaces it when the
// subdirectories are known. go-fuse sets Ino from the node.
func (a attr) fill(out *fuse.Attr) {
	out.Mode = a.kind.typeBits() | (a.mode & 0o7777)
	out.Uid = a.uid
	out.Gid = a.gid
	out.Size = uint64(a.size)
	out.Nlink = 1
	if a.kind == kindDir {
		out.Size = 4096
	}
	if a.kind == kindChar || a.kind == kindBlock {
		out.Rdev = a.dev
	}
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	t, at := a.mtime, a.mtime
	if !a.atime.IsZero() {
		at = a.atime
	}
	out.SetTimes(&at, &t, &t)
}

// attrFromObject derives attributes from a stored object; isDir says the
// object is a directory marker. Missing or malformed metadata falls back to
// defaults, because objects written by other tools carry none.
func (f *FS) attrFromObject(info backend.ObjectInfo, isDir bool) attr {
	a := attr{kind: kindFile, mode: 0o644, uid: f.uid, gid: f.gid, mtime: info.LastModified, info: info}
	if !isDir {
		a.kind = kindOfType(info.Metadata[metaType])
		isDir = a.kind == kindDir // an encrypted-name directory's object
	}
	switch {
	case isDir:
		a.kind = kindDir
		a.mode = 0o755
	case a.kind == kindSymlink:
		a.mode = 0o777
	}
	if v, err := strconv.ParseUint(info.Metadata[metaMode], 8, 32); err == nil {
		a.mode = uint32(v) & 0o7777
	}
	if v, err := strconv.ParseUint(info.Metadata[metaUID], 10, 32); err == nil {
		a.uid = uint32(v)
	}
	if v, err := strconv.ParseUint(info.Metadata[metaGID], 10, 32); err == nil {
		a.gid = uint32(v)
	}
	if v, err := strconv.ParseInt(info.Metadata[metaMtime], 10, 64); err == nil {
		a.mtime = time.Unix(0, v)
	}
	if v, err := strconv.ParseInt(info.Metadata[metaAtime], 10, 64); err == nil {
		a.atime = time.Unix(0, v)
	}
	if a.mtime.IsZero() {
		a.mtime = f.mountTime
	}
	a.ino = storedIno(info.Metadata[metaIno], info.Key)
	if a.kind == kindChar || a.kind == kindBlock {
		if v, err := strconv.ParseUint(info.Metadata[metaDev], 10, 32); err == nil {
			a.dev = uint32(v)
		}
	}
	a.xattr = info.Metadata[metaXattr]
	a.lmeta = names.Keep(info.Metadata)
	// A listed object (no metadata yet) of size 0 may be a special file:
	// its size is not a layout error until a HEAD says it is a file.
	if a.kind != kindDir && !a.kind.special() && (info.Metadata != nil || info.Size != 0) {
		a.size = f.plainSize(info)
	}
	return a
}

// plainSize maps an object size to the plaintext size; an impossible size is
// corruption, logged, and shown as 0 (reads then fail with EIO), and so is
// one too large to address (over 2^62 bytes; opening it fails with EFBIG).
func (f *FS) plainSize(info backend.ObjectInfo) int64 {
	n, err := f.engine.PlainSize(info.Size)
	if errors.Is(err, content.ErrFileTooBig) {
		f.log.Error("object too large to address: shown as empty", "object", info.Key, "size", info.Size, "err", err)
		return 0
	}
	if err != nil {
		f.log.Error("corrupt object: size fits no valid layout", "object", info.Key, "size", info.Size, "err", err)
		return 0
	}
	return n
}

// implicitDir is the attribute of the directory with key prefix pfx
// ("a/b/") that has no marker object. Its inode number is the hash of pfx,
// the same a marker without a stored number would get.
func (f *FS) implicitDir(pfx string) attr {
	return attr{kind: kindDir, mode: 0o755, uid: f.uid, gid: f.gid, mtime: f.mountTime, ino: keyIno(pfx)}
}

// lookupKey finds what the name key (no trailing slash) is in the store: a
// directory (marker "key/" or any key under "key/"), a file or a symlink.
// A directory wins over a file of the same name, as in other S3 filesystems.
// With encrypted names every entry is the one object at key: one HEAD.
// Results are cached for the attribute TTL.
func (f *FS) lookupKey(ctx context.Context, key string) (attr, error) {
	if a, ok := f.cache.get(f.names.Marker(key)); ok {
		return a, nil
	}
	if a, ok := f.cache.get(key); ok {
		return a, nil
	}
	ctx = detach(ctx)
	if a, ok := f.revalidated(ctx, key); ok {
		return a, nil
	}
	if !f.names.SeparateMarkers() {
		info, err := f.store.Stat(ctx, key)
		if err != nil {
			return attr{}, err
		}
		a := f.attrFromObject(info, false)
		f.cache.put(key, a, f.ttl)
		return a, nil
	}
	type res struct {
		info backend.ObjectInfo
		err  error
	}
	dirc := make(chan res, 1)
	go func() {
		info, err := f.store.Stat(ctx, f.names.Marker(key))
		dirc <- res{info, err}
	}()
	fileInfo, fileErr := f.store.Stat(ctx, key)
	dir := <-dirc
	switch {
	case dir.err == nil:
		a := f.attrFromObject(dir.info, true)
		f.cache.put(f.names.Marker(key), a, f.ttl)
		return a, nil
	case !errors.Is(dir.err, backend.ErrNotFound):
		return attr{}, dir.err
	}
	if fileErr == nil {
		a := f.attrFromObject(fileInfo, false)
		f.cache.put(key, a, f.ttl)
		return a, nil
	}
	if !errors.Is(fileErr, backend.ErrNotFound) {
		return attr{}, fileErr
	}
	if f.names.Encrypted() {
		// A directory is its marker, which holds its id.
		return attr{}, backend.ErrNotFound
	}
	found, err := f.hasChildren(ctx, f.names.Marker(key))
	if err != nil {
		return attr{}, err
	}
	if !found {
		return attr{}, backend.ErrNotFound
	}
	a := f.implicitDir(f.names.Marker(key))
	f.cache.put(f.names.Marker(key), a, f.ttl)
	return a, nil
}

// errStop ends a listing early.
var errStop = errors.New("stop listing")

// hasChildren reports whether any key other than the marker itself lies
// under prefix.
func (f *FS) hasChildren(ctx context.Context, prefix string) (bool, error) {
	found := false
	err := f.store.List(ctx, prefix, "/", func(obj *backend.ObjectInfo, p string) error {
		if obj != nil && obj.Key == prefix {
			return nil
		}
		found = true
		return errStop
	})
	if err != nil && !errors.Is(err, errStop) {
		return false, err
	}
	return found, nil
}

// callerOwner returns the uid and gid of the process making the request,
// the owner of what it creates.
func (f *FS) callerOwner(ctx context.Context) (uint32, uint32) {
	if c, ok := fuse.FromContext(ctx); ok {
		return c.Uid, c.Gid
	}
	return f.uid, f.gid
}
