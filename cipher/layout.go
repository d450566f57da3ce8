package cipher

import "fmt"

// Format constants. See docs/FORMAT.md.
const (
	DefaultBlockSize = 64 << 10 // plaintext bytes per block
	NonceSize        = 12
	TagSize          = 16
	BlockOverhead    = NonceSize + TagSize // sealed block = nonce || ciphertext || tag

	// MinBlockSize and MaxBlockSize bound the configurable block size. The
	// lower bound keeps the 28-byte per-block overhead under 1%; the upper
	// one keeps a single block (the unit every read decrypts) cheap.
	MinBlockSize = 4 << 10
	MaxBlockSize = 1 << 20

	// HeaderSize is the size of the object header, the same for every block
	// size (see header.go for the fields).
	HeaderSize = 132
)

// Layout is the pure offset arithmetic of an encrypted object: a header of
// HeaderSize bytes followed by sealed blocks of BlockSize+BlockOverhead bytes,
// the last of which may be shorter. It holds no keys, so the filesystem can
// turn object sizes from a listing into file sizes without unlocking anything.
//
// Method names read as sentences: PlainOffToBlockIndex converts a plaintext
// offset to the index of the block that holds it.
type Layout struct {
	BlockSize  int
	HeaderSize int
}

// NewLayout returns the layout for blockSize, which must be a power of two
// between MinBlockSize and MaxBlockSize (anything else is a programmer error:
// block sizes read from storage are checked by the parsers first).
func NewLayout(blockSize int) Layout {
	if !validBlockSize(blockSize) {
		panic(fmt.Sprintf("BUG: cipher.NewLayout: invalid block size %d", blockSize))
	}
	return Layout{BlockSize: blockSize, HeaderSize: HeaderSize}
}

func validBlockSize(b int) bool {
	return b >= MinBlockSize && b <= MaxBlockSize && b&(b-1) == 0
}

// log2 of a valid block size, as stored in the config and header.
func blockSizeLog2(b int) uint8 {
	var n uint8
	for b > 1 {
		b >>= 1
		n++
	}
	return n
}

func (l Layout) sealedBlockSize() int64 { return int64(l.BlockSize) + BlockOverhead }

func (l Layout) mustBeValid() {
	if !validBlockSize(l.BlockSize) || l.HeaderSize != HeaderSize {
		panic(fmt.Sprintf("BUG: cipher.Layout %+v used without NewLayout", l))
	}
}

// PlainOffToBlockIndex returns the index of the block holding plaintext
// offset off (off >= 0).
func (l Layout) PlainOffToBlockIndex(off int64) uint64 {
	l.mustBeValid()
	if off < 0 {
		panic(fmt.Sprintf("BUG: cipher.Layout: negative offset %d", off))
	}
	return uint64(off) / uint64(l.BlockSize)
}

// BlockIndexToPlainOff returns the plaintext offset where block i starts.
func (l Layout) BlockIndexToPlainOff(i uint64) int64 {
	l.mustBeValid()
	return int64(i) * int64(l.BlockSize)
}

// BlockIndexToCipherOff returns the object offset where sealed block i starts.
func (l Layout) BlockIndexToCipherOff(i uint64) int64 {
	l.mustBeValid()
	return int64(l.HeaderSize) + int64(i)*l.sealedBlockSize()
}

// BlockCount returns how many blocks a file of plainSize bytes has: at least
// one, because an empty file still carries one empty final block (so that
// cutting a file back to its header is detected), and exactly k for a file
// of k*BlockSize bytes (the k-th block is full and final).
func (l Layout) BlockCount(plainSize int64) uint64 {
	l.mustBeValid()
	if plainSize < 0 {
		panic(fmt.Sprintf("BUG: cipher.Layout: negative size %d", plainSize))
	}
	if plainSize == 0 {
		return 1
	}
	return (uint64(plainSize) + uint64(l.BlockSize) - 1) / uint64(l.BlockSize)
}

// PlainSizeToCipherSize returns the object size of a file of plainSize bytes.
func (l Layout) PlainSizeToCipherSize(plainSize int64) int64 {
	return int64(l.HeaderSize) + plainSize + int64(l.BlockCount(plainSize))*BlockOverhead
}

// CipherSizeToPlainSize inverts PlainSizeToCipherSize. Sizes no file can
// have (shorter than header plus one empty block, a trailing piece shorter
// than a block's overhead plus one byte, an empty final block after full
// ones) give ErrCorrupt: they mean truncation or appended bytes.
func (l Layout) CipherSizeToPlainSize(cipherSize int64) (int64, error) {
	l.mustBeValid()
	body := cipherSize - int64(l.HeaderSize)
	if cipherSize < 0 || body < BlockOverhead {
		return 0, fmt.Errorf("cipher: object size %d is shorter than header and one block: %w", cipherSize, ErrCorrupt)
	}
	full, rest := body/l.sealedBlockSize(), body%l.sealedBlockSize()
	switch {
	case rest == 0:
		return full * int64(l.BlockSize), nil
	case full == 0 && rest == BlockOverhead:
		return 0, nil // empty file
	case rest <= BlockOverhead:
		return 0, fmt.Errorf("cipher: object size %d fits no block layout (block size %d): %w",
			cipherSize, l.BlockSize, ErrCorrupt)
	}
	return full*int64(l.BlockSize) + rest - BlockOverhead, nil
}

// CipherRange returns the object byte range holding the sealed blocks that
// cover plaintext [off, off+n) of a file of plainSize bytes (n clipped at
// plainSize), and the first and last block indexes. An empty range (n <= 0
// or off >= plainSize) gives cipherLen 0 and first == last == the block
// index of off: there is nothing to fetch.
func (l Layout) CipherRange(off, n, plainSize int64) (cipherOff, cipherLen int64, first, last uint64) {
	l.mustBeValid()
	if off < 0 || plainSize < 0 {
		panic(fmt.Sprintf("BUG: cipher.Layout.CipherRange(%d, %d, %d)", off, n, plainSize))
	}
	first = l.PlainOffToBlockIndex(off)
	end := plainSize
	if n < plainSize-off { // written so off+n cannot overflow
		end = off + n
	}
	if end <= off {
		return l.BlockIndexToCipherOff(first), 0, first, first
	}
	last = l.PlainOffToBlockIndex(end - 1)
	cipherOff = l.BlockIndexToCipherOff(first)
	if last == l.BlockCount(plainSize)-1 {
		return cipherOff, l.PlainSizeToCipherSize(plainSize) - cipherOff, first, last
	}
	return cipherOff, int64(last-first+1) * l.sealedBlockSize(), first, last
}
