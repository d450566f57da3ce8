package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
)

// initFlags are the options of `s3cryptfs init`.
type initFlags struct {
	store      storeFlags
	secret     secretFlags
	newKeyFile string
	blockSize  byteSize
}

func newInitCommand() *cobra.Command {
	var f initFlags
	sec := newGroup("Vault secret (at most one of these; else $S3CRYPTFS_PASSPHRASE, else a prompt)")
	f.secret.register(sec.fs, "use a key file (32 bytes as 64 hex digits or base64, mode 0600) instead of a passphrase")
	sec.fs.StringVar(&f.newKeyFile, "new-key-file", "", "create this key file (a new random key in base64, mode 0600; never overwrites) and use it instead of a passphrase")
	vault := newGroup("Vault")
	f.blockSize = byteSize(cipher.DefaultBlockSize)
	vault.fs.Var(&f.blockSize, "block-size", "plaintext bytes per encrypted block: a power of two from 4KiB to 1MiB")
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
	if newKeyFile != "" {
		// Written and synced before the vault exists, so that a vault is
		// never stored whose key did not reach the disk.
		k, err := writeNewKeyFile(newKeyFile)
		if err != nil {
			return err
		}
		s = secret{b: k, keyFile: true}
	} else if s, err = sec.read(true); err != nil {
		return err
	}
	cfg, _, err := cipher.NewConfig(s.b, cipher.ConfigOptions{BlockSize: int(blockSize), KeyFile: s.keyFile})
	if err == nil {
		data := cfg.Marshal()
		if _, err = st.Put(ctx, fs.ConfigKey, bytes.NewReader(data), int64(len(data)), nil); err != nil {
			err = fmt.Errorf("store the vault config: %w", err)
		}
	}
	if err != nil {
		if newKeyFile != "" {
			// Kept: a failed Put may still have stored the config.
			return fmt.Errorf("%w (the new key file %s was kept: retry with --key-file %s, or delete it)", err, newKeyFile, newKeyFile)
		}
		return err
	}
	fmt.Printf("created vault in %s (block size %d)\n", spec, cfg.BlockSize())
	if newKeyFile != "" {
		fmt.Printf("key file %s: the vault cannot be opened without it; keep a copy somewhere safe\n", newKeyFile)
	}
	return nil
}
