// Package vault opens and administers an s3cryptfs vault: it reads the vault
// config from a backend.Store (or from bytes the caller kept, when the
// store's copy is lost), unlocks it with whichever slot the given secret
// fits (passphrase, key file, recovery key, or KMS with no secret at all),
// and changes it: add and remove slots, change a passphrase, rotate the
// master key, drop an old one, export and restore the config.
//
// Every change rewrites only the config object, with a conditional write
// (If-Match the ETag that was read, or If-None-Match for a new vault), so
// two concurrent changes cannot silently lose one: the second gets
// ErrConflict and the stored config is the first one's. Before its first
// change a Vault checks that the store really enforces conditions (some
// S3-compatible servers ignore them) and refuses to change anything
// otherwise (ErrNoConditionalWrites). The package knows
// nothing of FUSE or of the filesystem's layout beyond the config's object
// name; the byte format is package cipher's (docs/FORMAT.md), and KMS is an
// interface (package internal/vault/awskms implements it with the AWS SDK), so the
// CLI commands on top of it are thin.
package vault

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// ConfigKey is the config object's name at the store root (the filesystem
// hides it from listings; fs.ConfigKey is the same name).
const ConfigKey = ".s3cryptfs.conf"

// maxConfigRead bounds how much of the config object is read: a version-2
// config is at most about 100 KB (16 slots of the largest kind, 64 keys).
const maxConfigRead = 1 << 20

var (
	// ErrConflict: the stored config changed between reading it and
	// writing the change (another change won the race). Nothing was
	// written; open the vault again and redo the change. It wraps
	// backend.ErrPreconditionFailed.
	ErrConflict = errors.New("the vault config was changed by someone else since it was read")
	// ErrNoVault: the store holds no vault config.
	ErrNoVault = errors.New("no vault config in the store")
	// ErrExists: Init or Restore found a vault config already in the store.
	ErrExists = errors.New("the store already holds a vault config")
	// ErrNoConditionalWrites: the store accepted a write whose condition
	// did not hold. Some S3-compatible servers ignore If-Match and
	// If-None-Match; on them two concurrent changes could silently lose
	// one (a lost rotation would make every object written under its new
	// key unreadable), so no change is made through such a store.
	ErrNoConditionalWrites = errors.New("the store ignores conditional writes (If-Match / If-None-Match)")
)

// KMS encrypts and decrypts the config key of a KMS slot. encCtx is the
// encryption context (cipher.Config.KMSContext: the vault id), which the
// KMS must bind to the ciphertext and require again to decrypt.
type KMS interface {
	Encrypt(ctx context.Context, keyID string, plaintext []byte, encCtx map[string]string) ([]byte, error)
	Decrypt(ctx context.Context, keyID string, blob []byte, encCtx map[string]string) ([]byte, error)
}

// OpenOptions say how to find and unlock a vault.
type OpenOptions struct {
	// Secret unlocks a passphrase, key file or recovery key slot
	// (cipher.Passphrase, cipher.KeyFile, cipher.RecoveryKey). When its
	// Kind is zero, the KMS slots are tried with KMS instead.
	Secret cipher.Secret
	// KMS opens KMS slots, and is needed to add one.
	KMS KMS
	// Config, when not nil, is used instead of the store's config object
	// (a copy kept with Export, for a store whose copy was lost). Changes
	// to a vault opened so are written only if the store has no config
	// (If-None-Match); Restore writes it back unchanged.
	Config []byte
	// Key is the config object's name; empty means ConfigKey.
	Key string
}

// Vault is an unlocked vault. Its methods are safe for concurrent use (they
// are serialised); each change is one conditional write of the config.
type Vault struct {
	store backend.Store
	key   string
	kms   KMS

	mu     sync.Mutex
	u      *cipher.Unlocked
	etag   string // ETag of the stored config this state derives from; "" if not from the store
	probed bool   // the store was seen to refuse a false condition
}

