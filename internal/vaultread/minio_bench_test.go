package vaultread

import (
	"bytes"
	"context"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/s3"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/internal/miniotest"
	"github.com/s3cryptfs/s3cryptfs/internal/vault"
)

func TestMain(m *testing.M) { os.Exit(miniotest.Main(m)) }

// selfCPU is the CPU time this process used so far, in seconds.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

func minioStore(b *testing.B) backend.Store {
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
	st, err := s3.New(ctx, s3.Config{Bucket: bucket, Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true, CABundle: srv.CAFile})
	if err != nil {
		b.Fatal(err)
	}
	return st
}

// BenchmarkMinIOCat: what cat does once the vault is open, over MinIO with
// TLS, on a 256 MiB file: Stream (the mount's engine and its readahead,
// minus FUSE: what cat runs), against Copy (what get and the rewriter run)
// at several chunk sizes and parallelisms:
//
//	go test -run '^$' -bench MinIOCat ./internal/vaultread/
func BenchmarkMinIOCat(b *testing.B) {
	const size = 256 << 20
	ctx := context.Background()
	st := minioStore(b)
	cipher.AllowWeakKDFForTests(b)
	v, _, err := vault.Init(ctx, st, vault.InitOptions{Secret: cipher.Passphrase([]byte("pw")), KDF: cipher.TestKDF})
	if err != nil {
		b.Fatal(err)
	}
	keys := v.Keys()
	data := bytes.Repeat([]byte("0123456789abcdef"), size/16)
	var buf bytes.Buffer
	cw, _ := cipher.NewWriter(&buf, keys)
	cw.Write(data)
	cw.Close()
	if _, err := st.Put(ctx, "f", bytes.NewReader(buf.Bytes()), int64(buf.Len()), nil); err != nil {
		b.Fatal(err)
	}
	buf = bytes.Buffer{}
	info, err := st.Stat(ctx, "f")
	if err != nil {
		b.Fatal(err)
	}
	bs := int64(keys.Layout().BlockSize)
	for _, c := range []struct {
		name  string
		chunk int64
		par   int
	}{{"copy-4MiB-x8", 64 * bs, 8}, {"copy-8MiB-x4", 128 * bs, 4}, {"copy-8MiB-x8", 128 * bs, 8}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(size)
			cpu0 := selfCPU()
			for b.Loop() {
				r, n, err := Open(ctx, st, keys, info)
				if err != nil {
					b.Fatal(err)
				}
				if err := Copy(ctx, io.Discard, r, n, c.chunk, c.par); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric((selfCPU()-cpu0)/float64(b.N), "client-CPU-s/op")
		})
	}
	b.Run("stream", func(b *testing.B) {
		b.SetBytes(size)
		cpu0 := selfCPU()
		for b.Loop() {
			if err := Stream(ctx, io.Discard, st, keys, info, 0); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric((selfCPU()-cpu0)/float64(b.N), "client-CPU-s/op")
	})
}
