package cipher

import (
	"bytes"
	"crypto/aes"
	"crypto/hkdf"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	sha256simd "github.com/minio/sha256-simd"
	"golang.org/x/crypto/argon2"
)

// Config layout (docs/FORMAT.md, "Vault config, version 1"). Every field has a fixed
// offset so the parser never allocates from a length it read.
const (
	configMagic      = "S3CFVLT\x00"
	configVersion    = 1
	configSize       = 148
	configADEnd      = 56  // bytes [0,56) are the associated data of the wrap
	configNonceOff   = 56  // 12-byte nonce of the master key wrap
	configWrappedOff = 68  // 32-byte wrapped master key + 16-byte tag
	configSumOff     = 116 // SHA-256 of bytes [0,116)

	kindPassphrase = 1 // wrapping key = Argon2id(passphrase, salt)
	kindKeyFile    = 2 // wrapping key = HKDF-SHA256(key file, salt)

	masterKeySize = 32
	saltSize      = 32
	keyFileSize   = 32
)

// KDFParams are Argon2id's cost parameters.
type KDFParams struct {
	Time      uint32 // passes over memory
	MemoryKiB uint32 // memory in KiB
	Threads   uint8  // lanes
}

// DefaultKDF is what new passphrase vaults use: 64 MiB, 3 passes, 4 lanes,
// a fraction of a second per unlock (BenchmarkUnlock; figures in
// docs/FORMAT.md), which is also the cost of every guess an attacker with a
// copy of the config makes.
var DefaultKDF = KDFParams{Time: 3, MemoryKiB: 64 << 10, Threads: 4}

// minKDF is the weakest set of parameters a config may ask for; anything
// below any of them is refused with ErrWeakKDF when a config is created or
// read. It sits under DefaultKDF so a vault made on a small machine with
// lowered parameters still opens, and near OWASP's Argon2id floor (19 MiB,
// t=2) so a tampered config cannot downgrade the hash to near nothing.
var minKDF = KDFParams{Time: 2, MemoryKiB: 32 << 10, Threads: 1}

// MinimumKDF returns the weakest Argon2id parameters a config may ask for
// (time 2, 32 MiB, 1 thread): the cheapest setting that a real s3cryptfs
// binary accepts, e.g. for black-box tests that cannot use
// AllowWeakKDFForTests because the vault is opened in another process.
func MinimumKDF() KDFParams { return minKDF }

// maxKDF caps what a config may make Unlock spend, checked before Argon2id
// runs: the config is not authenticated until the KDF's output opens the
// wrap, so anyone who can write it (the bucket's other users, a thief of
// the credentials) could otherwise make every mount allocate gigabytes and
// spin for minutes. The cap is far above what init writes (DefaultKDF: 64
// MiB x 3 passes, under a second) yet bounded: at most 1 GiB, 16 passes,
// 16 lanes, and memory x passes at most 4 GiB (e.g. 1 GiB x 4 or 256 MiB x
// 16): 21 times the default's work, 15 to 20 seconds on a loaded 2-vCPU
// machine where 256 MiB x 4 passes took 3.8 s with 4 lanes, 4.3 s with
// one. Anything above is refused with ErrKDFTooCostly, when read and when
// created.
var maxKDF = KDFParams{Time: 16, MemoryKiB: 1 << 20, Threads: 16}

// maxKDFWork caps MemoryKiB x Time (KiB x passes): 4 GiB of memory passes.
const maxKDFWork = 4 << 20

// weakKDFAllowed > 0 lets NewConfig and ParseConfig accept parameters below
// minKDF. Only AllowWeakKDFForTests changes it.
var weakKDFAllowed atomic.Int32

// Cleanuper is the part of testing.TB that AllowWeakKDFForTests needs; it is
// spelled out so this package does not import "testing".
type Cleanuper interface {
	Helper()
	Cleanup(func())
}

// AllowWeakKDFForTests lets configs with KDF parameters below minKDF be
// created and parsed until the test tb ends, so tests can use cheap Argon2id
// settings such as TestKDF. Tests only: production code never calls it, and
// a vault made with weak parameters is refused everywhere else.
func AllowWeakKDFForTests(tb Cleanuper) {
	tb.Helper()
	weakKDFAllowed.Add(1)
	tb.Cleanup(func() { weakKDFAllowed.Add(-1) })
}

// TestKDF is a cheap parameter set for tests (about a millisecond). It is
// refused unless AllowWeakKDFForTests is in effect.
var TestKDF = KDFParams{Time: 1, MemoryKiB: 64, Threads: 1}

