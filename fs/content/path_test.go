package content

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// writeSeq writes data from offset 0 in chunks, like cp through FUSE.
func writeSeq(t *testing.T, f *File, data []byte, chunk int) {
	t.Helper()
	for off := 0; off < len(data); off += chunk {
		mustWrite(t, f, data[off:min(off+chunk, len(data))], int64(off))
	}
}

// TestStreamingUploadsWhileWriting: a new file written sequentially is in
// the store's Put before Sync, and ends up as exactly one Put.
func TestStreamingUploadsWhileWriting(t *testing.T) {
	for _, sf := range stores() {
		for _, m := range modes(t) {
			t.Run(sf.name+"/"+m.name, func(t *testing.T) {
				testStreamingUploadsWhileWriting(t, sf, m.keys)
			})
		}
	}
}

func testStreamingUploadsWhileWriting(t *testing.T, sf storeFactory, keys *cipher.Keys) {
	{
		{
			ctx := testCtx(t)
			v := newEnv(t, sf.new(t), keys, nil)
			data := pattern(10*int(v.eng.bs)+123, 7)
			f := v.eng.Create("s", map[string]string{"a": "1"})
			writeSeq(t, f, data, 128<<10)
			f.mu.Lock()
			streaming := f.st != nil
			f.mu.Unlock()
			if !streaming {
				t.Fatal("sequential write of a new file is not streaming")
			}
			if v.store.puts.Load() != 1 {
				t.Fatalf("%d Puts before Sync, want the streaming one", v.store.puts.Load())
			}
			// Reads of streamed (spooled) blocks work while streaming.
			buf := make([]byte, 1000)
			if _, err := f.ReadAt(ctx, buf, 5); err != nil || !bytes.Equal(buf, data[5:1005]) {
				t.Fatalf("read while streaming: %v", err)
			}
			info := mustSync(t, f)
			if v.store.puts.Load() != 1 {
				t.Fatalf("%d Puts, want 1", v.store.puts.Load())
			}
			if info.Metadata["a"] != "1" {
				t.Errorf("metadata %v", info.Metadata)
			}
			if got := readAll(t, ctx, v.reopen(ctx, "s")); !bytes.Equal(got, data) {
				t.Fatal("streamed content differs")
			}
			// Write-through: the tail block is cached, reading it needs no GET.
			gets := v.store.gets.Load()
			v.cache.Wait()
			if _, err := f.ReadAt(ctx, buf[:10], int64(len(data)-10)); err != nil {
				t.Fatal(err)
			}
			if v.store.gets.Load() != gets {
				t.Error("reading a just-synced block issued a GET")
			}
		}
	}
}

// TestStreamingAbort: an out-of-sequence write or a truncate during a
// streaming upload stores nothing partial and the final content is right.
func TestStreamingAbort(t *testing.T) {
	for _, op := range []string{"write", "truncate"} {
		t.Run(op, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), nil)
			data := pattern(20*4096+7, 3)
			f := v.eng.Create("s", nil)
			writeSeq(t, f, data[:10*4096], 8192)
			if op == "write" {
				mustWrite(t, f, []byte("HELLO"), 100)
				copy(data[100:], "HELLO")
				mustWrite(t, f, data[10*4096:], 10*4096)
			} else {
				if err := f.Truncate(ctx, 5*4096+1); err != nil {
					t.Fatal(err)
				}
				data = append(data[:5*4096+1], data[10*4096:]...)
				mustWrite(t, f, data[5*4096+1:], 5*4096+1)
			}
			if _, err := v.store.Stat(ctx, "s"); !errors.Is(err, backend.ErrNotFound) {
				t.Fatalf("aborted stream left an object: %v", err)
			}
			if f.Size() != int64(len(data)) {
				t.Fatalf("size %d, want %d", f.Size(), len(data))
			}
			mustWrite(t, f, data[f.Size()-10:], f.Size()-10) // non-append: rewrite mode
			mustSync(t, f)
			if got := readAll(t, ctx, v.reopen(ctx, "s")); !bytes.Equal(got, data) {
				t.Fatal("content differs")
			}
		})
	}
}

