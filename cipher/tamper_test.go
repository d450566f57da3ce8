package cipher

import (
	"bytes"
	"crypto/rand"
	"errors"
	"testing"
)

// failsToOpen reports whether obj is refused both by the block API and by
// NewReader plus a full read.
func failsToOpen(t *testing.T, k *Keys, obj []byte) bool {
	t.Helper()
	_, err1 := openAll(k, obj)
	if err1 != nil && !errors.Is(err1, ErrCorrupt) && !errors.Is(err1, ErrWrongKey) {
		t.Fatalf("unexpected error class: %v", err1)
	}
	var err2 error
	if r, err := NewReader(bytes.NewReader(obj), int64(len(obj)), k); err != nil {
		err2 = err
	} else if r.Size() > 0 {
		_, err2 = r.ReadAt(make([]byte, r.Size()), 0)
	}
	if (err1 == nil) != (err2 == nil) {
		t.Fatalf("block API and Reader disagree: %v / %v", err1, err2)
	}
	return err1 != nil
}

// TestEveryByteFlipFails flips each bit position class in every byte of an
// object of 3 full blocks and a short one (4 KiB blocks): each change must
// make the object fail to open.
func TestEveryByteFlipFails(t *testing.T) {
	for _, v := range headerVersions {
		t.Run(v.name, func(t *testing.T) { everyByteFlipFails(t, v.newFile) })
	}
}

// headerVersions are the writers of every header version a reader accepts.
var headerVersions = []struct {
	name    string
	newFile func(*Keys) (*FileKey, error)
}{
	{"v1", (*Keys).newFileV1},
	{"v2", (*Keys).NewFile},
}

func everyByteFlipFails(t *testing.T, newFile func(*Keys) (*FileKey, error)) {
	k := testKeys(t, MinBlockSize)
	fk, err := newFile(k)
	if err != nil {
		t.Fatal(err)
	}
	plain := pattern(3*MinBlockSize+100, 1)
	obj := sealAll(t, fk, plain)
	if got, err := openAll(k, obj); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("pristine object does not open: %v", err)
	}
	mut := bytes.Clone(obj)
	for i := range mut {
		// Vary the flipped bit with the position so all eight are covered
		// in every region without testing 8x as many objects.
		mask := byte(1) << (i % 8)
		mut[i] ^= mask
		_, err := openAll(k, mut)
		if err == nil {
			t.Fatalf("flipping bit %d of byte %d went unnoticed", i%8, i)
		}
		if !errors.Is(err, ErrCorrupt) && !(errors.Is(err, ErrWrongKey) && i >= hdrKeyIDOff && i < hdrKeyIDOff+keyIDSize) {
			t.Fatalf("byte %d: error %v is neither ErrCorrupt nor (for the key id) ErrWrongKey", i, err)
		}
		mut[i] ^= mask
	}
	// Every bit of the header, not just one per byte.
	for i := 0; i < HeaderSize*8; i++ {
		mut[i/8] ^= 1 << (i % 8)
		if _, err := openAll(k, mut); err == nil {
			t.Fatalf("flipping header bit %d went unnoticed", i)
		}
		mut[i/8] ^= 1 << (i % 8)
	}
	// The Reader path too, on header bytes and a sample of block bytes.
	for i := 0; i < len(mut); i += 1 + i/64 {
		mut[i] ^= 0x80
		if !failsToOpen(t, k, mut) {
			t.Fatalf("Reader: flipping byte %d went unnoticed", i)
		}
		mut[i] ^= 0x80
	}
}

func TestSwappedBlocksFail(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	fk, _ := k.NewFile()
	l := k.Layout()
	obj := sealAll(t, fk, pattern(4*MinBlockSize, 2))
	s := int(l.BlockIndexToCipherOff(1) - l.BlockIndexToCipherOff(0))
	for _, pair := range [][2]uint64{{0, 1}, {1, 2}, {0, 3}, {2, 3}} {
		mut := bytes.Clone(obj)
		a, b := l.BlockIndexToCipherOff(pair[0]), l.BlockIndexToCipherOff(pair[1])
		copy(mut[a:], obj[b:b+int64(s)])
		copy(mut[b:], obj[a:a+int64(s)])
		if !failsToOpen(t, k, mut) {
			t.Fatalf("swapping blocks %d and %d went unnoticed", pair[0], pair[1])
		}
	}
}

