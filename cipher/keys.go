package cipher

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"

	gocipher "crypto/cipher"

	sha256simd "github.com/minio/sha256-simd"
)

type aeadT = gocipher.AEAD

var newGCMFromBlock = gocipher.NewGCM

// newHash is the SHA-256 behind this package's HKDF and HMAC. Every input
// it sees is small (32-byte keys, a 132-byte header), and on this project's
// reference machine (AMD EPYC with SHA-NI) minio/sha256-simd is 4-6% faster
// than crypto/sha256 there, measured interleaved in one run
// (BenchmarkSHA256VsSIMD); on 64 KiB and larger they are equal or
// crypto/sha256 is ahead, so code hashing blocks or multipart parts should
// keep crypto/sha256. Figures in docs/FORMAT.md, "Performance". The choice
// cannot change any output: the test vectors pin the bytes.
var newHash = sha256simd.New

// HKDF-SHA256 labels ("info"), one per purpose, so no two uses of the master
// key or of a key file can ever produce the same bytes.
const (
	labelHeaderWrap  = "s3cryptfs v1 header key wrap"
	labelKeyID       = "s3cryptfs v1 key id"
	labelCommitment  = "s3cryptfs v1 key commitment"
	labelKeyFileWrap = "s3cryptfs v1 key file wrap"
	labelContentKey  = "s3cryptfs v2 content key"
	labelDataKey     = "s3cryptfs v2 data key"
	// labelCacheNames: the HMAC key naming the entries of a mount's local
	// disk cache (cache/disk). Never used for anything stored.
	labelCacheNames = "s3cryptfs v2 local cache names"
)

// Object header layout (docs/FORMAT.md, "Object header"). Both versions are
// HeaderSize bytes, so an object's plaintext size follows from its size
// alone whatever version wrote it (a listing cannot tell them apart).
const (
	headerMagic   = "S3CF"
	headerV1      = 1 // data key random, wrapped under the vault-wide header wrap key
	headerV2      = 2 // data key derived from the vault's content key and a per-version salt
	algAES256GCM  = 1 // AES-256-GCM, 12-byte random nonce, 16-byte tag
	keyIDSize     = 16
	fileIDSize    = 16
	dataKeySize   = 32
	hdrFileIDOff  = 8
	hdrKeyIDOff   = 24
	hdrNonceOff   = 40 // v1: bytes [0,40) are the associated data of the data key wrap
	hdrWrappedOff = 52 // v1: 32-byte wrapped data key + 16-byte tag
	hdrSaltOff    = 40 // v2: the version's random salt
	hdrSaltSize   = 32
	hdrV2ResOff   = 72 // v2: reserved, zero up to the commitment
	// hdrCommitmentOff: both versions end in the key commitment.
	hdrCommitmentOff = 100
	commitmentSize   = 32
)

// Keys holds a vault's master keys and their derived subkeys: the current
// one, which NewFile uses, and older ones kept after a rotation so objects
// written under them stay readable (OpenHeader picks the key a header names
// by its key id). It is immutable after creation and safe for concurrent use.
//
// The embedded *masterKey is the current key, so code that only ever knew
// one key (k.keyID, k.deriveDataKey) keeps meaning "the current key".
type Keys struct {
	*masterKey
	all       []*masterKey // current first, then older keys in keyring order
	layout    Layout
	log2Block uint8
	nameKey   []byte    // the vault's name key (FlagEncryptedNames), nil with plaintext names
	rand      io.Reader // crypto/rand.Reader except in tests that pin vectors
}

// masterKey is one master key's subkeys (docs/FORMAT.md, "Subkeys"). The
// master key itself is not kept: only what is derived from it.
type masterKey struct {
	keyID      [keyIDSize]byte
	headerWrap aeadT  // v1 headers: AES-256-GCM under the header-wrap subkey
	contentKey []byte // v2 headers: HKDF input of every version's data key
	commitKey  []byte
	cacheNames []byte // CacheNameKey
}

