package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
	"github.com/s3cryptfs/s3cryptfs/internal/vault"
	"github.com/s3cryptfs/s3cryptfs/internal/vaultread"
)

// readerCommands are the commands that read a vault without mounting it:
// ls, cat, get and verify (see internal/vaultread).
func readerCommands() []*cobra.Command {
	return []*cobra.Command{newLsCommand(), newCatCommand(), newGetCommand(), newVerifyCommand()}
}

// readFlags are the options every reading command shares with mount: where
// the store is, how to unlock it, and how many requests to run at once.
type readFlags struct {
	store     storeFlags
	secret    secretFlags
	kms       kmsFlags
	clientEnc bool
	parallel  int
}

func (r *readFlags) groups(parallelHelp string) []flagGroup {
	sec := newGroup("Vault secret (at most one of these; else $S3CRYPTFS_PASSPHRASE, else a prompt)")
	r.secret.register(sec.fs, "unlock with a key file (32 bytes as 64 hex digits or base64, mode 0600)")
	r.kms.register(sec.fs)
	sec.fs.BoolVar(&r.clientEnc, "client-encryption", true, "the vault is encrypted (false: objects hold plaintext, as mounted with --client-encryption=false)")
	st := newGroup("Store")
	r.store.register(st.fs)
	st.fs.IntVar(&r.parallel, "parallel", vaultread.DefaultParallel, parallelHelp)
	return []flagGroup{sec, st}
}

// openVault opens the store and unlocks its vault as mount does (the same
// options and secret sources), through internal/vault. Keys are nil for a
// plaintext store (--client-encryption=false).
func (r *readFlags) openVault(ctx context.Context, spec string) (backend.Store, *cipher.Keys, error) {
	if err := r.store.validate(spec); err != nil {
		return nil, nil, err
	}
	if err := r.secret.validate(); err != nil {
		return nil, nil, err
	}
	if r.parallel < 1 || r.parallel > 256 {
		return nil, nil, usagef("--parallel must be from 1 to 256, not %d", r.parallel)
	}
	st, err := openStore(ctx, spec, &r.store)
	if err != nil {
		return nil, nil, err
	}
	// Looked for before asking for a secret, so that a wrong STORE is
	// reported without a useless prompt.
	_, err = st.Stat(ctx, fs.ConfigKey)
	switch {
	case !r.clientEnc && err == nil:
		return nil, nil, errors.New("the store holds an encrypted vault (" + fs.ConfigKey + "); drop --client-encryption=false")
	case !r.clientEnc && errors.Is(err, backend.ErrNotFound):
		return st, nil, nil
	case errors.Is(err, backend.ErrNotFound):
		return nil, nil, errors.New("no vault config (" + fs.ConfigKey + ") in the store: wrong STORE, or a store of plaintext (--client-encryption=false)")
	case err != nil:
		return nil, nil, fmt.Errorf("read the vault config: %w", err)
	}
	data, err := readStoreConfig(ctx, st)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := parseVaultConfig(data, spec)
	if err != nil {
		return nil, nil, err
	}
	// Any slot, as mount: a key file, a recovery key, a passphrase, or KMS.
	sec, err := vaultSecret(&r.secret, cfg)
	if err != nil {
		return nil, nil, err
	}
	v, err := vault.Open(ctx, st, vault.OpenOptions{Secret: sec, KMS: &lazyKMS{f: &r.kms}})
	if err != nil {
		return nil, nil, explainUnlock(err, sec)
	}
	return st, v.Keys(), nil
}

// isTerminal reports whether w is a terminal: progress is shown only then,
// so that scripts and pipes get the report alone.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// pathArg turns a PATH operand into a vault path (a usage error if bad).
func pathArg(p string) (string, error) {
	c, err := vaultread.CleanPath(p)
	if err != nil {
		return "", usagef("%v", err)
	}
	return c, nil
}
