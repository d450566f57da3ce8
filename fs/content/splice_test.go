package content

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// These tests play an attacker with write access to the store who keeps
// older versions of a file and splices their sealed blocks into the
// current one. Every stored version has its own key (header version 2), so
// each splice must read as corruption: ErrCorrupt and one log line naming
// the object.

const spliceBS = 4096

// sealedBlock returns sealed block i of a raw object (clipped at its end).
func (v *env) sealedBlock(obj []byte, i uint64) []byte {
	return obj[v.eng.blockOff(i):min(v.eng.blockOff(i+1), int64(len(obj)))]
}

// putRaw stores obj under key behind the engine's back and opens it afresh
// with an empty cache, as a new mount would.
func (v *env) putRaw(ctx context.Context, key string, obj []byte) *File {
	v.t.Helper()
	if _, err := v.store.Store.Put(ctx, key, bytes.NewReader(obj), int64(len(obj)), nil); err != nil {
		v.t.Fatal(err)
	}
	v.freshCache(v.t)
	return v.reopen(ctx, key)
}

// wantCorrupt reads [off, off+n) of f and requires ErrCorrupt and a log line
// naming key.
func (v *env) wantCorrupt(ctx context.Context, f *File, key string, off int64, n int) {
	v.t.Helper()
	_, err := f.ReadAt(ctx, make([]byte, n), off)
	if !errors.Is(err, cipher.ErrCorrupt) {
		v.t.Fatalf("read of spliced %s at %d: %v, want ErrCorrupt", key, off, err)
	}
	if !strings.Contains(v.logs.String(), "key="+key) {
		v.t.Fatalf("no log line names %s:\n%s", key, v.logs.String())
	}
}

// writeVersion makes key hold data (a rewrite of the existing file, or a
// new one) and returns the raw stored object.
func (v *env) writeVersion(ctx context.Context, key string, data []byte, fresh bool) []byte {
	v.t.Helper()
	var f *File
	if fresh {
		f = v.eng.Create(key, nil)
	} else {
		f = v.reopen(ctx, key)
		if err := f.Truncate(ctx, int64(len(data))); err != nil {
			v.t.Fatal(err)
		}
	}
	mustWrite(v.t, f, data, 0)
	mustSync(v.t, f)
	return getObject(v.t, v.store, key)
}

func TestSpliceOlderVersionRefused(t *testing.T) {
	for _, sf := range stores() {
		t.Run(sf.name, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, sf.new(t), testKeys(t, spliceBS), nil)
			l := v.eng

			// Version 1 and version 2 differ in block 2 only (a random write).
			d1 := pattern(4*spliceBS, 1)
			obj1 := v.writeVersion(ctx, "f", d1, true)
			f := v.reopen(ctx, "f")
			mustWrite(t, f, []byte("changed"), 2*spliceBS+10)
			mustSync(t, f)
			obj2 := getObject(t, v.store, "f")
			if len(obj1) != len(obj2) {
				t.Fatal("BUG: the versions differ in size")
			}

			t.Run("no shared ciphertext", func(t *testing.T) {
				if bytes.Equal(obj1[:cipher.HeaderSize], obj2[:cipher.HeaderSize]) {
					t.Fatal("two versions share a header")
				}
				for i := range uint64(4) {
					for j := range uint64(4) {
						if bytes.Equal(v.sealedBlock(obj1, i), v.sealedBlock(obj2, j)) {
							t.Fatalf("block %d of version 1 is block %d of version 2", i, j)
						}
					}
				}
			})

			t.Run("same index", func(t *testing.T) {
				for _, i := range []uint64{0, 1, 3} { // unchanged blocks: identical plaintext
					spliced := bytes.Clone(obj2)
					copy(spliced[l.blockOff(i):], v.sealedBlock(obj1, i))
					g := v.putRaw(ctx, "same", spliced)
					v.wantCorrupt(ctx, g, "same", int64(i)*spliceBS, 10)
				}
			})

			t.Run("old header with new blocks", func(t *testing.T) {
				spliced := bytes.Clone(obj2)
				copy(spliced, obj1[:cipher.HeaderSize])
				g := v.putRaw(ctx, "hdr", spliced)
				v.wantCorrupt(ctx, g, "hdr", 0, 10)
			})
		})
	}
}

// TestSpliceFinalBlockRefused: a final block of another version appended
// where it would truncate or extend the current one.
func TestSpliceFinalBlockRefused(t *testing.T) {
	for _, sf := range stores() {
		t.Run(sf.name, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, sf.new(t), testKeys(t, spliceBS), nil)
			l := v.eng
			short := pattern(2*spliceBS+100, 1) // blocks 0, 1 full; 2 final (100 bytes)
			long := pattern(4*spliceBS, 1)      // same prefix; blocks 0-3 full, 3 final
			copy(long, short)

			// Truncation: version 1 is short, version 2 long. Version 2's
			// blocks 0-1 followed by version 1's final block 2 is the size
			// of a short file and its blocks 0-1 hold the same plaintext.
			objShort := v.writeVersion(ctx, "t", short, true)
			objLong := v.writeVersion(ctx, "t", long, false)
			truncated := append(bytes.Clone(objLong[:l.blockOff(2)]), v.sealedBlock(objShort, 2)...)
			g := v.putRaw(ctx, "trunc", truncated)
			if g.Size() != int64(len(short)) {
				t.Fatalf("spliced size %d, want %d", g.Size(), len(short))
			}
			v.wantCorrupt(ctx, g, "trunc", 2*spliceBS, 10)

			// Extension: version 3 is short again; version 2's blocks 2-3
			// after version 3's blocks 0-1 make a long file.
			objShort3 := v.writeVersion(ctx, "t", short, false)
			extended := append(bytes.Clone(objShort3[:l.blockOff(2)]), objLong[l.blockOff(2):]...)
			g = v.putRaw(ctx, "ext", extended)
			if g.Size() != int64(len(long)) {
				t.Fatalf("spliced size %d, want %d", g.Size(), len(long))
			}
			v.wantCorrupt(ctx, g, "ext", 3*spliceBS, 10)
			v.wantCorrupt(ctx, g, "ext", 2*spliceBS, 10)
		})
	}
}

