package content

import (
	"bytes"
	"context"
	"encoding/binary"
	"os"
	"strings"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/cache/disk"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// diskEnv is an engine with a disk cache in dir, as one mount; close it to
// "unmount" (the cache's queue is written, its lock released).
func diskEnv(t *testing.T, st backend.Store, keys *cipher.Keys, dir string, max int64) (*env, *disk.Cache) {
	t.Helper()
	l := keys.Layout()
	dc, err := disk.Open(disk.Options{Dir: dir, MaxBytes: max, NameKey: keys.CacheNameKey(), MaxEntry: l.BlockSize + cipher.BlockOverhead})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dc.Close() })
	v := newEnv(t, st, keys, func(o *Options) { o.DiskCache = dc })
	return v, dc
}

func unmountDisk(v *env, dc *disk.Cache) {
	v.eng.Close()
	dc.Close()
}

// writeObject stores data under key through an engine without a disk cache.
func writeObject(t *testing.T, st backend.Store, keys *cipher.Keys, key string, data []byte) {
	t.Helper()
	ctx := testCtx(t)
	v := newEnv(t, st, keys, nil)
	var f *File
	if info, err := st.Stat(ctx, key); err == nil {
		if f, err = v.eng.Open(ctx, info); err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(ctx, 0); err != nil {
			t.Fatal(err)
		}
	} else {
		f = v.eng.Create(key, nil)
	}
	if _, err := f.WriteAt(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := f.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	v.eng.Close()
}

// readThrough reads key whole through a new handle (readahead on) and
// returns the bytes and the store's GET count and bytes after Open.
func readThrough(t *testing.T, v *env, key string) (data []byte, gets, getBytes int64) {
	t.Helper()
	ctx := testCtx(t)
	f := v.reopenLogged(ctx, key)
	g0, b0 := v.store.gets.Load(), v.store.getBytes.Load()
	h := f.NewHandle()
	defer h.Close()
	buf := make([]byte, f.Size())
	for off := 0; off < len(buf); off += 128 << 10 {
		if _, err := h.ReadAt(ctx, buf[off:min(off+128<<10, len(buf))], int64(off)); err != nil {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	return buf, v.store.gets.Load() - g0, v.store.getBytes.Load() - b0
}

// TestDiskCacheRemount: what one engine read, the next one (a remount,
// with a new memory cache) reads from the disk cache: no GET after the
// header at open, same bytes.
func TestDiskCacheRemount(t *testing.T) {
	keys := testKeys(t, 4096)
	st := mem.New()
	dir := t.TempDir()
	data := pattern(100*4096+123, 1)
	writeObject(t, st, keys, "big", data)

	v, dc := diskEnv(t, st, keys, dir, 1<<30)
	got, gets, _ := readThrough(t, v, "big")
	if !bytes.Equal(got, data) {
		t.Fatal("cold read: wrong bytes")
	}
	if gets == 0 {
		t.Fatal("cold read issued no GET: the test proves nothing")
	}
	unmountDisk(v, dc)

	v, dc = diskEnv(t, st, keys, dir, 1<<30)
	g0, b0 := v.store.gets.Load(), v.store.getBytes.Load()
	got, gets, getBytes := readThrough(t, v, "big")
	if !bytes.Equal(got, data) {
		t.Fatal("read from the disk cache: wrong bytes")
	}
	if gets != 0 || getBytes != 0 {
		t.Errorf("re-read after remount: %d GETs, %d bytes; want none", gets, getBytes)
	}
	// Open read the header, and only the header.
	if n := v.store.getBytes.Load() - b0; n != int64(keys.Layout().HeaderSize) || v.store.gets.Load()-g0 != 1 {
		t.Errorf("open: %d GETs, %d bytes; want one GET of the %d-byte header", v.store.gets.Load()-g0, n, keys.Layout().HeaderSize)
	}
	if s := dc.Stats(); s.Hits < 100 {
		t.Errorf("disk cache stats %+v: want 101 hits", s)
	}
	unmountDisk(v, dc)

	// Sealed blocks exactly as stored: each entry is one block of the
	// object's bytes, and none holds the plaintext.
	raw := rawObject(t, st, "big")
	entries := cacheEntries(t, dir)
	if len(entries) != 101 {
		t.Fatalf("%d cache entries, want 101", len(entries))
	}
	for e, b := range entries {
		if !bytes.Contains(raw, b) {
			t.Errorf("entry %+v is not a block of the stored object", e)
		}
		if bytes.Contains(data, b[12:min(len(b), 64)]) {
			t.Errorf("entry %+v holds plaintext", e)
		}
	}
}

// TestDiskCacheStaleVersion: the object replaced by another writer between
// mounts: the cached blocks of the old version are not served.
func TestDiskCacheStaleVersion(t *testing.T) {
	keys := testKeys(t, 4096)
	st := mem.New()
	dir := t.TempDir()
	old := pattern(20*4096, 1)
	writeObject(t, st, keys, "f", old)
	v, dc := diskEnv(t, st, keys, dir, 1<<30)
	readThrough(t, v, "f")
	unmountDisk(v, dc)

	newer := pattern(20*4096, 2) // same size, other bytes
	writeObject(t, st, keys, "f", newer)

	v, dc = diskEnv(t, st, keys, dir, 1<<30)
	got, gets, _ := readThrough(t, v, "f")
	if !bytes.Equal(got, newer) {
		t.Fatalf("after the object was replaced: read the old version's bytes (%v)", bytes.Equal(got, old))
	}
	if gets == 0 {
		t.Error("no GET: the new version cannot have been read from the store")
	}
	// The old entries are not even tried: the new version has another
	// identity (its header), so they are misses, not authentication
	// failures (which would also keep them from being served, but only
	// because header version 2 gives every version its own key).
	if s := dc.Stats(); s.Hits != 0 || s.Removed != 0 {
		t.Errorf("disk cache stats %+v: the old version's entries were looked up", s)
	}
	unmountDisk(v, dc)
}

// TestDiskCacheBadEntries: entries flipped, truncated (torn) or swapped
// on disk fail authentication; the read returns the right bytes from the
// store, logs the object, and the entries are replaced.
func TestDiskCacheBadEntries(t *testing.T) {
	keys := testKeys(t, 4096)
	st := mem.New()
	dir := t.TempDir()
	data := pattern(30*4096+5, 3)
	writeObject(t, st, keys, "obj", data)
	v, dc := diskEnv(t, st, keys, dir, 1<<30)
	readThrough(t, v, "obj")
	unmountDisk(v, dc)

	entries := cacheEntries(t, dir)
	var places []where
	for e := range entries {
		places = append(places, e)
	}
	for k, e := range places {
		f, err := os.OpenFile(e.file, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		switch k % 3 {
		case 0: // a flipped bit
			b := bytes.Clone(entries[e])
			b[len(b)/2] ^= 1
			_, err = f.WriteAt(b, e.offset)
		case 1: // torn: the length says half
			_, err = f.WriteAt(binary.BigEndian.AppendUint32(nil, uint32(len(entries[e])/2)), e.lenAt)
		case 2: // another block's bytes
			_, err = f.WriteAt(entries[places[(k+1)%len(places)]], e.offset)
		}
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}

	v, dc = diskEnv(t, st, keys, dir, 1<<30)
	got, gets, _ := readThrough(t, v, "obj")
	if !bytes.Equal(got, data) {
		t.Fatal("read over damaged cache entries returned wrong bytes")
	}
	if gets == 0 {
		t.Fatal("no GET: the damaged blocks were not fetched again")
	}
	if logs := v.logs.String(); !strings.Contains(logs, "disk cache: entry failed authentication") || !strings.Contains(logs, "key=obj") {
		t.Errorf("no log line naming the object:\n%s", logs)
	}
	if s := dc.Stats(); s.Removed != uint64(len(places)) {
		t.Errorf("stats %+v: want %d entries removed", s, len(places))
	}
	unmountDisk(v, dc)
	raw := rawObject(t, st, "obj")
	after := cacheEntries(t, dir)
	if len(after) != len(places) {
		t.Fatalf("%d entries after the re-read, want %d", len(after), len(places))
	}
	for e, b := range after {
		if !bytes.Contains(raw, b) {
			t.Errorf("entry %+v was not replaced by the stored block", e)
		}
	}
}

func TestDiskCacheNeedsEncryption(t *testing.T) {
	keys := testKeys(t, 4096)
	dc, err := disk.Open(disk.Options{Dir: t.TempDir(), MaxBytes: 1 << 20, NameKey: keys.CacheNameKey(), MaxEntry: 5000})
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if _, err := New(Options{Store: mem.New(), DiskCache: dc}); err == nil {
		t.Fatal("a disk cache without client-side encryption was accepted")
	}
}

func rawObject(t *testing.T, st backend.Store, key string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), key, 0, -1, backend.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var b bytes.Buffer
	b.ReadFrom(rc)
	return b.Bytes()
}

// where is a cached block's place on disk.
type where struct {
	file          string
	offset, lenAt int64
}

// cacheEntries returns every cached block's bytes by where it is.
func cacheEntries(t *testing.T, dir string) map[where][]byte {
	t.Helper()
	out := map[where][]byte{}
	err := disk.Walk(dir, func(e disk.Entry) error {
		out[where{e.File, e.Offset, e.LenAt}] = e.Data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// BenchmarkDiskCacheRead reads a 64 MiB file through a fresh engine
// (empty memory cache) whose disk cache holds every block.
func BenchmarkDiskCacheRead(b *testing.B) {
	keys := testKeys(b, 65536)
	st := mem.New()
	dir := b.TempDir()
	const size = 64 << 20
	data := pattern(size, 1)
	ctx := context.Background()
	{
		e, _ := New(Options{Store: st, Keys: keys, SpoolDir: b.TempDir()})
		f := e.Create("big", nil)
		f.WriteAt(ctx, data, 0)
		if _, err := f.Sync(ctx, nil); err != nil {
			b.Fatal(err)
		}
		e.Close()
	}
	open := func() (*Engine, *disk.Cache) {
		dc, err := disk.Open(disk.Options{Dir: dir, MaxBytes: 1 << 30, NameKey: keys.CacheNameKey(), MaxEntry: 65536 + cipher.BlockOverhead})
		if err != nil {
			b.Fatal(err)
		}
		e, err := New(Options{Store: st, Keys: keys, DiskCache: dc, SpoolDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		return e, dc
	}
	read := func(e *Engine) {
		info, _ := st.Stat(ctx, "big")
		f, err := e.Open(ctx, info)
		if err != nil {
			b.Fatal(err)
		}
		h := f.NewHandle()
		buf := make([]byte, 1<<20)
		for off := int64(0); off < size; off += 1 << 20 {
			if _, err := h.ReadAt(ctx, buf, off); err != nil {
				b.Fatal(err)
			}
		}
		h.Close()
	}
	e, dc := open()
	read(e)
	e.Close()
	dc.Close()
	b.SetBytes(size)
	b.ResetTimer()
	for range b.N {
		e, dc := open()
		read(e)
		b.StopTimer()
		if s := dc.Stats(); s.Hits < size>>16 {
			b.Fatalf("disk cache %+v", s)
		}
		e.Close()
		dc.Close()
		b.StartTimer()
	}
}
