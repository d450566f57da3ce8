package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
)

// cmdInit creates the vault config object in the store; it refuses to
// overwrite an existing one (that would make every object unreadable).
func cmdInit(args []string) error {
	fset := newFlagSet("init", "init [options] STORE")
	var sf storeFlags
	var sec secretFlags
	sf.register(fset)
	fset.StringVar(&sec.passphraseFile, "passphrase-file", "", "read the passphrase from this file (one trailing newline is ignored)")
	fset.StringVar(&sec.keyFile, "key-file", "", "use a key file (32 bytes as 64 hex digits or base64, mode 0600) instead of a passphrase")
	var newKeyFile string
	fset.StringVar(&newKeyFile, "new-key-file", "", "create this key file (a new random key in base64, mode 0600; never overwrites) and use it instead of a passphrase")
	blockSize := byteSize(cipher.DefaultBlockSize)
	fset.Var(&blockSize, "block-size", "plaintext bytes per encrypted block: a power of two from 4KiB to 1MiB")
	pos, err := parseInterspersed(fset, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one STORE, got %d arguments", len(pos))
	}
	spec := pos[0]
	if err := sf.validate(spec); err != nil {
		return err
	}
	if err := sec.validate(); err != nil {
		return err
	}
	if newKeyFile != "" && (sec.keyFile != "" || sec.passphraseFile != "") {
		return usagef("--new-key-file excludes --key-file and --passphrase-file")
	}
	if !isS3(spec) {
		// A new local vault may name a directory that does not exist yet.
		if err := os.MkdirAll(spec, 0o700); err != nil {
			return fmt.Errorf("create store directory: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := openStore(ctx, spec, &sf)
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
