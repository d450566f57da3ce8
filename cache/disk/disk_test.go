package disk

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var testKey = bytes.Repeat([]byte{7}, 32)

func open(t *testing.T, dir string, max int64) *Cache {
	t.Helper()
	return openSeg(t, dir, max, 1)
}

// openSeg opens a cache of blocks up to 64 KiB + 28, segs per segment.
func openSeg(t *testing.T, dir string, max int64, segs int) *Cache {
	t.Helper()
	c, err := Open(Options{Dir: dir, MaxBytes: max, NameKey: testKey, MaxEntry: 65564, SegmentBlocks: segs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func block(i int, n int) []byte {
	return bytes.Repeat([]byte{byte(i)}, n)
}

// du is the space the entry files take, as du counts it.
func du(t *testing.T, dir string) (files int, bytes int64) {
	t.Helper()
	filepath.Walk(filepath.Join(dir, "seg"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			files++
			bytes += info.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	return files, bytes
}

func TestPutGetAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, 1<<30)
	obj := "secret/object/key"
	for i := range 10 {
		c.Put(Key{obj, uint64(i)}, block(i, 5000+i))
	}
	c.Flush()
	for i := range 10 {
		b, ok := c.Get(Key{obj, uint64(i)}, nil)
		if !ok || !bytes.Equal(b, block(i, 5000+i)) {
			t.Fatalf("block %d: ok %v, %d bytes", i, ok, len(b))
		}
	}
	if _, ok := c.Get(Key{obj, 10}, nil); ok {
		t.Fatal("a block never put was found")
	}
	if _, ok := c.Get(Key{"other", 0}, nil); ok {
		t.Fatal("another object's block 0 was found")
	}
	c.Close()

	c = open(t, dir, 1<<30)
	if st := c.Stats(); st.Segments != 10 || st.Bytes != 10*(4096+8192) {
		t.Fatalf("after reopen: %+v, want 10 segments of a header page and 8 KiB", st)
	}
	for i := range 10 {
		b, ok := c.Get(Key{obj, uint64(i)}, nil)
		if !ok || !bytes.Equal(b, block(i, 5000+i)) {
			t.Fatalf("after reopen, block %d: ok %v, %d bytes", i, ok, len(b))
		}
	}
	// The names are HMACs: neither the object's name nor any part of it.
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if strings.Contains(p, "secret") || strings.Contains(p, "object") {
			t.Errorf("cache path %s names the object", p)
		}
		return nil
	})
}

func TestNamesDependOnKey(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, 1<<30)
	c.Put(Key{"o", 0}, block(1, 100))
	c.Close()
	c2, err := Open(Options{Dir: dir, MaxBytes: 1 << 30, NameKey: bytes.Repeat([]byte{8}, 32), MaxEntry: 65564, SegmentBlocks: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if _, ok := c2.Get(Key{"o", 0}, nil); ok {
		t.Fatal("an entry was found under another name key")
	}
}

func TestSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, 1<<20)
	_, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, NameKey: testKey, MaxEntry: 100})
	if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), fmt.Sprint(os.Getpid())) {
		t.Fatalf("second Open: %v; want ErrLocked naming pid %d", err, os.Getpid())
	}
	c.Close()
	c2, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, NameKey: testKey, MaxEntry: 100})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	c2.Close()
}

// TestLRU: at the cap the least recently used entries go, a Get counts as
// a use, and the cap holds on disk.
func TestLRU(t *testing.T) {
	dir := t.TempDir()
	const n, size = 10, 8000 // 12 KiB on disk each (a header page, 8 KiB)
	c := open(t, dir, n*12288)
	for i := range n {
		c.Put(Key{"o", uint64(i)}, block(i, size))
	}
	c.Flush()
	if _, ok := c.Get(Key{"o", 0}, nil); !ok {
		t.Fatal("block 0 missing before the cap was reached")
	}
	for i := n; i < n+5; i++ {
		c.Put(Key{"o", uint64(i)}, block(i, size))
	}
	c.Flush()
	for i := range n + 5 {
		_, ok := c.Get(Key{"o", uint64(i)}, nil)
		if want := i == 0 || i > 5; ok != want {
			t.Errorf("block %d cached %v, want %v", i, ok, want)
		}
	}
	files, bytes := du(t, dir)
	if files != n || bytes > n*12288 {
		t.Errorf("on disk: %d files, %d bytes; want %d files within %d bytes", files, bytes, n, n*12288)
	}
	if st := c.Stats(); st.Evictions != 5 || st.Bytes != bytes {
		t.Errorf("stats %+v; want 5 evictions and %d bytes", st, bytes)
	}
}

