package content

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// modes: encrypted with small blocks (many blocks per test), encrypted with
// the default block size, and plaintext.
func modes(t *testing.T) []struct {
	name string
	keys *cipher.Keys
} {
	return []struct {
		name string
		keys *cipher.Keys
	}{
		{"crypt4k", testKeys(t, 4096)},
		{"crypt64k", testKeys(t, cipher.DefaultBlockSize)},
		{"plain", nil},
	}
}

func TestSizes(t *testing.T) {
	for _, m := range modes(t) {
		v := newEnv(t, stores()[0].new(t), m.keys, nil)
		for _, n := range []int64{0, 1, 4095, 4096, 4097, 65536, 65537, 1 << 20} {
			o := v.eng.ObjectSize(n)
			p, err := v.eng.PlainSize(o)
			if err != nil || p != n {
				t.Errorf("%s: PlainSize(ObjectSize(%d)=%d) = %d, %v", m.name, n, o, p, err)
			}
			if m.keys != nil && o != m.keys.Layout().PlainSizeToCipherSize(n) {
				t.Errorf("%s: ObjectSize(%d) = %d, cipher says %d", m.name, n, o, m.keys.Layout().PlainSizeToCipherSize(n))
			}
		}
	}
}

// TestRandomOps runs random writes, truncates, reads, syncs and reopens
// against a reference []byte, on every store and mode.
func TestRandomOps(t *testing.T) {
	seeds := 4
	if testing.Short() {
		seeds = 1
	}
	for _, sf := range stores() {
		for _, m := range modes(t) {
			for _, c := range []struct {
				maxDirty int64
				noCache  bool // no block cache: every write into a stored block is partial
			}{{0, false}, {8 << 10, false}, {0, true}, {8 << 10, true}} {
				name := fmt.Sprintf("%s/%s/maxdirty=%d/nocache=%v", sf.name, m.name, c.maxDirty, c.noCache)
				t.Run(name, func(t *testing.T) {
					v := newEnv(t, sf.new(t), m.keys, func(o *Options) {
						o.MaxDirty = c.maxDirty
						if c.noCache {
							o.Cache = nil
						}
					})
					for seed := range seeds {
						randomOps(t, v, uint64(seed), fmt.Sprintf("f%d", seed))
					}
				})
			}
		}
	}
}

func randomOps(t *testing.T, v *env, seed uint64, key string) {
	ctx := testCtx(t)
	rng := rand.New(rand.NewPCG(seed, 99))
	bs := int(v.eng.bs)
	var model []byte
	f := v.eng.Create(key, map[string]string{"mode": "644"})
	check := func(op string) {
		t.Helper()
		if f.Size() != int64(len(model)) {
			t.Fatalf("seed %d after %s: size %d, want %d", seed, op, f.Size(), len(model))
		}
		// A random range, and sometimes everything.
		off := rng.IntN(len(model) + 10)
		n := rng.IntN(3*bs + 10)
		if rng.IntN(4) == 0 {
			off, n = 0, len(model)+10
		}
		buf := make([]byte, n)
		got, err := f.ReadAt(ctx, buf, int64(off))
		if err != nil {
			t.Fatalf("seed %d after %s: ReadAt(%d, %d): %v", seed, op, off, n, err)
		}
		want := []byte{}
		if off < len(model) {
			want = model[off:min(off+n, len(model))]
		}
		if !bytes.Equal(buf[:got], want) {
			t.Fatalf("seed %d after %s: ReadAt(%d, %d) = %d bytes, differs from model (%d bytes)", seed, op, off, n, got, len(want))
		}
	}
	for step := range 150 {
		switch op := rng.IntN(20); {
		case op < 10: // write
			off := rng.IntN(len(model) + bs)
			if rng.IntN(3) == 0 {
				off = len(model) // append
			}
			n := rng.IntN(3*bs) + 1
			if rng.IntN(4) == 0 { // block-aligned edges matter (final flags)
				off -= off % bs
				n = (n + bs - 1) / bs * bs
			}
			data := pattern(n, int(seed)*1000+step)
			n, err := f.WriteAt(ctx, data, int64(off))
			if err != nil || n != len(data) {
				t.Fatalf("WriteAt: %d, %v", n, err)
			}
			if end := off + len(data); end > len(model) {
				model = append(model, make([]byte, end-len(model))...)
			}
			copy(model[off:], data)
			check(fmt.Sprintf("step %d write(%d, %d)", step, off, len(data)))
		case op < 13: // truncate
			size := rng.IntN(len(model) + 2*bs + 1)
			switch rng.IntN(5) {
			case 0:
				size = 0
			case 1:
				size -= size % bs
			}
			if err := f.Truncate(ctx, int64(size)); err != nil {
				t.Fatal(err)
			}
			if size > len(model) {
				model = append(model, make([]byte, size-len(model))...)
			}
			model = model[:size]
			check(fmt.Sprintf("step %d truncate(%d)", step, size))
		case op < 16: // sync
			info, err := f.Sync(ctx, nil)
			if err != nil {
				t.Fatalf("step %d: Sync: %v", step, err)
			}
			if f.Dirty() {
				t.Fatal("dirty after Sync")
			}
			if info.Size != v.eng.ObjectSize(int64(len(model))) {
				t.Fatalf("stored size %d, want %d", info.Size, v.eng.ObjectSize(int64(len(model))))
			}
			check(fmt.Sprintf("step %d sync", step))
		case op < 17: // sync and reopen from the store
			if _, err := f.Sync(ctx, nil); err != nil {
				t.Fatal(err)
			}
			f = v.reopen(ctx, key)
			check(fmt.Sprintf("step %d reopen", step))
		default:
			check(fmt.Sprintf("step %d read", step))
		}
	}
	if _, err := f.Sync(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, ctx, v.reopen(ctx, key)); !bytes.Equal(got, model) {
		t.Fatalf("seed %d: final content differs (%d bytes, want %d)", seed, len(got), len(model))
	}
	if n := v.eng.memDirty.Load(); n != 0 {
		t.Fatalf("engine still accounts %d dirty bytes after the final sync", n)
	}
}

