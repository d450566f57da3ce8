package s3

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager"
	tmtypes "github.com/aws/aws-sdk-go-v2/feature/s3/transfermanager/types"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// The benchmarks move 256 MiB through the Store and through the bare SDK's
// transfer manager (the baseline) against the same MinIO in the same run,
// with the same part size and concurrency:
//
//	go test -run '^$' -bench . -benchtime 3x ./backend/s3/
//
// Upload: a streamed Put of unknown size versus transfermanager.UploadObject.
// Download: Concurrency parallel ranged Gets of PartSize (how the filesystem
// reads ahead) versus transfermanager.DownloadObject with ranged parts; and
// one sequential stream each (Store.Get versus a bare GetObject).
//
// On a shared, busy machine throughput drifts by tens of percent between
// consecutive runs, so BenchmarkPaired alternates Store and SDK within every
// iteration (swapping which goes first) and reports both rates and their
// ratio: that ratio is the figure to compare.
const (
	benchSize        = 256 << 20
	benchPart        = 8 << 20
	benchConcurrency = 4
)

type benchEnv struct {
	store  *Store
	bare   *s3.Client
	tm     *transfermanager.Client
	bucket string
}

var (
	benchOnce sync.Once
	bench     benchEnv
)

func setupBench(b *testing.B) *benchEnv {
	srv := server(b)
	benchOnce.Do(func() {
		// One bucket for every benchmark, removed with the server by Main.
		bucket := "bench"
		bare := srv.SDKClient(b)
		if _, err := bare.CreateBucket(context.Background(), &s3.CreateBucketInput{Bucket: aws.String(bucket)}); err != nil {
			b.Fatal(err)
		}
		cfg := baseConfig(srv, bucket)
		cfg.PartSize, cfg.Concurrency = benchPart, benchConcurrency
		bench = benchEnv{
			store:  newStoreT(b, cfg),
			bare:   bare,
			bucket: bucket,
			tm: transfermanager.New(bare, func(o *transfermanager.Options) {
				o.PartSizeBytes = benchPart
				o.Concurrency = benchConcurrency
				o.GetObjectType = tmtypes.GetObjectRanges
			}),
		}
		if _, err := bench.store.Put(context.Background(), "down", newGenReader(benchSize), -1, nil); err != nil {
			b.Fatal(err)
		}
	})
	if bench.store == nil {
		b.Fatal("benchmark setup failed earlier")
	}
	return &bench
}