// TestReopenSmallerCap: entries are ordered by mtime after a restart; a
// lower cap evicts the oldest.
func TestReopenSmallerCap(t *testing.T) {
	dir := t.TempDir()
	c := open(t, dir, 1<<30)
	for i := range 6 {
		c.Put(Key{"o", uint64(i)}, block(i, 4000))
	}
	c.Flush()
	c.Close()
	// Age entries 0..2 by an hour, as if not read since.
	old := time.Now().Add(-time.Hour)
	for i := range 3 {
		n, _ := c.nameOf(Key{"o", uint64(i)})
		os.Chtimes(c.path(n), old, old)
	}
	c = open(t, dir, 3*8192)
	for i := range 6 {
		if _, ok := c.Get(Key{"o", uint64(i)}, nil); ok != (i >= 3) {
			t.Errorf("block %d cached %v after reopening with a smaller cap", i, ok)
		}
	}
}

func TestRemoveAndReplace(t *testing.T) {
	c := open(t, t.TempDir(), 1<<20)
	k := Key{"o", 3}
	c.Put(k, block(1, 100))
	c.Flush()
	c.Remove(k)
	if _, ok := c.Get(k, nil); ok || c.Has(k) {
		t.Fatal("removed entry still there")
	}
	c.Put(k, block(2, 100))
	c.Flush()
	if b, ok := c.Get(k, nil); !ok || !bytes.Equal(b, block(2, 100)) {
		t.Fatal("replacement not stored")
	}
	// Deleted behind the cache's back (and not open for reading): a miss, and forgotten.
	n, _ := c.nameOf(k)
	c.dropReadFile(n)
	os.Remove(c.path(n))
	if _, ok := c.Get(k, nil); ok || c.Has(k) {
		t.Fatal("entry deleted from disk still indexed")
	}
}

// TestConcurrent: run with -race.
func TestConcurrent(t *testing.T) {
	c := openSeg(t, t.TempDir(), 64*8192, 4)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				k := Key{fmt.Sprint("o", g), uint64(i % 100)}
				switch i % 4 {
				case 0, 1:
					c.Put(k, block(i, 6000))
				case 2:
					if b, ok := c.Get(k, nil); ok && len(b) != 6000 {
						t.Errorf("got %d bytes", len(b))
					}
				case 3:
					if i%40 == 3 {
						c.Remove(k)
					}
				}
			}
		}()
	}
	wg.Wait()
	c.Flush()
	c.Close()
	if st := c.Stats(); st.Bytes > 64*8192 {
		t.Fatalf("over the cap: %+v", st)
	}
}

// TestDiskFull: on a full filesystem Put drops blocks (logged, counted),
// the cache shrinks to what fits, and what is cached still reads.
func TestDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { syscall.Unmount(dir, 0) })
	c := openSeg(t, dir, 1<<30, 4)
	for i := range 64 { // 64 x 64 KiB = 4 MiB into 1 MiB
		c.Put(Key{"o", uint64(i)}, block(i, 64<<10))
		c.Flush()
	}
	st := c.Stats()
	if st.Dropped == 0 || st.Writes == 0 || st.Bytes > 1<<20 {
		t.Fatalf("stats %+v: want some writes, some dropped, at most 1 MiB", st)
	}
	hits := 0
	for i := range 64 {
		if b, ok := c.Get(Key{"o", uint64(i)}, nil); ok {
			hits++
			if !bytes.Equal(b, block(i, 64<<10)) {
				t.Fatalf("block %d wrong", i)
			}
		}
	}
	if hits == 0 {
		t.Fatal("nothing readable after the disk filled")
	}
}

func BenchmarkGet64K(b *testing.B) {
	c, err := Open(Options{Dir: b.TempDir(), MaxBytes: 1 << 30, NameKey: testKey, MaxEntry: 65564})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for i := range 256 {
		c.Put(Key{"o", uint64(i)}, block(i, 65564))
	}
	c.Flush()
	buf := make([]byte, 0, 65564)
	b.SetBytes(65564)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, ok := c.Get(Key{"o", uint64(i % 256)}, buf); !ok {
			b.Fatal("miss")
		}
	}
}

func BenchmarkPut64K(b *testing.B) {
	c, err := Open(Options{Dir: b.TempDir(), MaxBytes: 1 << 30, NameKey: testKey, MaxEntry: 65564})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(65564)
	blk := block(1, 65564)
	for i := 0; i < b.N; i++ {
		c.Put(Key{"o", uint64(i)}, blk)
		if i%64 == 63 {
			c.Flush()
		}
	}
	c.Flush()
}

