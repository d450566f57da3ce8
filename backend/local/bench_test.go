package local

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

var benchSizes = []int{64 << 10, 4 << 20}

// BenchmarkPut compares Store.Put with the bare cost of an atomic file
// replace (temp file, write, fsync, rename, fsync directory): the
// difference is the store's own overhead.
func BenchmarkPut(b *testing.B) {
	for _, size := range benchSizes {
		data := bytes.Repeat([]byte{0xa5}, size)
		b.Run(fmt.Sprintf("baseline/%dKiB", size>>10), func(b *testing.B) {
			dir := b.TempDir()
			b.SetBytes(int64(size))
			for b.Loop() {
				f, err := os.CreateTemp(dir, "tmp-*")
				if err != nil {
					b.Fatal(err)
				}
				if _, err := f.Write(data); err != nil {
					b.Fatal(err)
				}
				if err := f.Sync(); err != nil {
					b.Fatal(err)
				}
				f.Close()
				if err := os.Rename(f.Name(), filepath.Join(dir, "obj")); err != nil {
					b.Fatal(err)
				}
				if err := syncDir(dir); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("store/%dKiB", size>>10), func(b *testing.B) {
			s, err := New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(size))
			for b.Loop() {
				// size -1: the streaming path the filesystem uses.
				if _, err := s.Put(b.Context(), "d/obj", bytes.NewReader(data), -1, map[string]string{"mode": "100644"}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkGet compares a whole-object Store.Get with os.ReadFile of a
// file of the same size.
func BenchmarkGet(b *testing.B) {
	for _, size := range benchSizes {
		data := bytes.Repeat([]byte{0x5a}, size)
		b.Run(fmt.Sprintf("baseline/%dKiB", size>>10), func(b *testing.B) {
			p := filepath.Join(b.TempDir(), "obj")
			if err := os.WriteFile(p, data, 0o600); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				f, err := os.Open(p)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(f, buf); err != nil {
					b.Fatal(err)
				}
				f.Close()
			}
		})
		b.Run(fmt.Sprintf("store/%dKiB", size>>10), func(b *testing.B) {
			s, err := New(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := s.Put(b.Context(), "d/obj", bytes.NewReader(data), int64(size), nil); err != nil {
				b.Fatal(err)
			}
			buf := make([]byte, size)
			b.SetBytes(int64(size))
			for b.Loop() {
				rc, err := s.Get(b.Context(), "d/obj", 0, -1, backend.GetOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(rc, buf); err != nil {
					b.Fatal(err)
				}
				rc.Close()
			}
		})
	}
}