// TestSyncFailureKeepsData: a failing Put makes Sync fail, keeps every
// byte, and a later Sync stores the right content (streamed and rewritten).
func TestSyncFailureKeepsData(t *testing.T) {
	for _, sf := range stores() {
		for _, m := range modes(t) {
			for _, mode := range []string{"stream", "rewrite", "fail-midstream"} {
				t.Run(sf.name+"/"+m.name+"/"+mode, func(t *testing.T) {
					ctx := testCtx(t)
					v := newEnv(t, sf.new(t), m.keys, func(o *Options) { o.MaxDirty = 64 << 10 })
					bs := int(v.eng.bs)
					data := pattern(6*bs+99, 5)
					f := v.eng.Create("k", nil)
					switch mode {
					case "stream":
						writeSeq(t, f, data, 10000)
						v.store.failPut.Store(true)
					case "fail-midstream":
						v.store.failPut.Store(true)
						writeSeq(t, f, data, 10000)
					case "rewrite":
						mustWrite(t, f, data[:100], 0)
						mustSync(t, f)
						v.store.failPut.Store(true)
						f = v.reopen(ctx, "k")
						mustWrite(t, f, data[bs:], int64(bs))
						mustWrite(t, f, data[:bs], 0)
					}
					if _, err := f.Sync(ctx, nil); !errors.Is(err, errInjected) {
						t.Fatalf("Sync with failing store: %v, want the store's error", err)
					}
					if !f.Dirty() {
						t.Fatal("file clean after failed Sync")
					}
					if got := readAll(t, ctx, f); !bytes.Equal(got, data) {
						t.Fatal("content after failed Sync differs")
					}
					v.store.failPut.Store(false)
					mustSync(t, f)
					if got := readAll(t, ctx, v.reopen(ctx, "k")); !bytes.Equal(got, data) {
						t.Fatal("stored content after retry differs")
					}
				})
			}
		}
	}
}

// TestMetadataOnlySync: a clean file with new metadata is a Copy, not a Put.
func TestMetadataOnlySync(t *testing.T) {
	ctx := testCtx(t)
	v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), nil)
	f := v.eng.Create("m", map[string]string{"mode": "600"})
	mustWrite(t, f, []byte("x"), 0)
	mustSync(t, f)
	puts := v.store.puts.Load()
	info, err := f.Sync(ctx, map[string]string{"mode": "644"})
	if err != nil {
		t.Fatal(err)
	}
	if v.store.puts.Load() != puts || v.store.copies.Load() != 1 {
		t.Fatalf("puts %d->%d, copies %d: want one Copy", puts, v.store.puts.Load(), v.store.copies.Load())
	}
	st, err := v.store.Stat(ctx, "m")
	if err != nil || st.Metadata["mode"] != "644" || st.ETag != info.ETag || f.Info().ETag != info.ETag {
		t.Fatalf("stored %+v, %v; Sync returned %+v", st, err, info)
	}
	// Same metadata again: nothing to do.
	if _, err := f.Sync(ctx, map[string]string{"mode": "644"}); err != nil || v.store.copies.Load() != 1 {
		t.Fatalf("idempotent Sync: %v, copies %d", err, v.store.copies.Load())
	}
	v.cache.Wait()
	gets := v.store.gets.Load()
	if got := readAll(t, ctx, f); string(got) != "x" {
		t.Fatalf("content after metadata change %q", got)
	}
	if v.store.gets.Load() != gets {
		t.Error("a metadata-only change made cached blocks unusable (GET issued)")
	}
	// A streamed file synced with metadata other than it started with.
	g := v.eng.Create("m2", map[string]string{"mode": "600"})
	writeSeq(t, g, pattern(10*4096, 1), 4096)
	if _, err := g.Sync(ctx, map[string]string{"mode": "640"}); err != nil {
		t.Fatal(err)
	}
	if st, err := v.store.Stat(ctx, "m2"); err != nil || st.Metadata["mode"] != "640" || g.Info().ETag != st.ETag {
		t.Fatalf("streamed file metadata %v, %v", st.Metadata, err)
	}
}

