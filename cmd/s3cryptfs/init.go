package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
	"github.com/s3cryptfs/s3cryptfs/internal/vault"
)

// initFlags are the options of `s3cryptfs init`.
type initFlags struct {
	store      storeFlags
	secret     secretFlags
	newKeyFile string
	blockSize  byteSize
	noRecovery bool
	plainNames bool
	kmsKeyID   string
	kms        kmsFlags
}

func newInitCommand() *cobra.Command {
	var f initFlags
	sec := newGroup("Vault secret (at most one of these; else $S3CRYPTFS_PASSPHRASE, else a prompt)")
	f.secret.register(sec.fs, "use a key file (32 bytes as 64 hex digits or base64, mode 0600) instead of a passphrase")
	sec.fs.StringVar(&f.newKeyFile, "new-key-file", "", "create this key file (a new random key in base64, mode 0600; never overwrites) and use it instead of a passphrase")
	vault := newGroup("Vault")
	f.blockSize = byteSize(cipher.DefaultBlockSize)
	vault.fs.Var(&f.blockSize, "block-size", "plaintext bytes per encrypted block: a power of two from 4KiB to 1MiB")
	vault.fs.BoolVar(&f.plainNames, "plaintext-names", false, "keep file and directory names readable in the store (keys mirror paths, browsable by other S3 tools); by default names are encrypted")
	vault.fs.BoolVar(&f.noRecovery, "no-recovery-key", false, "do not create a recovery key (by default one is printed once: it opens the vault if the passphrase or key file is lost)")
	vault.fs.StringVar(&f.kmsKeyID, "kms-key-id", "", "also add a slot that this KMS key opens (no secret needed to mount); with no other secret option, the vault opens by KMS and the recovery key only")
	f.kms.register(vault.fs)
	st := newGroup("Store (give init the same --sse options the mounts will use)")
	f.store.register(st.fs)
	cmd := &cobra.Command{
		Use:   "init [options] STORE",
		Short: "create the vault config in STORE",
		Long: `Create the vault config (.s3cryptfs.conf) in STORE, s3://bucket[/prefix] or a
local directory (created if missing). Refuses a store that already has one.`,
		Args: exactArgs(1, "exactly one STORE"),
		RunE: func(_ *cobra.Command, args []string) error { return cmdInit(&f, args[0]) },
	}
	addGroups(cmd, sec, vault, st)
	registerCompletions(cmd)
	return cmd
}

// cmdInit creates the vault config object in the store; it refuses to
// overwrite an existing one (that would make every object unreadable).
func cmdInit(f *initFlags, spec string) error {
	sf, sec, newKeyFile, blockSize := &f.store, &f.secret, f.newKeyFile, f.blockSize
	if err := sf.validate(spec); err != nil {
		return err
	}
	if err := sec.validate(); err != nil {
		return err
	}
	if newKeyFile != "" && (sec.keyFile != "" || sec.passphraseFile != "" || sec.passwordCommand != "") {
		return usagef("--new-key-file excludes --key-file, --passphrase-file and --password-command")
	}
	if !isS3(spec) {
		// A new local vault may name a directory that does not exist yet.
		if err := os.MkdirAll(spec, 0o700); err != nil {
			return fmt.Errorf("create store directory: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := openStore(ctx, spec, sf)
	if err != nil {
		return err
	}
	if _, err := st.Stat(ctx, fs.ConfigKey); err == nil {
		return fmt.Errorf("%s already holds a vault config (%s); refusing to overwrite it", spec, fs.ConfigKey)
	} else if !errors.Is(err, backend.ErrNotFound) {
		return fmt.Errorf("check for an existing vault config: %w", err)
	}
	var s secret
	kmsOnly := f.kmsKeyID != "" && !sec.given() && os.Getenv(passphraseEnv) == "" && newKeyFile == ""
	switch {
	case kmsOnly:
		if f.noRecovery {
			return usagef("a vault opened by KMS alone needs its recovery key (the KMS key may be lost or disabled): drop --no-recovery-key, or add a secret option")
		}
	case newKeyFile != "":
		// Written and synced before the vault exists, so that a vault is
		// never stored whose key did not reach the disk.
		k, err := writeNewKeyFile(newKeyFile)
		if err != nil {
			return err
		}
		s = secret{b: k, keyFile: true}
	default:
		if s, err = sec.read(true); err != nil {
			return err
		}
	}
	opts := vault.InitOptions{BlockSize: int(blockSize), NoRecoveryKey: f.noRecovery, KMSKeyID: f.kmsKeyID, EncryptNames: !f.plainNames}
	switch {
	case kmsOnly:
	case s.keyFile:
		opts.Secret = cipher.KeyFile(s.b)
	default:
		opts.Secret = cipher.Passphrase(s.b)
	}
	if f.kmsKeyID != "" {
		opts.KMS = &lazyKMS{f: &f.kms}
	}
	v, recovery, err := vault.Init(ctx, st, opts)
	clear(s.b)
	if err != nil {
		if errors.Is(err, vault.ErrExists) {
			err = fmt.Errorf("%s already holds a vault config (%s); refusing to overwrite it", spec, fs.ConfigKey)
		}
		if newKeyFile != "" {
			// Kept: a failed Put may still have stored the config.
			return fmt.Errorf("%w (the new key file %s was kept: retry with --key-file %s, or delete it)", err, newKeyFile, newKeyFile)
		}
		return err
	}
	fmt.Printf("created vault in %s (block size %d)\n", spec, v.Config().BlockSize())
	if newKeyFile != "" {
		fmt.Printf("key file %s: the vault cannot be opened without it; keep a copy somewhere safe\n", newKeyFile)
	}
	if f.kmsKeyID != "" {
		fmt.Printf("KMS key %s opens the vault: mount needs no secret while the key is usable\n", f.kmsKeyID)
	}
	if recovery != "" {
		// Printed once, on stdout, and stored nowhere: it is the way back
		// in when every other secret is lost.
		fmt.Printf("\nrecovery key (shown only this once; write it down and keep it offline, apart from the passphrase)\n\n    %s\n\n", recovery)
		fmt.Println("it unlocks the vault with --recovery-key-file FILE, and `s3cryptfs recover` sets a new passphrase with it")
	}
	return nil
}