// TestSpliceAcrossTruncate: blocks of the content a file held before an
// O_TRUNC (which then streams anew from offset 0) do not authenticate in
// the new content.
func TestSpliceAcrossTruncate(t *testing.T) {
	for _, sf := range stores() {
		t.Run(sf.name, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, sf.new(t), testKeys(t, spliceBS), nil)
			data := pattern(4*spliceBS, 3)
			f := v.eng.Create("o", nil)
			writeSeq(t, f, data, spliceBS)
			mustSync(t, f)
			before := getObject(t, v.store, "o")
			f = v.reopen(ctx, "o")
			if err := f.Truncate(ctx, 0); err != nil {
				t.Fatal(err)
			}
			writeSeq(t, f, data, spliceBS) // the same bytes again
			mustSync(t, f)
			after := getObject(t, v.store, "o")
			for i := range uint64(4) {
				spliced := bytes.Clone(after)
				copy(spliced[v.eng.blockOff(i):], v.sealedBlock(before, i))
				g := v.putRaw(ctx, "o2", spliced)
				v.wantCorrupt(ctx, g, "o2", int64(i)*spliceBS, 10)
			}
		})
	}
}

// TestRewriteRefusesTamperedUntouchedBlock: a rewrite re-encrypts the blocks
// it did not touch and so must authenticate them first. One that was
// tampered with fails the sync (ErrCorrupt, logged with the key) and the
// store keeps what it had: nothing is uploaded.
func TestRewriteRefusesTamperedUntouchedBlock(t *testing.T) {
	for _, sf := range stores() {
		t.Run(sf.name, func(t *testing.T) {
			ctx := testCtx(t)
			v := newEnv(t, sf.new(t), testKeys(t, spliceBS), nil)
			f := v.eng.Create("w", nil)
			writeSeq(t, f, pattern(6*spliceBS, 4), spliceBS)
			mustSync(t, f)
			obj := getObject(t, v.store, "w")
			obj[v.eng.blockOff(1)+30] ^= 0x40
			g := v.putRaw(ctx, "w", obj)
			tampered, err := v.store.Stat(ctx, "w")
			if err != nil {
				t.Fatal(err)
			}
			mustWrite(t, g, []byte("x"), 4*spliceBS+1) // block 4 only
			if _, err := g.Sync(ctx, nil); !errors.Is(err, cipher.ErrCorrupt) {
				t.Fatalf("sync over a tampered untouched block: %v, want ErrCorrupt", err)
			}
			if !strings.Contains(v.logs.String(), "key=w") || !strings.Contains(v.logs.String(), "block=1") {
				t.Fatalf("no log line names the object and block:\n%s", v.logs.String())
			}
			now, err := v.store.Stat(ctx, "w")
			if err != nil {
				t.Fatal(err)
			}
			if now.ETag != tampered.ETag || !bytes.Equal(getObject(t, v.store, "w"), obj) {
				t.Fatal("the failed sync replaced the stored object")
			}
			// The data written is kept: with the damage undone, it syncs.
			if _, err := v.store.Store.Put(ctx, "w", bytes.NewReader(obj), int64(len(obj)), nil); err != nil {
				t.Fatal(err)
			}
			if !g.Dirty() {
				t.Fatal("the write was dropped by the failed sync")
			}
		})
	}
}

// TestRewriteReencryptsEverything: a one-byte change to a large file seals
// every block anew, the untouched ones fetched in few ranged GETs (not one
// per block) and read back right.
func TestRewriteReencryptsEverything(t *testing.T) {
	ctx := context.Background()
	v := newEnv(t, backendMem(), testKeys(t, spliceBS), nil)
	data := pattern(300*spliceBS+7, 5)
	f := v.eng.Create("big", nil)
	writeSeq(t, f, data, 64<<10)
	mustSync(t, f)
	before := getObject(t, v.store, "big")
	v.freshCache(t)
	f = v.reopen(ctx, "big")
	gets := v.store.gets.Load()
	mustWrite(t, f, []byte{0xff}, 150*spliceBS)
	data[150*spliceBS] = 0xff
	mustSync(t, f)
	if n := v.store.gets.Load() - gets; n > 4 {
		t.Fatalf("rewrite fetched the untouched blocks in %d GETs, want a few ranged ones", n)
	}
	after := getObject(t, v.store, "big")
	for i := range uint64(301) {
		if bytes.Equal(v.sealedBlock(before, i), v.sealedBlock(after, i)) {
			t.Fatalf("block %d was carried over, not re-encrypted", i)
		}
	}
	v.freshCache(t)
	if got := readAll(t, ctx, v.reopen(ctx, "big")); !bytes.Equal(got, data) {
		t.Fatal("content after the rewrite differs")
	}
}

func backendMem() backend.Store { return stores()[0].new(nil) }
