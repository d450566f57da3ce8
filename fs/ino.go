package fs

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"strconv"
	"sync"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// Inode numbers.
//
// Tools that detect unchanged files (rsync, restic, tar's incremental
// mode, find -inum) need st_ino to stay the same for the same file: across
// renames, remounts and mounts on other machines. So every object this
// mount creates carries a random 63-bit number in its metadata ("ino"),
// drawn once at creation; a rename or a chmod is a server-side copy that
// keeps it. An object without one (written by another tool, or by an older
// s3cryptfs), and a directory without a marker, gets a hash of its key:
// stable across remounts and machines, but a rename changes it (until the
// next metadata write of this mount stores the number, see attr.meta).
//
// Numbers stay below 2^63 (go-fuse hands out automatic numbers from 2^63
// and some tools treat st_ino as signed) and above 1 (the root's). Two
// objects can carry the same stored number (a copy made by another tool
// keeps the metadata); go-fuse would take them for hard links of one
// inode, so this mount tracks the numbers of its live nodes and gives the
// later of two claimants another number (a hash of its key and the
// number), for as long as the mount lives.

const inoMask = 1<<63 - 1

// keyIno is the number of an object without a stored one: a hash of its
// key (a directory's is its marker key, "a/b/").
func keyIno(key string) uint64 {
	return hashIno("key\x00" + key)
}

func hashIno(s string) uint64 {
	h := sha256.Sum256([]byte("s3cryptfs inode number\x00" + s))
	return clampIno(binary.BigEndian.Uint64(h[:8]))
}

// clampIno maps any 64-bit value into [2, 2^63).
func clampIno(v uint64) uint64 {
	v &= inoMask
	if v < 2 {
		v += 2
	}
	return v
}

// newIno draws the number of a new object.
func newIno() uint64 {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic("fs: no randomness for an inode number: " + err.Error()) // crypto/rand does not fail on Linux
	}
	return clampIno(binary.BigEndian.Uint64(b[:]))
}

// storedIno parses the stored "ino" value of the object key, falling back
// to keyIno for a missing or malformed one.
func storedIno(v, key string) uint64 {
	if n, err := strconv.ParseUint(v, 10, 64); err == nil && n >= 2 && n <= inoMask {
		return n
	}
	return keyIno(key)
}

// inoTable maps the numbers of this mount's live nodes to their owner.
type inoTable struct {
	mu sync.Mutex
	m  map[uint64]inoOwner
}

// inoOwner is who holds a number: the node once created (its current path
// follows renames in this mount), or until then the key it was claimed
// for.
type inoOwner struct {
	key  string
	node *gofs.Inode
}

// claim returns the number the node for key (a path, no trailing slash)
// should have, given the number it carries: that number unless another
// live node holds it. The caller passes the result to register once the
// node exists.
func (t *inoTable) claim(want uint64, key string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[uint64]inoOwner{}
	}
	ino := want
	for i := 0; ; i++ {
		o, ok := t.m[ino]
		if !ok || o.owns(key) {
			t.m[ino] = inoOwner{key: key, node: o.node}
			return ino
		}
		// Deterministic, so the same object gets the same replacement as
		// long as the same objects are live.
		ino = hashIno("alt\x00" + key + "\x00" + strconv.FormatUint(want, 10) + "\x00" + strconv.Itoa(i))
	}
}

// owns reports whether the number's holder is the object at key, or is
// gone: a node that left the tree (unlinked, or a duplicate that lost a
// lookup race in go-fuse) has an empty path.
func (o inoOwner) owns(key string) bool {
	if o.node == nil {
		return o.key == key
	}
	p := keyOf(o.node)
	return p == key || p == ""
}

// register records that node holds ino.
func (t *inoTable) register(ino uint64, node *gofs.Inode) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[uint64]inoOwner{}
	}
	t.m[ino] = inoOwner{node: node}
}

// forget releases ino if node holds it (the kernel forgot the node).
func (t *inoTable) forget(ino uint64, node *gofs.Inode) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if o, ok := t.m[ino]; ok && o.node == node {
		delete(t.m, ino)
	}
}

// newNode creates the inode of op, the child name of d with attributes a,
// under the number a.ino unless another live node holds it.
func (d *Dir) newNode(ctx context.Context, name string, op gofs.InodeEmbedder, a attr) *gofs.Inode {
	f := d.fsys
	e, _ := d.entry(name)
	ino := f.inos.claim(a.ino, e.Key)
	ch := d.NewInode(ctx, op, gofs.StableAttr{Mode: a.kind.typeBits(), Ino: ino})
	f.inos.register(ino, ch)
	return ch
}

// OnForget releases the node's number when the kernel forgets it.
func (d *Dir) OnForget()     { d.fsys.inos.forget(d.StableAttr().Ino, &d.Inode) }
func (fl *File) OnForget()   { fl.fsys.inos.forget(fl.StableAttr().Ino, &fl.Inode) }
func (s *Symlink) OnForget() { s.fsys.inos.forget(s.StableAttr().Ino, &s.Inode) }
func (s *Special) OnForget() { s.fsys.inos.forget(s.StableAttr().Ino, &s.Inode) }
