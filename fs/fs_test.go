package fs_test

import (
	"bytes"
	"context"
	"crypto/rand"
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
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
	"github.com/s3cryptfs/s3cryptfs/fs/content"
)

// mountMem mounts a tree over a fresh in-memory store in this process, so
// the race detector sees the filesystem code itself. It unmounts in
// Cleanup, lazily if the mount is busy, so a failing test leaves nothing
// mounted.
func mountMem(t *testing.T, ro bool) (string, backend.Store) {
	t.Helper()
	st := mem.New()
	return mountStore(t, st, ro), st
}

// mountStore is mountMem over a given store.
func mountStore(t *testing.T, st backend.Store, ro bool) string {
	t.Helper()
	return mountStoreWith(t, st, func(o *fs.Options) { o.ReadOnly = ro })
}

// mountStoreWith is mountStore with options adjusted by set.
func mountStoreWith(t *testing.T, st backend.Store, set func(*fs.Options)) string {
	t.Helper()
	dir, _ := mountStoreFS(t, st, set)
	return dir
}

// mountStoreFS is mountStoreWith that also returns the mounted FS.
func mountStoreFS(t *testing.T, st backend.Store, set func(*fs.Options)) (string, *fs.FS) {
	t.Helper()
	if testing.Short() {
		t.Skip("FUSE mount: skipped under -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("FUSE tests mount with mount(2) directly and need root (run as root, or use -short)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("FUSE tests need /dev/fuse: %v", err)
	}
	cipher.AllowWeakKDFForTests(t)
	_, keys, err := cipher.NewConfig([]byte("test passphrase"), cipher.ConfigOptions{BlockSize: 4096, KDF: cipher.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	bc, err := cache.New(16 << 20)
	if err != nil {
		t.Fatal(err)
	}
	eng, err := content.New(content.Options{Store: st, Keys: keys, Cache: bc, StreamKeepsMeta: fs.StreamKeepsMeta})
	if err != nil {
		t.Fatal(err)
	}
	o := fs.Options{Store: st, Engine: eng, Keys: keys, AttrTimeout: 200 * time.Millisecond}
	set(&o)
	root, fsys, err := fs.NewRoot(o)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := fsys.MountOptions()
	opts.DirectMount = true
	opts.Name = "s3cryptfs-test"
	opts.FsName = "mem"
	server, err := gofs.Mount(dir, root, opts)
	if err != nil {
		t.Fatalf("mount: %v", err)
	}
	t.Cleanup(func() {
		if err := server.Unmount(); err != nil {
			t.Errorf("unmount: %v (detaching lazily)", err)
			syscall.Unmount(dir, unix.MNT_DETACH)
		}
		eng.Close()
		bc.Close()
	})
	return dir, fsys
}

func randBytes(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// readObject returns an object's raw bytes.
func readObject(t *testing.T, st backend.Store, key string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), key, 0, -1, backend.GetOptions{})
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestInProcessBasics(t *testing.T) {
	dir, st := mountMem(t, false)
	p := filepath.Join(dir, "a.txt")
	marker := []byte("PLAINTEXT-MARKER-0123456789")
	data := append(bytes.Repeat([]byte("x"), 10000), marker...)
	if err := os.WriteFile(p, data, 0o640); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v, equal=%v", err, bytes.Equal(got, data))
	}
	raw := readObject(t, st, "a.txt")
	if bytes.Contains(raw, marker) {
		t.Fatal("object holds the plaintext marker")
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != int64(len(data)) || fi.Mode().Perm() != 0o640 {
		t.Fatalf("stat: size %d mode %v", fi.Size(), fi.Mode())
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Stat(context.Background(), "d/"); err != nil {
		t.Fatalf("mkdir made no marker: %v", err)
	}
	if err := os.Rename(p, filepath.Join(dir, "d", "b.txt")); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "d", "b.txt")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read after rename: %v", err)
	}
	if err := os.Remove(filepath.Join(dir, "d")); !errors.Is(err, syscall.ENOTEMPTY) {
		t.Fatalf("rmdir non-empty: %v, want ENOTEMPTY", err)
	}
	if err := os.Symlink("d/b.txt", filepath.Join(dir, "ln")); err != nil {
		t.Fatal(err)
	}
	if tgt, err := os.Readlink(filepath.Join(dir, "ln")); err != nil || tgt != "d/b.txt" {
		t.Fatalf("readlink: %q %v", tgt, err)
	}
	if err := os.Link(filepath.Join(dir, "d", "b.txt"), filepath.Join(dir, "hard")); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("link: %v, want EPERM", err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if fmt.Sprint(names) != "[d ln]" {
		t.Fatalf("readdir: %v", names)
	}
}

// TestInProcessSharedInode: two descriptors of one file in one mount see
// each other's writes before any close.
func TestInProcessSharedInode(t *testing.T) {
	dir, _ := mountMem(t, false)
	p := filepath.Join(dir, "shared")
	w, err := os.OpenFile(p, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, err := w.Write([]byte("hello world")); err != nil {
		t.Fatal(err)
	}
	r, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 64)
	n, err := r.ReadAt(buf, 0)
	if err != nil && err != io.EOF {
		t.Fatal(err)
	}
	if string(buf[:n]) != "hello world" {
		t.Fatalf("second handle read %q", buf[:n])
	}
	if _, err := r.WriteAt([]byte("W"), 6); err != nil {
		t.Fatal(err)
	}
	if err := r.Sync(); err != nil {
		t.Fatal(err)
	}
	n, _ = w.ReadAt(buf, 0)
	if string(buf[:n]) != "hello World" {
		t.Fatalf("first handle read %q", buf[:n])
	}
}

// TestInProcessConcurrent hammers the tree from many goroutines: writers on
// different files, a reader re-reading a file another goroutine appends to,
// directory listings and renames, all at once. Run with -race.
func TestInProcessConcurrent(t *testing.T) {
	dir, _ := mountMem(t, false)
	const writers = 8
	const size = 300 << 10
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 64)
	contents := make([][]byte, writers)
	for i := range contents {
		contents[i] = randBytes(t, size+i*1000)
	}
	for i := 0; i < writers; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			p := filepath.Join(dir, fmt.Sprintf("w%d", i))
			f, err := os.Create(p)
			if err != nil {
				errc <- err
				return
			}
			data := contents[i]
			for off := 0; off < len(data); off += 7000 {
				end := min(off+7000, len(data))
				if _, err := f.Write(data[off:end]); err != nil {
					errc <- err
					f.Close()
					return
				}
			}
			if err := f.Close(); err != nil {
				errc <- err
				return
			}
			got, err := os.ReadFile(p)
			if err != nil {
				errc <- err
				return
			}
			if !bytes.Equal(got, data) {
				errc <- fmt.Errorf("w%d: content differs (len %d want %d)", i, len(got), len(data))
			}
		}(i)
	}
	// An appender and a reader on the same file: the reader must only ever
	// see a prefix of what was appended.
	appendData := randBytes(t, 200<<10)
	ap := filepath.Join(dir, "appended")
	if err := os.WriteFile(ap, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	wg.Add(2)
	done := make(chan struct{})
	go func() {
		defer wg.Done()
		defer close(done)
		f, err := os.OpenFile(ap, os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			errc <- err
			return
		}
		defer f.Close()
		for off := 0; off < len(appendData); off += 5000 {
			if _, err := f.Write(appendData[off:min(off+5000, len(appendData))]); err != nil {
				errc <- err
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				errc <- ctx.Err()
				return
			default:
			}
			got, err := os.ReadFile(ap)
			if err != nil {
				errc <- err
				return
			}
			if !bytes.Equal(got, appendData[:len(got)]) {
				errc <- errors.New("reader saw bytes that were never appended")
				return
			}
			if _, err := os.ReadDir(dir); err != nil {
				errc <- err
				return
			}
		}
	}()
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	if got, err := os.ReadFile(ap); err != nil || !bytes.Equal(got, appendData) {
		t.Fatalf("appended file: %v (len %d want %d)", err, len(got), len(appendData))
	}
	// Parallel renames of distinct files, then everything still reads.
	var rg sync.WaitGroup
	for i := 0; i < writers; i++ {
		rg.Add(1)
		go func(i int) {
			defer rg.Done()
			if err := os.Rename(filepath.Join(dir, fmt.Sprintf("w%d", i)), filepath.Join(dir, fmt.Sprintf("r%d", i))); err != nil {
				t.Error(err)
			}
		}(i)
	}
	rg.Wait()
	for i := 0; i < writers; i++ {
		got, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("r%d", i)))
		if err != nil || !bytes.Equal(got, contents[i]) {
			t.Errorf("r%d after rename: %v", i, err)
		}
	}
}