func newMasterKey(master []byte) (*masterKey, error) {
	wrapKey, err := hkdf.Key(newHash, master, nil, labelHeaderWrap, 32)
	if err != nil {
		return nil, fmt.Errorf("derive header wrap key: %w", err)
	}
	keyID, err := hkdf.Key(newHash, master, nil, labelKeyID, keyIDSize)
	if err != nil {
		return nil, fmt.Errorf("derive key id: %w", err)
	}
	commitKey, err := hkdf.Key(newHash, master, nil, labelCommitment, 32)
	if err != nil {
		return nil, fmt.Errorf("derive commitment key: %w", err)
	}
	contentKey, err := hkdf.Key(newHash, master, nil, labelContentKey, 32)
	if err != nil {
		return nil, fmt.Errorf("derive content key: %w", err)
	}
	cacheNames, err := hkdf.Key(newHash, master, nil, labelCacheNames, 32)
	if err != nil {
		return nil, fmt.Errorf("derive cache name key: %w", err)
	}
	m := &masterKey{headerWrap: newGCM(wrapKey), contentKey: contentKey, commitKey: commitKey, cacheNames: cacheNames}
	copy(m.keyID[:], keyID)
	return m, nil
}

// KeyID is the 16-byte id of a master key, HKDF(master, "s3cryptfs v1 key
// id"): what every object header names its master key by.
type KeyID [keyIDSize]byte

func (id KeyID) String() string { return fmt.Sprintf("%x", id[:]) }

func newKeys(master []byte, blockSize int, rng io.Reader) (*Keys, error) {
	return newKeyring([][]byte{master}, blockSize, rng)
}

// newKeyring builds Keys from a keyring: masters[0] is current.
func newKeyring(masters [][]byte, blockSize int, rng io.Reader) (*Keys, error) {
	if len(masters) == 0 {
		return nil, fmt.Errorf("cipher: empty keyring")
	}
	k := &Keys{layout: NewLayout(blockSize), log2Block: blockSizeLog2(blockSize), rand: rng}
	for _, m := range masters {
		mk, err := newMasterKey(m)
		if err != nil {
			return nil, err
		}
		for _, o := range k.all {
			if o.keyID == mk.keyID {
				return nil, fmt.Errorf("cipher: keyring holds the same master key twice (key id %x): %w", mk.keyID, ErrCorrupt)
			}
		}
		k.all = append(k.all, mk)
	}
	k.masterKey = k.all[0]
	return k, nil
}

// NameKey is the vault's 32-byte name key, from which the name encryption
// subkeys are derived (fs/names); nil when the vault keeps plaintext names.
// Unlike the master keys it never changes: a rotation would otherwise have to
// rename every object.
func (k *Keys) NameKey() []byte { return k.nameKey }

// CurrentKeyID is the id of the master key NewFile uses.
func (k *Keys) CurrentKeyID() KeyID { return KeyID(k.keyID) }

// KeyIDs lists the ids of every master key these Keys can open, the
// current one first.
func (k *Keys) KeyIDs() []KeyID {
	ids := make([]KeyID, len(k.all))
	for i, m := range k.all {
		ids[i] = KeyID(m.keyID)
	}
	return ids
}

// HeaderKeyID returns the key id an object header names, without checking
// anything else (no key is needed): what a rewrite pass uses to find the
// objects still sealed under an old master key. ok is false when the bytes
// are not an s3cryptfs header of a known version.
func HeaderKeyID(header []byte) (id KeyID, ok bool) {
	if len(header) < hdrKeyIDOff+keyIDSize || string(header[0:4]) != headerMagic ||
		(header[4] != headerV1 && header[4] != headerV2) {
		return id, false
	}
	copy(id[:], header[hdrKeyIDOff:])
	return id, true
}

// CacheNameKey is a 32-byte key, HKDF(current master key, "s3cryptfs v2
// local cache names"), for naming the entries of a local cache (an HMAC of
// what they hold) so that its directory does not list which objects were
// read. Nothing in the store depends on it; a new current key (rotate)
// gives new names, and the old entries age out. The caller must not modify
// it.
func (k *Keys) CacheNameKey() []byte { return k.cacheNames }

// Layout is the offset arithmetic for objects of this vault.
func (k *Keys) Layout() Layout { return k.layout }

