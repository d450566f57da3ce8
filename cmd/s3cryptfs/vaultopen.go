package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/internal/vault"
	"github.com/s3cryptfs/s3cryptfs/internal/vault/awskms"
)

// kmsFlags configure the KMS client for KMS slots. Credentials, region and
// endpoint otherwise follow AWS conventions (AWS_REGION,
// AWS_ENDPOINT_URL_KMS, AWS_CA_BUNDLE, profiles), as for the S3 store.
type kmsFlags struct {
	region    string
	endpoint  string
	caBundle  string
	allowHTTP bool
}

func (k *kmsFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&k.endpoint, "kms-endpoint", "", "KMS endpoint URL for KMS slots (default: $AWS_ENDPOINT_URL_KMS, else AWS)")
	fs.StringVar(&k.region, "kms-region", "", "KMS region (default: the AWS config chain)")
	fs.StringVar(&k.caBundle, "kms-ca-bundle", "", "PEM file of CA certificates to trust for the KMS endpoint (default: $AWS_CA_BUNDLE)")
	fs.BoolVar(&k.allowHTTP, "kms-allow-http", false, "allow a plain http:// KMS endpoint (a local test KMS only: the vault's config key crosses it)")
}

// client makes the KMS client; it makes no request.
func (k *kmsFlags) client(ctx context.Context) (vault.KMS, error) {
	c, err := awskms.New(ctx, awskms.Config{Region: k.region, Endpoint: k.endpoint, CABundle: k.caBundle, AllowHTTP: k.allowHTTP})
	if err != nil {
		return nil, err
	}
	return c, nil
}

// lazyKMS creates the KMS client on first use, so that a vault opened
// with a passphrase needs no AWS configuration for KMS.
type lazyKMS struct {
	f *kmsFlags
	c vault.KMS
}

func (l *lazyKMS) get(ctx context.Context) (vault.KMS, error) {
	if l.c == nil {
		c, err := l.f.client(ctx)
		if err != nil {
			return nil, err
		}
		l.c = c
	}
	return l.c, nil
}

func (l *lazyKMS) Encrypt(ctx context.Context, keyID string, p []byte, encCtx map[string]string) ([]byte, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.Encrypt(ctx, keyID, p, encCtx)
}

func (l *lazyKMS) Decrypt(ctx context.Context, keyID string, b []byte, encCtx map[string]string) ([]byte, error) {
	c, err := l.get(ctx)
	if err != nil {
		return nil, err
	}
	return c.Decrypt(ctx, keyID, b, encCtx)
}

// hasKMSSlot reports whether the config has a slot KMS can open.
func hasKMSSlot(cfg *cipher.Config) bool {
	for _, s := range cfg.Slots() {
		if s.Kind == cipher.SlotKMS {
			return true
		}
	}
	return false
}

// vaultSecret reads the secret that unlocks a vault: a key file, a
// recovery key file, a passphrase (file, command, environment); with none
// of them, a vault that has a KMS slot is opened by KMS (the zero Secret),
// and otherwise the passphrase is asked for. cfg may be nil (not read yet):
// then the prompt is used.
func vaultSecret(s *secretFlags, cfg *cipher.Config) (cipher.Secret, error) {
	if s.recoveryKeyFile != "" {
		k, err := readRecoveryKeyFile(s.recoveryKeyFile)
		if err != nil {
			return cipher.Secret{}, err
		}
		return cipher.RecoveryKey(k), nil
	}
	if !s.given() && os.Getenv(passphraseEnv) == "" && cfg != nil && hasKMSSlot(cfg) {
		return cipher.Secret{}, nil
	}
	sec, err := s.read(false)
	if err != nil {
		return cipher.Secret{}, err
	}
	if sec.keyFile {
		return cipher.KeyFile(sec.b), nil
	}
	return cipher.Passphrase(sec.b), nil
}

// readRecoveryKeyFile reads a recovery key as init printed it (groups of
// base32 with a checksum; case, spaces and dashes do not matter).
func readRecoveryKeyFile(path string) ([]byte, error) {
	b, err := readSecretFile(path, "recovery key file")
	if err != nil {
		return nil, err
	}
	k, err := cipher.ParseRecoveryKey(strings.TrimSpace(string(b)))
	clear(b)
	if err != nil {
		return nil, fmt.Errorf("recovery key file %s: %w (copy the key exactly as init printed it)", path, err)
	}
	return k, nil
}

// encodeSecret and decodeSecret carry a secret through the pipe to the
// background mount: its kind in the first byte (0: open with KMS), then
// the key.
func encodeSecret(s cipher.Secret) []byte {
	return append([]byte{byte(s.Kind)}, s.Key...)
}

