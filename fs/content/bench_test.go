package content

import (
	"bytes"
	"context"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

const benchFile = 32 << 20

func benchEngine(b *testing.B, st backend.Store, keys *cipher.Keys, c *cache.Cache) *Engine {
	e, err := New(Options{Store: st, Keys: keys, Cache: c, SpoolDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { e.Close() })
	return e
}

func benchCache(b *testing.B) *cache.Cache {
	c, err := cache.New(128 << 20)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(c.Close)
	return c
}

// BenchmarkReadAt4KWarm: random 4 KiB reads of cached blocks through the
// engine, against the floor of a bare cache lookup and copy.
func BenchmarkReadAt4KWarm(b *testing.B) {
	ctx := context.Background()
	keys := testKeys(b, cipher.DefaultBlockSize)
	c := benchCache(b)
	e := benchEngine(b, mem.New(), keys, c)
	data := pattern(16<<20, 1)
	f := e.Create("warm", nil)
	if _, err := f.WriteAt(ctx, data, 0); err != nil {
		b.Fatal(err)
	}
	info, err := f.Sync(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	if f, err = e.Open(ctx, info); err != nil {
		b.Fatal(err)
	}
	if _, err := f.ReadAt(ctx, make([]byte, len(data)), 0); err != nil {
		b.Fatal(err)
	}
	c.Wait()
	buf := make([]byte, 4096)
	rng := rand.New(rand.NewPCG(1, 2))
	b.Run("engine", func(b *testing.B) {
		b.SetBytes(4096)
		for b.Loop() {
			off := rng.Int64N(int64(len(data)-4096)) &^ 4095
			if _, err := f.ReadAt(ctx, buf, off); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-cache-get", func(b *testing.B) {
		id := f.base.codec.cacheID()
		b.SetBytes(4096)
		for b.Loop() {
			off := rng.Int64N(int64(len(data)-4096)) &^ 4095
			blk, ok := c.Get(cache.Key{File: id, Version: info.ETag, Block: uint64(off / e.bs)})
			if !ok {
				b.Fatal("miss")
			}
			copy(buf, blk[off%e.bs:])
		}
	})
}

// BenchmarkSeqWrite: a new file written in 128 KiB chunks and synced,
// against cipher.Writer piped straight into the same store.
func BenchmarkSeqWrite(b *testing.B) {
	ctx := context.Background()
	keys := testKeys(b, cipher.DefaultBlockSize)
	data := pattern(benchFile, 2)
	b.Run("engine", func(b *testing.B) {
		e := benchEngine(b, mem.New(), keys, benchCache(b))
		b.SetBytes(benchFile)
		for b.Loop() {
			f := e.Create("w", nil)
			for off := 0; off < len(data); off += 128 << 10 {
				if _, err := f.WriteAt(ctx, data[off:off+128<<10], int64(off)); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := f.Sync(ctx, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("baseline-cipher-writer", func(b *testing.B) {
		st := mem.New()
		b.SetBytes(benchFile)
		for b.Loop() {
			pr, pw := io.Pipe()
			go func() {
				w, err := cipher.NewWriter(pw, keys)
				if err == nil {
					for off := 0; off < len(data) && err == nil; off += 128 << 10 {
						_, err = w.Write(data[off : off+128<<10])
					}
				}
				if err == nil {
					err = w.Close()
				}
				pw.CloseWithError(err)
			}()
			if _, err := st.Put(ctx, "w", pr, -1, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// storeReaderAt reads an object with one ranged Get per ReadAt.
type storeReaderAt struct {
	st  backend.Store
	key string
}

func (r storeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	rc, err := r.st.Get(context.Background(), r.key, off, int64(len(p)), backend.GetOptions{})
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.ReadFull(rc, p)
}

// BenchmarkSeqRead: a cold file read in 128 KiB chunks through a handle
// (readahead, cache), against cipher.Reader over ranged Gets.
func BenchmarkSeqRead(b *testing.B) {
	ctx := context.Background()
	keys := testKeys(b, cipher.DefaultBlockSize)
	st := mem.New()
	data := pattern(benchFile, 3)
	var buf bytes.Buffer
	w, err := cipher.NewWriter(&buf, keys)
	if err != nil {
		b.Fatal(err)
	}
	w.Write(data)
	w.Close()
	info, err := st.Put(ctx, "r", bytes.NewReader(buf.Bytes()), int64(buf.Len()), nil)
	if err != nil {
		b.Fatal(err)
	}
	p := make([]byte, 128<<10)
	b.Run("engine", func(b *testing.B) {
		b.SetBytes(benchFile)
		for b.Loop() {
			b.StopTimer()
			c, err := cache.New(128 << 20)
			if err != nil {
				b.Fatal(err)
			}
			e, err := New(Options{Store: st, Keys: keys, Cache: c, SpoolDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			f, err := e.Open(ctx, info)
			if err != nil {
				b.Fatal(err)
			}
			h := f.NewHandle()
			for off := int64(0); off < benchFile; off += int64(len(p)) {
				if _, err := h.ReadAt(ctx, p, off); err != nil {
					b.Fatal(err)
				}
			}
			h.Close()
			b.StopTimer()
			e.Close()
			c.Close()
			b.StartTimer()
		}
	})
	b.Run("baseline-cipher-reader", func(b *testing.B) {
		b.SetBytes(benchFile)
		for b.Loop() {
			r, err := cipher.NewReader(storeReaderAt{st, "r"}, info.Size, keys)
			if err != nil {
				b.Fatal(err)
			}
			for off := int64(0); off < benchFile; off += int64(len(p)) {
				if _, err := r.ReadAt(p, off); err != nil && err != io.EOF {
					b.Fatal(err)
				}
			}
		}
	})
}