// Open reads and unlocks a vault. Errors: ErrNoVault, cipher.ErrWrongKey
// (no slot opens with the secret), cipher.ErrCorrupt (damaged or edited
// config), cipher.ErrWeakKDF / ErrKDFTooCostly (refused parameters), the
// KMS's error for a KMS slot it refuses, or the store's.
func Open(ctx context.Context, store backend.Store, opts OpenOptions) (*Vault, error) {
	v := &Vault{store: store, key: opts.Key, kms: opts.KMS}
	if v.key == "" {
		v.key = ConfigKey
	}
	data := opts.Config
	if data == nil {
		var err error
		if data, v.etag, err = v.read(ctx); err != nil {
			return nil, err
		}
	}
	cfg, err := cipher.ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	if v.u, err = unlock(ctx, cfg, opts.Secret, opts.KMS); err != nil {
		return nil, fmt.Errorf("vault: %w", err)
	}
	return v, nil
}

func unlock(ctx context.Context, cfg *cipher.Config, secret cipher.Secret, kms KMS) (*cipher.Unlocked, error) {
	if secret.Kind != 0 {
		return cfg.UnlockSecret(secret)
	}
	if kms == nil {
		return nil, errors.New("no secret given, and no KMS to open a KMS slot with")
	}
	return cfg.UnlockKMS(func(keyID string, blob []byte, encCtx map[string]string) ([]byte, error) {
		return kms.Decrypt(ctx, keyID, blob, encCtx)
	})
}

// read returns the stored config and its ETag. The Get is conditional on
// the ETag Stat saw, so the two belong together (a change in between is
// retried).
func (v *Vault) read(ctx context.Context) ([]byte, string, error) {
	for attempt := 0; ; attempt++ {
		st, err := v.store.Stat(ctx, v.key)
		if errors.Is(err, backend.ErrNotFound) {
			return nil, "", fmt.Errorf("vault: %s: %w", v.key, ErrNoVault)
		}
		if err != nil {
			return nil, "", fmt.Errorf("vault: read the config: %w", err)
		}
		if st.Size > maxConfigRead {
			return nil, "", fmt.Errorf("vault: %s is %d bytes, no vault config is over %d: %w", v.key, st.Size, maxConfigRead, cipher.ErrCorrupt)
		}
		rc, err := v.store.Get(ctx, v.key, 0, -1, backend.GetOptions{IfMatch: st.ETag})
		if err == nil {
			data, rerr := io.ReadAll(io.LimitReader(rc, maxConfigRead+1))
			rc.Close()
			if rerr != nil {
				return nil, "", fmt.Errorf("vault: read the config: %w", rerr)
			}
			return data, st.ETag, nil
		}
		if !(errors.Is(err, backend.ErrPreconditionFailed) || errors.Is(err, backend.ErrNotFound)) || attempt >= 4 {
			return nil, "", fmt.Errorf("vault: read the config: %w", err)
		}
	}
}

// Keys are the vault's keys: every master key of the keyring, the current
// one used for new objects. They stay valid after later changes of the
// config (a rotation returns new Keys from the next call).
func (v *Vault) Keys() *cipher.Keys {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.u.Keys()
}

// Config is the config as it is now (after the changes made through v).
func (v *Vault) Config() *cipher.Config {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.u.Config()
}

// Slot is the index of the slot that unlocked the vault (-1 once it has
// been removed through v).
func (v *Vault) Slot() int {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.u.Slot()
}

// Export returns the config's bytes, to keep somewhere safe: with any of
// its secrets it opens the vault (OpenOptions.Config) even if the store's
// copy is lost. It holds no secret in the clear, but it does hold every
// slot as it is now: a secret removed later still opens this copy.
func (v *Vault) Export() []byte {
	return v.Config().Marshal()
}

