package vaultread

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend/local"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/internal/vault"
)

// BenchmarkCopy reads a 32 MiB file of a local-store vault with Copy at
// several parallelisms (what get does per file, without process start-up
// or KDF), and with Stream (what cat does): with no network to wait for,
// this is their CPU cost per byte.
func BenchmarkCopy(b *testing.B) {
	ctx := context.Background()
	st, err := local.New(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	cipher.AllowWeakKDFForTests(b)
	v, _, err := vault.Init(ctx, st, vault.InitOptions{Secret: cipher.Passphrase([]byte("pw")), KDF: cipher.TestKDF})
	if err != nil {
		b.Fatal(err)
	}
	keys := v.Keys()
	put(b, st, keys, "f", make([]byte, 32<<20), nil)
	info, _ := st.Stat(ctx, "f")
	for _, par := range []int{1, 4, 8} {
		b.Run(fmt.Sprint("parallel=", par), func(b *testing.B) {
			b.SetBytes(32 << 20)
			for b.Loop() {
				r, size, err := Open(ctx, st, keys, info)
				if err != nil {
					b.Fatal(err)
				}
				if err := Copy(ctx, io.Discard, r, size, ChunkSize(keys), par); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("stream", func(b *testing.B) {
		b.SetBytes(32 << 20)
		for b.Loop() {
			if err := Stream(ctx, io.Discard, st, keys, info, 0); err != nil {
				b.Fatal(err)
			}
		}
	})
}
