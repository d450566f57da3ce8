package cipher

import (
	"errors"
	"testing"
)

const (
	tB = 4096              // block size used by the tables
	tS = tB + 28           // sealed block size
	tH = int64(HeaderSize) // header size
)

func TestLayoutConstants(t *testing.T) {
	if BlockOverhead != 28 || HeaderSize != 132 || DefaultBlockSize != 65536 {
		t.Fatalf("format constants changed: overhead %d header %d block %d", BlockOverhead, HeaderSize, DefaultBlockSize)
	}
	l := NewLayout(DefaultBlockSize)
	if l.BlockSize != DefaultBlockSize || l.HeaderSize != HeaderSize {
		t.Fatalf("NewLayout(default) = %+v", l)
	}
}

func TestNewLayoutRejectsInvalidBlockSizes(t *testing.T) {
	for _, bs := range []int{0, 1, 2048, 4095, 4097, 3 << 12, 2 << 20, -4096} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewLayout(%d) did not panic", bs)
				}
			}()
			NewLayout(bs)
		}()
	}
}

func TestPlainOffToBlockIndex(t *testing.T) {
	l := NewLayout(tB)
	for _, c := range []struct {
		off  int64
		want uint64
	}{{0, 0}, {1, 0}, {tB - 1, 0}, {tB, 1}, {tB + 1, 1}, {2*tB - 1, 1}, {2 * tB, 2}, {1 << 40, 1 << 28}} {
		if got := l.PlainOffToBlockIndex(c.off); got != c.want {
			t.Errorf("PlainOffToBlockIndex(%d) = %d, want %d", c.off, got, c.want)
		}
	}
}

func TestBlockIndexToOffsets(t *testing.T) {
	l := NewLayout(tB)
	for _, c := range []struct {
		i             uint64
		plain, cipher int64
	}{{0, 0, tH}, {1, tB, tH + tS}, {2, 2 * tB, tH + 2*tS}, {1 << 28, 1 << 40, tH + (1<<28)*tS}} {
		if got := l.BlockIndexToPlainOff(c.i); got != c.plain {
			t.Errorf("BlockIndexToPlainOff(%d) = %d, want %d", c.i, got, c.plain)
		}
		if got := l.BlockIndexToCipherOff(c.i); got != c.cipher {
			t.Errorf("BlockIndexToCipherOff(%d) = %d, want %d", c.i, got, c.cipher)
		}
	}
}

// sizeTable pins plaintext size <-> block count <-> object size, including
// the edges: empty file, one byte, one short of a block, exact multiples.
var sizeTable = []struct {
	plain  int64
	blocks uint64
	cipher int64
}{
	{0, 1, tH + 28},
	{1, 1, tH + 1 + 28},
	{tB - 1, 1, tH + tB - 1 + 28},
	{tB, 1, tH + tS},
	{tB + 1, 2, tH + tS + 1 + 28},
	{2*tB - 1, 2, tH + tS + tB - 1 + 28},
	{2 * tB, 2, tH + 2*tS},
	{3 * tB, 3, tH + 3*tS},
	{3*tB + 17, 4, tH + 3*tS + 17 + 28},
}

func TestSizes(t *testing.T) {
	l := NewLayout(tB)
	for _, c := range sizeTable {
		if got := l.BlockCount(c.plain); got != c.blocks {
			t.Errorf("BlockCount(%d) = %d, want %d", c.plain, got, c.blocks)
		}
		if got := l.PlainSizeToCipherSize(c.plain); got != c.cipher {
			t.Errorf("PlainSizeToCipherSize(%d) = %d, want %d", c.plain, got, c.cipher)
		}
		got, err := l.CipherSizeToPlainSize(c.cipher)
		if err != nil || got != c.plain {
			t.Errorf("CipherSizeToPlainSize(%d) = %d, %v; want %d", c.cipher, got, err, c.plain)
		}
	}
}

