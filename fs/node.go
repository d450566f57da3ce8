package fs

import (
	"context"
	"strings"
	"sync"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/s3cryptfs/s3cryptfs/fs/names"
)

// node is what Dir, File and Symlink share: attributes kept from the store
// with the time they were fetched.
type node interface {
	gofs.InodeEmbedder
	nodeKind() kind
	// refresh replaces the attributes with ones fetched from the store,
	// unless the node holds local changes not yet stored.
	refresh(a attr)
	// storedIno is the inode number the node's object carries (attr.ino).
	storedIno() uint64
}

// attrs is embedded by every node type.
type attrs struct {
	mu      sync.Mutex
	attr    attr
	fetched time.Time
}

func (s *attrs) get() attr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.attr
}

func (s *attrs) storedIno() uint64 { return s.get().ino }

func (s *attrs) set(a attr) {
	s.mu.Lock()
	s.attr = a
	s.fetched = time.Now()
	s.mu.Unlock()
}

// stale reports whether the attributes are older than the TTL.
func (s *attrs) stale(ttl time.Duration) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return time.Since(s.fetched) >= ttl
}

// keyOf is the object key of a node (for a directory, its marker's without
// the trailing slash), which the names layer builds from the node's parent
// directory and name; "" for the root and for a node no longer in the tree.
func keyOf(n *gofs.Inode) string {
	name, parent := n.Parent()
	if parent == nil {
		return ""
	}
	pd, ok := parent.Operations().(*Dir)
	if !ok {
		return ""
	}
	e, err := pd.entry(name)
	if err != nil {
		return ""
	}
	if pd.fsys.names.Encrypted() {
		pd.fsys.paths.note(e.Key, n)
	}
	return e.Key
}

// keyPaths remembers the path of the nodes whose encrypted keys were built
// lately, so that a log line about an object can name the file too (an
// encrypted key alone tells a user nothing). Bounded: it starts over when
// full.
type keyPaths struct {
	mu sync.Mutex
	m  map[string]*gofs.Inode
}

func (k *keyPaths) note(key string, n *gofs.Inode) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.m == nil || len(k.m) >= 100000 {
		k.m = map[string]*gofs.Inode{}
	}
	k.m[key] = n
}

// path is the current path of the node last seen at key, "" if unknown.
func (k *keyPaths) path(key string) string {
	k.mu.Lock()
	n := k.m[strings.TrimSuffix(key, "/")]
	k.mu.Unlock()
	if n == nil {
		return ""
	}
	return n.Path(nil)
}

// orphan is the location of a directory no longer in the tree: a prefix no
// object has, so listing it shows nothing.
var orphan = names.Dir{Prefix: IndexRoot + "/\x00orphan/"}

// location is where the directory's entries are stored. With plaintext
// names it follows the path (a renamed directory's entries move with it);
// with encrypted names it is the directory's id, which a rename keeps.
func (d *Dir) location() names.Dir {
	if d.fsys.names.Encrypted() || d.IsRoot() {
		d.mu.Lock()
		defer d.mu.Unlock()
		return d.loc
	}
	k := keyOf(&d.Inode)
	if k == "" {
		return orphan
	}
	return names.PlainDir(k)
}

// entry is where the entry name of d is stored.
func (d *Dir) entry(name string) (names.Entry, error) {
	return d.fsys.names.Entry(d.location(), name)
}

// childLoc is the location of d's subdirectory name whose marker has the
// attributes a.
func (d *Dir) childLoc(name string, a attr) (names.Dir, error) {
	return d.fsys.names.Child(d.location(), name, a.info.Metadata)
}

// newChild returns the inode for name with attributes a, reusing the
// existing child inode when it is of the same kind and carries the same
// inode number (the same object, or a new version of it) so that an open
// file keeps one inode (and one content.File) however often it is looked
// up. An object replaced by another one (another number) gets a new node.
func (d *Dir) newChild(ctx context.Context, name string, a attr) (*gofs.Inode, error) {
	if ch := d.GetChild(name); ch != nil {
		if n, ok := ch.Operations().(node); ok && n.nodeKind() == a.kind && n.storedIno() == a.ino {
			n.refresh(a)
			return ch, nil
		}
	}
	var op gofs.InodeEmbedder
	switch {
	case a.kind == kindDir:
		dd := &Dir{fsys: d.fsys}
		dd.set(a)
		if d.fsys.names.Encrypted() {
			loc, err := d.childLoc(name, a)
			if err != nil {
				return nil, err
			}
			dd.loc = loc
		}
		op = dd
	case a.kind == kindSymlink:
		s := &Symlink{fsys: d.fsys}
		s.set(a)
		op = s
	case a.kind.special():
		s := &Special{fsys: d.fsys}
		s.set(a)
		op = s
	default:
		fl := &File{fsys: d.fsys}
		fl.set(a)
		op = fl
	}
	return d.newNode(ctx, name, op, a), nil
}

// entryOut fills a lookup/create answer.
func (f *FS) entryOut(a attr, out *fuse.EntryOut) {
	a.fill(&out.Attr)
	out.SetEntryTimeout(f.ttl)
	out.SetAttrTimeout(f.ttl)
}

// setattrMeta applies mode/uid/gid/mtime/atime from a SETATTR request to a and
// reports whether anything changed.
func setattrMeta(a *attr, in *fuse.SetAttrIn) bool {
	changed := false
	if m, ok := in.GetMode(); ok {
		a.mode = m & 0o7777
		changed = true
	}
	if u, ok := in.GetUID(); ok {
		a.uid = u
		changed = true
	}
	if g, ok := in.GetGID(); ok {
		a.gid = g
		changed = true
	}
	if t, ok := in.GetMTime(); ok {
		a.mtime = t
		changed = true
	}
	if t, ok := in.GetATime(); ok {
		a.atime = t
		changed = true
	}
	return changed
}

// statfs answers with large fixed numbers: an object store has no
// meaningful capacity, and tools like df or cp refuse to write to a
// filesystem reporting zero free space.
func statfs(out *fuse.StatfsOut, nameLen int) syscall.Errno {
	const blocks = 1 << 40
	out.Bsize = 4096
	out.Frsize = 4096
	out.Blocks = blocks
	out.Bfree = blocks
	out.Bavail = blocks
	out.Files = 1 << 30
	out.Ffree = 1 << 30
	out.NameLen = uint32(nameLen)
	return 0
}
