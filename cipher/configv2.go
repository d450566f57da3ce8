package cipher

import (
	"bytes"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	sha256simd "github.com/minio/sha256-simd"
	"golang.org/x/crypto/argon2"
)

// Config version 2 (docs/FORMAT.md, "Vault config, version 2"): a random
// config key wrapped in up to maxSlots slots, and a keyring of master keys
// sealed under a subkey of the config key with the header and every slot as
// associated data.
const (
	configV2          = 2
	configV2HeadSize  = 32 // magic .. vault id
	configV2SlotsOff  = configV2HeadSize
	configV2CountsOff = 11 // slot count, key count: the only header bytes a slot's wrap does not bind
	vaultIDSize       = 16
	configKeySize     = 32
	slotHeadSize      = 4  // kind, reserved, body length
	wrappedSize       = 48 // a 32-byte key + GCM tag
	checksumSize      = 32

	// MaxSlots and MaxKeys bound a config so the parser's work and memory
	// are small whatever the bytes say.
	MaxSlots = 16
	MaxKeys  = 64

	// Slot body sizes (fixed for every kind but KMS).
	passSlotBody = 12 + saltSize + NonceSize + wrappedSize // KDF params 9 + reserved 3
	keySlotBody  = saltSize + NonceSize + wrappedSize      // key file and recovery key

	// maxKMSKeyID is the longest KMS key id (AWS: an ARN or alias ARN, at
	// most 2048 characters); maxKMSBlob the longest ciphertext a KMS may
	// return for the 32-byte config key (AWS returns under 200 bytes).
	maxKMSKeyID = 2048
	maxKMSBlob  = 4096

	// maxConfigSize bounds the whole config; nothing longer is hashed.
	maxConfigSize = configV2HeadSize + MaxSlots*(slotHeadSize+4+maxKMSKeyID+maxKMSBlob) +
		NonceSize + MaxKeys*masterKeySize + TagSize + checksumSize

	// maxPassSlotWork caps the sum of memory x passes over all passphrase
	// slots: unlocking with a passphrase may try each of them, before any
	// of the config is authenticated.
	maxPassSlotWork = 4 * maxKDFWork

	labelRecoveryWrap = "s3cryptfs v2 recovery key wrap"
	labelKeyring      = "s3cryptfs v2 keyring"

	// KMSContextKey is the one key of the encryption context of every KMS
	// operation on a vault's config key; its value is the vault id in hex.
	KMSContextKey = "s3cryptfs-vault"
)

// SlotKind says what secret a slot's wrapping key comes from.
type SlotKind uint8

const (
	SlotPassphrase SlotKind = 1 // Argon2id(passphrase, salt)
	SlotKeyFile    SlotKind = 2 // HKDF(key file, salt, "s3cryptfs v1 key file wrap")
	SlotRecovery   SlotKind = 3 // HKDF(recovery key, salt, "s3cryptfs v2 recovery key wrap")
	SlotKMS        SlotKind = 4 // KMS Encrypt(config key) under an encryption context naming the vault
)

func (k SlotKind) String() string {
	switch k {
	case SlotPassphrase:
		return "passphrase"
	case SlotKeyFile:
		return "key file"
	case SlotRecovery:
		return "recovery key"
	case SlotKMS:
		return "KMS"
	}
	return fmt.Sprintf("slot kind %d", uint8(k))
}

// Secret is what a person (or a file) supplies to unlock a slot. Kind
// chooses which slots it is tried on: Argon2id runs only for passphrases.
type Secret struct {
	Kind SlotKind // SlotPassphrase, SlotKeyFile or SlotRecovery
	Key  []byte   // the passphrase bytes, or the 32-byte key
}

// Passphrase, KeyFile and RecoveryKey make Secrets of each kind.
func Passphrase(p []byte) Secret  { return Secret{Kind: SlotPassphrase, Key: p} }
func KeyFile(k []byte) Secret     { return Secret{Kind: SlotKeyFile, Key: k} }
func RecoveryKey(k []byte) Secret { return Secret{Kind: SlotRecovery, Key: k} }

// slot is one entry of the slot table. The wrap fields are unused by KMS
// slots, the KMS fields by the others.
type slot struct {
	kind     SlotKind
	kdf      KDFParams
	salt     [saltSize]byte
	nonce    [NonceSize]byte
	wrapped  [wrappedSize]byte
	kmsKeyID string
	kmsBlob  []byte
}

func (s *slot) bodyLen() int {
	switch s.kind {
	case SlotPassphrase:
		return passSlotBody
	case SlotKMS:
		return 4 + len(s.kmsKeyID) + len(s.kmsBlob)
	}
	return keySlotBody
}

// put appends the slot's encoding to b.
func (s *slot) put(b []byte) []byte {
	b = append(b, byte(s.kind), 0)
	b = binary.BigEndian.AppendUint16(b, uint16(s.bodyLen()))
	switch s.kind {
	case SlotPassphrase:
		b = binary.BigEndian.AppendUint32(b, s.kdf.Time)
		b = binary.BigEndian.AppendUint32(b, s.kdf.MemoryKiB)
		b = append(b, s.kdf.Threads, 0, 0, 0)
	case SlotKMS:
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.kmsKeyID)))
		b = append(b, s.kmsKeyID...)
		b = binary.BigEndian.AppendUint16(b, uint16(len(s.kmsBlob)))
		return append(b, s.kmsBlob...)
	}
	b = append(b, s.salt[:]...)
	b = append(b, s.nonce[:]...)
	return append(b, s.wrapped[:]...)
}

