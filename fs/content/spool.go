package content

import (
	"crypto/aes"
	gocipher "crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// spoolFile is the part of *os.File the spool uses (tests substitute a
// file that runs out of space).
type spoolFile interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
}

// spool holds dirty blocks that do not fit in memory, in one file per
// engine, in fixed-size slots. The file is unlinked right after creation (it
// vanishes with the process) and every slot is sealed with AES-256-GCM under
// a random key that lives only in this process's memory, so the disk never
// sees plaintext and a spool file left behind is unreadable.
//
// Slot layout: nonce(12) || ciphertext || tag(16). The associated data binds
// the slot number, the block index and a generation number unique to every
// put, so a stale or moved slot is detected (cipher.ErrCorrupt).
type spool struct {
	dir      string
	slotSize int64
	open     func(dir string) (spoolFile, error)
	bufs     sync.Pool // *[]byte of cap slotSize, for put

	mu     sync.Mutex
	f      spoolFile // created on first put
	aead   gocipher.AEAD
	free   []int64 // released slots, reused first
	next   int64   // first never-used slot
	gen    uint64
	closed bool
}

// spoolRef locates one spilled block.
type spoolRef struct {
	slot int64
	gen  uint64
	n    int // plaintext length
}

func newSpool(dir string, blockSize int) *spool {
	return &spool{dir: dir, slotSize: int64(blockSize) + cipher.BlockOverhead, open: openSpoolFile}
}

func openSpoolFile(dir string) (spoolFile, error) {
	f, err := os.CreateTemp(dir, "s3cryptfs-spool-*")
	if err != nil {
		return nil, err
	}
	// Unlink at once: the open descriptor keeps the data reachable for us
	// and for no one else, and nothing is left behind after a crash.
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

func (s *spool) init() error {
	if s.closed {
		return errors.New("spool closed")
	}
	if s.f != nil {
		return nil
	}
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	blk, err := aes.NewCipher(key)
	if err != nil {
		return err
	}
	aead, err := gocipher.NewGCM(blk)
	if err != nil {
		return err
	}
	f, err := s.open(s.dir)
	if err != nil {
		return err
	}
	s.f, s.aead = f, aead
	return nil
}

func spoolAD(slot int64, index, gen uint64) []byte {
	ad := make([]byte, 24)
	binary.BigEndian.PutUint64(ad[0:], uint64(slot))
	binary.BigEndian.PutUint64(ad[8:], index)
	binary.BigEndian.PutUint64(ad[16:], gen)
	return ad
}

// put seals plain (block index) into a free slot. On error (a full disk:
// errors.Is(err, syscall.ENOSPC)) nothing is kept and the caller still owns
// the block.
func (s *spool) put(index uint64, plain []byte) (spoolRef, error) {
	s.mu.Lock()
	if err := s.init(); err != nil {
		s.mu.Unlock()
		return spoolRef{}, fmt.Errorf("content: spool in %q: %w", s.dir, err)
	}
	var slot int64
	if n := len(s.free); n > 0 {
		slot, s.free = s.free[n-1], s.free[:n-1]
	} else {
		slot = s.next
		s.next++
	}
	s.gen++
	ref := spoolRef{slot: slot, gen: s.gen, n: len(plain)}
	f, aead := s.f, s.aead
	s.mu.Unlock()

	bp, _ := s.bufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, 0, int(s.slotSize))
		bp = &b
	}
	defer s.bufs.Put(bp)
	buf := (*bp)[:cipher.NonceSize]
	if _, err := rand.Read(buf); err != nil {
		s.release(ref)
		return spoolRef{}, fmt.Errorf("content: spool nonce: %w", err)
	}
	buf = aead.Seal(buf, buf[:cipher.NonceSize], plain, spoolAD(slot, index, ref.gen))
	*bp = buf
	if _, err := f.WriteAt(buf, slot*s.slotSize); err != nil {
		s.release(ref)
		return spoolRef{}, fmt.Errorf("content: spool write: %w", err)
	}
	return ref, nil
}

// get returns the block stored by put under ref for block index.
func (s *spool) get(ref spoolRef, index uint64) ([]byte, error) {
	s.mu.Lock()
	f, aead, closed := s.f, s.aead, s.closed
	s.mu.Unlock()
	if f == nil || closed {
		return nil, errors.New("content: spool read: spool closed")
	}
	buf := make([]byte, cipher.BlockOverhead+ref.n)
	if _, err := f.ReadAt(buf, ref.slot*s.slotSize); err != nil {
		return nil, fmt.Errorf("content: spool read: %w", err)
	}
	plain, err := aead.Open(buf[cipher.NonceSize:cipher.NonceSize], buf[:cipher.NonceSize], buf[cipher.NonceSize:],
		spoolAD(ref.slot, index, ref.gen))
	if err != nil {
		return nil, fmt.Errorf("content: spool slot %d (block %d): %w", ref.slot, index, cipher.ErrCorrupt)
	}
	return plain, nil
}

// release frees ref's slot for reuse.
func (s *spool) release(ref spoolRef) {
	s.mu.Lock()
	s.free = append(s.free, ref.slot)
	s.mu.Unlock()
}

func (s *spool) close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.f == nil {
		return nil
	}
	err := s.f.Close()
	s.f = nil
	if err != nil {
		return fmt.Errorf("content: spool close: %w", err)
	}
	return nil
}