// TestInProcessReadOnly: every change fails with EROFS.
func TestInProcessReadOnly(t *testing.T) {
	dir, _ := mountMem(t, true)
	if err := os.WriteFile(filepath.Join(dir, "x"), []byte("x"), 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("create on read-only mount: %v, want EROFS", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("mkdir on read-only mount: %v, want EROFS", err)
	}
}

// countingStore counts Stat calls and the most in flight at once; each
// Stat takes a few milliseconds, like a HEAD over a network.
type countingStore struct {
	backend.Store
	stats, inflight, maxInflight atomic.Int64
}

func (c *countingStore) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	c.stats.Add(1)
	n := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	for {
		m := c.maxInflight.Load()
		if n <= m || c.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(3 * time.Millisecond)
	return c.Store.Stat(ctx, key)
}

// TestReaddirParallelHeads: listing a directory fetches the entries'
// metadata with HEADs in parallel, and the lookups and stats that follow
// (ls -l) are answered from the attribute cache, not with more HEADs. The
// attribute index is off: it would make the HEADs unnecessary.
func TestReaddirParallelHeads(t *testing.T) {
	cs := &countingStore{Store: mem.New()}
	dir := mountStoreWith(t, cs, func(o *fs.Options) { o.NoIndex = true })
	const n = 64
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, "d", fmt.Sprintf("f%02d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // let the attribute TTL (200ms) of the writes expire
	cs.stats.Store(0)
	cs.maxInflight.Store(0)
	ents, err := os.ReadDir(filepath.Join(dir, "d"))
	if err != nil || len(ents) != n {
		t.Fatalf("readdir: %d entries, %v", len(ents), err)
	}
	for _, e := range ents {
		if _, err := os.Lstat(filepath.Join(dir, "d", e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	stats, par := cs.stats.Load(), cs.maxInflight.Load()
	t.Logf("readdir + lstat of %d files: %d Stat calls, at most %d in flight", n, stats, par)
	if par < 4 {
		t.Errorf("Stat calls ran at most %d at a time, want them in parallel", par)
	}
	if stats > n+8 {
		t.Errorf("%d Stat calls for %d entries: lookups after readdir are not served from the cache", stats, n)
	}
}

// copyCounter tracks the most server-side copies in flight at once.
type copyCounter struct {
	backend.Store
	inflight, maxInflight, copies atomic.Int64
}

func (c *copyCounter) Copy(ctx context.Context, src, dst string, opts backend.CopyOptions) (backend.ObjectInfo, error) {
	c.copies.Add(1)
	n := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	for {
		m := c.maxInflight.Load()
		if n <= m || c.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	time.Sleep(3 * time.Millisecond)
	return c.Store.Copy(ctx, src, dst, opts)
}

// TestRenameDirParallel: a directory rename copies its descendants in
// parallel (bounded) and moves every one of them, open files included.
func TestRenameDirParallel(t *testing.T) {
	cc := &copyCounter{Store: mem.New()}
	dir := mountStore(t, cc, false)
	const n = 50
	if err := os.MkdirAll(filepath.Join(dir, "src", "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if err := os.WriteFile(filepath.Join(dir, "src", "sub", fmt.Sprintf("f%02d", i)), []byte(fmt.Sprint(i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	open, err := os.Create(filepath.Join(dir, "src", "open"))
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	if _, err := open.WriteString("written before the rename"); err != nil {
		t.Fatal(err)
	}
	cc.copies.Store(0)
	if err := os.Rename(filepath.Join(dir, "src"), filepath.Join(dir, "dst")); err != nil {
		t.Fatal(err)
	}
	if _, err := open.WriteString(", and after"); err != nil {
		t.Fatal(err)
	}
	if err := open.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("rename of %d objects: %d copies, at most %d in flight", n+3, cc.copies.Load(), cc.maxInflight.Load())
	if cc.maxInflight.Load() < 4 || cc.maxInflight.Load() > 16 {
		t.Errorf("copies in flight peaked at %d, want parallel and at most 16", cc.maxInflight.Load())
	}
	for i := 0; i < n; i++ {
		got, err := os.ReadFile(filepath.Join(dir, "dst", "sub", fmt.Sprintf("f%02d", i)))
		if err != nil || string(got) != fmt.Sprint(i) {
			t.Fatalf("dst/sub/f%02d: %q %v", i, got, err)
		}
	}
	if got, err := os.ReadFile(filepath.Join(dir, "dst", "open")); err != nil || string(got) != "written before the rename, and after" {
		t.Fatalf("file open across the rename: %q %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "src")); !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("old directory: %v", err)
	}
	var keys []string
	cc.List(context.Background(), "", "", func(obj *backend.ObjectInfo, _ string) error {
		keys = append(keys, obj.Key)
		return nil
	})
	for _, k := range keys {
		if strings.HasPrefix(k, "src") {
			t.Errorf("key %s left behind", k)
		}
	}
}

// opCounter counts the writing calls a store receives, except writes of
// the attribute indexes (their timing is the index's own business).
type opCounter struct {
	backend.Store
	puts, copies atomic.Int64
}

func (c *opCounter) Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (backend.ObjectInfo, error) {
	if !strings.HasPrefix(key, fs.IndexRoot+"/") {
		c.puts.Add(1)
	}
	return c.Store.Put(ctx, key, r, size, meta)
}

func (c *opCounter) Copy(ctx context.Context, src, dst string, opts backend.CopyOptions) (backend.ObjectInfo, error) {
	c.copies.Add(1)
	return c.Store.Copy(ctx, src, dst, opts)
}

// TestAttrsAreMetadataCopies: chmod, chown and utimes of a closed file are
// one server-side copy each, never a re-upload; on a file with unsaved data
// they ride along with the upload at close; reading and closing a file
// writes nothing.
func TestAttrsAreMetadataCopies(t *testing.T) {
	oc := &opCounter{Store: mem.New()}
	dir := mountStore(t, oc, false)
	p := filepath.Join(dir, "f")
	if err := os.WriteFile(p, randBytes(t, 100000), 0o644); err != nil {
		t.Fatal(err)
	}
	oc.puts.Store(0)
	oc.copies.Store(0)
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(p, 12, 34); err != nil {
		t.Fatal(err)
	}
	mt := time.Unix(1000000000, 5)
	if err := os.Chtimes(p, mt, mt); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(p); err != nil || len(got) != 100000 {
		t.Fatalf("read: %d bytes, %v", len(got), err)
	}
	if puts, copies := oc.puts.Load(), oc.copies.Load(); puts != 0 || copies != 3 {
		t.Fatalf("chmod+chown+utimes+read: %d puts, %d copies; want 0 and 3", puts, copies)
	}
	info, err := oc.Stat(context.Background(), "f")
	if err != nil {
		t.Fatal(err)
	}
	if info.Metadata["mode"] != "600" || info.Metadata["uid"] != "12" || info.Metadata["gid"] != "34" || info.Metadata["mtime"] != "1000000000000000005" {
		t.Fatalf("stored metadata %v", info.Metadata)
	}

	// Dirty open file: the changes are recorded and stored by the upload.
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("dirty"), 0); err != nil {
		t.Fatal(err)
	}
	oc.puts.Store(0)
	oc.copies.Store(0)
	if err := f.Chmod(0o640); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if copies := oc.copies.Load(); copies != 0 {
		t.Fatalf("chmod of a dirty file made %d copies, want it applied with the upload", copies)
	}
	if info, err := oc.Stat(context.Background(), "f"); err != nil || info.Metadata["mode"] != "640" {
		t.Fatalf("mode after close: %v %v", info.Metadata, err)
	}
}

// TestRenameDirKeepsOpenReaders: a descriptor opened before its directory is
// renamed still reads blocks it never read before. The copies carry new
// ETags, so the open file must adopt them, or its If-Match reads fail (EIO).
func TestRenameDirKeepsOpenReaders(t *testing.T) {
	dir, _ := mountMem(t, false)
	if err := os.Mkdir(filepath.Join(dir, "a"), 0o755); err != nil {
		t.Fatal(err)
	}
	data := randBytes(t, 4<<20)
	if err := os.WriteFile(filepath.Join(dir, "a", "big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, "a", "big"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	head := make([]byte, 4096)
	if _, err := f.ReadAt(head, 0); err != nil || !bytes.Equal(head, data[:4096]) {
		t.Fatalf("read before rename: %v", err)
	}
	if err := os.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")); err != nil {
		t.Fatal(err)
	}
	tail := make([]byte, 4096)
	off := int64(3 << 20)
	if _, err := f.ReadAt(tail, off); err != nil {
		t.Fatalf("read after directory rename: %v", err)
	}
	if !bytes.Equal(tail, data[off:off+4096]) {
		t.Fatal("read after directory rename returned other bytes")
	}
}

// TestSequentialWriteNoCopy: a new file written in one sequential pass is
// streamed out while it is written and stored by close with no server-side
// copy afterwards (the mtime it started with is kept, StreamKeepsMeta), and
// stat shows exactly the mtime that is stored.
func TestSequentialWriteNoCopy(t *testing.T) {
	oc := &opCounter{Store: mem.New()}
	dir := mountStore(t, oc, false)
	data := randBytes(t, 1<<20) // 256 blocks of 4 KiB
	f, err := os.Create(filepath.Join(dir, "seq"))
	if err != nil {
		t.Fatal(err)
	}
	for off := 0; off < len(data); off += 64 << 10 {
		if _, err := f.Write(data[off : off+64<<10]); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond) // let mtime move while the upload streams
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if c := oc.copies.Load(); c != 0 {
		t.Errorf("close of a sequentially written file made %d server-side copies, want 0", c)
	}
	info, err := oc.Stat(context.Background(), "seq")
	if err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "seq"), &st); err != nil {
		t.Fatal(err)
	}
	if got, want := fmt.Sprint(st.Mtim.Nano()), info.Metadata["mtime"]; got != want {
		t.Errorf("stat mtime %s, stored mtime %s", got, want)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "seq")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
}

// TestSequentialWriteExplicitMtime: an mtime set with futimens before close
// (as cp -a and tar do) is stored as given, even when the file was streamed
// out with another one.
func TestSequentialWriteExplicitMtime(t *testing.T) {
	st := mem.New()
	dir := mountStore(t, st, false)
	f, err := os.Create(filepath.Join(dir, "seq"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(randBytes(t, 300_000)); err != nil {
		t.Fatal(err)
	}
	mt := time.Unix(978307200, 123456789)
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, f.Name(), []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}, 0); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	info, err := st.Stat(context.Background(), "seq")
	if err != nil {
		t.Fatal(err)
	}
	if got := info.Metadata["mtime"]; got != fmt.Sprint(mt.UnixNano()) {
		t.Errorf("stored mtime %s, want %d", got, mt.UnixNano())
	}
	fi, err := os.Stat(f.Name())
	if err != nil || !fi.ModTime().Equal(mt) {
		t.Errorf("stat mtime %v (%v), want %v", fi.ModTime(), err, mt)
	}
}

// TestChownClearsSetuid: SEMANTICS.md says set-user-ID and set-group-ID
// bits are kept by chmod and cleared by chown, as POSIX asks.
func TestChownClearsSetuid(t *testing.T) {
	dir, _ := mountMem(t, false)
	p := filepath.Join(dir, "prog")
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, 0o6755|os.ModeSetuid|os.ModeSetgid); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(p, &st); err != nil || st.Mode&0o7777 != 0o6755 {
		t.Fatalf("after chmod: mode %o, %v", st.Mode&0o7777, err)
	}
	if err := os.Chown(p, 1234, 1234); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Stat(p, &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&(syscall.S_ISUID|syscall.S_ISGID) != 0 || st.Uid != 1234 {
		t.Fatalf("after chown: mode %o uid %d, want setuid/setgid cleared and uid 1234", st.Mode&0o7777, st.Uid)
	}
}

// TestOpenNeedsNoHead: opening a file whose attributes we hold costs no
// HEAD (the header GET, If-Match their ETag, checks the object), yet an
// object replaced or removed behind the mount's back is still noticed at
// open: the new content is read, a removed file is ENOENT.
func TestOpenNeedsNoHead(t *testing.T) {
	cs := &countingStore{Store: mem.New()}
	dir := mountStoreWith(t, cs, func(*fs.Options) {})
	// a and b have one size: the kernel's cached size of b stays right
	// (it bounds reads until the attribute timeout), so what is tested is
	// which version the mount opens.
	a, b := randBytes(t, 10000), randBytes(t, 10000)
	for name, data := range map[string][]byte{"a": a, "b": b, "gone": a} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{"a", "b", "gone"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	cs.stats.Store(0)
	if got, err := os.ReadFile(filepath.Join(dir, "a")); err != nil || !bytes.Equal(got, a) {
		t.Fatalf("read a: %v", err)
	}
	if n := cs.stats.Load(); n != 0 {
		t.Errorf("open and read of a file whose attributes are cached: %d HEADs, want 0", n)
	}

	// Behind the mount's back: b's object now holds a's content (a
	// server-side copy of a valid object), and gone is deleted.
	ctx := context.Background()
	if _, err := cs.Store.Copy(ctx, "a", "b", backend.CopyOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.Store.Delete(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "b")); err != nil || !bytes.Equal(got, a) {
		t.Errorf("read b after it was replaced in the store: %v, equal to the new content: %v", err, bytes.Equal(got, a))
	}
	if _, err := os.ReadFile(filepath.Join(dir, "gone")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("read of a file removed from the store: %v, want ENOENT", err)
	}
}

// listCounter is a countingStore that also counts listings.
type listCounter struct {
	countingStore
	lists atomic.Int64
}

func (c *listCounter) List(ctx context.Context, prefix, delim string, fn backend.ListFunc) error {
	c.lists.Add(1)
	return c.countingStore.List(ctx, prefix, delim, fn)
}

// TestRevalidateByListing: once the attributes of a listed directory have
// expired, looking its files up again costs one listing, not two HEADs per
// file; a file replaced or removed behind the mount's back meanwhile is
// still seen as it is now.
func TestRevalidateByListing(t *testing.T) {
	cs := &listCounter{countingStore: countingStore{Store: mem.New()}}
	dir := mountStoreWith(t, cs, func(o *fs.Options) { o.NoIndex = true })
	const n = 40
	d := filepath.Join(dir, "d")
	if err := os.Mkdir(d, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%02d", i)), []byte("x"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A listing renews only what was seen at least 2 s after it was
	// written (see renewAfter).
	time.Sleep(2100 * time.Millisecond)
	if _, err := os.ReadDir(d); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		if _, err := os.Lstat(filepath.Join(d, fmt.Sprintf("f%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	// Behind the mount's back: f00 gets new metadata (a new ETag), f01 goes.
	ctx := context.Background()
	if _, err := cs.Store.Copy(ctx, "d/f00", "d/f00", backend.CopyOptions{
		ReplaceMetadata: true, Metadata: map[string]string{"mode": "600"},
	}); err != nil {
		t.Fatal(err)
	}
	if err := cs.Store.Delete(ctx, "d/f01"); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the attribute TTL (200ms) expires
	cs.stats.Store(0)
	cs.lists.Store(0)
	for i := 2; i < n; i++ {
		if _, err := os.Lstat(filepath.Join(d, fmt.Sprintf("f%02d", i))); err != nil {
			t.Fatal(err)
		}
	}
	stats, lists := cs.stats.Load(), cs.lists.Load()
	t.Logf("%d expired lookups: %d HEADs, %d listings", n-2, stats, lists)
	if stats > 4 || lists < 1 || lists > 2 {
		t.Errorf("%d expired lookups in one directory: %d HEADs and %d listings, want one listing and (almost) no HEAD", n-2, stats, lists)
	}
	st, err := os.Lstat(filepath.Join(d, "f00"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("f00 changed behind the mount: %v, mode %v; want mode 0600", err, st.Mode())
	}
	if _, err := os.Lstat(filepath.Join(d, "f01")); !errors.Is(err, syscall.ENOENT) {
		t.Errorf("f01 removed behind the mount: %v, want ENOENT", err)
	}
}

// TestInProcessPOSIXExtras runs special files, xattrs and explicit atimes
// in this process, so the race detector sees xattr changes racing writes
// and closes of the same file.
func TestInProcessPOSIXExtras(t *testing.T) {
	dir, _ := mountMem(t, false)
	if err := unix.Mkfifo(dir+"/fifo", 0o600); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(dir+"/chr", unix.S_IFCHR|0o600, int(unix.Mkdev(5, 6))); err != nil {
		t.Fatal(err)
	}
	var s unix.Stat_t
	if err := unix.Lstat(dir+"/chr", &s); err != nil || unix.Major(s.Rdev) != 5 || unix.Minor(s.Rdev) != 6 || s.Ino >= 1<<63 {
		t.Fatalf("chr: %+v %v", s, err)
	}
	f, err := os.Create(dir + "/f")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			f.WriteAt([]byte("data"), int64(i*4))
			f.Sync()
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 50; i++ {
			if err := unix.Setxattr(dir+"/f", fmt.Sprintf("user.k%d", i%5), []byte(strings.Repeat("v", i)), 0); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	wg.Wait()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 100)
	if n, err := unix.Getxattr(dir+"/f", "user.k4", buf); err != nil || n != 49 {
		t.Fatalf("getxattr: %d %v", n, err)
	}
	at, mt := time.Unix(1000, 5), time.Unix(2000, 7)
	if err := os.Chtimes(dir+"/f", at, mt); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(dir+"/f", &s); err != nil || s.Atim.Nano() != at.UnixNano() || s.Mtim.Nano() != mt.UnixNano() || s.Size != 200 {
		t.Fatalf("stat: %+v %v", s, err)
	}
}