// configV2Data is the part of a Config only version 2 has.
type configV2Data struct {
	vaultID   [vaultIDSize]byte
	slots     []slot
	nkeys     int
	flags     byte // FlagEncryptedNames
	ringNonce [NonceSize]byte
	ring      []byte // (nkeys + 1 if names are encrypted)*32 + 16: the sealed keyring
}

// FlagEncryptedNames (header byte 13, bit 0): entry names are encrypted and
// the keyring ends in the 32-byte name key after the master keys. Configs
// made before it have the byte zero: plaintext names.
const FlagEncryptedNames = 0x01

// EncryptedNames reports whether the vault encrypts file and directory
// names (version 2 with FlagEncryptedNames; never version 1).
func (c *Config) EncryptedNames() bool {
	return c.v2 != nil && c.v2.flags&FlagEncryptedNames != 0
}

// ringKeys is the number of 32-byte keys the sealed keyring holds.
func (v *configV2Data) ringKeys() int {
	if v.flags&FlagEncryptedNames != 0 {
		return v.nkeys + 1
	}
	return v.nkeys
}

// SlotInfo describes a slot without any secret.
type SlotInfo struct {
	Kind     SlotKind
	KDF      KDFParams // passphrase slots
	KMSKeyID string    // KMS slots
}

// Version is the config format version, 1 or 2.
func (c *Config) Version() int {
	if c.v2 != nil {
		return configV2
	}
	return configVersion
}

// VaultID is the vault's random 16-byte id (version 2; zero for version 1,
// which has none until its first change upgrades it).
func (c *Config) VaultID() [vaultIDSize]byte {
	if c.v2 == nil {
		return [vaultIDSize]byte{}
	}
	return c.v2.vaultID
}

// KMSContext is the encryption context of every KMS Encrypt and Decrypt of
// this vault's config key: {"s3cryptfs-vault": vault id in hex}. KMS binds
// the ciphertext to it, so a KMS blob copied into another vault's config
// does not decrypt there, and CloudTrail logs name the vault.
func (c *Config) KMSContext() map[string]string {
	id := c.VaultID()
	return map[string]string{KMSContextKey: hex.EncodeToString(id[:])}
}

// Slots lists the slots in table order (a version-1 config has one).
func (c *Config) Slots() []SlotInfo {
	if c.v2 == nil {
		return []SlotInfo{{Kind: SlotKind(c.kind), KDF: c.kdf}}
	}
	out := make([]SlotInfo, len(c.v2.slots))
	for i, s := range c.v2.slots {
		out[i] = SlotInfo{Kind: s.kind, KDF: s.kdf, KMSKeyID: s.kmsKeyID}
	}
	return out
}

// NumKeys is the number of master keys in the keyring (1 for version 1).
func (c *Config) NumKeys() int {
	if c.v2 == nil {
		return 1
	}
	return c.v2.nkeys
}

// marshalV2 encodes a version-2 config; with ring == nil it stops before
// the keyring nonce (the keyring's associated data).
func (c *Config) marshalV2(withRing bool) []byte {
	v := c.v2
	b := make([]byte, 0, 256)
	b = append(b, configMagic...)
	b = binary.BigEndian.AppendUint16(b, configV2)
	b = append(b, c.log2Block, byte(len(v.slots)), byte(v.nkeys), v.flags, 0, 0)
	b = append(b, v.vaultID[:]...)
	for i := range v.slots {
		b = v.slots[i].put(b)
	}
	if !withRing {
		return b
	}
	b = append(b, v.ringNonce[:]...)
	b = append(b, v.ring...)
	sum := sha256simd.Sum256(b)
	return append(b, sum[:]...)
}

// slotAD is the associated data of slot s's wrap: the header fields that
// do not change when slots or keys are added (magic, version, block size,
// vault id), then the slot's own bytes before its nonce (kind, length, KDF
// parameters, salt). It leaves out the counts and the other slots, so a
// slot can be added or removed without the other slots' secrets.
func (c *Config) slotAD(s *slot) []byte {
	ad := make([]byte, 0, 11+vaultIDSize+slotHeadSize+12+saltSize)
	ad = append(ad, configMagic...)
	ad = binary.BigEndian.AppendUint16(ad, configV2)
	ad = append(ad, c.log2Block)
	ad = append(ad, c.v2.vaultID[:]...)
	enc := s.put(nil)
	return append(ad, enc[:len(enc)-NonceSize-wrappedSize]...)
}

// slotKEK derives the wrapping key of slot s from a secret of its kind.
func slotKEK(s *slot, secret []byte) ([]byte, error) {
	switch s.kind {
	case SlotPassphrase:
		return argon2.IDKey(secret, s.salt[:], s.kdf.Time, s.kdf.MemoryKiB, s.kdf.Threads, 32), nil
	case SlotKeyFile, SlotRecovery:
		if len(secret) != keyFileSize {
			return nil, fmt.Errorf("%s must be %d bytes, got %d: %w", s.kind, keyFileSize, len(secret), ErrWrongKey)
		}
		label := labelKeyFileWrap
		if s.kind == SlotRecovery {
			label = labelRecoveryWrap
		}
		return hkdf.Key(newHash, secret, s.salt[:], label, 32)
	}
	panic("BUG: cipher: slotKEK of a " + s.kind.String() + " slot")
}