func decodeSecret(b []byte) (cipher.Secret, error) {
	if len(b) == 0 {
		return cipher.Secret{}, errors.New("read secret: nothing received from the parent process")
	}
	return cipher.Secret{Kind: cipher.SlotKind(b[0]), Key: b[1:]}, nil
}

// readConfigFile reads an exported vault config (config export).
func readConfigFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("--config %s: %w", path, err)
	}
	return b, nil
}

// readStoreConfig returns the store's vault config bytes, with a message
// that says what to do when there is none.
func readStoreConfig(ctx context.Context, st backend.Store) ([]byte, error) {
	data, err := readObject(ctx, st, vault.ConfigKey)
	if errors.Is(err, backend.ErrNotFound) {
		return nil, errors.New("no vault config (" + vault.ConfigKey + ") in the store: run `s3cryptfs init` first, or give a copy with --config FILE (from `s3cryptfs config export`)")
	}
	if err != nil {
		return nil, fmt.Errorf("read the vault config: %w", err)
	}
	return data, nil
}

// parseVaultConfig parses config bytes with the usual explanations.
func parseVaultConfig(data []byte, where string) (*cipher.Config, error) {
	cfg, err := cipher.ParseConfig(data)
	if errors.Is(err, cipher.ErrKDFTooCostly) {
		return nil, fmt.Errorf("vault config: %w; s3cryptfs never writes such a config: has %s been tampered with?", err, where)
	}
	if err != nil {
		return nil, fmt.Errorf("vault config %s: %w (if the store's copy is damaged, mount with --config FILE from `s3cryptfs config export`)", where, err)
	}
	return cfg, nil
}

// explainUnlock turns a failure to unlock into one line with the fix.
func explainUnlock(err error, s cipher.Secret) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, cipher.ErrWrongKey) && s.Kind == 0:
		return fmt.Errorf("no KMS slot opens the vault: %v; give a passphrase, key file or recovery key instead", err)
	case errors.Is(err, cipher.ErrWrongKey) && s.Kind == cipher.SlotRecovery && strings.Contains(err.Error(), "no recovery key slot"):
		return errors.New("the vault has no recovery key slot (made with --no-recovery-key, or before version 2): unlock with its passphrase or key file")
	case errors.Is(err, cipher.ErrWrongKey) && s.Kind == cipher.SlotRecovery:
		return errors.New("wrong recovery key: it opens none of the vault's recovery key slots")
	case errors.Is(err, cipher.ErrWrongKey):
		return errors.New("wrong passphrase or key file")
	case s.Kind == 0:
		return fmt.Errorf("unlock with KMS failed (nothing mounted or changed; --passphrase-file, --key-file or --recovery-key-file unlock without KMS): %s", strings.TrimPrefix(err.Error(), "vault: "))
	}
	return fmt.Errorf("unlock the vault: %w", err)
}

// vaultOpener is what every command that unlocks a vault shares: the
// store, the secret, KMS, and an optional exported config.
type vaultOpener struct {
	store  storeFlags
	secret secretFlags
	kms    kmsFlags

	st backend.Store // set by open
}

func (o *vaultOpener) registerSecret(fs *pflag.FlagSet) {
	o.secret.register(fs, "unlock with a key file (32 bytes as 64 hex digits or base64, mode 0600)")
	o.kms.register(fs)
}

func (o *vaultOpener) validate(spec string) error {
	if err := o.store.validate(spec); err != nil {
		return err
	}
	return o.secret.validate()
}

// open opens the store and unlocks its vault for a change.
func (o *vaultOpener) open(ctx context.Context, spec string) (*vault.Vault, cipher.Secret, error) {
	st, err := openStore(ctx, spec, &o.store)
	if err != nil {
		return nil, cipher.Secret{}, err
	}
	o.st = st
	data, err := readStoreConfig(ctx, st)
	if err != nil {
		return nil, cipher.Secret{}, err
	}
	cfg, err := parseVaultConfig(data, spec)
	if err != nil {
		return nil, cipher.Secret{}, err
	}
	sec, err := vaultSecret(&o.secret, cfg)
	if err != nil {
		return nil, cipher.Secret{}, err
	}
	// Open reads the config again, with its ETag: the change is made
	// conditional on exactly what was unlocked.
	v, err := vault.Open(ctx, st, vault.OpenOptions{Secret: sec, KMS: &lazyKMS{f: &o.kms}})
	if err != nil {
		return nil, sec, explainUnlock(err, sec)
	}
	return v, sec, nil
}
