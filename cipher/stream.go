package cipher

import (
	"errors"
	"fmt"
	"io"
)

// Writer encrypts a stream of any length into the object format, holding at
// most one plaintext block and one sealed block in memory.
//
// A full block is kept back until either more data arrives (it is then
// sealed as non-final) or Close is called (it is sealed as the final block),
// because only then is it known whether it is the last one.
type Writer struct {
	w      io.Writer
	fk     *FileKey
	plain  []byte // pending plaintext, at most one block
	sealed []byte // reused output buffer
	index  uint64
	err    error // sticky: first write error, or errWriterClosed
}

var errWriterClosed = errors.New("cipher: write to closed Writer")

// NewWriter starts a new object on w: it picks a new file key from k and
// writes the header at once. Close seals the final block.
func NewWriter(w io.Writer, k *Keys) (*Writer, error) {
	fk, err := k.NewFile()
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(fk.header[:]); err != nil {
		return nil, fmt.Errorf("cipher: write header: %w", err)
	}
	bs := fk.layout.BlockSize
	return &Writer{
		w:      w,
		fk:     fk,
		plain:  make([]byte, 0, bs),
		sealed: make([]byte, 0, bs+BlockOverhead),
	}, nil
}

// FileKey is the key of the object being written (its id and header).
func (w *Writer) FileKey() *FileKey { return w.fk }

// Write encrypts p. It returns the bytes of p consumed; they are sealed and
// written once a following byte (or Close) shows their block is complete.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	bs := w.fk.layout.BlockSize
	for len(p) > 0 {
		if len(w.plain) == bs {
			if err := w.flush(false); err != nil {
				return n, err
			}
		}
		if len(w.plain) == 0 && len(p) > bs {
			// A whole block with more data after it: known non-final,
			// seal it straight from p without copying.
			if err := w.seal(p[:bs], false); err != nil {
				return n, err
			}
			p = p[bs:]
			n += bs
			continue
		}
		c := copy(w.plain[len(w.plain):bs], p)
		w.plain = w.plain[:len(w.plain)+c]
		p = p[c:]
		n += c
	}
	return n, nil
}

// flush seals and writes the pending plaintext.
func (w *Writer) flush(final bool) error {
	if err := w.seal(w.plain, final); err != nil {
		return err
	}
	w.plain = w.plain[:0]
	return nil
}

// seal seals plain as the next block and writes it.
func (w *Writer) seal(plain []byte, final bool) error {
	w.sealed = w.fk.Seal(w.sealed[:0], plain, w.index, final)
	if _, err := w.w.Write(w.sealed); err != nil {
		w.err = fmt.Errorf("cipher: write block %d: %w", w.index, err)
		return w.err
	}
	w.index++
	return nil
}

// Close seals and writes the final block (an empty one for an empty
// stream). It does not close the underlying writer. Calling it again
// returns the first error, or nil.
func (w *Writer) Close() error {
	if w.err == errWriterClosed {
		return nil
	}
	if w.err != nil {
		return w.err
	}
	if err := w.flush(true); err != nil {
		return err
	}
	w.err = errWriterClosed
	return nil
}

// Reader decrypts an object with random access. NewReader authenticates the
// header and the final block, so Size is trustworthy (truncation at a block
// boundary and appended bytes are caught at open); every ReadAt
// authenticates the blocks it returns. Safe for concurrent use as
// io.ReaderAt requires.
type Reader struct {
	r    io.ReaderAt
	fk   *FileKey
	size int64
}

// readChunkBlocks bounds how many sealed blocks one ReadAt fetches from the
// underlying reader at once (memory per call: this many blocks, twice).
const readChunkBlocks = 16