// keyringKey is HKDF(config key, "", "s3cryptfs v2 keyring", 32).
func keyringKey(configKey []byte) []byte {
	k, err := hkdf.Key(newHash, configKey, nil, labelKeyring, 32)
	if err != nil {
		panic("BUG: cipher: " + err.Error())
	}
	return k
}

// parseConfigV2 decodes a version-2 config whose magic and version were
// checked. Every length is checked against the bytes present and the
// fixed bounds before it is used, and every KDF parameter against the cap
// and the minimum, before any KDF could run.
func parseConfigV2(data []byte, allowWeak bool) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("cipher: config: %d bytes, a version-2 config has at most %d: %w", len(data), maxConfigSize, ErrCorrupt)
	}
	if len(data) < configV2HeadSize+NonceSize+masterKeySize+TagSize+checksumSize {
		return nil, fmt.Errorf("cipher: config: %d bytes, too short for version 2: %w", len(data), ErrCorrupt)
	}
	body := data[:len(data)-checksumSize]
	if sum := sha256simd.Sum256(body); subtle.ConstantTimeCompare(sum[:], data[len(body):]) != 1 {
		return nil, fmt.Errorf("cipher: config: checksum mismatch: %w", ErrCorrupt)
	}
	c := &Config{log2Block: data[10], v2: &configV2Data{}}
	v := c.v2
	nslots, nkeys := int(data[11]), int(data[12])
	switch {
	case data[13]&^FlagEncryptedNames != 0:
		return nil, fmt.Errorf("cipher: config: unknown flags %#02x (written by a newer version?): %w", data[13], ErrCorrupt)
	case data[14]|data[15] != 0:
		return nil, fmt.Errorf("cipher: config: reserved bytes not zero: %w", ErrCorrupt)
	case c.log2Block > 30 || !validBlockSize(1<<c.log2Block):
		return nil, fmt.Errorf("cipher: config: block size 2^%d out of range: %w", c.log2Block, ErrCorrupt)
	case nslots < 1 || nslots > MaxSlots:
		return nil, fmt.Errorf("cipher: config: %d slots, want 1..%d: %w", nslots, MaxSlots, ErrCorrupt)
	case nkeys < 1 || nkeys > MaxKeys:
		return nil, fmt.Errorf("cipher: config: %d master keys, want 1..%d: %w", nkeys, MaxKeys, ErrCorrupt)
	}
	copy(v.vaultID[:], data[16:32])
	v.nkeys = nkeys
	v.flags = data[13]
	v.slots = make([]slot, nslots) // nslots <= MaxSlots
	rest := body[configV2SlotsOff:]
	var passWork uint64
	for i := range v.slots {
		s := &v.slots[i]
		if len(rest) < slotHeadSize {
			return nil, fmt.Errorf("cipher: config: slot %d: truncated: %w", i, ErrCorrupt)
		}
		s.kind = SlotKind(rest[0])
		n := int(binary.BigEndian.Uint16(rest[2:4]))
		if rest[1] != 0 {
			return nil, fmt.Errorf("cipher: config: slot %d: reserved byte not zero: %w", i, ErrCorrupt)
		}
		want := -1
		switch s.kind {
		case SlotPassphrase:
			want = passSlotBody
		case SlotKeyFile, SlotRecovery:
			want = keySlotBody
		case SlotKMS:
			if n < 4+1+1 || n > 4+maxKMSKeyID+maxKMSBlob {
				return nil, fmt.Errorf("cipher: config: slot %d: KMS slot of %d bytes: %w", i, n, ErrCorrupt)
			}
			want = n
		default:
			return nil, fmt.Errorf("cipher: config: slot %d: unknown kind %d: %w", i, s.kind, ErrCorrupt)
		}
		if n != want || len(rest) < slotHeadSize+n {
			return nil, fmt.Errorf("cipher: config: slot %d (%s): body of %d bytes (%d present), want %d: %w",
				i, s.kind, n, len(rest)-slotHeadSize, want, ErrCorrupt)
		}
		b := rest[slotHeadSize : slotHeadSize+n]
		rest = rest[slotHeadSize+n:]
		if s.kind == SlotKMS {
			idLen := int(binary.BigEndian.Uint16(b[0:2]))
			if idLen < 1 || idLen > maxKMSKeyID || 2+idLen+2 > len(b) {
				return nil, fmt.Errorf("cipher: config: slot %d: KMS key id of %d bytes: %w", i, idLen, ErrCorrupt)
			}
			id := b[2 : 2+idLen]
			for _, ch := range id {
				if ch < 0x21 || ch > 0x7e {
					return nil, fmt.Errorf("cipher: config: slot %d: KMS key id is not printable ASCII: %w", i, ErrCorrupt)
				}
			}
			blobLen := int(binary.BigEndian.Uint16(b[2+idLen : 4+idLen]))
			if blobLen < 1 || blobLen > maxKMSBlob || 4+idLen+blobLen != len(b) {
				return nil, fmt.Errorf("cipher: config: slot %d: KMS ciphertext of %d bytes in a body of %d: %w", i, blobLen, len(b), ErrCorrupt)
			}
			s.kmsKeyID = string(id)
			s.kmsBlob = bytes.Clone(b[4+idLen:])
			continue
		}
		if s.kind == SlotPassphrase {
			s.kdf = KDFParams{
				Time:      binary.BigEndian.Uint32(b[0:4]),
				MemoryKiB: binary.BigEndian.Uint32(b[4:8]),
				Threads:   b[8],
			}
			if b[9]|b[10]|b[11] != 0 {
				return nil, fmt.Errorf("cipher: config: slot %d: reserved bytes not zero: %w", i, ErrCorrupt)
			}
			if err := checkKDF(s.kdf, allowWeak); err != nil {
				return nil, fmt.Errorf("cipher: config: slot %d: %w", i, err)
			}
			passWork += uint64(s.kdf.MemoryKiB) * uint64(s.kdf.Time)
			b = b[12:]
		}
		copy(s.salt[:], b[0:saltSize])
		copy(s.nonce[:], b[saltSize:saltSize+NonceSize])
		copy(s.wrapped[:], b[saltSize+NonceSize:])
	}
	if passWork > maxPassSlotWork {
		return nil, fmt.Errorf("cipher: config: passphrase slots ask for %d KiB x passes in all, the cap is %d, refused before running the KDF: %w",
			passWork, maxPassSlotWork, ErrKDFTooCostly)
	}
	if want := NonceSize + v.ringKeys()*masterKeySize + TagSize; len(rest) != want {
		return nil, fmt.Errorf("cipher: config: %d bytes after the slots, want %d (keyring nonce and %d sealed keys): %w",
			len(rest), want, nkeys, ErrCorrupt)
	}
	copy(v.ringNonce[:], rest[:NonceSize])
	v.ring = bytes.Clone(rest[NonceSize:])
	return c, nil
}