func TestCipherSizeToPlainSizeRejectsImpossibleSizes(t *testing.T) {
	l := NewLayout(tB)
	for _, c := range []int64{
		-1, 0, 1, tH - 1, tH, // shorter than header
		tH + 1, tH + 27, // header + less than one empty block
		tH + tS + 1,  // full block + 1 byte: no room for nonce and tag
		tH + tS + 27, // full block + 27 bytes
		tH + tS + 28, // full block + empty final block: not a layout we write
		tH + 2*tS + 28,
		tH + 2*tS + 5,
	} {
		if got, err := l.CipherSizeToPlainSize(c); !errors.Is(err, ErrCorrupt) {
			t.Errorf("CipherSizeToPlainSize(%d) = %d, %v; want ErrCorrupt", c, got, err)
		}
	}
}

// TestSizesExhaustive checks, for every object size in a range covering
// several blocks, that CipherSizeToPlainSize accepts exactly the images of
// PlainSizeToCipherSize and inverts it.
func TestSizesExhaustive(t *testing.T) {
	l := NewLayout(tB)
	valid := map[int64]int64{}
	for p := int64(0); p <= 4*tB; p++ {
		valid[l.PlainSizeToCipherSize(p)] = p
	}
	if len(valid) != 4*tB+1 {
		t.Fatalf("PlainSizeToCipherSize is not injective: %d distinct images of %d sizes", len(valid), 4*tB+1)
	}
	for c := int64(0); c <= l.PlainSizeToCipherSize(4*tB); c++ {
		p, err := l.CipherSizeToPlainSize(c)
		want, ok := valid[c]
		switch {
		case ok && (err != nil || p != want):
			t.Fatalf("CipherSizeToPlainSize(%d) = %d, %v; want %d", c, p, err, want)
		case !ok && err == nil:
			t.Fatalf("CipherSizeToPlainSize(%d) = %d, want ErrCorrupt", c, p)
		}
	}
}

func TestCipherRange(t *testing.T) {
	l := NewLayout(tB)
	for _, c := range []struct {
		name              string
		off, n, plainSize int64
		cOff, cLen        int64
		first, last       uint64
	}{
		{"empty file", 0, 10, 0, tH, 0, 0, 0},
		{"zero length", 5, 0, 100, tH, 0, 0, 0},
		{"negative length", 5, -1, 100, tH, 0, 0, 0},
		{"at EOF", 100, 10, 100, tH, 0, 0, 0},
		{"past EOF in block 1", tB + 5, 10, tB, tH + tS, 0, 1, 1},
		{"one byte of small file", 0, 1, 10, tH, 10 + 28, 0, 0},
		{"clipped at size", 3, 1000, 10, tH, 10 + 28, 0, 0},
		{"first byte of big file", 0, 1, 3 * tB, tH, tS, 0, 0},
		{"last byte of block 0", tB - 1, 1, 3 * tB, tH, tS, 0, 0},
		{"straddles 0 and 1", tB - 1, 2, 3 * tB, tH, 2 * tS, 0, 1},
		{"exactly block 1", tB, tB, 3 * tB, tH + tS, tS, 1, 1},
		{"full last block", 2 * tB, tB, 3 * tB, tH + 2*tS, tS, 2, 2},
		{"whole file", 0, 3 * tB, 3 * tB, tH, 3 * tS, 0, 2},
		{"whole file, n huge", 0, 1 << 62, 3*tB + 17, tH, 3*tS + 17 + 28, 0, 3},
		{"into short last block", 3*tB - 1, 5, 3*tB + 17, tH + 2*tS, tS + 17 + 28, 2, 3},
		{"inside short last block", 3*tB + 1, 5, 3*tB + 17, tH + 3*tS, 17 + 28, 3, 3},
		{"huge off and n", 1 << 62, 1 << 62, 1 << 40, tH + (1<<62/tB)*tS, 0, 1 << 50, 1 << 50},
	} {
		cOff, cLen, first, last := l.CipherRange(c.off, c.n, c.plainSize)
		if cOff != c.cOff || cLen != c.cLen || first != c.first || last != c.last {
			t.Errorf("%s: CipherRange(%d, %d, %d) = (%d, %d, %d, %d), want (%d, %d, %d, %d)", c.name,
				c.off, c.n, c.plainSize, cOff, cLen, first, last, c.cOff, c.cLen, c.first, c.last)
		}
	}
}
