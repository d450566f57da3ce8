package content

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// replayEnv is an engine with 4 KiB blocks and a 64 KiB replay window, so
// that streams go past it quickly.
func replayEnv(t *testing.T, mod func(*Options)) *env {
	v := newEnv(t, stores()[0].new(t), testKeys(t, 4096), mod)
	v.eng.streamReplay = 64 << 10
	return v
}

// TestStreamingSpoolBounded: a sequential write much larger than the
// memory budget streams without the spool growing past the replay window
// (it used to receive every streamed block, growing to the file size), and
// the stored content is right.
func TestStreamingSpoolBounded(t *testing.T) {
	ctx := testCtx(t)
	v := replayEnv(t, func(o *Options) { o.MaxDirty = 16 << 10 })
	data := pattern(4<<20, 9)
	f := v.eng.Create("big", nil)
	var peakMem int64
	for off := 0; off < len(data); off += 32 << 10 {
		mustWrite(t, f, data[off:off+32<<10], int64(off))
		peakMem = max(peakMem, v.eng.memDirty.Load())
	}
	v.eng.spool.mu.Lock()
	slots := v.eng.spool.next
	v.eng.spool.mu.Unlock()
	if limit := v.eng.streamReplay/v.eng.bs + 2; slots > limit {
		t.Fatalf("spool grew to %d slots streaming %d blocks, want <= %d (replay window)", slots, len(data)/4096, limit)
	}
	if limit := v.eng.maxDirty + 2*v.eng.bs; peakMem > limit {
		t.Fatalf("%d bytes of dirty memory, budget %d", peakMem, v.eng.maxDirty)
	}
	mustSync(t, f)
	if v.store.puts.Load() != 1 {
		t.Fatalf("%d Puts, want the one streaming upload", v.store.puts.Load())
	}
	v.freshCache(t)
	if got := readAll(t, ctx, v.reopen(ctx, "big")); !bytes.Equal(got, data) {
		t.Fatal("stored content differs")
	}
}

// TestStreamingPastReplayWindow: once a stream dropped its first blocks,
// reading them back, writing elsewhere or truncating complete the upload
// first and then work on the stored object; the final content is right.
func TestStreamingPastReplayWindow(t *testing.T) {
	for _, op := range []string{"read", "write", "truncate"} {
		t.Run(op, func(t *testing.T) {
			ctx := testCtx(t)
			v := replayEnv(t, nil)
			data := pattern(1<<20, 12)
			f := v.eng.Create("s", map[string]string{"a": "1"})
			writeSeq(t, f, data[:512<<10], 16<<10)
			f.mu.Lock()
			dropped := f.st != nil && f.st.dropped
			f.mu.Unlock()
			if !dropped {
				t.Fatal("a stream 8x the replay window dropped nothing")
			}
			switch op {
			case "read":
				buf := make([]byte, 10000)
				if _, err := f.ReadAt(ctx, buf, 100); err != nil || !bytes.Equal(buf, data[100:10100]) {
					t.Fatalf("read back of dropped blocks: %v", err)
				}
				mustWrite(t, f, data[512<<10:], 512<<10)
			case "write":
				mustWrite(t, f, []byte("HELLO"), 100)
				copy(data[100:], "HELLO")
				mustWrite(t, f, data[512<<10:], 512<<10)
			case "truncate":
				if err := f.Truncate(ctx, 300<<10+5); err != nil {
					t.Fatal(err)
				}
				data = append(data[:300<<10+5], data[512<<10:]...)
				mustWrite(t, f, data[300<<10+5:], 300<<10+5)
			}
			if got := readAll(t, ctx, f); !bytes.Equal(got, data) {
				t.Fatal("content before Sync differs")
			}
			info := mustSync(t, f)
			if info.Metadata["a"] != "1" {
				t.Errorf("metadata %v", info.Metadata)
			}
			v.freshCache(t)
			if got := readAll(t, ctx, v.reopen(ctx, "s")); !bytes.Equal(got, data) {
				t.Fatal("stored content differs")
			}
		})
	}
}

// TestStreamingFailsPastReplayWindow: an upload failing after the stream
// dropped blocks loses the file, and says so: Sync, ReadAt and WriteAt fail
// with the store's error, nothing is stored; truncating to 0 makes the file
// usable again.
func TestStreamingFailsPastReplayWindow(t *testing.T) {
	ctx := testCtx(t)
	v := replayEnv(t, nil)
	data := pattern(512<<10, 13)
	f := v.eng.Create("lost", nil)
	writeSeq(t, f, data[:256<<10], 16<<10)
	v.store.failPut.Store(true)
	for off := 256 << 10; off < len(data); off += 16 << 10 {
		if _, err := f.WriteAt(ctx, data[off:off+16<<10], int64(off)); err != nil {
			if !errors.Is(err, errInjected) {
				t.Fatalf("write after the upload failed: %v, want the store's error", err)
			}
			break
		}
	}
	if _, err := f.Sync(ctx, nil); !errors.Is(err, errInjected) {
		t.Fatalf("Sync after the upload failed past the replay window: %v, want the store's error", err)
	}
	if _, err := f.ReadAt(ctx, make([]byte, 10), 0); !errors.Is(err, errInjected) {
		t.Fatalf("ReadAt of a lost file: %v", err)
	}
	if _, err := f.WriteAt(ctx, []byte("x"), 0); !errors.Is(err, errInjected) {
		t.Fatalf("WriteAt to a lost file: %v", err)
	}
	if !f.Dirty() {
		t.Fatal("lost file reports clean")
	}
	if logs := v.logs.String(); !strings.Contains(logs, "file content lost") {
		t.Fatalf("no log of the loss: %s", logs)
	}
	if _, err := v.store.Stat(ctx, "lost"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("failed upload left an object: %v", err)
	}
	v.store.failPut.Store(false)
	if err := f.Truncate(ctx, 0); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, f, data[:5000], 0)
	mustSync(t, f)
	if got := readAll(t, ctx, v.reopen(ctx, "lost")); !bytes.Equal(got, data[:5000]) {
		t.Fatal("content after starting afresh differs")
	}
}