// NewReader reads and checks the header and the final block of the object
// of objectSize bytes behind r.
func NewReader(r io.ReaderAt, objectSize int64, k *Keys) (*Reader, error) {
	l := k.Layout()
	size, err := l.CipherSizeToPlainSize(objectSize)
	if err != nil {
		return nil, err
	}
	header := make([]byte, HeaderSize)
	if _, err := r.ReadAt(header, 0); err != nil {
		return nil, fmt.Errorf("cipher: read header: %w", err)
	}
	fk, err := k.OpenHeader(header)
	if err != nil {
		return nil, err
	}
	rd := &Reader{r: r, fk: fk, size: size}
	last := l.BlockCount(size) - 1
	if _, err := rd.readBlocks(nil, last, last); err != nil {
		return nil, err
	}
	return rd, nil
}

// Size is the plaintext size.
func (r *Reader) Size() int64 { return r.size }

// FileKey is the key of the object being read.
func (r *Reader) FileKey() *FileKey { return r.fk }

// fetch reads the sealed blocks first..last into buf (grown if needed)
// and returns them.
func (r *Reader) fetch(buf []byte, first, last uint64) ([]byte, error) {
	l := r.fk.layout
	off := l.BlockIndexToCipherOff(first)
	end := l.PlainSizeToCipherSize(r.size)
	if last+1 < l.BlockCount(r.size) {
		end = l.BlockIndexToCipherOff(last + 1)
	}
	if int64(cap(buf)) < end-off {
		buf = make([]byte, end-off)
	}
	buf = buf[:end-off]
	if n, err := r.r.ReadAt(buf, off); n != len(buf) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, fmt.Errorf("cipher: read blocks %d-%d: %w", first, last, err)
	}
	return buf, nil
}

// readBlocks fetches sealed blocks first..last and appends their plaintext
// to dst.
func (r *Reader) readBlocks(dst []byte, first, last uint64) ([]byte, error) {
	buf, err := r.fetch(nil, first, last)
	if err != nil {
		return dst, err
	}
	final := r.fk.layout.BlockCount(r.size) - 1
	sb := int(r.fk.layout.sealedBlockSize())
	for i := first; i <= last; i++ {
		sealed := buf[:min(sb, len(buf))]
		buf = buf[len(sealed):]
		if dst, err = r.fk.Open(dst, sealed, i, i == final); err != nil {
			return dst, err
		}
	}
	return dst, nil
}

// ReadAt reads plaintext at off with io.ReaderAt semantics: it returns
// len(p) bytes, or fewer with io.EOF at the end of the file, or an error
// (ErrCorrupt when a block does not authenticate). Blocks wholly inside p
// are decrypted in place; it fetches at most readChunkBlocks sealed blocks
// per call to the underlying reader.
func (r *Reader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("cipher: ReadAt: negative offset %d", off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	l := r.fk.layout
	bs := int64(l.BlockSize)
	final := l.BlockCount(r.size) - 1
	sb := int(l.sealedBlockSize())
	var sealedBuf, partial []byte
	n := 0
	for n < len(p) && off < r.size {
		_, _, first, last := l.CipherRange(off, int64(len(p)-n), r.size)
		last = min(last, first+readChunkBlocks-1)
		buf, err := r.fetch(sealedBuf, first, last)
		if err != nil {
			return n, err
		}
		sealedBuf = buf
		for i := first; i <= last && n < len(p); i++ {
			sealed := buf[:min(sb, len(buf))]
			buf = buf[len(sealed):]
			start := l.BlockIndexToPlainOff(i)
			blockLen := int64(len(sealed) - BlockOverhead)
			if off == start && int64(len(p)-n) >= blockLen {
				// Whole block wanted: decrypt straight into p.
				if _, err := r.fk.Open(p[n:n], sealed, i, i == final); err != nil {
					return n, err
				}
				n += int(blockLen)
				off += blockLen
				continue
			}
			if partial == nil {
				partial = make([]byte, 0, bs)
			}
			if partial, err = r.fk.Open(partial[:0], sealed, i, i == final); err != nil {
				return n, err
			}
			c := copy(p[n:], partial[off-start:])
			n += c
			off += int64(c)
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}
