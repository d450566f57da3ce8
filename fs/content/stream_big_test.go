package content

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// sink is a store whose Put decrypts and hashes what it receives instead of
// keeping it, so a file larger than the memory bound can be checked.
type sink struct {
	backend.Store
	keys     *cipher.Keys
	consumed atomic.Int64
	sum      [32]byte
	plainLen int64
}

func (s *sink) Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (backend.ObjectInfo, error) {
	l := s.keys.Layout()
	hdr := make([]byte, l.HeaderSize)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return backend.ObjectInfo{}, err
	}
	s.consumed.Add(int64(len(hdr)))
	fk, err := s.keys.OpenHeader(hdr)
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	h := sha256.New()
	sealed := l.BlockSize + cipher.BlockOverhead
	prev, cur := make([]byte, sealed), make([]byte, sealed)
	havePrev := false
	prevLen := 0
	var plain []byte
	var total int64
	for i := uint64(0); ; i++ {
		n, err := io.ReadFull(r, cur)
		s.consumed.Add(int64(n))
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return backend.ObjectInfo{}, err
		}
		last := err != nil
		if havePrev {
			// prev is final iff nothing follows it.
			if plain, err = fk.Open(plain[:0], prev[:prevLen], i-1, last && n == 0); err != nil {
				return backend.ObjectInfo{}, err
			}
			h.Write(plain)
			total += int64(len(plain))
		}
		if last && n == 0 {
			break
		}
		prev, cur, prevLen, havePrev = cur, prev, n, true
		if last {
			if plain, err = fk.Open(plain[:0], prev[:prevLen], i, true); err != nil {
				return backend.ObjectInfo{}, err
			}
			h.Write(plain)
			total += int64(len(plain))
			break
		}
	}
	copy(s.sum[:], h.Sum(nil))
	s.plainLen = total
	return backend.ObjectInfo{Key: key, Size: l.PlainSizeToCipherSize(total), ETag: fmt.Sprintf("sink-%d", total), Metadata: meta}, nil
}

// TestStreamingBoundedMemory writes a large file sequentially and checks
// that it streams (the store received nearly all of it before Sync), that
// the heap stays far below the file size, and that what the store received
// decrypts to exactly what was written.
func TestStreamingBoundedMemory(t *testing.T) {
	size := int64(200 << 20)
	if testing.Short() {
		size = 24 << 20
	}
	keys := testKeys(t, cipher.DefaultBlockSize)
	s := &sink{Store: mem.New(), keys: keys}
	v := newEnv(t, s, keys, func(o *Options) { o.MaxDirty = 8 << 20 })
	f := v.eng.Create("big", nil)
	chunk := pattern(128<<10, 11)
	h := sha256.New()
	var peak uint64
	var ms runtime.MemStats
	for off := int64(0); off < size; off += int64(len(chunk)) {
		chunk[0], chunk[1] = byte(off>>17), byte(off>>25) // vary the content
		mustWrite(t, f, chunk, off)
		h.Write(chunk)
		if off%(8<<20) == 0 {
			// Live heap: what the engine retains, not garbage from this
			// or earlier tests awaiting collection.
			runtime.GC()
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
		}
	}
	if got := s.consumed.Load(); got < size-(1<<20) {
		t.Fatalf("store received %d of %d bytes before Sync: not streaming", got, size)
	}
	mustSync(t, f)
	if s.plainLen != size || !bytes.Equal(s.sum[:], h.Sum(nil)) {
		t.Fatalf("store received %d plaintext bytes with another hash, want %d", s.plainLen, size)
	}
	t.Logf("file %d MiB, peak live heap %d MiB", size>>20, peak>>20)
	if limit := uint64(48 << 20); peak > limit {
		t.Fatalf("peak live heap %d MiB while streaming a %d MiB file, want < %d MiB", peak>>20, size>>20, limit>>20)
	}
	if n := v.eng.memDirty.Load(); n != 0 {
		t.Fatalf("%d dirty bytes accounted after Sync", n)
	}
}
