package fs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/fs"
)

// gatedStore holds every Put of a file (not of indexes or markers) until
// the gate opens, fails the next failPuts of them, and counts the Puts in
// flight at once.
type gatedStore struct {
	backend.Store
	gate              chan struct{}
	failPuts          atomic.Int64
	inFlight, maxSeen atomic.Int64
	delay             time.Duration
}

var errPutFailed = errors.New("injected put failure")

func (g *gatedStore) Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (backend.ObjectInfo, error) {
	if filepath.Base(key) == "_" || key[len(key)-1] == '/' { // attribute index, directory marker
		return g.Store.Put(ctx, key, r, size, meta)
	}
	n := g.inFlight.Add(1)
	defer g.inFlight.Add(-1)
	for {
		m := g.maxSeen.Load()
		if n <= m || g.maxSeen.CompareAndSwap(m, n) {
			break
		}
	}
	if g.gate != nil {
		<-g.gate
	}
	time.Sleep(g.delay)
	if g.failPuts.Load() > 0 {
		g.failPuts.Add(-1)
		io.Copy(io.Discard, r)
		return backend.ObjectInfo{}, errPutFailed
	}
	return g.Store.Put(ctx, key, r, size, meta)
}

func writeBack(o *fs.Options) { o.WriteBack = true }

// TestWriteBackCloseReturnsBeforeUpload: close returns while the upload is
// held; fsync waits for it; the object is stored once the gate opens. (A
// file written sequentially past its first block streams to the store while
// it is written, write-back or not, so the writes themselves wait for a
// stalled store: memory stays bounded.)
func TestWriteBackCloseReturnsBeforeUpload(t *testing.T) {
	st := &gatedStore{Store: mem.New(), gate: make(chan struct{})}
	dir, fsys := mountStoreFS(t, st, writeBack)
	p := filepath.Join(dir, "f")
	data := randBytes(t, 3000) // under one block: no streaming upload, whose pipe would hold the writes
	closed := make(chan error, 1)
	go func() { closed <- os.WriteFile(p, data, 0o644) }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		close(st.gate)
		t.Fatal("close waited for the held upload")
	}
	if got, err := os.ReadFile(p); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read before the upload: %v", err)
	}
	if s := fsys.WriteBackStats(); s.Pending != 1 {
		t.Fatalf("stats %+v, want one pending", s)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	synced := make(chan error, 1)
	go func() { synced <- f.Sync() }()
	select {
	case err := <-synced:
		t.Fatalf("fsync returned (%v) before the upload could finish", err)
	case <-time.After(300 * time.Millisecond):
	}
	close(st.gate)
	if err := <-synced; err != nil {
		t.Fatalf("fsync: %v", err)
	}
	f.Close()
	if _, err := st.Stat(context.Background(), "f"); err != nil {
		t.Fatalf("object not stored after fsync: %v", err)
	}
}

// TestWriteBackRetries: an upload that fails twice is retried and stored;
// one that keeps failing gives up, is counted, keeps its data in the mount,
// and fsync reports EIO until the store works again.
func TestWriteBackRetries(t *testing.T) {
	defer fs.SetWriteBackRetryBase(10 * time.Millisecond)()
	st := &gatedStore{Store: mem.New()}
	dir, fsys := mountStoreFS(t, st, writeBack)

	st.failPuts.Store(2)
	if err := os.WriteFile(filepath.Join(dir, "a"), []byte("retried"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := fsys.SyncAll(context.Background()); err != nil {
		t.Fatal(err)
	}
	if b := readObject(t, st, "a"); len(b) == 0 {
		t.Fatal("a not stored after retries")
	}
	if s := fsys.WriteBackStats(); s.Failed != 0 || s.Uploaded != 1 {
		t.Fatalf("stats %+v", s)
	}

	st.failPuts.Store(1 << 40)
	data := []byte("kept in the mount")
	if err := os.WriteFile(filepath.Join(dir, "b"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(time.Minute)
	for fsys.WriteBackStats().Failed == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the upload did not give up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "b")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("data lost after the failed upload: %q %v", got, err)
	}
	f, err := os.OpenFile(filepath.Join(dir, "b"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); !errors.Is(err, syscall.EIO) {
		t.Fatalf("fsync while the store fails: %v, want EIO", err)
	}
	st.failPuts.Store(0)
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync once the store works: %v", err)
	}
	if _, err := st.Stat(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
}

// TestWriteBackParallelAndBounded: many small files over a slow store are
// uploaded several at a time, and fsync of the root waits for all of them.
func TestWriteBackParallelAndBounded(t *testing.T) {
	st := &gatedStore{Store: mem.New(), delay: 20 * time.Millisecond}
	dir, fsys := mountStoreFS(t, st, func(o *fs.Options) {
		o.WriteBack = true
		o.WriteBackParallel = 8
		o.WriteBackMaxBytes = 64 << 10 // a few files' worth: closes must wait
	})
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				name := filepath.Join(dir, fmt.Sprintf("f%d-%d", w, i))
				if err := os.WriteFile(name, bytes.Repeat([]byte{byte(i)}, 10_000), 0o644); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if s := fsys.WriteBackStats(); s.PendingBytes > 64<<10+10_000 {
		t.Fatalf("pending %d bytes, bound 64 KiB (+ one file)", s.PendingBytes)
	}
	root, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := root.Sync(); err != nil {
		t.Fatal(err)
	}
	root.Close()
	if s := fsys.WriteBackStats(); s.Pending != 0 || s.Uploaded != 100 {
		t.Fatalf("after fsync of the root: %+v", s)
	}
	n := 0
	st.List(context.Background(), "", "/", func(o *backend.ObjectInfo, _ string) error {
		if o != nil && o.Key[0] == 'f' {
			n++
		}
		return nil
	})
	if n != 100 {
		t.Fatalf("%d files stored, want 100", n)
	}
	if m := st.maxSeen.Load(); m < 2 || m > 8 {
		t.Fatalf("at most %d uploads ran at once, want 2..8", m)
	}
}