// NewFile starts a new stored version of a file: a random file id and a
// random salt, from which the version's own data key is derived (header
// version 2). Every upload of a file calls it, so no two versions share a
// key: no block of one version authenticates in another, unchanged blocks
// are not byte-identical between versions, and no long-lived key seals
// anything per version (nothing wears out a nonce budget vault-wide).
func (k *Keys) NewFile() (*FileKey, error) {
	f := &FileKey{layout: k.layout, rand: k.rand}
	h := f.header[:]
	k.headerPrefix(h, headerV2)
	if _, err := io.ReadFull(k.rand, h[hdrFileIDOff:hdrKeyIDOff]); err != nil {
		return nil, fmt.Errorf("cipher: new file: random id: %w", err)
	}
	if _, err := io.ReadFull(k.rand, h[hdrSaltOff:hdrSaltOff+hdrSaltSize]); err != nil {
		return nil, fmt.Errorf("cipher: new file: random salt: %w", err)
	}
	dataKey, err := k.deriveDataKey(h)
	if err != nil {
		return nil, err
	}
	k.commitment(h[hdrCommitmentOff:hdrCommitmentOff], h[:hdrCommitmentOff], dataKey)
	copy(f.id[:], h[hdrFileIDOff:])
	f.init(dataKey)
	return f, nil
}

// newFileV1 writes a version-1 header (random data key wrapped under the
// vault-wide header wrap key). Nothing writes version 1 any more; tests use
// it to prove that such objects stay readable and to pin its vectors.
func (k *Keys) newFileV1() (*FileKey, error) {
	f := &FileKey{layout: k.layout, rand: k.rand}
	var dataKey [dataKeySize]byte
	if _, err := io.ReadFull(k.rand, f.id[:]); err != nil {
		return nil, fmt.Errorf("cipher: new file: random id: %w", err)
	}
	if _, err := io.ReadFull(k.rand, dataKey[:]); err != nil {
		return nil, fmt.Errorf("cipher: new file: random data key: %w", err)
	}
	h := f.header[:]
	k.headerPrefix(h, headerV1)
	copy(h[hdrFileIDOff:], f.id[:])
	if _, err := io.ReadFull(k.rand, h[hdrNonceOff:hdrWrappedOff]); err != nil {
		return nil, fmt.Errorf("cipher: new file: random nonce: %w", err)
	}
	k.headerWrap.Seal(h[hdrWrappedOff:hdrWrappedOff], h[hdrNonceOff:hdrWrappedOff], dataKey[:], h[:hdrNonceOff])
	k.commitment(h[hdrCommitmentOff:hdrCommitmentOff], h[:hdrCommitmentOff], dataKey[:])
	f.init(dataKey[:])
	return f, nil
}

// headerPrefix fills the fields both versions share except the file id:
// magic, version, algorithm, block size, reserved byte, key id.
func (k *Keys) headerPrefix(h []byte, version byte) {
	copy(h[0:4], headerMagic)
	h[4], h[5], h[6], h[7] = version, algAES256GCM, k.log2Block, 0
	copy(h[hdrKeyIDOff:], k.keyID[:])
}

// deriveDataKey is a version-2 header's data key:
// HKDF(content key, salt, "s3cryptfs v2 data key" || header[0:40], 32). The
// info binds format, block size, file id and key id, so a header edited in
// any of them derives another key (and fails its commitment).
func (k *masterKey) deriveDataKey(h []byte) ([]byte, error) {
	info := make([]byte, 0, len(labelDataKey)+hdrSaltOff)
	info = append(append(info, labelDataKey...), h[:hdrSaltOff]...)
	dk, err := hkdf.Key(newHash, k.contentKey, h[hdrSaltOff:hdrSaltOff+hdrSaltSize], string(info), dataKeySize)
	if err != nil {
		return nil, fmt.Errorf("cipher: derive data key: %w", err)
	}
	return dk, nil
}

// commitment appends HMAC-SHA256(commitKey, header[0:100] || dataKey) to dst.
// It commits the header to one master key and one data key: AES-GCM alone
// is not key-committing, so without it a crafted header could open under
// two different keys. For version 2 it is also the header's own MAC (the
// salt and reserved bytes are authenticated by it, not by a wrap).
func (k *masterKey) commitment(dst, headerPrefix, dataKey []byte) []byte {
	m := hmac.New(newHash, k.commitKey)
	m.Write(headerPrefix)
	m.Write(dataKey)
	return m.Sum(dst)
}