// commit writes the config of n conditionally and makes n current. A lost
// race leaves v as it was and returns ErrConflict.
func (v *Vault) commit(ctx context.Context, what string, n *cipher.Unlocked) error {
	if v.etag != "" {
		if err := v.probe(ctx, backend.PutOptions{IfMatch: `"s3cryptfs-probe-never-matches"`}); err != nil {
			return fmt.Errorf("vault: %s: nothing written: %w", what, err)
		}
	}
	data := n.Config().Marshal()
	opts := backend.PutOptions{IfMatch: v.etag}
	if v.etag == "" {
		opts = backend.PutOptions{IfNoneMatch: "*"}
	}
	oi, err := v.store.PutWith(ctx, v.key, bytes.NewReader(data), int64(len(data)), opts)
	switch {
	case err == nil:
		v.u, v.etag = n, oi.ETag
		// A new config (Init, Restore) could not be probed before: the
		// probe needs an object to hold a condition against.
		if err := v.probe(ctx, backend.PutOptions{IfNoneMatch: "*"}); err != nil {
			return fmt.Errorf("vault: %s: written, but %w", what, err)
		}
		return nil
	case errors.Is(err, backend.ErrPreconditionFailed) && v.etag == "":
		return fmt.Errorf("vault: %s: nothing written: %w; a vault opened from a config file changes the store only when the store has lost its config (%w)",
			what, ErrExists, err)
	case errors.Is(err, backend.ErrPreconditionFailed):
		return fmt.Errorf("vault: %s: nothing written: %w (open the vault again and retry): %w", what, ErrConflict, err)
	}
	return fmt.Errorf("vault: %s: write the config: %w", what, err)
}

// probe checks once per Vault that the store enforces conditions: a write
// of the stored config's own bytes under a condition that cannot hold must
// fail. On a store that honours conditions nothing is written; on one that
// does not, the config is rewritten with the bytes it already holds (so
// nothing changes but its ETag) and ErrNoConditionalWrites is returned.
func (v *Vault) probe(ctx context.Context, cond backend.PutOptions) error {
	if v.probed {
		return nil
	}
	data := v.u.Config().Marshal()
	_, err := v.store.PutWith(ctx, v.key, bytes.NewReader(data), int64(len(data)), cond)
	switch {
	case errors.Is(err, backend.ErrPreconditionFailed):
		v.probed = true
		return nil
	case err == nil:
		return fmt.Errorf("%w: a write conditional on %+v succeeded although the condition was false; "+
			"concurrent changes through this store could silently lose one, so changes are refused "+
			"(use a store with conditional writes: AWS S3, or MinIO)", ErrNoConditionalWrites, cond)
	}
	return fmt.Errorf("check that the store enforces conditional writes: %w", err)
}

// change applies f to the current state and commits the result.
func (v *Vault) change(ctx context.Context, what string, f func(u *cipher.Unlocked) (*cipher.Unlocked, error)) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	n, err := f(v.u)
	if err != nil {
		return fmt.Errorf("vault: %s: %w", what, err)
	}
	return v.commit(ctx, what, n)
}

// AddPassphrase adds a passphrase slot (kdf zero: cipher.DefaultKDF).
func (v *Vault) AddPassphrase(ctx context.Context, passphrase []byte, kdf cipher.KDFParams) error {
	return v.change(ctx, "add a passphrase", func(u *cipher.Unlocked) (*cipher.Unlocked, error) {
		return u.AddSlot(cipher.Passphrase(passphrase), kdf)
	})
}

// AddKeyFile adds a key-file slot for a 32-byte key.
func (v *Vault) AddKeyFile(ctx context.Context, key []byte) error {
	return v.change(ctx, "add a key file", func(u *cipher.Unlocked) (*cipher.Unlocked, error) {
		return u.AddSlot(cipher.KeyFile(key), cipher.KDFParams{})
	})
}

// AddRecoveryKey adds a slot for a new random recovery key and returns its
// printed form, to show the user once: it is stored nowhere else.
func (v *Vault) AddRecoveryKey(ctx context.Context) (string, error) {
	key, printed := cipher.NewRecoveryKey()
	err := v.change(ctx, "add a recovery key", func(u *cipher.Unlocked) (*cipher.Unlocked, error) {
		return u.AddSlot(cipher.RecoveryKey(key), cipher.KDFParams{})
	})
	clear(key)
	if err != nil {
		return "", err
	}
	return printed, nil
}

// AddKMS adds a slot that KMS key keyID opens (the config key encrypted by
// KMS under the vault's encryption context). It needs OpenOptions.KMS.
func (v *Vault) AddKMS(ctx context.Context, keyID string) error {
	if v.kms == nil {
		return errors.New("vault: add a KMS slot: no KMS configured")
	}
	return v.change(ctx, "add a KMS slot", func(u *cipher.Unlocked) (*cipher.Unlocked, error) {
		return u.AddKMSSlot(keyID, func(id string, plain []byte, encCtx map[string]string) ([]byte, error) {
			return v.kms.Encrypt(ctx, id, plain, encCtx)
		})
	})
}