// TestCorruptBlock: a flipped byte in a stored block gives an error wrapping
// cipher.ErrCorrupt, logged once with the object key and block.
func TestCorruptBlock(t *testing.T) {
	for _, sf := range stores() {
		t.Run(sf.name, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, sf.new(t), testKeys(t, 4096), nil)
			data := pattern(5*4096, 9)
			f := v.eng.Create("dir/victim", nil)
			writeSeq(t, f, data, 4096)
			mustSync(t, f)
			obj := getObject(t, v.store, "dir/victim")
			obj[v.eng.blockOff(3)+20] ^= 1
			info, err := v.store.Put(ctx, "dir/victim", bytes.NewReader(obj), int64(len(obj)), nil)
			if err != nil {
				t.Fatal(err)
			}
			f, err = v.eng.Open(ctx, info)
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 100)
			if _, err := f.ReadAt(ctx, buf, 2*4096); err != nil {
				t.Fatalf("intact block: %v", err)
			}
			for range 2 {
				if _, err := f.ReadAt(ctx, buf, 3*4096+5); !errors.Is(err, cipher.ErrCorrupt) {
					t.Fatalf("corrupt block: err %v, want ErrCorrupt", err)
				}
			}
			logs := v.logs.String()
			if strings.Count(logs, "corrupt block") != 1 || !strings.Contains(logs, "key=dir/victim") || !strings.Contains(logs, "block=3") {
				t.Fatalf("want one log line naming key and block, got:\n%s", logs)
			}
		})
	}
}

func getObject(t *testing.T, s backend.Store, key string) []byte {
	t.Helper()
	rc, err := s.Get(context.Background(), key, 0, -1, backend.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReplacedBehindOurBack: an uncached block of an object replaced since
// open is not read from the new object (If-Match).
func TestReplacedBehindOurBack(t *testing.T) {
	for _, sf := range stores() {
		t.Run(sf.name, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, sf.new(t), testKeys(t, 4096), nil)
			f := v.eng.Create("r", nil)
			writeSeq(t, f, pattern(8*4096, 1), 4096)
			mustSync(t, f)
			v.freshCache(t) // reads must go to the store, not the written-through blocks
			f = v.reopen(ctx, "r")
			// Someone else writes the key.
			g := v.eng.Create("r", nil)
			writeSeq(t, g, pattern(8*4096, 2), 4096)
			mustSync(t, g)
			buf := make([]byte, 10)
			if _, err := f.ReadAt(ctx, buf, 6*4096); !errors.Is(err, backend.ErrPreconditionFailed) {
				t.Fatalf("read of replaced object: %v, want ErrPreconditionFailed", err)
			}
			// After Refresh the new version reads.
			info, err := v.store.Stat(ctx, "r")
			if err != nil {
				t.Fatal(err)
			}
			f.Refresh(info)
			if got := readAll(t, ctx, f); !bytes.Equal(got, pattern(8*4096, 2)) {
				t.Fatal("content after Refresh differs")
			}
		})
	}
}

// TestCacheHitNoGet: re-reading cached blocks issues no GET; and concurrent
// readers of one block share one GET.
func TestCacheHitNoGet(t *testing.T) {
	ctx := testCtx(t)
	v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), nil)
	data := pattern(64*4096, 4)
	f := v.eng.Create("c", nil)
	writeSeq(t, f, data, 1<<20)
	mustSync(t, f)
	v.freshCache(t) // forget the blocks the sync wrote through
	f = v.reopen(ctx, "c")
	g0 := v.store.gets.Load()
	if got := readAll(t, ctx, f); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if v.store.gets.Load() != g0+1 {
		t.Fatalf("one read of all blocks took %d GETs, want 1", v.store.gets.Load()-g0)
	}
	g1 := v.store.gets.Load()
	if got := readAll(t, ctx, f); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
	if v.store.gets.Load() != g1 {
		t.Fatalf("re-read issued %d GETs", v.store.gets.Load()-g1)
	}
	if v.cache.Stats().Hits < 64 {
		t.Fatalf("cache stats %+v", v.cache.Stats())
	}
}

