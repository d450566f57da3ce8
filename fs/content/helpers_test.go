package content

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/local"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// testKeys returns vault keys with the given block size and cheap KDF.
func testKeys(t testing.TB, blockSize int) *cipher.Keys {
	t.Helper()
	cipher.AllowWeakKDFForTests(t)
	_, k, err := cipher.NewConfig([]byte("test passphrase"), cipher.ConfigOptions{BlockSize: blockSize, KDF: cipher.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// storeFactory is one row of the table of real stores the tests run on.
type storeFactory struct {
	name string
	new  func(t *testing.T) backend.Store
}

func stores() []storeFactory {
	return []storeFactory{
		{"mem", func(*testing.T) backend.Store { return mem.New() }},
		{"local", func(t *testing.T) backend.Store {
			s, err := local.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		}},
	}
}

// counting wraps a store, counts requests and bytes, and can fail Puts.
type counting struct {
	backend.Store
	gets, getBytes, puts, copies atomic.Int64
	failPut                      atomic.Bool
	mu                           sync.Mutex
	getLog                       [][2]int64 // off, length of each Get
}

var errInjected = errorString("injected put failure")

type errorString string

func (e errorString) Error() string { return string(e) }

func (c *counting) Get(ctx context.Context, key string, off, length int64, opts backend.GetOptions) (io.ReadCloser, error) {
	c.gets.Add(1)
	c.mu.Lock()
	c.getLog = append(c.getLog, [2]int64{off, length})
	c.mu.Unlock()
	rc, err := c.Store.Get(ctx, key, off, length, opts)
	if err != nil {
		return nil, err
	}
	return &countReader{rc, &c.getBytes}, nil
}

func (c *counting) Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (backend.ObjectInfo, error) {
	c.puts.Add(1)
	if c.failPut.Load() {
		// Consume a little, like a store that fails mid-upload.
		io.CopyN(io.Discard, r, 1000)
		return backend.ObjectInfo{}, errInjected
	}
	return c.Store.Put(ctx, key, &failingReader{r, &c.failPut}, size, meta)
}

// failingReader fails once failPut is set, so an upload already running
// (a streaming one) fails too.
type failingReader struct {
	r    io.Reader
	fail *atomic.Bool
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.fail.Load() {
		return 0, errInjected
	}
	return f.r.Read(p)
}

func (c *counting) Copy(ctx context.Context, src, dst string, opts backend.CopyOptions) (backend.ObjectInfo, error) {
	c.copies.Add(1)
	return c.Store.Copy(ctx, src, dst, opts)
}

type countReader struct {
	io.ReadCloser
	n *atomic.Int64
}

func (r *countReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.n.Add(int64(n))
	return n, err
}

// env is an engine over a counting store, with a cache.
type env struct {
	t     *testing.T
	store *counting
	cache *cache.Cache
	eng   *Engine
	logs  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newEnv(t *testing.T, st backend.Store, keys *cipher.Keys, mod func(*Options)) *env {
	t.Helper()
	c, err := cache.New(64 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	logs := &syncBuffer{}
	opts := Options{
		Store:    &counting{Store: st},
		Keys:     keys,
		Cache:    c,
		SpoolDir: t.TempDir(),
		Logger:   slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&opts)
	}
	e, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	cs, _ := opts.Store.(*counting)
	return &env{t: t, store: cs, cache: c, eng: e, logs: logs}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// readAll reads the whole file through f.
func readAll(t *testing.T, ctx context.Context, f *File) []byte {
	t.Helper()
	buf := make([]byte, f.Size()+100)
	n, err := f.ReadAt(ctx, buf, 0)
	if err != nil {
		t.Fatalf("ReadAt: %v", err)
	}
	return buf[:n]
}

// reopen opens key afresh from the store (a new File, as after a remount).
func (v *env) reopen(ctx context.Context, key string) *File {
	v.t.Helper()
	info, err := v.store.Stat(ctx, key)
	if err != nil {
		v.t.Fatal(err)
	}
	f, err := v.eng.Open(ctx, info)
	if err != nil {
		v.t.Fatal(err)
	}
	return f
}

// pattern returns n pseudo-random bytes determined by seed.
func pattern(n int, seed int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], uint64(seed))
	b := make([]byte, n)
	rand.NewChaCha8(s).Read(b)
	return b
}

// freshCache gives the engine a new, empty cache (also v.cache): what a
// sync wrote through is forgotten, so reads go to the store.
func (v *env) freshCache(t *testing.T) {
	t.Helper()
	v.freshCacheOf(t, 64<<20)
}

// freshCacheOf is freshCache with a cache of size bytes.
func (v *env) freshCacheOf(t *testing.T, size int64) {
	t.Helper()
	c, err := cache.New(size)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	v.cache, v.eng.cache = c, c
}

// reopenLogged reopens key (see reopen) and then clears the log of Gets,
// so that the log holds only what reads of the returned File ask for.
func (v *env) reopenLogged(ctx context.Context, key string) *File {
	v.t.Helper()
	f := v.reopen(ctx, key)
	v.store.mu.Lock()
	v.store.getLog = nil
	v.store.mu.Unlock()
	return f
}