// Unlocked is a config opened with one of its slots: the config key and the
// keyring in memory, ready to derive Keys or to produce changed configs.
// Every change returns a new Unlocked (and so a new Config to store),
// leaving the receiver as it was, so a caller whose write of the new config
// fails keeps a consistent state. Only administrative commands need it; a
// mount only needs Keys (Config.Unlock).
type Unlocked struct {
	cfg       *Config
	configKey []byte   // nil for a version-1 config (created on upgrade)
	masters   [][]byte // the keyring, current first
	nameKey   []byte   // the name key (FlagEncryptedNames), nil otherwise
	slot      int      // index of the slot that opened it
	kek       []byte   // that slot's wrapping key (nil for KMS): to rewrap it
	keys      *Keys
	rand      io.Reader
}

// Config is the config this Unlocked holds (what to store).
func (u *Unlocked) Config() *Config { return u.cfg }

// Keys are the vault's keys (every master key of the keyring).
func (u *Unlocked) Keys() *Keys { return u.keys }

// Slot is the index of the slot that unlocked the config.
func (u *Unlocked) Slot() int { return u.slot }

// UnlockSecret tries secret on every slot of its kind, in table order, and
// returns the config opened by the first that fits. ErrWrongKey if none
// does; ErrCorrupt if a slot opens but the keyring does not authenticate
// (the config was edited and its checksum recomputed).
func (c *Config) UnlockSecret(secret Secret) (*Unlocked, error) {
	return c.unlockSecret(secret, rand.Reader)
}

func (c *Config) unlockSecret(secret Secret, rng io.Reader) (*Unlocked, error) {
	switch secret.Kind {
	case SlotPassphrase, SlotKeyFile, SlotRecovery:
	default:
		return nil, fmt.Errorf("cipher: unlock: a secret of kind %s cannot be tried on slots", secret.Kind)
	}
	if c.v2 == nil {
		if SlotKind(c.kind) != secret.Kind {
			return nil, fmt.Errorf("cipher: unlock: this version-1 vault has one %s slot, no %s slot: %w",
				SlotKind(c.kind), secret.Kind, ErrWrongKey)
		}
		kek, err := c.wrappingKey(secret.Key)
		if err != nil {
			return nil, fmt.Errorf("cipher: unlock: %w", err)
		}
		var buf [configSize]byte
		c.put(buf[:])
		master, err := newGCM(kek).Open(nil, c.nonce[:], c.wrapped[:], buf[:configADEnd])
		if err != nil {
			return nil, fmt.Errorf("cipher: unlock: the %s does not open the vault: %w", secret.Kind, ErrWrongKey)
		}
		keys, err := newKeys(master, c.BlockSize(), rng)
		if err != nil {
			return nil, err
		}
		return &Unlocked{cfg: c, masters: [][]byte{master}, slot: 0, kek: kek, keys: keys, rand: rng}, nil
	}
	tried := 0
	for i := range c.v2.slots {
		s := &c.v2.slots[i]
		if s.kind != secret.Kind {
			continue
		}
		tried++
		kek, err := slotKEK(s, secret.Key)
		if err != nil {
			return nil, fmt.Errorf("cipher: unlock: %w", err)
		}
		ck, err := newGCM(kek).Open(nil, s.nonce[:], s.wrapped[:], c.slotAD(s))
		if err != nil {
			continue
		}
		u, err := c.openKeyring(ck, i, rng)
		if err != nil {
			return nil, err
		}
		u.kek = kek
		return u, nil
	}
	if tried == 0 {
		return nil, fmt.Errorf("cipher: unlock: the vault has no %s slot: %w", secret.Kind, ErrWrongKey)
	}
	return nil, fmt.Errorf("cipher: unlock: the %s opens none of the vault's %d %s slot(s): %w",
		secret.Kind, tried, secret.Kind, ErrWrongKey)
}