// TestReadahead counts GETs: sequential reads fetch ahead, random reads only
// what they touch.
func TestReadahead(t *testing.T) {
	ctx := testCtx(t)
	v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), func(o *Options) { o.Readahead = 2 << 20 })
	const size = 16 << 20
	data := pattern(size, 6)
	f := v.eng.Create("ra", nil)
	writeSeq(t, f, data, 1<<20)
	mustSync(t, f)
	// A fresh cache: forget the blocks the sync wrote through.
	c2, err := cache.New(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c2.Close)
	v.eng.cache = c2

	t.Run("sequential", func(t *testing.T) {
		f := v.reopen(ctx, "ra")
		h := f.NewHandle()
		defer h.Close()
		b0 := v.store.getBytes.Load()
		buf := make([]byte, 128<<10)
		read := 0
		for off := 0; off < 4<<20; off += len(buf) {
			n, err := h.ReadAt(ctx, buf, int64(off))
			if err != nil || !bytes.Equal(buf[:n], data[off:off+n]) {
				t.Fatalf("read at %d: %v", off, err)
			}
			read += n
			if read == 256<<10 {
				// The second sequential read started a readahead of the
				// next 256 KiB: once it is done they were fetched (all of
				// blocks 1..127; Open fetched block 0 with the header).
				h.wg.Wait()
				if got, want := v.store.getBytes.Load()-b0, v.eng.blockOff(128)-v.eng.blockOff(1); got < want {
					t.Fatalf("after two sequential reads %d bytes fetched, want >= %d (readahead)", got, want)
				}
			}
		}
		h.wg.Wait() // readahead in flight completes
		fetched := v.store.getBytes.Load() - b0
		if testing.Verbose() {
			t.Logf("read %d, fetched %d, GETs %d", read, fetched, v.store.gets.Load())
		}
		// Nothing fetched twice, nothing beyond the 2 MiB window.
		if max := v.eng.ObjectSize(int64(read) + 2<<20); fetched > max {
			t.Fatalf("fetched %d bytes for %d read with a 2 MiB window (max %d)", fetched, read, max)
		}
	})
	t.Run("random", func(t *testing.T) {
		f := v.reopen(ctx, "ra")
		h := f.NewHandle()
		defer h.Close()
		g0, b0 := v.store.gets.Load(), v.store.getBytes.Load()
		buf := make([]byte, 4096)
		const reads = 30
		for k := range reads {
			off := int64((k*7919)%2000+2000) * 4096 // distinct blocks, no sequence
			n, err := h.ReadAt(ctx, buf, off)
			if err != nil || !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
				t.Fatalf("read at %d: %v", off, err)
			}
		}
		h.Close()
		if g := v.store.gets.Load() - g0; g != reads {
			t.Fatalf("%d random block reads took %d GETs", reads, g)
		}
		if b := v.store.getBytes.Load() - b0; b > reads*(4096+cipher.BlockOverhead) {
			t.Fatalf("%d random block reads fetched %d bytes", reads, b)
		}
	})
}

// TestSpool: with a tiny memory budget dirty data spills to the spool, reads
// back right, and the spool holds no plaintext.
func TestSpool(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, stores()[0].new(t), m.keys, func(o *Options) { o.MaxDirty = 64 << 10 })
			marker := []byte("PLAINTEXT-MARKER-0123456789")
			data := bytes.Repeat(marker, (2<<20)/len(marker))
			f := v.eng.Create("sp", nil)
			// Backwards, so nothing streams: every block stays dirty.
			for off := len(data) - 10000; ; off -= 10000 {
				off = max(off, 0)
				mustWrite(t, f, data[off:min(off+10000, len(data))], int64(off))
				if off == 0 {
					break
				}
			}
			if got := v.eng.memDirty.Load(); got > 64<<10+2*v.eng.bs {
				t.Fatalf("%d dirty bytes in memory, budget 64 KiB", got)
			}
			if got := readAll(t, ctx, f); !bytes.Equal(got, data) {
				t.Fatal("content read back from the spool differs")
			}
			sf, ok := v.eng.spool.f.(*os.File)
			if !ok {
				t.Fatal("spool not in use")
			}
			var st syscall.Stat_t
			if err := syscall.Fstat(int(sf.Fd()), &st); err != nil || st.Nlink != 0 {
				t.Fatalf("spool file still linked (nlink %d, %v)", st.Nlink, err)
			}
			raw, err := io.ReadAll(io.NewSectionReader(sf, 0, 1<<30))
			if err != nil {
				t.Fatal(err)
			}
			if len(raw) < len(data)/2 {
				t.Fatalf("spool holds only %d bytes", len(raw))
			}
			if bytes.Contains(raw, marker[:12]) {
				t.Fatal("spool contains plaintext")
			}
			mustSync(t, f)
			if got := readAll(t, ctx, v.reopen(ctx, "sp")); !bytes.Equal(got, data) {
				t.Fatal("stored content differs")
			}
		})
	}
}

