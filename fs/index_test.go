package fs_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/local"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
	"github.com/s3cryptfs/s3cryptfs/fs/content"
)

// testKeys returns vault keys for tests that mount one store several times.
func testKeys(t *testing.T) *cipher.Keys {
	t.Helper()
	cipher.AllowWeakKDFForTests(t)
	_, keys, err := cipher.NewConfig([]byte("test passphrase"), cipher.ConfigOptions{BlockSize: 4096, KDF: cipher.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// idxMount is an in-process mount that a test unmounts itself, the way the
// daemon stops: unmount, then SyncAll (which writes pending indexes).
type idxMount struct {
	dir     string
	unmount func()
}

// mountIdx mounts st with an engine encrypting under engKeys (nil: no
// client-side encryption) and fs.Options.Keys = fsKeys.
func mountIdx(t *testing.T, st backend.Store, engKeys, fsKeys *cipher.Keys) *idxMount {
	t.Helper()
	if testing.Short() {
		t.Skip("FUSE mount: skipped under -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("FUSE tests mount with mount(2) directly and need root (run as root, or use -short)")
	}
	bc, err := cache.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := content.New(content.Options{Store: st, Keys: engKeys, Cache: bc})
	if err != nil {
		t.Fatal(err)
	}
	root, fsys, err := fs.NewRoot(fs.Options{Store: st, Engine: eng, Keys: fsKeys, AttrTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := fsys.MountOptions()
	opts.DirectMount = true
	opts.Name = "s3cryptfs-test"
	opts.FsName = "idx"
	server, err := gofs.Mount(dir, root, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	var once sync.Once
	m := &idxMount{dir: dir}
	m.unmount = func() {
		once.Do(func() {
			if err := server.Unmount(); err != nil {
				t.Errorf("unmount: %v (detaching lazily)", err)
				syscall.Unmount(dir, unix.MNT_DETACH)
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if err := fsys.SyncAll(ctx); err != nil {
				t.Errorf("SyncAll: %v", err)
			}
			eng.Close()
			bc.Close()
		})
	}
	t.Cleanup(m.unmount)
	return m
}

// stores runs fn over a fresh in-memory store and a fresh local store.
func stores(t *testing.T, fn func(t *testing.T, st backend.Store)) {
	t.Run("mem", func(t *testing.T) { fn(t, mem.New()) })
	t.Run("local", func(t *testing.T) {
		st, err := local.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		fn(t, st)
	})
}

const (
	idxFiles   = 12
	linkName   = "link-secret"
	linkTarget = "some/where/else"
)

func fileName(i int) string { return fmt.Sprintf("secret-name-%02d", i) }

// stat is the part of a stat result the index must reproduce.
type stat struct {
	mode, uid, gid uint32
	size           int64
	mtime          unix.Timespec
}

func lstat(t *testing.T, p string) stat {
	t.Helper()
	var s unix.Stat_t
	if err := unix.Lstat(p, &s); err != nil {
		t.Fatalf("lstat %s: %v", p, err)
	}
	return stat{mode: s.Mode, uid: s.Uid, gid: s.Gid, size: s.Size, mtime: s.Mtim}
}

// populate writes, through a mount it then unmounts, idxFiles files in "d"
// with varied modes, owners, mtimes and sizes (half of them with the
// attributes changed on the open descriptor, so they ride with the upload,
// half with metadata copies after close), and a symlink with another owner.
// It returns every entry's attributes as that mount showed them, after
// checking they are the ones set.
func populate(t *testing.T, st backend.Store, keys *cipher.Keys) map[string]stat {
	t.Helper()
	a := mountIdx(t, st, keys, keys)
	d := filepath.Join(a.dir, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	modes := []uint32{0o600, 0o640, 0o644, 0o755, 0o700, 0o444, 0o1777}
	want := map[string]stat{}
	for i := range idxFiles {
		p := filepath.Join(d, fileName(i))
		mode, uid, gid := modes[i%len(modes)], uint32(1000+i), uint32(2000+3*i)
		mt := time.Unix(1600000000+int64(i)*86400, int64(i)*1234567)
		data := randBytes(t, 100*i+1)
		if i%2 == 0 {
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(data); err != nil {
				t.Fatal(err)
			}
			if err := f.Chmod(os.FileMode(mode&0o777) | unixModeBits(mode)); err != nil {
				t.Fatal(err)
			}
			if err := f.Chown(int(uid), int(gid)); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		} else {
			if err := os.WriteFile(p, data, 0o644); err != nil {
				t.Fatal(err)
			}
			if err := unix.Chmod(p, mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(p, int(uid), int(gid)); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		want[fileName(i)] = stat{mode: syscall.S_IFREG | mode, uid: uid, gid: gid, size: int64(len(data)), mtime: unix.NsecToTimespec(mt.UnixNano())}
	}
	l := filepath.Join(d, linkName)
	if err := os.Symlink(linkTarget, l); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(l, 33, 44); err != nil {
		t.Fatal(err)
	}
	got := map[string]stat{}
	for name, w := range want {
		s := lstat(t, filepath.Join(d, name))
		if s != w {
			t.Fatalf("%s as written: %+v, want %+v", name, s, w)
		}
		got[name] = s
	}
	s := lstat(t, l)
	if s.mode != syscall.S_IFLNK|0o777 || s.uid != 33 || s.gid != 44 || s.size != int64(len(linkTarget)) {
		t.Fatalf("symlink as written: %+v", s)
	}
	got[linkName] = s
	a.unmount()
	return got
}

// unixModeBits maps setuid/setgid/sticky bits to os.FileMode.
func unixModeBits(mode uint32) os.FileMode {
	var m os.FileMode
	if mode&syscall.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if mode&syscall.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if mode&syscall.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m
}

// lsl lists dir and lstats every entry, as ls -l does, and returns the
// attributes and the number of HEADs that took (the lookup of dir itself
// is not counted).
func lsl(t *testing.T, cs *countingStore, dir string) (map[string]stat, int64) {
	t.Helper()
	lstat(t, dir)
	cs.stats.Store(0)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]stat{}
	for _, e := range ents {
		got[e.Name()] = lstat(t, filepath.Join(dir, e.Name()))
	}
	return got, cs.stats.Load()
}

func sameStats(t *testing.T, got, want map[string]stat) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%d entries, want %d", len(got), len(want))
	}
	for name, w := range want {
		if g, ok := got[name]; !ok {
			t.Errorf("%s missing", name)
		} else if g != w {
			t.Errorf("%s: %+v, want %+v", name, g, w)
		}
	}
}

// TestIndexFreshMountNoHeads: what one mount wrote is listed by a fresh
// mount (ReadDir + Lstat of every entry, as ls -l) without a single HEAD,
// with exactly the attributes written, and the symlink still reads right.
func TestIndexFreshMountNoHeads(t *testing.T) {
	stores(t, func(t *testing.T, st backend.Store) {
		keys := testKeys(t)
		want := populate(t, st, keys)
		cs := &countingStore{Store: st}
		b := mountIdx(t, cs, keys, keys)
		got, heads := lsl(t, cs, filepath.Join(b.dir, "d"))
		sameStats(t, got, want)
		if heads != 0 {
			t.Errorf("ls -l of %d entries on a fresh mount: %d HEADs, want 0", len(want), heads)
		}
		if target, err := os.Readlink(filepath.Join(b.dir, "d", linkName)); err != nil || target != linkTarget {
			t.Errorf("readlink: %q, %v", target, err)
		}
	})
}

// TestIndexValidatesEntries: objects replaced or removed behind the index's
// back (directly in the store) are HEADed and shown as they are now; the
// others still come from the index.
func TestIndexValidatesEntries(t *testing.T) {
	stores(t, func(t *testing.T, st backend.Store) {
		keys := testKeys(t)
		want := populate(t, st, keys)
		ctx := context.Background()
		meta := map[string]string{"mode": "604", "uid": "4242", "gid": "4343", "mtime": "1234567890000000001"}
		if _, err := st.Copy(ctx, "d/"+fileName(5), "d/"+fileName(3), backend.CopyOptions{ReplaceMetadata: true, Metadata: meta}); err != nil {
			t.Fatal(err)
		}
		if err := st.Delete(ctx, "d/"+fileName(7)); err != nil {
			t.Fatal(err)
		}
		want[fileName(3)] = stat{mode: syscall.S_IFREG | 0o604, uid: 4242, gid: 4343, size: want[fileName(5)].size, mtime: unix.NsecToTimespec(1234567890000000001)}
		delete(want, fileName(7))

		cs := &countingStore{Store: st}
		b := mountIdx(t, cs, keys, keys)
		got, heads := lsl(t, cs, filepath.Join(b.dir, "d"))
		sameStats(t, got, want)
		if heads != 1 {
			t.Errorf("%d HEADs, want 1 (the replaced object only)", heads)
		}
	})
}

// TestIndexCorruptIgnored: an index object that does not authenticate is
// ignored (every entry HEADed, attributes right, no error), and the mount
// that listed the directory rewrites it, so the next fresh mount needs no
// HEAD again.
func TestIndexCorruptIgnored(t *testing.T) {
	stores(t, func(t *testing.T, st backend.Store) {
		keys := testKeys(t)
		want := populate(t, st, keys)
		k := fs.IndexRoot + "/d/_"
		raw := readObject(t, st, k)
		raw[len(raw)/2] ^= 0x40
		if _, err := st.Put(context.Background(), k, bytes.NewReader(raw), int64(len(raw)), nil); err != nil {
			t.Fatal(err)
		}
		cs := &countingStore{Store: st}
		b := mountIdx(t, cs, keys, keys)
		got, heads := lsl(t, cs, filepath.Join(b.dir, "d"))
		sameStats(t, got, want)
		if heads != int64(len(want)) {
			t.Errorf("%d HEADs with a corrupt index, want %d (one per entry)", heads, len(want))
		}
		b.unmount()

		c := mountIdx(t, cs, keys, keys)
		got, heads = lsl(t, cs, filepath.Join(c.dir, "d"))
		sameStats(t, got, want)
		if heads != 0 {
			t.Errorf("after the index was rewritten: %d HEADs, want 0", heads)
		}
	})
}

// TestIndexPrivate: with client-side encryption the index object holds no
// file name; without it the index is plain JSON; and an encrypting mount
// not given the keys writes no index at all rather than a plaintext one.
func TestIndexPrivate(t *testing.T) {
	keys := testKeys(t)
	st := mem.New()
	populate(t, st, keys)
	raw := readObject(t, st, fs.IndexRoot+"/d/_")
	for _, name := range []string{"secret-name", linkName, `"dir":"d/"`} {
		if bytes.Contains(raw, []byte(name)) {
			t.Errorf("encrypted index object contains %q", name)
		}
	}
	if json.Valid(raw) {
		t.Errorf("encrypted index object is valid JSON")
	}

	plain := mem.New()
	m := mountIdx(t, plain, nil, nil)
	if err := os.WriteFile(filepath.Join(m.dir, "visible-name"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	raw = readObject(t, plain, fs.IndexRoot+"/_")
	if !json.Valid(raw) || !bytes.Contains(raw, []byte("visible-name")) {
		t.Errorf("plaintext index: %q", raw)
	}

	nokeys := mem.New()
	m = mountIdx(t, nokeys, keys, nil)
	if err := os.WriteFile(filepath.Join(m.dir, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadDir(m.dir); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	err := nokeys.List(context.Background(), fs.IndexRoot, "", func(obj *backend.ObjectInfo, _ string) error {
		return fmt.Errorf("index object %s written without keys", obj.Key)
	})
	if err != nil {
		t.Error(err)
	}
}

// TestIndexFollowsChanges: chmod/chown/utimes (metadata copies), a file
// rename, an unlink and a directory rename through one mount are all in the
// indexes a fresh mount reads: it lists both directories without a HEAD and
// shows the new attributes.
func TestIndexFollowsChanges(t *testing.T) {
	stores(t, func(t *testing.T, st backend.Store) {
		keys := testKeys(t)
		want := populate(t, st, keys)
		a := mountIdx(t, st, keys, keys)
		d := filepath.Join(a.dir, "d")
		p := filepath.Join(d, fileName(1))
		if err := os.Chmod(p, 0o751); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(p, 5555, 6666); err != nil {
			t.Fatal(err)
		}
		mt := time.Unix(1500000000, 42)
		if err := os.Chtimes(p, mt, mt); err != nil {
			t.Fatal(err)
		}
		want[fileName(1)] = stat{mode: syscall.S_IFREG | 0o751, uid: 5555, gid: 6666, size: want[fileName(1)].size, mtime: unix.NsecToTimespec(mt.UnixNano())}
		if err := os.Rename(filepath.Join(d, fileName(2)), filepath.Join(d, "renamed")); err != nil {
			t.Fatal(err)
		}
		want["renamed"] = want[fileName(2)]
		delete(want, fileName(2))
		if err := os.Remove(filepath.Join(d, fileName(4))); err != nil {
			t.Fatal(err)
		}
		delete(want, fileName(4))

		sub := filepath.Join(a.dir, "sub")
		if err := os.Mkdir(sub, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(sub, "inner"), []byte("inner data"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(sub, "inner"), 71, 72); err != nil {
			t.Fatal(err)
		}
		wantSub := map[string]stat{"inner": lstat(t, filepath.Join(sub, "inner"))}
		if err := os.Rename(sub, filepath.Join(a.dir, "moved")); err != nil {
			t.Fatal(err)
		}
		a.unmount()

		cs := &countingStore{Store: st}
		b := mountIdx(t, cs, keys, keys)
		got, heads := lsl(t, cs, filepath.Join(b.dir, "d"))
		sameStats(t, got, want)
		if heads != 0 {
			t.Errorf("ls -l of d after changes: %d HEADs, want 0", heads)
		}
		got, heads = lsl(t, cs, filepath.Join(b.dir, "moved"))
		sameStats(t, got, wantSub)
		if heads != 0 {
			t.Errorf("ls -l of a renamed directory: %d HEADs, want 0", heads)
		}
		if _, err := st.Stat(context.Background(), fs.IndexRoot+"/sub/_"); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("index of the renamed-away directory: %v, want it deleted", err)
		}
	})
}

// TestIndexNameReserved: the index namespace is hidden at the root and
// cannot be created there, but is an ordinary name below it.
func TestIndexNameReserved(t *testing.T) {
	keys := testKeys(t)
	st := mem.New()
	m := mountIdx(t, st, keys, keys)
	root := m.dir
	if err := os.WriteFile(filepath.Join(root, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(root, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "sub", "g"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// fsync of the root writes every pending index (s3cryptfs unmount
	// relies on it); then check the namespace is not listed.
	fd := mustOpen(t, root)
	err := unix.Fsync(fd)
	unix.Close(fd)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stat(context.Background(), fs.IndexRoot+"/_"); err != nil {
		t.Fatalf("root index after fsync of the root: %v", err)
	}
	if _, err := st.Stat(context.Background(), fs.IndexRoot+"/sub/_"); err != nil {
		t.Fatalf("index of sub after fsync of the root: %v", err)
	}
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".s3cryptfs") {
			t.Errorf("root listing shows %s", e.Name())
		}
	}
	name := filepath.Join(root, fs.IndexRoot)
	if _, err := os.Lstat(name); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("lstat of the index namespace: %v, want ENOENT", err)
	}
	if err := os.Mkdir(name, 0o755); !errors.Is(err, syscall.EPERM) {
		t.Errorf("mkdir: %v, want EPERM", err)
	}
	if err := os.WriteFile(name, nil, 0o644); !errors.Is(err, syscall.EPERM) {
		t.Errorf("create: %v, want EPERM", err)
	}
	if err := os.Symlink("x", name); !errors.Is(err, syscall.EPERM) {
		t.Errorf("symlink: %v, want EPERM", err)
	}
	if err := os.Rename(filepath.Join(root, "f"), name); !errors.Is(err, syscall.EPERM) {
		t.Errorf("rename: %v, want EPERM", err)
	}
	if err := os.WriteFile(filepath.Join(root, "sub", fs.IndexRoot), []byte("ok"), 0o644); err != nil {
		t.Errorf("the name below the root: %v", err)
	}
}

// mustOpen opens directory p; the caller closes the descriptor.
func mustOpen(t *testing.T, p string) int {
	t.Helper()
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

// flakyIndex fails the first index writes it sees with a transient error.
type flakyIndex struct {
	backend.Store
	failPuts atomic.Int64
	failed   atomic.Int64
}

func (s *flakyIndex) Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (backend.ObjectInfo, error) {
	if strings.HasPrefix(key, fs.IndexRoot+"/") && s.failPuts.Add(-1) >= 0 {
		s.failed.Add(1)
		return backend.ObjectInfo{}, errors.New("injected transient failure")
	}
	return s.Store.Put(ctx, key, r, size, meta)
}

// TestIndexWriteRetried: an index write that fails transiently (here at the
// fsync of the directory) keeps its changes, and the next attempt (SyncAll
// at unmount) writes them, so the next fresh mount needs no HEAD.
func TestIndexWriteRetried(t *testing.T) {
	keys := testKeys(t)
	st := &flakyIndex{Store: mem.New()}
	st.failPuts.Store(1)
	a := mountIdx(t, st, keys, keys)
	want := map[string]stat{}
	for i := range 5 {
		p := filepath.Join(a.dir, fileName(i))
		if err := os.WriteFile(p, randBytes(t, 10*i), 0o640); err != nil {
			t.Fatal(err)
		}
		want[fileName(i)] = lstat(t, p)
	}
	fd := mustOpen(t, a.dir)
	if err := unix.Fsync(fd); err != nil {
		t.Fatalf("fsync of the directory (an index failure must not show): %v", err)
	}
	unix.Close(fd)
	if st.failed.Load() != 1 {
		t.Fatalf("%d index writes failed, want the fsync's to", st.failed.Load())
	}
	a.unmount()
	cs := &countingStore{Store: st}
	b := mountIdx(t, cs, keys, keys)
	cs.stats.Store(0)
	ents, err := os.ReadDir(b.dir)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]stat{}
	for _, e := range ents {
		got[e.Name()] = lstat(t, filepath.Join(b.dir, e.Name()))
	}
	sameStats(t, got, want)
	if heads := cs.stats.Load(); heads != 0 {
		t.Errorf("%d HEADs after the retried index write, want 0", heads)
	}
}

// TestIndexPOSIXFreshMount: special files, inode numbers, explicit atimes
// and xattrs written by one mount are listed by a fresh mount from the
// index: ls -l plus getfattr of every entry costs no HEAD and shows what
// the first mount showed.
func TestIndexPOSIXFreshMount(t *testing.T) {
	stores(t, func(t *testing.T, st backend.Store) {
		keys := testKeys(t)
		a := mountIdx(t, st, keys, keys)
		d := filepath.Join(a.dir, "d")
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mkfifo(d+"/fifo", 0o600); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mknod(d+"/blk", unix.S_IFBLK|0o600, int(unix.Mkdev(8, 1))); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d+"/f", []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(d+"/f", "user.k", []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(d+"/f", time.Unix(5, 6), time.Unix(7, 8)); err != nil {
			t.Fatal(err)
		}
		type full struct {
			ino, rdev    uint64
			mode         uint32
			atime, mtime int64
			x            string
		}
		get := func(dir string) map[string]full {
			ents, err := os.ReadDir(dir)
			if err != nil {
				t.Fatal(err)
			}
			m := map[string]full{}
			for _, e := range ents {
				var s unix.Stat_t
				p := filepath.Join(dir, e.Name())
				if err := unix.Lstat(p, &s); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				n, _ := unix.Listxattr(p, buf)
				x := string(buf[:max(n, 0)])
				if v, err := unix.Getxattr(p, "user.k", buf); err == nil {
					x += "=" + string(buf[:v])
				}
				m[e.Name()] = full{s.Ino, s.Rdev, s.Mode, s.Atim.Nano(), s.Mtim.Nano(), x}
			}
			return m
		}
		want := get(d)
		a.unmount()

		cs := &countingStore{Store: st}
		b := mountIdx(t, cs, keys, keys)
		lstat(t, filepath.Join(b.dir, "d"))
		cs.stats.Store(0)
		got := get(filepath.Join(b.dir, "d"))
		if heads := cs.stats.Load(); heads != 0 {
			t.Errorf("ls -l and getfattr of %d entries on a fresh mount: %d HEADs, want 0", len(want), heads)
		}
		if len(got) != 3 {
			t.Fatalf("entries: %v", got)
		}
		for n, w := range want {
			if got[n] != w {
				t.Errorf("%s: %+v, want %+v", n, got[n], w)
			}
		}
	})
}