// KMSDecrypt is how a KMS slot is opened: decrypt blob with the KMS key
// keyID under the encryption context. The cipher package does no I/O; the
// caller talks to KMS.
type KMSDecrypt func(keyID string, blob []byte, encCtx map[string]string) ([]byte, error)

// KMSEncrypt encrypts plaintext (the config key) with KMS key keyID under
// the encryption context and returns the ciphertext blob to store.
type KMSEncrypt func(keyID string, plaintext []byte, encCtx map[string]string) ([]byte, error)

// UnlockKMS tries the KMS slots in table order with decrypt and returns
// the config opened by the first that works. The errors of the slots that
// failed are returned together when none works.
func (c *Config) UnlockKMS(decrypt KMSDecrypt) (*Unlocked, error) {
	if c.v2 == nil {
		return nil, fmt.Errorf("cipher: unlock: a version-1 vault has no KMS slot: %w", ErrWrongKey)
	}
	var errs []error
	for i := range c.v2.slots {
		s := &c.v2.slots[i]
		if s.kind != SlotKMS {
			continue
		}
		ck, err := decrypt(s.kmsKeyID, bytes.Clone(s.kmsBlob), c.KMSContext())
		if err != nil {
			errs = append(errs, fmt.Errorf("slot %d (KMS key %s): %w", i, s.kmsKeyID, err))
			continue
		}
		if len(ck) != configKeySize {
			errs = append(errs, fmt.Errorf("slot %d (KMS key %s): KMS returned %d bytes, want %d: %w",
				i, s.kmsKeyID, len(ck), configKeySize, ErrCorrupt))
			continue
		}
		return c.openKeyring(ck, i, rand.Reader)
	}
	if errs == nil {
		return nil, fmt.Errorf("cipher: unlock: the vault has no KMS slot: %w", ErrWrongKey)
	}
	return nil, fmt.Errorf("cipher: unlock with KMS: %w", joinErrs(errs))
}

// openKeyring opens the keyring with config key ck, found in slot i. The
// keyring's associated data is the whole config before it, so any edit of
// any field (another slot, a count, the vault id) fails here even though
// slot i's own wrap verified.
func (c *Config) openKeyring(ck []byte, i int, rng io.Reader) (*Unlocked, error) {
	v := c.v2
	ad := c.marshalV2(false)
	plain, err := newGCM(keyringKey(ck)).Open(nil, v.ringNonce[:], v.ring, ad)
	if err != nil {
		return nil, fmt.Errorf("cipher: unlock: slot %d (%s) opens but the keyring does not authenticate: the config was modified: %w",
			i, v.slots[i].kind, ErrCorrupt)
	}
	masters := make([][]byte, v.nkeys)
	for j := range masters {
		masters[j] = plain[j*masterKeySize : (j+1)*masterKeySize]
	}
	var nameKey []byte
	if v.flags&FlagEncryptedNames != 0 {
		nameKey = plain[v.nkeys*masterKeySize:]
	}
	keys, err := newKeyring(masters, c.BlockSize(), rng)
	if err != nil {
		return nil, fmt.Errorf("cipher: unlock: %w", err)
	}
	keys.nameKey = nameKey
	return &Unlocked{cfg: c, configKey: ck, masters: masters, nameKey: nameKey, slot: i, keys: keys, rand: rng}, nil
}

