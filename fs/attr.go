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
)

// Object user metadata keys (x-amz-meta-* on S3). Values are decimal except
// mode, which is octal like chmod's argument.
const (
	metaMode  = "mode"
	metaUID   = "uid"
	metaGID   = "gid"
	metaMtime = "mtime" // unix nanoseconds
	metaType  = "type"  // "symlink" for symlinks; absent for files and dirs

	typeSymlink = "symlink"
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
)

// typeBits is the S_IFMT part of a node's mode.
func (k kind) typeBits() uint32 {
	switch k {
	case kindDir:
		return syscall.S_IFDIR
	case kindSymlink:
		return syscall.S_IFLNK
	default:
		return syscall.S_IFREG
	}
}

// attr is what the tree knows about one node.
type attr struct {
	kind  kind
	mode  uint32 // permission bits only (07777)
	uid   uint32
	gid   uint32
	mtime time.Time
	size  int64 // plaintext size (files, symlinks)
	// info is the stored object (file, symlink, or directory marker). An
	// empty Key means none: a directory without marker, or a file created
	// but not yet synced.
	info backend.ObjectInfo
}

// meta is the user metadata that stores a's mode, owner and mtime.
func (a attr) meta() map[string]string {
	m := map[string]string{
		metaMode:  strconv.FormatUint(uint64(a.mode&0o7777), 8),
		metaUID:   strconv.FormatUint(uint64(a.uid), 10),
		metaGID:   strconv.FormatUint(uint64(a.gid), 10),
		metaMtime: strconv.FormatInt(a.mtime.UnixNano(), 10),
	}
	if a.kind == kindSymlink {
		m[metaType] = typeSymlink
	}
	return m
}

// fill writes a into a FUSE attribute.
func (a attr) fill(out *fuse.Attr) {
	out.Mode = a.kind.typeBits() | (a.mode & 0o7777)
	out.Uid = a.uid
	out.Gid = a.gid
	out.Size = uint64(a.size)
	if a.kind == kindDir {
		out.Size = 4096
		out.Nlink = 2
	} else {
		out.Nlink = 1
	}
	out.Blksize = 4096
	out.Blocks = (out.Size + 511) / 512
	t := a.mtime
	out.SetTimes(&t, &t, &t)
}

// attrFromObject derives attributes from a stored object; isDir says the
// object is a directory marker. Missing or malformed metadata falls back to
// defaults, because objects written by other tools carry none.
func (f *FS) attrFromObject(info backend.ObjectInfo, isDir bool) attr {
	a := attr{kind: kindFile, mode: 0o644, uid: f.uid, gid: f.gid, mtime: info.LastModified, info: info}
	if isDir {
		a.kind = kindDir
		a.mode = 0o755
	} else if info.Metadata[metaType] == typeSymlink {
		a.kind = kindSymlink
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
	if a.mtime.IsZero() {
		a.mtime = f.mountTime
	}
	if !isDir {
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

// implicitDir is the attribute of a directory that has no marker object.
func (f *FS) implicitDir() attr {
	return attr{kind: kindDir, mode: 0o755, uid: f.uid, gid: f.gid, mtime: f.mountTime}
}

// lookupKey finds what the name key (no trailing slash) is in the store: a
// directory (marker "key/" or any key under "key/"), a file or a symlink.
// A directory wins over a file of the same name, as in other S3 filesystems.
// Results are cached for the attribute TTL.
func (f *FS) lookupKey(ctx context.Context, key string) (attr, error) {
	if a, ok := f.cache.get(key + "/"); ok {
		return a, nil
	}
	if a, ok := f.cache.get(key); ok {
		return a, nil
	}
	ctx = detach(ctx)
	if a, ok := f.revalidated(ctx, key); ok {
		return a, nil
	}
	type res struct {
		info backend.ObjectInfo
		err  error
	}
	dirc := make(chan res, 1)
	go func() {
		info, err := f.store.Stat(ctx, key+"/")
		dirc <- res{info, err}
	}()
	fileInfo, fileErr := f.store.Stat(ctx, key)
	dir := <-dirc
	switch {
	case dir.err == nil:
		a := f.attrFromObject(dir.info, true)
		f.cache.put(key+"/", a, f.ttl)
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
	found, err := f.hasChildren(ctx, key+"/")
	if err != nil {
		return attr{}, err
	}
	if !found {
		return attr{}, backend.ErrNotFound
	}
	a := f.implicitDir()
	f.cache.put(key+"/", a, f.ttl)
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