// ConfigOptions choose how NewConfig builds a vault.
type ConfigOptions struct {
	BlockSize int       // 0 = DefaultBlockSize; power of two, 4 KiB..1 MiB
	KeyFile   bool      // secret is a 32-byte key file used directly (no KDF) instead of a passphrase
	KDF       KDFParams // zero = DefaultKDF; ignored with KeyFile
}

// Config is a parsed vault config: everything needed to turn the secret
// into the master key. It holds no secret itself and is immutable.
type Config struct {
	kind      uint8
	log2Block uint8
	kdf       KDFParams
	salt      [saltSize]byte
	nonce     [NonceSize]byte
	wrapped   [masterKeySize + TagSize]byte

	// v2 is set for a version-2 config; the version-1 fields above are then
	// unused (except log2Block).
	v2 *configV2Data
}

// NewConfig creates a vault: a fresh random master key and salt, the master
// key wrapped under the key derived from secret. It returns the config to
// store and the unlocked keys.
func NewConfig(secret []byte, opts ConfigOptions) (*Config, *Keys, error) {
	return newConfig(rand.Reader, secret, opts, weakKDFAllowed.Load() > 0)
}

func newConfig(rng io.Reader, secret []byte, opts ConfigOptions, allowWeak bool) (*Config, *Keys, error) {
	bs := opts.BlockSize
	if bs == 0 {
		bs = DefaultBlockSize
	}
	if !validBlockSize(bs) {
		return nil, nil, fmt.Errorf("cipher: new config: block size %d is not a power of two in [%d, %d]",
			bs, MinBlockSize, MaxBlockSize)
	}
	c := &Config{kind: kindPassphrase, log2Block: blockSizeLog2(bs), kdf: opts.KDF}
	if opts.KeyFile {
		c.kind, c.kdf = kindKeyFile, KDFParams{}
		if len(secret) != keyFileSize {
			return nil, nil, fmt.Errorf("cipher: new config: key file must be %d bytes, got %d", keyFileSize, len(secret))
		}
	} else {
		if len(secret) == 0 {
			return nil, nil, fmt.Errorf("cipher: new config: empty passphrase")
		}
		if c.kdf == (KDFParams{}) {
			c.kdf = DefaultKDF
		}
		if err := checkKDF(c.kdf, allowWeak); err != nil {
			return nil, nil, fmt.Errorf("cipher: new config: %w", err)
		}
	}
	var master [masterKeySize]byte
	if _, err := io.ReadFull(rng, master[:]); err != nil {
		return nil, nil, fmt.Errorf("cipher: new config: random master key: %w", err)
	}
	if err := c.wrap(rng, secret, master[:]); err != nil {
		return nil, nil, fmt.Errorf("cipher: new config: %w", err)
	}
	k, err := newKeys(master[:], c.BlockSize(), rng)
	if err != nil {
		return nil, nil, fmt.Errorf("cipher: new config: %w", err)
	}
	return c, k, nil
}

func checkKDF(p KDFParams, allowWeak bool) error {
	// The cap comes first: it is what keeps a forged config from running
	// an expensive KDF, and the parameters are plain numbers until then.
	if p.Time > maxKDF.Time || p.MemoryKiB > maxKDF.MemoryKiB || p.Threads > maxKDF.Threads ||
		uint64(p.MemoryKiB)*uint64(p.Time) > maxKDFWork {
		return fmt.Errorf("argon2id time %d, memory %d KiB, threads %d: above the cap (time %d, memory %d KiB, threads %d, memory x time %d KiB x passes), refused before running the KDF: %w",
			p.Time, p.MemoryKiB, p.Threads, maxKDF.Time, maxKDF.MemoryKiB, maxKDF.Threads, maxKDFWork, ErrKDFTooCostly)
	}
	if p.Time == 0 || p.Threads == 0 || p.MemoryKiB < 8*uint32(p.Threads) {
		// Argon2 itself requires t >= 1, p >= 1, m >= 8p.
		return fmt.Errorf("argon2id parameters %+v are invalid: %w", p, ErrCorrupt)
	}
	if !allowWeak && (p.Time < minKDF.Time || p.MemoryKiB < minKDF.MemoryKiB || p.Threads < minKDF.Threads) {
		return fmt.Errorf("argon2id parameters %+v, minimum %+v: %w", p, minKDF, ErrWeakKDF)
	}
	return nil
}