func joinErrs(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// ---- creating and changing version-2 configs ----

// NewVault creates a version-2 config: a fresh vault id, config key and
// master key, the config key wrapped in one slot for first (kdf applies to
// a passphrase; zero means DefaultKDF).
func NewVault(first Secret, kdf KDFParams, blockSize int) (*Unlocked, error) {
	return newVault(rand.Reader, first, kdf, blockSize, weakKDFAllowed.Load() > 0, false)
}

// NewVaultEncryptedNames is NewVault for a vault whose entry names are
// encrypted (FlagEncryptedNames): its keyring also holds a random name key,
// kept for the vault's whole life (rotation and rekeying keep it).
func NewVaultEncryptedNames(first Secret, kdf KDFParams, blockSize int) (*Unlocked, error) {
	return newVault(rand.Reader, first, kdf, blockSize, weakKDFAllowed.Load() > 0, true)
}

func newVault(rng io.Reader, first Secret, kdf KDFParams, blockSize int, allowWeak, names bool) (*Unlocked, error) {
	if blockSize == 0 {
		blockSize = DefaultBlockSize
	}
	if !validBlockSize(blockSize) {
		return nil, fmt.Errorf("cipher: new vault: block size %d is not a power of two in [%d, %d]",
			blockSize, MinBlockSize, MaxBlockSize)
	}
	c := &Config{log2Block: blockSizeLog2(blockSize), v2: &configV2Data{}}
	if _, err := io.ReadFull(rng, c.v2.vaultID[:]); err != nil {
		return nil, fmt.Errorf("cipher: new vault: random vault id: %w", err)
	}
	ck := make([]byte, configKeySize)
	if _, err := io.ReadFull(rng, ck); err != nil {
		return nil, fmt.Errorf("cipher: new vault: random config key: %w", err)
	}
	master := make([]byte, masterKeySize)
	if _, err := io.ReadFull(rng, master); err != nil {
		return nil, fmt.Errorf("cipher: new vault: random master key: %w", err)
	}
	u := &Unlocked{cfg: c, configKey: ck, masters: [][]byte{master}, rand: rng}
	if names {
		c.v2.flags = FlagEncryptedNames
		u.nameKey = make([]byte, masterKeySize)
		if _, err := io.ReadFull(rng, u.nameKey); err != nil {
			return nil, fmt.Errorf("cipher: new vault: random name key: %w", err)
		}
	}
	n, err := u.addSlot(first, kdf, allowWeak)
	if err != nil {
		return nil, fmt.Errorf("cipher: new vault: %w", err)
	}
	return n, nil
}

// clone returns a copy of u with its own config (slots copied) that
// changes may edit; upgrade turns a version-1 config into version 2.
func (u *Unlocked) clone() (*Unlocked, error) {
	n := *u
	n.masters = append([][]byte(nil), u.masters...)
	c := &Config{log2Block: u.cfg.log2Block, v2: &configV2Data{}}
	if u.cfg.v2 != nil {
		c.v2.vaultID = u.cfg.v2.vaultID
		c.v2.flags = u.cfg.v2.flags
		c.v2.slots = append([]slot(nil), u.cfg.v2.slots...)
		n.cfg = c
		return &n, nil
	}
	// Upgrade from version 1: a new vault id and config key; the one slot
	// keeps its kind, KDF parameters and salt (so its wrapping key, which
	// Unlock kept, is the same) and wraps the config key instead of the
	// master key. The master key is unchanged: no object is rewritten.
	if _, err := io.ReadFull(u.rand, c.v2.vaultID[:]); err != nil {
		return nil, fmt.Errorf("random vault id: %w", err)
	}
	n.configKey = make([]byte, configKeySize)
	if _, err := io.ReadFull(u.rand, n.configKey); err != nil {
		return nil, fmt.Errorf("random config key: %w", err)
	}
	s := slot{kind: SlotKind(u.cfg.kind), kdf: u.cfg.kdf, salt: u.cfg.salt}
	n.cfg = c
	if err := n.wrapSlot(&s, u.kek); err != nil {
		return nil, err
	}
	c.v2.slots = []slot{s}
	return &n, nil
}

// wrapSlot seals the config key into s under kek with a fresh nonce.
func (u *Unlocked) wrapSlot(s *slot, kek []byte) error {
	if _, err := io.ReadFull(u.rand, s.nonce[:]); err != nil {
		return fmt.Errorf("random nonce: %w", err)
	}
	newGCM(kek).Seal(s.wrapped[:0], s.nonce[:], u.configKey, u.cfg.slotAD(s))
	return nil
}

// seal finishes a changed config: checks the bounds, seals the keyring
// with a fresh nonce under the table as it now is, and rebuilds Keys.
func (u *Unlocked) seal() (*Unlocked, error) {
	v := u.cfg.v2
	if len(v.slots) > MaxSlots {
		return nil, fmt.Errorf("a vault has at most %d slots", MaxSlots)
	}
	if len(u.masters) > MaxKeys {
		return nil, fmt.Errorf("a vault keeps at most %d master keys: drop old ones first", MaxKeys)
	}
	v.nkeys = len(u.masters)
	if _, err := io.ReadFull(u.rand, v.ringNonce[:]); err != nil {
		return nil, fmt.Errorf("random keyring nonce: %w", err)
	}
	plain := make([]byte, 0, (len(u.masters)+1)*masterKeySize)
	for _, m := range u.masters {
		plain = append(plain, m...)
	}
	if v.flags&FlagEncryptedNames != 0 {
		if len(u.nameKey) != masterKeySize {
			return nil, fmt.Errorf("BUG: a vault with encrypted names has no name key")
		}
		plain = append(plain, u.nameKey...)
	}
	v.ring = newGCM(keyringKey(u.configKey)).Seal(nil, v.ringNonce[:], plain, u.cfg.marshalV2(false))
	keys, err := newKeyring(u.masters, u.cfg.BlockSize(), u.rand)
	if err != nil {
		return nil, err
	}
	keys.nameKey = u.nameKey
	u.keys = keys
	return u, nil
}

// AddSlot returns the vault with one more slot, for secret (a passphrase,
// key file or recovery key; kdf applies to a passphrase, zero means
// DefaultKDF). A version-1 config becomes version 2.
func (u *Unlocked) AddSlot(secret Secret, kdf KDFParams) (*Unlocked, error) {
	n, err := u.addSlot(secret, kdf, weakKDFAllowed.Load() > 0)
	if err != nil {
		return nil, fmt.Errorf("cipher: add slot: %w", err)
	}
	return n, nil
}

func (u *Unlocked) addSlot(secret Secret, kdf KDFParams, allowWeak bool) (*Unlocked, error) {
	n, err := u.clone()
	if err != nil {
		return nil, err
	}
	if len(n.cfg.v2.slots) >= MaxSlots {
		return nil, fmt.Errorf("the vault has %d slots already, the most it can hold", len(n.cfg.v2.slots))
	}
	s := slot{kind: secret.Kind}
	if err := checkSecret(&s, secret.Key, kdf, allowWeak); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(n.rand, s.salt[:]); err != nil {
		return nil, fmt.Errorf("random salt: %w", err)
	}
	kek, err := slotKEK(&s, secret.Key)
	if err != nil {
		return nil, err
	}
	if err := n.wrapSlot(&s, kek); err != nil {
		return nil, err
	}
	n.cfg.v2.slots = append(n.cfg.v2.slots, s)
	if len(n.cfg.v2.slots) == 1 { // a new vault: the first slot opened it
		n.slot, n.kek = 0, kek
	}
	return n.seal()
}

// checkSecret validates a new secret for slot s and sets s.kdf.
func checkSecret(s *slot, key []byte, kdf KDFParams, allowWeak bool) error {
	switch s.kind {
	case SlotPassphrase:
		if len(key) == 0 {
			return fmt.Errorf("empty passphrase")
		}
		if kdf == (KDFParams{}) {
			kdf = DefaultKDF
		}
		if err := checkKDF(kdf, allowWeak); err != nil {
			return err
		}
		s.kdf = kdf
	case SlotKeyFile, SlotRecovery:
		if len(key) != keyFileSize {
			return fmt.Errorf("a %s must be %d bytes, got %d", s.kind, keyFileSize, len(key))
		}
	default:
		return fmt.Errorf("a %s slot is not made from a secret", s.kind)
	}
	return nil
}

// AddKMSSlot returns the vault with one more slot: the config key
// encrypted by KMS key keyID (through encrypt) under the vault's
// encryption context.
func (u *Unlocked) AddKMSSlot(keyID string, encrypt KMSEncrypt) (*Unlocked, error) {
	if len(keyID) == 0 || len(keyID) > maxKMSKeyID {
		return nil, fmt.Errorf("cipher: add KMS slot: key id of %d bytes, want 1..%d", len(keyID), maxKMSKeyID)
	}
	for _, ch := range []byte(keyID) {
		if ch < 0x21 || ch > 0x7e {
			return nil, fmt.Errorf("cipher: add KMS slot: key id %q is not printable ASCII", keyID)
		}
	}
	n, err := u.clone()
	if err != nil {
		return nil, fmt.Errorf("cipher: add KMS slot: %w", err)
	}
	if len(n.cfg.v2.slots) >= MaxSlots {
		return nil, fmt.Errorf("cipher: add KMS slot: the vault has %d slots already, the most it can hold", len(n.cfg.v2.slots))
	}
	blob, err := encrypt(keyID, bytes.Clone(n.configKey), n.cfg.KMSContext())
	if err != nil {
		return nil, fmt.Errorf("cipher: add KMS slot: %w", err)
	}
	if len(blob) == 0 || len(blob) > maxKMSBlob {
		return nil, fmt.Errorf("cipher: add KMS slot: KMS returned a ciphertext of %d bytes, want 1..%d", len(blob), maxKMSBlob)
	}
	n.cfg.v2.slots = append(n.cfg.v2.slots, slot{kind: SlotKMS, kmsKeyID: keyID, kmsBlob: bytes.Clone(blob)})
	return n.seal()
}

// RemoveSlot returns the vault without slot i. The last slot cannot be
// removed (nothing could open the vault). The slot that unlocked u can:
// the result keeps working in memory, but that secret no longer opens the
// stored config.
//
// Removing a slot does not change the config key: anyone who kept an
// older copy of the config and knows the removed secret still obtains the
// config key, and with it the keyring of every config sealed under it
// (docs/FORMAT.md, "What removing a slot revokes").
func (u *Unlocked) RemoveSlot(i int) (*Unlocked, error) {
	slots := u.cfg.Slots()
	if i < 0 || i >= len(slots) {
		return nil, fmt.Errorf("cipher: remove slot: no slot %d (the vault has %d)", i, len(slots))
	}
	if len(slots) == 1 {
		return nil, fmt.Errorf("cipher: remove slot: slot %d is the vault's last; add another one first", i)
	}
	n, err := u.clone()
	if err != nil {
		return nil, fmt.Errorf("cipher: remove slot: %w", err)
	}
	n.cfg.v2.slots = append(n.cfg.v2.slots[:i:i], n.cfg.v2.slots[i+1:]...)
	switch {
	case n.slot == i:
		n.slot, n.kek = -1, nil
	case n.slot > i:
		n.slot--
	}
	return n.seal()
}

// ChangeSecret returns the vault with the slot that unlocked u rewrapped
// under newSecret (same kind) with a fresh salt and nonce; for a
// passphrase, kdf (zero: keep the slot's parameters) may raise the cost.
// No other slot and no master key changes.
func (u *Unlocked) ChangeSecret(newSecret Secret, kdf KDFParams) (*Unlocked, error) {
	n, err := u.changeSecret(newSecret, kdf, weakKDFAllowed.Load() > 0)
	if err != nil {
		return nil, fmt.Errorf("cipher: change secret: %w", err)
	}
	return n, nil
}

func (u *Unlocked) changeSecret(newSecret Secret, kdf KDFParams, allowWeak bool) (*Unlocked, error) {
	if u.slot < 0 || u.kek == nil {
		return nil, fmt.Errorf("the secret that unlocked the vault is not a slot's any more (removed, or KMS)")
	}
	n, err := u.clone()
	if err != nil {
		return nil, err
	}
	old := &n.cfg.v2.slots[n.slot]
	if newSecret.Kind != old.kind {
		return nil, fmt.Errorf("slot %d is a %s slot; a %s cannot replace its secret (add a slot instead)", n.slot, old.kind, newSecret.Kind)
	}
	if kdf == (KDFParams{}) {
		kdf = old.kdf
	}
	s := slot{kind: old.kind}
	if err := checkSecret(&s, newSecret.Key, kdf, allowWeak); err != nil {
		return nil, err
	}
	if _, err := io.ReadFull(n.rand, s.salt[:]); err != nil {
		return nil, fmt.Errorf("random salt: %w", err)
	}
	kek, err := slotKEK(&s, newSecret.Key)
	if err != nil {
		return nil, err
	}
	if err := n.wrapSlot(&s, kek); err != nil {
		return nil, err
	}
	*old = s
	n.kek = kek
	return n.seal()
}

// Rotate returns the vault with a new random master key, made current
// (NewFile uses it); the old keys stay in the keyring so every existing
// object stays readable, until DropKey removes them.
func (u *Unlocked) Rotate() (*Unlocked, error) {
	n, err := u.clone()
	if err != nil {
		return nil, fmt.Errorf("cipher: rotate: %w", err)
	}
	if len(n.masters) >= MaxKeys {
		return nil, fmt.Errorf("cipher: rotate: the keyring holds %d keys, the most it can: drop old keys first", len(n.masters))
	}
	m := make([]byte, masterKeySize)
	if _, err := io.ReadFull(n.rand, m); err != nil {
		return nil, fmt.Errorf("cipher: rotate: random master key: %w", err)
	}
	n.masters = append([][]byte{m}, n.masters...)
	return n.seal()
}

// DropKey returns the vault without the (non-current) master key id.
// Objects still sealed under it become unreadable (ErrWrongKey): call it
// only once no object names it (HeaderKeyID).
func (u *Unlocked) DropKey(id KeyID) (*Unlocked, error) {
	ids := u.keys.KeyIDs()
	i := -1
	for j, k := range ids {
		if k == id {
			i = j
		}
	}
	switch {
	case i < 0:
		return nil, fmt.Errorf("cipher: drop key: the vault holds no master key %s", id)
	case i == 0:
		return nil, fmt.Errorf("cipher: drop key: %s is the current master key; rotate first", id)
	}
	n, err := u.clone()
	if err != nil {
		return nil, fmt.Errorf("cipher: drop key: %w", err)
	}
	n.masters = append(n.masters[:i:i], n.masters[i+1:]...)
	return n.seal()
}

// Rekey returns the vault with a new random config key: every slot is
// rewrapped under it (fresh nonces; salts and so the slots' secrets stay),
// the keyring resealed. Afterwards no earlier copy of the config, with any
// secret it held, opens the keyring of this one (or of any later one): the
// step that makes removing a slot a revocation (docs/FORMAT.md).
//
// Rewrapping a slot needs its wrapping key: the slot that unlocked u has
// it; every other passphrase, key file or recovery key slot needs its
// secret among secrets (each is tried on the slots of its kind); KMS slots
// are re-encrypted with encrypt (nil if there are none). A slot that
// cannot be rewrapped fails the whole change, naming it: remove it first.
func (u *Unlocked) Rekey(secrets []Secret, encrypt KMSEncrypt) (*Unlocked, error) {
	n, err := u.rekey(secrets, encrypt)
	if err != nil {
		return nil, fmt.Errorf("cipher: rekey: %w", err)
	}
	return n, nil
}

func (u *Unlocked) rekey(secrets []Secret, encrypt KMSEncrypt) (*Unlocked, error) {
	n, err := u.clone()
	if err != nil {
		return nil, err
	}
	old := n.cfg // the slots, still wrapping the old config key
	keks := make([][]byte, len(old.v2.slots))
	var missing []string
	for i := range old.v2.slots {
		s := &old.v2.slots[i]
		switch {
		case s.kind == SlotKMS:
			if encrypt == nil {
				missing = append(missing, fmt.Sprintf("slot %d (KMS key %s: no KMS to re-encrypt with)", i, s.kmsKeyID))
			}
			continue
		case i == n.slot && n.kek != nil:
			keks[i] = n.kek
			continue
		}
		for _, sec := range secrets {
			if sec.Kind != s.kind {
				continue
			}
			kek, err := slotKEK(s, sec.Key)
			if err != nil {
				continue
			}
			if ck, err := newGCM(kek).Open(nil, s.nonce[:], s.wrapped[:], old.slotAD(s)); err == nil &&
				subtle.ConstantTimeCompare(ck, n.configKey) == 1 {
				keks[i] = kek
				break
			}
		}
		if keks[i] == nil {
			missing = append(missing, fmt.Sprintf("slot %d (%s: its secret was not given)", i, s.kind))
		}
	}
	if missing != nil {
		return nil, fmt.Errorf("cannot rewrap %s; give their secrets, or remove those slots first",
			strings.Join(missing, ", "))
	}
	n.configKey = make([]byte, configKeySize)
	if _, err := io.ReadFull(n.rand, n.configKey); err != nil {
		return nil, fmt.Errorf("random config key: %w", err)
	}
	for i := range n.cfg.v2.slots {
		s := &n.cfg.v2.slots[i]
		if s.kind == SlotKMS {
			blob, err := encrypt(s.kmsKeyID, bytes.Clone(n.configKey), n.cfg.KMSContext())
			if err != nil {
				return nil, fmt.Errorf("slot %d: %w", i, err)
			}
			if len(blob) == 0 || len(blob) > maxKMSBlob {
				return nil, fmt.Errorf("slot %d: KMS returned a ciphertext of %d bytes, want 1..%d", i, len(blob), maxKMSBlob)
			}
			s.kmsBlob = bytes.Clone(blob)
			continue
		}
		if err := n.wrapSlot(s, keks[i]); err != nil {
			return nil, err
		}
	}
	return n.seal()
}