// TestBlockFromOtherFileFails moves a block between two files of the same
// vault at the same index: the file id in the associated data catches it.
func TestBlockFromOtherFileFails(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	l := k.Layout()
	fa, _ := k.NewFile()
	fb, _ := k.NewFile()
	plain := pattern(3*MinBlockSize, 3)
	a, b := sealAll(t, fa, plain), sealAll(t, fb, plain)
	for i := uint64(0); i < 3; i++ {
		mut := bytes.Clone(a)
		off := l.BlockIndexToCipherOff(i)
		copy(mut[off:off+int64(MinBlockSize)+BlockOverhead], b[off:])
		if !failsToOpen(t, k, mut) {
			t.Fatalf("block %d from another file went unnoticed", i)
		}
	}
	// Even with the data key known to be the same, the file id differs:
	// Open of b's block 0 through a's key must fail.
	if _, err := fa.Open(nil, b[HeaderSize:HeaderSize+MinBlockSize+BlockOverhead], 0, false); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of another file's block: %v", err)
	}
	// The header of the other file in front of this file's blocks.
	mut := bytes.Clone(a)
	copy(mut, b[:HeaderSize])
	if !failsToOpen(t, k, mut) {
		t.Fatal("another file's header in front went unnoticed")
	}
}

func TestTruncationAtEveryBlockBoundaryFails(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	l := k.Layout()
	for _, size := range []int{MinBlockSize, 3 * MinBlockSize, 3*MinBlockSize + 17} {
		fk, _ := k.NewFile()
		obj := sealAll(t, fk, pattern(size, 4))
		n := l.BlockCount(int64(size))
		for i := uint64(0); i < n; i++ {
			cut := obj[:l.BlockIndexToCipherOff(i)]
			if !failsToOpen(t, k, cut) {
				t.Fatalf("size %d: truncation before block %d went unnoticed", size, i)
			}
		}
	}
}

func TestAppendedBytesFail(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	for _, size := range []int{0, 1, MinBlockSize, 2*MinBlockSize + 5} {
		fk, _ := k.NewFile()
		obj := sealAll(t, fk, pattern(size, 5))
		for _, extra := range []int{1, 27, 28, 29, BlockOverhead + MinBlockSize} {
			mut := append(bytes.Clone(obj), pattern(extra, 9)...)
			if !failsToOpen(t, k, mut) {
				t.Fatalf("size %d: %d appended bytes went unnoticed", size, extra)
			}
		}
	}
}

// TestFinalFlagIsBound checks the final flag alone: a full block sealed as
// non-final does not open as final and vice versa.
func TestFinalFlagIsBound(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	fk, _ := k.NewFile()
	full := pattern(MinBlockSize, 6)
	nonFinal := fk.Seal(nil, full, 2, false)
	final := fk.Seal(nil, full, 2, true)
	if _, err := fk.Open(nil, nonFinal, 2, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("non-final block opened as final: %v", err)
	}
	if _, err := fk.Open(nil, final, 2, false); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("final block opened as non-final: %v", err)
	}
	if _, err := fk.Open(nil, final, 3, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("block opened at another index: %v", err)
	}
	if got, err := fk.Open(nil, final, 2, true); err != nil || !bytes.Equal(got, full) {
		t.Fatalf("pristine block: %v", err)
	}
}

func TestFreshNonceEverySeal(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	fk, _ := k.NewFile()
	p := pattern(100, 7)
	a, b := fk.Seal(nil, p, 0, true), fk.Seal(nil, p, 0, true)
	if bytes.Equal(a[:NonceSize], b[:NonceSize]) || bytes.Equal(a, b) {
		t.Fatal("two seals of the same block reused the nonce")
	}
}

func TestWrongMasterKeyHeader(t *testing.T) {
	k1, k2 := testKeys(t, MinBlockSize), testKeys(t, MinBlockSize)
	fk, _ := k1.NewFile()
	if _, err := k2.OpenHeader(fk.Header()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("header of another vault: %v, want ErrWrongKey", err)
	}
	k3 := testKeys(t, DefaultBlockSize)
	if _, err := k3.OpenHeader(fk.Header()); err == nil {
		t.Fatal("header opened by a vault with another block size")
	}
	if _, err := k1.OpenHeader(fk.Header()[:HeaderSize-1]); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("short header: %v", err)
	}
}

// TestKeyCommitmentChecked re-wraps a version-1 header's data key correctly
// (as only someone holding the master key could) but leaves the commitment
// of the old key: OpenHeader must refuse it, proving the commitment is
// compared.
func TestKeyCommitmentChecked(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	fk, _ := k.newFileV1()
	h := fk.Header()
	other := pattern(dataKeySize, 8)
	k.headerWrap.Seal(h[hdrWrappedOff:hdrWrappedOff], h[hdrNonceOff:hdrWrappedOff], other, h[:hdrNonceOff])
	if _, err := k.OpenHeader(h); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("header with a stale commitment: %v, want ErrCorrupt", err)
	}
	k.commitment(h[hdrCommitmentOff:hdrCommitmentOff], h[:hdrCommitmentOff], other)
	if _, err := k.OpenHeader(h); err != nil {
		t.Fatalf("header with a matching commitment: %v", err)
	}
}