// RemoveSlot removes slot i (cipher.Config.Slots order). The last slot is
// never removed.
func (v *Vault) RemoveSlot(ctx context.Context, i int) error {
	return v.change(ctx, fmt.Sprintf("remove slot %d", i), func(u *cipher.Unlocked) (*cipher.Unlocked, error) {
		return u.RemoveSlot(i)
	})
}

// ChangePassphrase rewraps the passphrase slot that unlocked the vault
// under a new passphrase, with a fresh salt; kdf (zero: keep the slot's)
// may raise the cost. The other slots and the master keys are unchanged.
func (v *Vault) ChangePassphrase(ctx context.Context, newPassphrase []byte, kdf cipher.KDFParams) error {
	return v.ChangeSecret(ctx, cipher.Passphrase(newPassphrase), kdf)
}

// ChangeSecret rewraps the slot that unlocked the vault under a new secret
// of the same kind (a passphrase, or a new key file).
func (v *Vault) ChangeSecret(ctx context.Context, secret cipher.Secret, kdf cipher.KDFParams) error {
	return v.change(ctx, "change the "+secret.Kind.String(), func(u *cipher.Unlocked) (*cipher.Unlocked, error) {
		return u.ChangeSecret(secret, kdf)
	})
}

// Rekey replaces the config key and rewraps every slot under the new one:
// the slot that unlocked v by itself, KMS slots through the KMS, every other
// slot with its secret from secrets (cipher.Unlocked.Rekey). After it, no
// earlier copy of the config (an S3 object version, a backup, an export)
// opens the current keyring with any secret, including removed ones. To
// revoke a secret that may have leaked: RemoveSlot, Rekey, Rotate, rewrite
// every object, DropKey the old master keys, and delete old versions of the
// config object.
func (v *Vault) Rekey(ctx context.Context, secrets ...cipher.Secret) error {
	return v.change(ctx, "replace the config key", func(u *cipher.Unlocked) (*cipher.Unlocked, error) {
		var encrypt cipher.KMSEncrypt
		if v.kms != nil {
			encrypt = func(id string, plain []byte, encCtx map[string]string) ([]byte, error) {
				return v.kms.Encrypt(ctx, id, plain, encCtx)
			}
		}
		return u.Rekey(secrets, encrypt)
	})
}

// Rotate makes a new random master key current and returns its id. Old
// keys stay in the keyring, so existing objects stay readable; new objects
// use the new key (once a mount unlocks the rotated config). DropKey
// removes an old key once no object uses it.
func (v *Vault) Rotate(ctx context.Context) (cipher.KeyID, error) {
	if err := v.change(ctx, "rotate the master key", (*cipher.Unlocked).Rotate); err != nil {
		return cipher.KeyID{}, err
	}
	return v.Keys().CurrentKeyID(), nil
}

// DropKey removes an old master key from the keyring. Objects still sealed
// under it become unreadable: the caller checks first that none is left
// (cipher.HeaderKeyID of every object's header).
func (v *Vault) DropKey(ctx context.Context, id cipher.KeyID) error {
	return v.change(ctx, "drop master key "+id.String(), func(u *cipher.Unlocked) (*cipher.Unlocked, error) {
		return u.DropKey(id)
	})
}

// Restore writes the config (as opened, with the changes made through v)
// to the store, which must have none (If-None-Match): for a vault opened
// from an exported config after the store lost its copy.
func (v *Vault) Restore(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.etag != "" {
		return fmt.Errorf("vault: restore: the vault was opened from the store's config, which is in place: %w", ErrExists)
	}
	return v.commit(ctx, "restore the config", v.u)
}