// fullDisk is a spool file that runs out of space after limit bytes.
type fullDisk struct {
	*os.File
	mu    sync.Mutex
	limit int64
}

func (d *fullDisk) WriteAt(p []byte, off int64) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if off+int64(len(p)) > d.limit {
		return 0, &os.PathError{Op: "write", Path: "spool", Err: syscall.ENOSPC}
	}
	return d.File.WriteAt(p, off)
}

// TestSpoolFull: a full spool disk refuses new writes with ENOSPC and keeps
// everything accepted before.
func TestSpoolFull(t *testing.T) {
	ctx := testCtx(t)
	v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), func(o *Options) { o.MaxDirty = 16 << 10 })
	v.eng.spool.open = func(dir string) (spoolFile, error) {
		f, err := openSpoolFile(dir)
		if err != nil {
			return nil, err
		}
		return &fullDisk{File: f.(*os.File), limit: 40 * (4096 + cipher.BlockOverhead)}, nil
	}
	f := v.eng.Create("full", nil)
	data := pattern(1<<20, 8)
	var model []byte
	var werr error
	// Random-ish order so nothing streams.
	for k := range 256 {
		off := (k * 37 % 256) * 4096
		n, err := f.WriteAt(ctx, data[off:off+4096], int64(off))
		if err != nil {
			werr = err
			break
		}
		if n != 4096 {
			t.Fatalf("short write %d without error", n)
		}
		if end := off + 4096; end > len(model) {
			model = append(model, make([]byte, end-len(model))...)
		}
		copy(model[off:], data[off:off+4096])
	}
	if !errors.Is(werr, syscall.ENOSPC) {
		t.Fatalf("write with a full spool: %v, want ENOSPC", werr)
	}
	if got := readAll(t, ctx, f); !bytes.Equal(got, model) {
		t.Fatal("accepted data differs after ENOSPC")
	}
	mustSync(t, f)
	if got := readAll(t, ctx, v.reopen(ctx, "full")); !bytes.Equal(got, model) {
		t.Fatal("stored data differs")
	}
}

// TestConcurrentFiles writes several files at once, each read concurrently.
func TestConcurrentFiles(t *testing.T) {
	ctx := testCtx(t)
	v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), func(o *Options) { o.MaxDirty = 256 << 10 })
	var wg sync.WaitGroup
	for k := range 4 {
		wg.Go(func() {
			key := string(rune('a' + k))
			data := pattern(300<<10, k)
			f := v.eng.Create(key, nil)
			h := f.NewHandle()
			defer h.Close()
			for off := 0; off < len(data); off += 50000 {
				end := min(off+50000, len(data))
				if _, err := f.WriteAt(ctx, data[off:end], int64(off)); err != nil {
					t.Error(err)
					return
				}
				buf := make([]byte, end-off)
				if _, err := h.ReadAt(ctx, buf, int64(off)); err != nil || !bytes.Equal(buf, data[off:end]) {
					t.Errorf("%s: read back at %d: %v", key, off, err)
					return
				}
				if off%200000 == 0 {
					if _, err := f.Sync(ctx, nil); err != nil {
						t.Error(err)
						return
					}
				}
			}
			if _, err := f.Sync(ctx, nil); err != nil {
				t.Error(err)
				return
			}
			// Concurrent readers of the synced file.
			var rg sync.WaitGroup
			for r := range 3 {
				rg.Go(func() {
					g := v.reopen(ctx, key)
					buf := make([]byte, 8192)
					for off := r * 8192; off < len(data); off += 3 * 8192 {
						n, err := g.ReadAt(ctx, buf, int64(off))
						if err != nil || !bytes.Equal(buf[:n], data[off:off+n]) {
							t.Errorf("%s: concurrent read at %d: %v", key, off, err)
							return
						}
					}
				})
			}
			rg.Wait()
		})
	}
	wg.Wait()
}