// TestBlockBoundaries pins the cases where a block's final flag changes
// without the block being written: the old final block (full) must be
// resealed as non-final when the file grows past it, and a full block must
// be resealed as final when a truncate makes it the last one.
func TestBlockBoundaries(t *testing.T) {
	for _, m := range modes(t) {
		t.Run(m.name, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, stores()[0].new(t), m.keys, nil)
			bs := int(v.eng.bs)
			model := pattern(2*bs, 1)
			f := v.eng.Create("b", nil)
			mustWrite(t, f, model, 0)
			mustSync(t, f)
			// Grow by appending exactly at the boundary: block 1 untouched.
			more := pattern(100, 2)
			f = v.reopen(ctx, "b")
			mustWrite(t, f, more, int64(2*bs))
			model = append(model, more...)
			mustSync(t, f)
			if got := readAll(t, ctx, v.reopen(ctx, "b")); !bytes.Equal(got, model) {
				t.Fatal("grow past a full final block: content differs")
			}
			// Truncate to exactly one block: block 0 becomes final.
			f = v.reopen(ctx, "b")
			if err := f.Truncate(ctx, int64(bs)); err != nil {
				t.Fatal(err)
			}
			model = model[:bs]
			mustSync(t, f)
			if got := readAll(t, ctx, v.reopen(ctx, "b")); !bytes.Equal(got, model) {
				t.Fatal("truncate to a block boundary: content differs")
			}
			// Grow by truncate: a hole of zeros after the old final block.
			f = v.reopen(ctx, "b")
			if err := f.Truncate(ctx, int64(3*bs+5)); err != nil {
				t.Fatal(err)
			}
			model = append(model, make([]byte, 2*bs+5)...)
			mustSync(t, f)
			if got := readAll(t, ctx, v.reopen(ctx, "b")); !bytes.Equal(got, model) {
				t.Fatal("grow by truncate: content differs")
			}
		})
	}
}

func mustWrite(t *testing.T, f *File, p []byte, off int64) {
	t.Helper()
	if n, err := f.WriteAt(testCtx(t), p, off); err != nil || n != len(p) {
		t.Fatalf("WriteAt(%d bytes at %d) = %d, %v", len(p), off, n, err)
	}
}

func mustSync(t *testing.T, f *File) backend.ObjectInfo {
	t.Helper()
	info, err := f.Sync(testCtx(t), nil)
	if err != nil {
		t.Fatalf("Sync: %v", err)
	}
	return info
}