// OpenHeader checks an object header (version 1 or 2) and recovers its
// data key. The header must be exactly HeaderSize bytes. A header sealed
// under another master key gives ErrWrongKey; anything else that does not
// check gives ErrCorrupt.
func (k *Keys) OpenHeader(header []byte) (*FileKey, error) {
	if len(header) != HeaderSize {
		return nil, fmt.Errorf("cipher: header: length %d, want %d: %w", len(header), HeaderSize, ErrCorrupt)
	}
	switch {
	case string(header[0:4]) != headerMagic:
		return nil, fmt.Errorf("cipher: header: bad magic: %w", ErrCorrupt)
	case header[4] != headerV1 && header[4] != headerV2:
		return nil, fmt.Errorf("cipher: header: unsupported version %d: %w", header[4], ErrCorrupt)
	case header[5] != algAES256GCM:
		return nil, fmt.Errorf("cipher: header: unknown algorithm %d: %w", header[5], ErrCorrupt)
	case header[6] != k.log2Block:
		return nil, fmt.Errorf("cipher: header: block size 2^%d, vault uses 2^%d: %w", header[6], k.log2Block, ErrCorrupt)
	case header[7] != 0:
		return nil, fmt.Errorf("cipher: header: reserved byte not zero: %w", ErrCorrupt)
	}
	mk := k.byID(header[hdrKeyIDOff : hdrKeyIDOff+keyIDSize])
	if mk == nil {
		return nil, fmt.Errorf("cipher: header: sealed under a master key this vault does not hold (key id %x): %w",
			header[hdrKeyIDOff:hdrKeyIDOff+keyIDSize], ErrWrongKey)
	}
	var dataKey []byte
	if header[4] == headerV1 {
		var dk [dataKeySize]byte
		if _, err := mk.headerWrap.Open(dk[:0], header[hdrNonceOff:hdrWrappedOff],
			header[hdrWrappedOff:hdrCommitmentOff], header[:hdrNonceOff]); err != nil {
			return nil, fmt.Errorf("cipher: header: data key does not authenticate: %w", ErrCorrupt)
		}
		dataKey = dk[:]
	} else {
		for _, b := range header[hdrV2ResOff:hdrCommitmentOff] {
			if b != 0 {
				return nil, fmt.Errorf("cipher: header: reserved bytes not zero: %w", ErrCorrupt)
			}
		}
		var err error
		if dataKey, err = mk.deriveDataKey(header); err != nil {
			return nil, err
		}
	}
	var want [commitmentSize]byte
	mk.commitment(want[:0], header[:hdrCommitmentOff], dataKey)
	if subtle.ConstantTimeCompare(want[:], header[hdrCommitmentOff:]) != 1 {
		return nil, fmt.Errorf("cipher: header: key commitment mismatch: %w", ErrCorrupt)
	}
	f := &FileKey{layout: k.layout, rand: k.rand}
	copy(f.id[:], header[hdrFileIDOff:])
	copy(f.header[:], header)
	f.init(dataKey)
	return f, nil
}

// byID returns the master key with this key id, or nil. Every key of the
// ring is compared, in constant time, so the time taken does not say which
// key matched (key ids are not secret, but this costs nothing).
func (k *Keys) byID(id []byte) *masterKey {
	var found *masterKey
	for _, m := range k.all {
		if subtle.ConstantTimeCompare(id, m.keyID[:]) == 1 {
			found = m
		}
	}
	return found
}

// FileKey is one object's file id and data key, with the AEAD built once so
// sealing a block allocates nothing. Immutable and safe for concurrent use.
type FileKey struct {
	layout Layout
	id     [fileIDSize]byte
	header [HeaderSize]byte
	aead   aeadT
	adBase [blockADSize]byte // associated data with index and final flag zero
	rand   io.Reader
}

// Block associated data: file id (16) || index (8, big endian) ||
// final (1) || version (1) || algorithm (1) || log2 block size (1).
const (
	blockADSize     = 28
	blockADIndexOff = 16
	blockADFinalOff = 24
)