// InitOptions choose how Init creates a vault.
type InitOptions struct {
	// Secret opens the first slot (a passphrase or key file). It may be
	// zero when KMSKeyID is set: the vault is then opened by KMS (and the
	// recovery key).
	Secret    cipher.Secret
	KDF       cipher.KDFParams // passphrase cost; zero means cipher.DefaultKDF
	BlockSize int              // zero means cipher.DefaultBlockSize
	// NoRecoveryKey leaves out the recovery key slot Init adds by default.
	NoRecoveryKey bool
	// KMSKeyID adds a KMS slot for this key (needs KMS).
	KMSKeyID string
	KMS      KMS
	Key      string // the config object's name; empty means ConfigKey
	// EncryptNames makes a vault whose entry names are encrypted (its
	// keyring holds a name key; fs/names).
	EncryptNames bool
}

// Init creates a vault: a new version-2 config with a slot for
// opts.Secret, a recovery key slot (unless opts.NoRecoveryKey) and a KMS
// slot (with opts.KMSKeyID), written with If-None-Match so that it never
// replaces a config (ErrExists), even one created concurrently. It returns
// the vault and the printed recovery key, to show the user once.
func Init(ctx context.Context, store backend.Store, opts InitOptions) (*Vault, string, error) {
	v := &Vault{store: store, key: opts.Key, kms: opts.KMS}
	if v.key == "" {
		v.key = ConfigKey
	}
	// The write below is conditional (If-None-Match); this check first
	// also protects a vault on a store that would ignore the condition
	// (the write would replace it, and make every object unreadable).
	if _, err := store.Stat(ctx, v.key); err == nil {
		return nil, "", fmt.Errorf("vault: init: %s: %w; refusing to replace it (every object would become unreadable)", v.key, ErrExists)
	} else if !errors.Is(err, backend.ErrNotFound) {
		return nil, "", fmt.Errorf("vault: init: check for an existing config: %w", err)
	}
	first := opts.Secret
	var recovery []byte
	var printed string
	if !opts.NoRecoveryKey {
		recovery, printed = cipher.NewRecoveryKey()
		defer clear(recovery)
	}
	if first.Kind == 0 {
		if opts.KMSKeyID == "" {
			return nil, "", errors.New("vault: init: no secret and no KMS key: nothing could open the vault")
		}
		if recovery == nil {
			return nil, "", errors.New("vault: init: a KMS-only vault needs its recovery key (the KMS key may be lost or disabled)")
		}
		first = cipher.RecoveryKey(recovery)
		recovery = nil
	}
	newVault := cipher.NewVault
	if opts.EncryptNames {
		newVault = cipher.NewVaultEncryptedNames
	}
	u, err := newVault(first, opts.KDF, opts.BlockSize)
	if err != nil {
		return nil, "", fmt.Errorf("vault: init: %w", err)
	}
	if recovery != nil {
		if u, err = u.AddSlot(cipher.RecoveryKey(recovery), cipher.KDFParams{}); err != nil {
			return nil, "", fmt.Errorf("vault: init: %w", err)
		}
	}
	if opts.KMSKeyID != "" {
		if opts.KMS == nil {
			return nil, "", errors.New("vault: init: a KMS key id without a KMS")
		}
		u, err = u.AddKMSSlot(opts.KMSKeyID, func(id string, plain []byte, encCtx map[string]string) ([]byte, error) {
			return opts.KMS.Encrypt(ctx, id, plain, encCtx)
		})
		if err != nil {
			return nil, "", fmt.Errorf("vault: init: %w", err)
		}
	}
	if err := v.commit(ctx, "init", u); err != nil {
		if errors.Is(err, ErrNoConditionalWrites) {
			// Written, but on a store that cannot protect it from a
			// concurrent Init or change: take it back (it is ours, just
			// created) rather than leave a vault that cannot be
			// administered safely.
			if derr := store.Delete(ctx, v.key); derr != nil {
				return nil, "", fmt.Errorf("%w (and removing the config again failed: %v)", err, derr)
			}
			return nil, "", fmt.Errorf("vault: init: %w; the config was removed again", ErrNoConditionalWrites)
		}
		if errors.Is(err, ErrExists) {
			return nil, "", fmt.Errorf("vault: init: %s: %w; refusing to replace it (every object would become unreadable)", v.key, ErrExists)
		}
		return nil, "", err
	}
	return v, printed, nil
}