// TestMetadataKeptWhenOpenedFromListing: a file opened with listing info
// (no metadata) keeps its stored metadata through a content Sync(nil).
func TestMetadataKeptWhenOpenedFromListing(t *testing.T) {
	for _, how := range []string{"rewrite", "stream"} {
		t.Run(how, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), nil)
			f := v.eng.Create("l", map[string]string{"mode": "600"})
			mustWrite(t, f, []byte("hello"), 0)
			info := mustSync(t, f)
			info.Metadata = nil // as from List
			f, err := v.eng.Open(ctx, info)
			if err != nil {
				t.Fatal(err)
			}
			if how == "stream" {
				if err := f.Truncate(ctx, 0); err != nil {
					t.Fatal(err)
				}
				writeSeq(t, f, pattern(5*4096, 1), 4096)
			} else {
				mustWrite(t, f, []byte("J"), 0)
			}
			mustSync(t, f)
			st, err := v.store.Stat(ctx, "l")
			if err != nil || st.Metadata["mode"] != "600" {
				t.Fatalf("metadata after sync: %v, %v", st.Metadata, err)
			}
		})
	}
}

// TestInflightShared: a reader of a block already being fetched waits for
// that GET instead of issuing its own.
func TestInflightShared(t *testing.T) {
	ctx := testCtx(t)
	v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), nil)
	f := v.eng.Create("i", nil)
	writeSeq(t, f, pattern(16*4096, 1), 4096)
	mustSync(t, f)
	v.freshCache(t) // forget the blocks the sync wrote through
	f = v.reopen(ctx, "i")
	gate := make(chan struct{})
	g := &gated{Store: v.eng.store, gate: gate}
	v.eng.store = g
	errs := make(chan error, 2)
	read := func() {
		buf := make([]byte, 100)
		_, err := f.ReadAt(ctx, buf, 5*4096)
		errs <- err
	}
	go read()
	for g.gets.Load() == 0 {
		runtime.Gosched()
	}
	go read()
	time.Sleep(50 * time.Millisecond) // let the second reader find the fetch in flight
	close(gate)
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := g.gets.Load(); n != 1 {
		t.Fatalf("two readers of one block issued %d GETs", n)
	}
}

// gated holds every Get until gate is closed.
type gated struct {
	backend.Store
	gate chan struct{}
	gets atomic.Int64
}

func (g *gated) Get(ctx context.Context, key string, off, length int64, opts backend.GetOptions) (io.ReadCloser, error) {
	g.gets.Add(1)
	<-g.gate
	return g.Store.Get(ctx, key, off, length, opts)
}

// TestRename: SetKey + Refresh(copy info) keeps reads working (the copy has
// a new ETag), keeps cached blocks, and works on a dirty file too.
func TestRename(t *testing.T) {
	for _, dirty := range []bool{false, true} {
		t.Run(fmt.Sprintf("dirty=%v", dirty), func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), nil)
			data := pattern(20*4096, 1)
			f := v.eng.Create("a", nil)
			writeSeq(t, f, data, 4096)
			mustSync(t, f)
			f = v.reopen(ctx, "a")
			buf := make([]byte, 4096)
			if _, err := f.ReadAt(ctx, buf, 0); err != nil { // block 0 cached
				t.Fatal(err)
			}
			if dirty {
				mustWrite(t, f, []byte("DIRTY"), 10*4096)
				copy(data[10*4096:], "DIRTY")
			}
			info, err := v.store.Copy(ctx, "a", "b", backend.CopyOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if err := v.store.Delete(ctx, "a"); err != nil {
				t.Fatal(err)
			}
			f.SetKey("b")
			f.Refresh(info)
			v.cache.Wait()
			gets := v.store.gets.Load()
			if _, err := f.ReadAt(ctx, buf, 0); err != nil {
				t.Fatal(err)
			}
			if v.store.gets.Load() != gets {
				t.Error("cached block refetched after rename")
			}
			if got := readAll(t, ctx, f); !bytes.Equal(got, data) {
				t.Fatal("content after rename differs")
			}
			mustSync(t, f)
			if got := readAll(t, ctx, v.reopen(ctx, "b")); !bytes.Equal(got, data) {
				t.Fatal("stored content after rename differs")
			}
		})
	}
}