// TestSegments: blocks of one object share segment files of SegmentBlocks
// slots; the accounting is what du counts; a removed slot is freed; a
// reopen reads the slots back from the header.
func TestSegments(t *testing.T) {
	dir := t.TempDir()
	c := openSeg(t, dir, 1<<30, 16)
	for i := range 40 { // segments 0, 1, 2 (8 blocks)
		if i%5 == 3 {
			continue // holes
		}
		c.Put(Key{"o", uint64(i)}, block(i, 65564-i))
	}
	c.Flush()
	want := int64(3 * 4096)
	for i := range 40 {
		if i%5 != 3 {
			want += (65564 - int64(i) + 4095) &^ 4095
		}
	}
	files, used := du(t, dir)
	st := c.Stats()
	if files != 3 || st.Segments != 3 || st.Bytes != used || used != want {
		t.Fatalf("%d files, %d bytes on disk, stats %+v; want 3 segments, %d bytes", files, used, st, want)
	}
	c.Remove(Key{"o", 0})
	c.Flush()
	if _, used = du(t, dir); c.Stats().Bytes != used || used != want-69632 {
		t.Fatalf("after a Remove: %d bytes on disk, stats %+v", used, c.Stats())
	}
	c.Close()
	c = openSeg(t, dir, 1<<30, 16)
	for i := range 40 {
		b, ok := c.Get(Key{"o", uint64(i)}, nil)
		if want := i%5 != 3 && i != 0; ok != want || (ok && !bytes.Equal(b, block(i, 65564-i))) {
			t.Errorf("block %d after reopen: cached %v (want %v), %d bytes", i, ok, want, len(b))
		}
	}
	// Another segment size: the old segments are discarded, not misread.
	c.Close()
	c = openSeg(t, dir, 1<<30, 8)
	if st := c.Stats(); st.Segments != 0 {
		t.Fatalf("segments of 16 slots read as 8: %+v", st)
	}
	if files, _ := du(t, dir); files != 0 {
		t.Fatalf("%d segment files of the old layout left", files)
	}
}

// TestOtherOwnerRefused: a directory of another user is refused (its owner
// could read the access pattern, or swap entries under the mount).
func TestOtherOwnerRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown")
	}
	dir := t.TempDir()
	if err := os.Chown(dir, 12345, 12345); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Options{Dir: dir, MaxBytes: 1 << 20, NameKey: testKey, MaxEntry: 100})
	if err == nil || !strings.Contains(err.Error(), "belongs to uid 12345") {
		t.Fatalf("Open of another user's directory: %v", err)
	}
}

// BenchmarkOpenScan: Open of a cache of 10,000 segments (its index is
// rebuilt from their header pages).
func BenchmarkOpenScan(b *testing.B) {
	dir := b.TempDir()
	c, err := Open(Options{Dir: dir, MaxBytes: 1 << 40, NameKey: testKey, MaxEntry: 65564, QueueBytes: 1 << 30})
	if err != nil {
		b.Fatal(err)
	}
	blk := block(1, 100)
	for i := range 10000 {
		c.Put(Key{"o", uint64(i * DefaultSegmentBlocks)}, blk)
		if i%1000 == 999 {
			c.Flush()
		}
	}
	c.Close()
	b.ResetTimer()
	for range b.N {
		c, err := Open(Options{Dir: dir, MaxBytes: 1 << 40, NameKey: testKey, MaxEntry: 65564})
		if err != nil {
			b.Fatal(err)
		}
		if s := c.Stats(); s.Segments != 10000 {
			b.Fatalf("%+v", s)
		}
		c.Close()
	}
}

// TestQueueFullWaits: Puts faster than the disk wait for room (briefly)
// instead of dropping blocks.
func TestQueueFullWaits(t *testing.T) {
	c, err := Open(Options{Dir: t.TempDir(), MaxBytes: 1 << 30, NameKey: testKey, MaxEntry: 65564, QueueBytes: 128 << 10})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	blk := block(1, 65564)
	for i := range 200 {
		c.Put(Key{"o", uint64(i)}, blk)
	}
	c.Flush()
	if st := c.Stats(); st.Dropped != 0 || st.Writes != 200 {
		t.Fatalf("200 Puts through a 2-block queue: %+v; want all written", st)
	}
}

// TestHeaderWhenFull: a full segment's header page is written at once, so
// a crash keeps it; a partial one's lengths reach disk when its file is
// closed (a crash before forgets those blocks: misses, never wrong data).
func TestHeaderWhenFull(t *testing.T) {
	dir := t.TempDir()
	c := openSeg(t, dir, 1<<30, 16)
	for i := range 16 + 3 {
		c.Put(Key{"o", uint64(i)}, block(i, 1000))
	}
	c.Flush()
	count := func() int {
		n := 0
		if err := Walk(dir, func(e Entry) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 16 { // as a crash now would leave it
		t.Fatalf("%d blocks recorded on disk before Close, want the full segment's 16", n)
	}
	c.Close()
	if n := count(); n != 19 {
		t.Fatalf("%d blocks recorded on disk after Close, want 19", n)
	}
}