// TestV2CommitmentAuthenticatesSalt: in a version-2 header nothing but the
// commitment covers the salt. A changed salt with the old commitment is
// refused; recomputing the commitment (which needs the master key) makes
// it a valid header of another key, whose blocks the old ones are not.
func TestV2CommitmentAuthenticatesSalt(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	fk, _ := k.NewFile()
	sealed := fk.Seal(nil, pattern(10, 1), 0, true)
	h := fk.Header()
	h[hdrSaltOff] ^= 1
	if _, err := k.OpenHeader(h); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("header with another salt and the old commitment: %v, want ErrCorrupt", err)
	}
	dk, err := k.deriveDataKey(h)
	if err != nil {
		t.Fatal(err)
	}
	k.commitment(h[hdrCommitmentOff:hdrCommitmentOff], h[:hdrCommitmentOff], dk)
	fk2, err := k.OpenHeader(h)
	if err != nil {
		t.Fatalf("header with a matching commitment: %v", err)
	}
	if _, err := fk2.Open(nil, sealed, 0, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("block opened under a key derived from another salt: %v", err)
	}
	h[hdrV2ResOff] = 1
	if _, err := k.OpenHeader(h); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("nonzero reserved byte: %v, want ErrCorrupt", err)
	}
}

// TestEveryVersionHasItsOwnKey is the property the header exists for: two
// versions of one file (even with the same file id) share no key, so a
// block of one never authenticates in the other at the same index, and the
// same plaintext seals to unrelated bytes. Version 1's behaviour (one data
// key for a file's life) is shown for contrast.
func TestEveryVersionHasItsOwnKey(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	id := pattern(fileIDSize, 3)
	k.rand = &script{chunks: [][]byte{id, pattern(hdrSaltSize, 4), id, pattern(hdrSaltSize, 5)}}
	v1, err := k.NewFile()
	if err != nil {
		t.Fatal(err)
	}
	v2, err := k.NewFile()
	if err != nil {
		t.Fatal(err)
	}
	k.rand, v1.rand, v2.rand = rand.Reader, rand.Reader, rand.Reader
	if v1.ID() != v2.ID() {
		t.Fatal("script did not pin the file id")
	}
	plain := pattern(MinBlockSize, 6)
	for _, final := range []bool{false, true} {
		b1 := v1.Seal(nil, plain, 2, final)
		if _, err := v2.Open(nil, b1, 2, final); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("block of version 1 (final %v) opened in version 2: %v", final, err)
		}
		if _, err := v1.Open(nil, b1, 2, final); err != nil {
			t.Fatalf("own block: %v", err)
		}
	}
	// The same salt and id give the same key (the reader can derive it).
	again, err := k.OpenHeader(v2.Header())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := again.Open(nil, v2.Seal(nil, plain, 0, false), 0, false); err != nil {
		t.Fatalf("key derived from the header differs from the writer's: %v", err)
	}
}

func TestHeaderStable(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	fk, _ := k.NewFile()
	h1, h2 := fk.Header(), fk.Header()
	h1[0] ^= 1 // callers may scribble on their copy
	if !bytes.Equal(h2, fk.Header()) || len(h2) != HeaderSize {
		t.Fatal("Header is not stable")
	}
	fk2, err := k.OpenHeader(h2)
	if err != nil || !bytes.Equal(fk2.Header(), h2) || fk2.ID() != fk.ID() {
		t.Fatalf("OpenHeader(Header()) differs: %v", err)
	}
}

func TestSealMisusePanics(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	fk, _ := k.NewFile()
	for _, c := range []struct {
		n     int
		final bool
	}{{MinBlockSize + 1, true}, {MinBlockSize - 1, false}, {0, false}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Seal(%d bytes, final %v) did not panic", c.n, c.final)
				}
			}()
			fk.Seal(nil, make([]byte, c.n), 0, c.final)
		}()
	}
}

// TestFileIDIsBound isolates the file id in the associated data: two files
// that (against all odds) share a data key still refuse each other's blocks.
// Only version 1 headers can share a data key (version 2 derives it from
// the file id, among others), so the test builds two of those.
func TestFileIDIsBound(t *testing.T) {
	k := testKeys(t, MinBlockSize)
	dataKey := pattern(dataKeySize, 1)
	nonce := pattern(NonceSize, 2)
	k.rand = &script{chunks: [][]byte{
		pattern(fileIDSize, 3), dataKey, nonce,
		pattern(fileIDSize, 4), dataKey, nonce,
		pattern(NonceSize, 5),
	}}
	fa, err := k.newFileV1()
	if err != nil {
		t.Fatal(err)
	}
	fb, err := k.newFileV1()
	if err != nil {
		t.Fatal(err)
	}
	sealed := fa.Seal(nil, pattern(100, 6), 0, true)
	if _, err := fa.Open(nil, sealed, 0, true); err != nil {
		t.Fatalf("own block: %v", err)
	}
	if _, err := fb.Open(nil, sealed, 0, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("block of a file with the same data key but another id: %v, want ErrCorrupt", err)
	}
}
