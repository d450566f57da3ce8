package fs

import (
	iofs "io/fs"
	"strconv"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// ObjectAttr is what an entry's stored object says about it, decoded
// without a mount: for tools that read a vault directly (s3cryptfs ls, get,
// verify). It is the FUSE-free counterpart of the mount's attributes, so
// that the metadata format is parsed in this package only.
type ObjectAttr struct {
	Dir     bool
	Symlink bool
	// Mode is the permission bits (07777); the defaults of a mount when
	// the object carries none (0644 files, 0755 directories, 0777 links).
	Mode uint32
	// UID and GID are set only when HasOwner: objects written by other
	// tools carry no owner, and a mount shows its --uid/--gid for them.
	UID, GID uint32
	HasOwner bool
	// Mtime is the stored mtime, else the object's LastModified.
	Mtime time.Time
	// Atime is the stored atime; zero when never set explicitly (it then
	// reads as Mtime). Written only by the POSIX work's mounts.
	Atime time.Time
	// Special is the type of a FIFO, socket or device node ("fifo",
	// "socket", "chardev", "blockdev"): a zero-length object without
	// content, not even an encrypted header. Dev is a device's dev_t.
	Special string
	Dev     uint64
}

// specialTypes are the metadata "type" values of special files.
var specialTypes = map[string]bool{typeFifo: true, typeSocket: true, typeChar: true, typeBlock: true}

// ObjectAttrOf decodes the user metadata of info (from Stat; List leaves
// Metadata nil); isDir says info is a directory marker ("d/"); an object
// with metadata type=dir (an encrypted-name directory) is one too. Missing
// or malformed values fall back to the defaults a mount shows.
func ObjectAttrOf(info backend.ObjectInfo, isDir bool) ObjectAttr {
	isDir = isDir || info.Metadata[metaType] == typeDir
	a := ObjectAttr{Dir: isDir, Mode: 0o644, Mtime: info.LastModified}
	if isDir {
		a.Mode = 0o755
	} else if t := info.Metadata[metaType]; t == typeSymlink {
		a.Symlink = true
		a.Mode = 0o777
	} else if specialTypes[t] {
		a.Special = t
		a.Dev, _ = strconv.ParseUint(info.Metadata[metaDev], 10, 64)
	}
	if v, err := strconv.ParseUint(info.Metadata[metaMode], 8, 32); err == nil {
		a.Mode = uint32(v) & 0o7777
	}
	uid, err1 := strconv.ParseUint(info.Metadata[metaUID], 10, 32)
	gid, err2 := strconv.ParseUint(info.Metadata[metaGID], 10, 32)
	if err1 == nil && err2 == nil {
		a.UID, a.GID, a.HasOwner = uint32(uid), uint32(gid), true
	}
	if v, err := strconv.ParseInt(info.Metadata[metaMtime], 10, 64); err == nil {
		a.Mtime = time.Unix(0, v)
	}
	if v, err := strconv.ParseInt(info.Metadata[metaAtime], 10, 64); err == nil {
		a.Atime = time.Unix(0, v)
	}
	return a
}

// FileMode is a as an io/fs mode (type and permission bits, setuid,
// setgid and sticky included).
func (a ObjectAttr) FileMode() iofs.FileMode {
	m := iofs.FileMode(a.Mode & 0o777)
	if a.Mode&0o4000 != 0 {
		m |= iofs.ModeSetuid
	}
	if a.Mode&0o2000 != 0 {
		m |= iofs.ModeSetgid
	}
	if a.Mode&0o1000 != 0 {
		m |= iofs.ModeSticky
	}
	switch {
	case a.Dir:
		m |= iofs.ModeDir
	case a.Symlink:
		m |= iofs.ModeSymlink
	case a.Special == "fifo":
		m |= iofs.ModeNamedPipe
	case a.Special == "socket":
		m |= iofs.ModeSocket
	case a.Special == "chardev":
		m |= iofs.ModeDevice | iofs.ModeCharDevice
	case a.Special == "blockdev":
		m |= iofs.ModeDevice
	}
	return m
}

// MaxSymlinkTarget bounds a symlink object's content (a target is at most
// PATH_MAX bytes); a reader refuses more.
const MaxSymlinkTarget = maxSymlink