// wrap picks a fresh salt and nonce and seals master under secret.
func (c *Config) wrap(rng io.Reader, secret, master []byte) error {
	if _, err := io.ReadFull(rng, c.salt[:]); err != nil {
		return fmt.Errorf("random salt: %w", err)
	}
	if _, err := io.ReadFull(rng, c.nonce[:]); err != nil {
		return fmt.Errorf("random nonce: %w", err)
	}
	kek, err := c.wrappingKey(secret)
	if err != nil {
		return err
	}
	aead := newGCM(kek)
	var buf [configSize]byte
	c.put(buf[:])
	aead.Seal(c.wrapped[:0], c.nonce[:], master, buf[:configADEnd])
	return nil
}

// wrappingKey derives the key-encryption key from the secret and salt.
func (c *Config) wrappingKey(secret []byte) ([]byte, error) {
	switch c.kind {
	case kindPassphrase:
		return argon2.IDKey(secret, c.salt[:], c.kdf.Time, c.kdf.MemoryKiB, c.kdf.Threads, 32), nil
	case kindKeyFile:
		if len(secret) != keyFileSize {
			return nil, fmt.Errorf("key file must be %d bytes, got %d: %w", keyFileSize, len(secret), ErrWrongKey)
		}
		return hkdf.Key(newHash, secret, c.salt[:], labelKeyFileWrap, 32)
	}
	panic("BUG: cipher.Config with unknown kind")
}

// put writes the config's fields into buf (configSize bytes), including the
// trailing checksum.
func (c *Config) put(buf []byte) {
	_ = buf[configSize-1]
	copy(buf[0:8], configMagic)
	binary.BigEndian.PutUint16(buf[8:10], configVersion)
	buf[10] = c.kind
	buf[11] = c.log2Block
	binary.BigEndian.PutUint32(buf[12:16], c.kdf.Time)
	binary.BigEndian.PutUint32(buf[16:20], c.kdf.MemoryKiB)
	buf[20] = c.kdf.Threads
	buf[21], buf[22], buf[23] = 0, 0, 0
	copy(buf[24:56], c.salt[:])
	copy(buf[configNonceOff:configWrappedOff], c.nonce[:])
	copy(buf[configWrappedOff:configSumOff], c.wrapped[:])
	sum := sha256simd.Sum256(buf[:configSumOff])
	copy(buf[configSumOff:], sum[:])
}

// Marshal returns the config's bytes: exactly configSize long for version
// 1, as docs/FORMAT.md lays out for version 2.
func (c *Config) Marshal() []byte {
	if c.v2 != nil {
		return c.marshalV2(true)
	}
	buf := make([]byte, configSize)
	c.put(buf)
	return buf
}

// BlockSize is the plaintext block size of every object in the vault.
func (c *Config) BlockSize() int { return 1 << c.log2Block }

// ParseConfig checks and decodes a stored config. It needs no secret: the
// checksum tells accidental corruption (ErrCorrupt) apart from a wrong
// secret later (ErrWrongKey from Unlock). Parameters below minKDF give
// ErrWeakKDF, above maxKDF ErrKDFTooCostly: both are checked here, before
// Unlock runs any KDF.
func ParseConfig(data []byte) (*Config, error) {
	return parseConfig(data, weakKDFAllowed.Load() > 0)
}

func parseConfig(data []byte, allowWeak bool) (*Config, error) {
	if len(data) < len(configMagic)+2 || string(data[:len(configMagic)]) != configMagic {
		return nil, fmt.Errorf("cipher: config: not an s3cryptfs vault config (bad magic): %w", ErrCorrupt)
	}
	switch v := binary.BigEndian.Uint16(data[8:10]); v {
	case configVersion:
	case configV2:
		return parseConfigV2(data, allowWeak)
	default:
		return nil, fmt.Errorf("cipher: config: unsupported version %d (this build reads 1 and 2): %w", v, ErrCorrupt)
	}
	if len(data) != configSize {
		return nil, fmt.Errorf("cipher: config: length %d, want %d: %w", len(data), configSize, ErrCorrupt)
	}
	if sum := sha256simd.Sum256(data[:configSumOff]); !bytes.Equal(sum[:], data[configSumOff:]) {
		return nil, fmt.Errorf("cipher: config: checksum mismatch: %w", ErrCorrupt)
	}
	c := &Config{
		kind:      data[10],
		log2Block: data[11],
		kdf: KDFParams{
			Time:      binary.BigEndian.Uint32(data[12:16]),
			MemoryKiB: binary.BigEndian.Uint32(data[16:20]),
			Threads:   data[20],
		},
	}
	if data[21]|data[22]|data[23] != 0 {
		return nil, fmt.Errorf("cipher: config: reserved bytes not zero: %w", ErrCorrupt)
	}
	if c.log2Block > 30 || !validBlockSize(1<<c.log2Block) {
		return nil, fmt.Errorf("cipher: config: block size 2^%d out of range: %w", c.log2Block, ErrCorrupt)
	}
	switch c.kind {
	case kindPassphrase:
		if err := checkKDF(c.kdf, allowWeak); err != nil {
			return nil, fmt.Errorf("cipher: config: %w", err)
		}
	case kindKeyFile:
		if c.kdf != (KDFParams{}) {
			return nil, fmt.Errorf("cipher: config: key file vault with KDF parameters: %w", ErrCorrupt)
		}
	default:
		return nil, fmt.Errorf("cipher: config: unknown secret kind %d: %w", c.kind, ErrCorrupt)
	}
	copy(c.salt[:], data[24:56])
	copy(c.nonce[:], data[configNonceOff:configWrappedOff])
	copy(c.wrapped[:], data[configWrappedOff:configSumOff])
	return c, nil
}