func BenchmarkUpload(b *testing.B) {
	e := setupBench(b)
	b.Run("Store", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			if _, err := e.store.Put(b.Context(), "up-store", newGenReader(benchSize), -1, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SDK", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			_, err := e.tm.UploadObject(b.Context(), &transfermanager.UploadObjectInput{
				Bucket: aws.String(e.bucket), Key: aws.String("up-sdk"), Body: newGenReader(benchSize),
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
}

// discardAt is an io.WriterAt that drops what it is given.
type discardAt struct{}

func (discardAt) WriteAt(p []byte, _ int64) (int, error) { return len(p), nil }

// sink drops bytes but, unlike io.Discard, has no ReadFrom, so copies use
// the caller's buffer size.
type sink struct{}

func (sink) Write(p []byte) (int, error) { return len(p), nil }

func BenchmarkDownload(b *testing.B) {
	e := setupBench(b)
	b.Run("Store", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			if err := parallelGet(b.Context(), e.store, "down", benchSize, benchPart, benchConcurrency); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SDK", func(b *testing.B) {
		b.SetBytes(benchSize)
		for b.Loop() {
			_, err := e.tm.DownloadObject(b.Context(), &transfermanager.DownloadObjectInput{
				Bucket: aws.String(e.bucket), Key: aws.String("down"), WriterAt: discardAt{},
			})
			if err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Store-stream", func(b *testing.B) {
		b.SetBytes(benchSize)
		buf := make([]byte, 256<<10)
		for b.Loop() {
			rc, err := e.store.Get(b.Context(), "down", 0, -1, backend.GetOptions{})
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(sink{}, rc, buf)
			rc.Close()
			if err != nil || n != benchSize {
				b.Fatalf("read %d bytes: %v", n, err)
			}
		}
	})
	b.Run("SDK-stream", func(b *testing.B) {
		b.SetBytes(benchSize)
		buf := make([]byte, 256<<10)
		for b.Loop() {
			out, err := e.bare.GetObject(b.Context(), &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("down")})
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(sink{}, out.Body, buf)
			out.Body.Close()
			if err != nil || n != benchSize {
				b.Fatalf("read %d bytes: %v", n, err)
			}
		}
	})
}

// BenchmarkPaired times the Store and the bare SDK on the same transfer in
// every iteration and reports store/sdk, the Store's throughput as a
// fraction of the SDK's.
func BenchmarkPaired(b *testing.B) {
	e := setupBench(b)
	pairs := []struct {
		name       string
		store, sdk func(ctx context.Context) error
	}{
		{"Upload",
			func(ctx context.Context) error {
				_, err := e.store.Put(ctx, "up-store", newGenReader(benchSize), -1, nil)
				return err
			},
			func(ctx context.Context) error {
				_, err := e.tm.UploadObject(ctx, &transfermanager.UploadObjectInput{
					Bucket: aws.String(e.bucket), Key: aws.String("up-sdk"), Body: newGenReader(benchSize),
				})
				return err
			}},
		{"Download",
			func(ctx context.Context) error {
				return parallelGet(ctx, e.store, "down", benchSize, benchPart, benchConcurrency)
			},
			func(ctx context.Context) error {
				_, err := e.tm.DownloadObject(ctx, &transfermanager.DownloadObjectInput{
					Bucket: aws.String(e.bucket), Key: aws.String("down"), WriterAt: discardAt{},
				})
				return err
			}},
		{"Stream",
			func(ctx context.Context) error {
				rc, err := e.store.Get(ctx, "down", 0, -1, backend.GetOptions{})
				if err != nil {
					return err
				}
				defer rc.Close()
				return drain(rc, benchSize)
			},
			func(ctx context.Context) error {
				out, err := e.bare.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(e.bucket), Key: aws.String("down")})
				if err != nil {
					return err
				}
				defer out.Body.Close()
				return drain(out.Body, benchSize)
			}},
	}
	for _, p := range pairs {
		b.Run(p.name, func(b *testing.B) {
			b.SetBytes(2 * benchSize) // one transfer each
			var tStore, tSDK time.Duration
			i := 0
			for b.Loop() {
				fns := []func(context.Context) error{p.store, p.sdk}
				durs := []*time.Duration{&tStore, &tSDK}
				if i%2 == 1 {
					fns[0], fns[1], durs[0], durs[1] = fns[1], fns[0], durs[1], durs[0]
				}
				i++
				for j, fn := range fns {
					start := time.Now()
					if err := fn(b.Context()); err != nil {
						b.Fatal(err)
					}
					*durs[j] += time.Since(start)
				}
			}
			mb := float64(benchSize) * float64(i) / 1e6
			b.ReportMetric(mb/tStore.Seconds(), "store-MB/s")
			b.ReportMetric(mb/tSDK.Seconds(), "sdk-MB/s")
			b.ReportMetric(tSDK.Seconds()/tStore.Seconds(), "store/sdk")
		})
	}
}

// drain reads r to the end and checks it had want bytes.
func drain(r io.Reader, want int64) error {
	n, err := io.CopyBuffer(sink{}, r, make([]byte, 256<<10))
	if err == nil && n != want {
		err = fmt.Errorf("read %d bytes, want %d", n, want)
	}
	return err
}

// parallelGet reads [0, size) of key as ranged Gets of part bytes,
// concurrency at a time.
func parallelGet(ctx context.Context, s backend.Store, key string, size, part int64, concurrency int) error {
	offs := make(chan int64)
	errs := make(chan error, concurrency)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			buf := make([]byte, 256<<10)
			for off := range offs {
				rc, err := s.Get(ctx, key, off, part, backend.GetOptions{})
				if err != nil {
					errs <- err
					return
				}
				n, err := io.CopyBuffer(sink{}, rc, buf)
				rc.Close()
				if err == nil && n != min(part, size-off) {
					err = fmt.Errorf("range at %d: %d bytes", off, n)
				}
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	var err error
loop:
	for off := int64(0); off < size; off += part {
		select {
		case offs <- off:
		case err = <-errs:
			break loop
		}
	}
	close(offs)
	wg.Wait()
	close(errs)
	if err == nil {
		err = <-errs
	}
	return err
}