func (f *FileKey) init(dataKey []byte) {
	f.aead = newGCM(dataKey)
	copy(f.adBase[:], f.id[:])
	f.adBase[25] = f.header[4] // the header's version
	f.adBase[26] = algAES256GCM
	f.adBase[27] = f.header[6]
}

// ID is the random 16-byte id of this stored version, bound into every
// block. (Version 1 writers kept one id for a file's whole life; version 2
// picks a new one with every version.)
func (f *FileKey) ID() [16]byte { return f.id }

// Version is the header format version: 1 (legacy, read only) or 2.
func (f *FileKey) Version() int { return int(f.header[4]) }

// Header returns the exact header bytes (a fresh copy); the same FileKey
// always gives the same header.
func (f *FileKey) Header() []byte {
	h := make([]byte, HeaderSize)
	copy(h, f.header[:])
	return h
}

// Layout is the offset arithmetic for this file's object.
func (f *FileKey) Layout() Layout { return f.layout }

func (f *FileKey) blockAD(ad *[blockADSize]byte, index uint64, final bool) {
	*ad = f.adBase
	binary.BigEndian.PutUint64(ad[blockADIndexOff:], index)
	if final {
		ad[blockADFinalOff] = 1
	}
}

// Seal appends nonce||ciphertext||tag to dst, with a fresh random nonce on
// every call (so rewriting a block never reuses one). len(plain) must be at
// most the block size, and exactly the block size unless final; an empty
// plain is only meaningful as block 0 of an empty file. Violations are
// programmer errors and panic.
func (f *FileKey) Seal(dst, plain []byte, index uint64, final bool) []byte {
	if len(plain) > f.layout.BlockSize || (!final && len(plain) != f.layout.BlockSize) {
		panic(fmt.Sprintf("BUG: cipher.Seal: %d bytes for block %d (final %v, block size %d)",
			len(plain), index, final, f.layout.BlockSize))
	}
	ret, out := sliceForAppend(dst, NonceSize+len(plain)+TagSize)
	if _, err := io.ReadFull(f.rand, out[:NonceSize]); err != nil {
		panic("BUG: cipher.Seal: random source failed: " + err.Error())
	}
	ad := adPool.get()
	f.blockAD(ad, index, final)
	f.aead.Seal(out[NonceSize:NonceSize], out[:NonceSize], plain, ad[:])
	adPool.put(ad)
	return ret
}

// Open checks and decrypts one sealed block, appending the plaintext to dst.
// Any failure is ErrCorrupt, wrapped with the block index: wrong size for
// its position, tampering, a block from another position or file, a
// non-final block where the final one should be (truncation) or the
// reverse.
func (f *FileKey) Open(dst, sealed []byte, index uint64, final bool) ([]byte, error) {
	n := len(sealed) - BlockOverhead
	switch {
	case n < 0 || n > f.layout.BlockSize:
		return dst, fmt.Errorf("cipher: block %d: sealed length %d out of range: %w", index, len(sealed), ErrCorrupt)
	case !final && n != f.layout.BlockSize:
		return dst, fmt.Errorf("cipher: block %d: short non-final block (%d bytes): %w", index, n, ErrCorrupt)
	case final && n == 0 && index != 0:
		return dst, fmt.Errorf("cipher: block %d: empty final block after full ones: %w", index, ErrCorrupt)
	}
	ad := adPool.get()
	f.blockAD(ad, index, final)
	out, err := f.aead.Open(dst, sealed[:NonceSize], sealed[NonceSize:], ad[:])
	adPool.put(ad)
	if err != nil {
		return dst, fmt.Errorf("cipher: block %d (final %v): authentication failed: %w", index, final, ErrCorrupt)
	}
	return out, nil
}

// sliceForAppend extends in by n bytes, reallocating only when the capacity
// is short, and returns the whole slice and the new tail.
func sliceForAppend(in []byte, n int) (head, tail []byte) {
	if total := len(in) + n; cap(in) >= total {
		head = in[:total]
	} else {
		head = make([]byte, total)
		copy(head, in)
	}
	return head, head[len(in):]
}