// stalling is a store whose Put reads a little and then hangs until its
// context ends, like an upload to an unreachable server.
type stalling struct {
	backend.Store
	stall atomic.Bool
}

func (s *stalling) Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (backend.ObjectInfo, error) {
	if s.stall.Load() {
		io.CopyN(io.Discard, r, 1000)
		<-ctx.Done()
		return backend.ObjectInfo{}, ctx.Err()
	}
	return s.Store.Put(ctx, key, r, size, meta)
}

// TestStalledStream: writes blocked by a stalled streaming upload end with
// their context; a Sync with a cancelled context fails; nothing is lost and
// a later Sync stores everything.
func TestStalledStream(t *testing.T) {
	ctx := testCtx(t)
	st := &stalling{Store: stores()[0].new(t)}
	st.stall.Store(true)
	v := newEnv(t, st, testKeys(t, 4096), nil)
	data := pattern(30*4096, 2)
	f := v.eng.Create("stall", nil)
	wctx, cancel := context.WithCancel(ctx)
	time.AfterFunc(100*time.Millisecond, cancel)
	for off := 0; off < len(data); off += 4096 {
		if _, err := f.WriteAt(wctx, data[off:off+4096], int64(off)); err != nil {
			t.Fatalf("write at %d: %v", off, err)
		}
	}
	if wctx.Err() == nil {
		t.Fatal("writes never blocked on the stalled upload")
	}
	// The upload is gone; this Sync uploads whole, into the stall again.
	sctx, scancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer scancel()
	if _, err := f.Sync(sctx, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Sync into a stalled store: %v", err)
	}
	st.stall.Store(false)
	mustSync(t, f)
	if got := readAll(t, ctx, v.reopen(ctx, "stall")); !bytes.Equal(got, data) {
		t.Fatal("content differs")
	}
}

// TestReadaheadFullCache: a sequential read through a cache much smaller
// than the file (so a TinyLFU cache refuses most new blocks) still fetches
// every block exactly once: readahead hands blocks over itself and claims
// them before its GET starts.
func TestReadaheadFullCache(t *testing.T) {
	ctx := testCtx(t)
	v := newEnv(t, stores()[0].new(t), testKeys(t, cipher.DefaultBlockSize), func(o *Options) { o.Readahead = 2 << 20 })
	const size = 32 << 20
	data := pattern(size, 5)
	f := v.eng.Create("big", nil)
	writeSeq(t, f, data, 1<<20)
	mustSync(t, f)
	v.freshCacheOf(t, 2<<20)
	f = v.reopenLogged(ctx, "big")
	h := f.NewHandle()
	defer h.Close()
	buf := make([]byte, 128<<10)
	for off := int64(0); off < size; off += int64(len(buf)) {
		n, err := h.ReadAt(ctx, buf, off)
		if err != nil || !bytes.Equal(buf[:n], data[off:off+int64(n)]) {
			t.Fatalf("read at %d: %v", off, err)
		}
	}
	h.wg.Wait()
	seen := map[uint64]int{}
	v.store.mu.Lock()
	for _, g := range v.store.getLog {
		for i := uint64(0); v.eng.blockOff(i) < g[0]+g[1]; i++ {
			if v.eng.blockOff(i) >= g[0] {
				seen[i]++
			}
		}
	}
	v.store.mu.Unlock()
	for i := range uint64(size / v.eng.bs) {
		// Block 0 came with the header at Open.
		if seen[i] != 1 && !(i == 0 && seen[i] == 0) {
			t.Errorf("block %d fetched %d times", i, seen[i])
		}
	}
}
