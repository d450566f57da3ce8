package content

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/s3"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/internal/miniotest"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

// The MinIO benchmarks profile the engine over the real S3 store (what a
// mount runs, minus FUSE) against the same store driven directly, in the
// same run:
//
//	go test -run '^$' -bench MinIO -cpuprofile cpu.out ./fs/content/
//
// Both sides use the store's defaults (part size, concurrency), so the
// ratio is the engine's own overhead: encryption, block bookkeeping,
// readahead depth.
const minioBenchSize = 128 << 20

func minioStore(b *testing.B) backend.Store { return minioStoreCfg(b, 0) }

func minioStoreCfg(b *testing.B, part int64) backend.Store {
	srv := miniotest.Get(b)
	bucket := srv.NewBucket(b)
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": srv.AccessKey, "AWS_SECRET_ACCESS_KEY": srv.SecretKey,
		"AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE":           os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
	} {
		b.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := s3.New(ctx, s3.Config{
		Bucket: bucket, Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true, CABundle: srv.CAFile,
		PartSize: part,
	})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkMinIOSeqWrite: a new file written in 1 MiB writes (FUSE's
// MaxWrite) and synced with new metadata (as a close does: mtime moved),
// against a streamed Put of the same bytes.
func BenchmarkMinIOSeqWrite(b *testing.B) {
	ctx := context.Background()
	st := minioStore(b)
	keys := testKeys(b, cipher.DefaultBlockSize)
	data := pattern(minioBenchSize, 4)
	const chunk = 1 << 20
	b.Run("store-put", func(b *testing.B) {
		b.SetBytes(minioBenchSize)
		for b.Loop() {
			pr, pw := io.Pipe()
			go func() {
				for off := 0; off < len(data); off += chunk {
					pw.Write(data[off : off+chunk])
				}
				pw.Close()
			}()
			if _, err := st.Put(ctx, "base", pr, -1, map[string]string{"m": "1"}); err != nil {
				b.Fatal(err)
			}
		}
	})
	for _, same := range []bool{false, true} {
		name := "engine"
		if same {
			name = "engine-same-meta"
		}
		b.Run(name, func(b *testing.B) {
			e := benchEngine(b, st, keys, benchCache(b))
			b.SetBytes(minioBenchSize)
			n := 0
			var syncTime time.Duration
			for b.Loop() {
				n++
				f := e.Create("eng", map[string]string{"m": "1"})
				for off := 0; off < len(data); off += chunk {
					if _, err := f.WriteAt(ctx, data[off:off+chunk], int64(off)); err != nil {
						b.Fatal(err)
					}
				}
				t0 := time.Now()
				meta := map[string]string{"m": fmt.Sprint(n + 1)}
				if same {
					meta = nil
				}
				if _, err := f.Sync(ctx, meta); err != nil {
					b.Fatal(err)
				}
				syncTime += time.Since(t0)
			}
			b.ReportMetric(syncTime.Seconds()/float64(n), "sync-s/op")
		})
	}
}

// BenchmarkMinIOSeqReadCold: a cold file read in 128 KiB reads (what FUSE
// sends) through a handle, against 4 parallel ranged Gets of 16 MiB (the
// SDK baseline of tests/perf).
func BenchmarkMinIOSeqReadCold(b *testing.B) {
	ctx := context.Background()
	st := minioStore(b)
	keys := testKeys(b, cipher.DefaultBlockSize)
	data := pattern(minioBenchSize, 5)
	e0, err := New(Options{Store: st, Keys: keys, SpoolDir: b.TempDir()})
	if err != nil {
		b.Fatal(err)
	}
	f := e0.Create("r", nil)
	if _, err := f.WriteAt(ctx, data, 0); err != nil {
		b.Fatal(err)
	}
	info, err := f.Sync(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	e0.Close()
	b.Run("store-ranged-get", func(b *testing.B) {
		b.SetBytes(minioBenchSize)
		const part = 16 << 20
		for b.Loop() {
			sem := make(chan struct{}, 4)
			var wg sync.WaitGroup
			var mu sync.Mutex
			var firstErr error
			for off := int64(0); off < info.Size; off += part {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					n := min(part, info.Size-off)
					buf := make([]byte, n)
					rc, err := st.Get(ctx, "r", off, n, backend.GetOptions{})
					if err == nil {
						_, err = io.ReadFull(rc, buf)
						rc.Close()
					}
					if err != nil {
						mu.Lock()
						firstErr = err
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			if firstErr != nil {
				b.Fatal(firstErr)
			}
		}
	})
	b.Run("engine", func(b *testing.B) {
		b.SetBytes(minioBenchSize)
		p := make([]byte, 128<<10)
		for b.Loop() {
			c, err := cache.New(64 << 20)
			if err != nil {
				b.Fatal(err)
			}
			e, err := New(Options{Store: st, Keys: keys, Cache: c, SpoolDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			f, err := e.Open(ctx, info)
			if err != nil {
				b.Fatal(err)
			}
			h := f.NewHandle()
			for off := int64(0); off < minioBenchSize; off += int64(len(p)) {
				if _, err := h.ReadAt(ctx, p, off); err != nil {
					b.Fatal(err)
				}
			}
			h.Close()
			e.Close()
			c.Close()
		}
	})
}

// BenchmarkMinIORandWrite: 2,000 random 4 KiB writes into a stored 64 MiB
// file opened with an empty cache, then Sync, against what the store alone
// needs for the same change: GET the object, patch it, PUT it back (the
// SDK baseline of tests/perf).
func BenchmarkMinIORandWrite(b *testing.B) {
	ctx := context.Background()
	st := minioStore(b)
	keys := testKeys(b, cipher.DefaultBlockSize)
	const size, writes = 64 << 20, 2000
	data := pattern(size, 6)
	offs := make([]int64, writes)
	for i := range offs {
		offs[i] = int64(uint64(i)*2654435761%(size/4096)) * 4096
	}
	payload := pattern(4096, 7)
	b.Run("store-get-patch-put", func(b *testing.B) {
		if _, err := st.Put(ctx, "base", bytesReader(data), size, nil); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(writes * 4096)
		for b.Loop() {
			rc, err := st.Get(ctx, "base", 0, -1, backend.GetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			buf, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				b.Fatal(err)
			}
			for _, off := range offs {
				copy(buf[off:], payload)
			}
			if _, err := st.Put(ctx, "base", bytesReader(buf), int64(len(buf)), nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("engine", func(b *testing.B) {
		e0 := benchEngine(b, st, keys, nil)
		f := e0.Create("eng", nil)
		if _, err := f.WriteAt(ctx, data, 0); err != nil {
			b.Fatal(err)
		}
		if _, err := f.Sync(ctx, nil); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(writes * 4096)
		for b.Loop() {
			c, err := cache.New(128 << 20)
			if err != nil {
				b.Fatal(err)
			}
			e, err := New(Options{Store: st, Keys: keys, Cache: c, SpoolDir: b.TempDir()})
			if err != nil {
				b.Fatal(err)
			}
			info, err := st.Stat(ctx, "eng")
			if err != nil {
				b.Fatal(err)
			}
			f, err := e.Open(ctx, info)
			if err != nil {
				b.Fatal(err)
			}
			for _, off := range offs {
				if _, err := f.WriteAt(ctx, payload, off); err != nil {
					b.Fatal(err)
				}
			}
			if _, err := f.Sync(ctx, nil); err != nil {
				b.Fatal(err)
			}
			e.Close()
			c.Close()
		}
	})
}

func bytesReader(b []byte) io.Reader { return &sliceReader{b: b} }

type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}