// Unlock derives the wrapping key from secret and unwraps the master key.
// A secret that does not open the wrap gives ErrWrongKey: the config was
// already checked against accidental corruption by ParseConfig.
//
// For a version-2 config the secret's kind is not known here, so it is
// tried on the key file and recovery key slots when it is 32 bytes long
// (cheap: HKDF), then on every passphrase slot. Callers that know the kind
// use UnlockSecret, which runs Argon2id only for passphrases.
func (c *Config) Unlock(secret []byte) (*Keys, error) {
	if c.v2 != nil {
		kinds := []SlotKind{SlotPassphrase}
		if len(secret) == keyFileSize {
			kinds = []SlotKind{SlotKeyFile, SlotRecovery, SlotPassphrase}
		}
		var err error
		for _, kind := range kinds {
			var u *Unlocked
			if u, err = c.UnlockSecret(Secret{Kind: kind, Key: secret}); err == nil {
				return u.Keys(), nil
			}
			if !errors.Is(err, ErrWrongKey) {
				return nil, err
			}
		}
		return nil, fmt.Errorf("cipher: unlock: the passphrase or key opens none of the vault's slots: %w", ErrWrongKey)
	}
	master, err := c.unwrap(secret)
	if err != nil {
		return nil, fmt.Errorf("cipher: unlock: %w", err)
	}
	return newKeys(master, c.BlockSize(), rand.Reader)
}

func (c *Config) unwrap(secret []byte) ([]byte, error) {
	kek, err := c.wrappingKey(secret)
	if err != nil {
		return nil, err
	}
	var buf [configSize]byte
	c.put(buf[:])
	master, err := newGCM(kek).Open(nil, c.nonce[:], c.wrapped[:], buf[:configADEnd])
	if err != nil {
		return nil, fmt.Errorf("passphrase or key file does not open the vault: %w", ErrWrongKey)
	}
	return master, nil
}

// Rewrap returns a config holding the same master key (so every object stays
// readable) wrapped under newSecret with a fresh salt and nonce. The secret
// kind, KDF parameters and block size are unchanged.
//
// Version 1 only: a version-2 config changes one slot with
// Unlocked.ChangeSecret.
func (c *Config) Rewrap(oldSecret, newSecret []byte) (*Config, error) {
	if c.v2 != nil {
		return nil, fmt.Errorf("cipher: rewrap: a version-2 config changes a slot with UnlockSecret and ChangeSecret")
	}
	return c.rewrap(rand.Reader, oldSecret, newSecret)
}

func (c *Config) rewrap(rng io.Reader, oldSecret, newSecret []byte) (*Config, error) {
	master, err := c.unwrap(oldSecret)
	if err != nil {
		return nil, fmt.Errorf("cipher: rewrap: %w", err)
	}
	switch {
	case c.kind == kindKeyFile && len(newSecret) != keyFileSize:
		return nil, fmt.Errorf("cipher: rewrap: new key file must be %d bytes, got %d", keyFileSize, len(newSecret))
	case c.kind == kindPassphrase && len(newSecret) == 0:
		return nil, fmt.Errorf("cipher: rewrap: empty passphrase")
	}
	n := &Config{kind: c.kind, log2Block: c.log2Block, kdf: c.kdf}
	if err := n.wrap(rng, newSecret, master); err != nil {
		return nil, fmt.Errorf("cipher: rewrap: %w", err)
	}
	return n, nil
}

// newGCM returns AES-256-GCM with 12-byte nonces for a 32-byte key.
func newGCM(key []byte) aeadT {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("BUG: cipher: " + err.Error())
	}
	aead, err := newGCMFromBlock(block)
	if err != nil {
		panic("BUG: cipher: " + err.Error())
	}
	return aead
}
