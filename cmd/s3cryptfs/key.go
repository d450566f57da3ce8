package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/internal/vault"
)

// The key-management commands: each opens the vault with any of its
// secrets (internal/vault), makes one change to the config object, and
// writes it conditionally on the version it read, so two concurrent
// changes cannot silently lose one. No data object is rewritten.

const newPassphraseEnv = "S3CRYPTFS_NEW_PASSPHRASE"

// adminTimeout bounds a command; KDF runs and KMS calls fit easily.
const adminTimeout = 2 * time.Minute

// unlockGroup registers the options every admin command shares.
func unlockGroup(o *vaultOpener) (flagGroup, flagGroup) {
	sec := newGroup("Unlock with (at most one; else KMS if the vault has a KMS slot, else $S3CRYPTFS_PASSPHRASE, else a prompt)")
	o.registerSecret(sec.fs)
	o.secret.registerRecovery(sec.fs)
	st := newGroup("Store")
	o.store.register(st.fs)
	return sec, st
}

// conflictHint adds what to do when another change won the race.
func conflictHint(err error) error {
	if errors.Is(err, vault.ErrConflict) {
		// The SDK's 412 details help no one here: say what happened.
		return errors.New("another change to the vault config was written while this one ran, and won; nothing was changed by this command: run it again")
	}
	return err
}

// readNewPassphrase reads a new passphrase from a file, the environment,
// or the terminal (asked twice).
func readNewPassphrase(file string) ([]byte, error) {
	if file != "" {
		b, err := readSecretFile(file, "passphrase file")
		if err != nil {
			return nil, err
		}
		b = trimNewline(b)
		if len(b) == 0 {
			return nil, fmt.Errorf("new passphrase file %s is empty", file)
		}
		return b, nil
	}
	if p := os.Getenv(newPassphraseEnv); p != "" {
		os.Unsetenv(newPassphraseEnv)
		return []byte(p), nil
	}
	fmt.Fprintln(os.Stderr, "New passphrase:")
	s, err := prompt(true)
	if err != nil {
		return nil, fmt.Errorf("new passphrase: %w (or use --new-passphrase-file, $%s)", err, newPassphraseEnv)
	}
	return s.b, nil
}

func newPasswdCommand() *cobra.Command {
	var o vaultOpener
	var newFile string
	sec, st := unlockGroup(&o)
	nw := newGroup("New passphrase")
	nw.fs.StringVar(&newFile, "new-passphrase-file", "", "read the new passphrase from this file (default: $"+newPassphraseEnv+", else a prompt, twice)")
	cmd := &cobra.Command{
		Use:   "passwd [options] STORE",
		Short: "change the passphrase that unlocks the vault",
		Long: `Change the passphrase of the passphrase slot it opens (the current passphrase
unlocks; the new one replaces it). Only the vault config changes: no data is
rewritten. A version-1 vault is upgraded to version 2 on the way.`,
		Args: exactArgs(1, "exactly one STORE"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.validate(args[0]); err != nil {
				return err
			}
			if o.secret.keyFile != "" || o.secret.recoveryKeyFile != "" {
				return usagef("passwd changes the passphrase it is unlocked with: give the current passphrase (use `recover` with a recovery key, `key add` to add a passphrase)")
			}
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			v, s, err := o.open(ctx, args[0])
			if err != nil {
				return err
			}
			if s.Kind != cipher.SlotPassphrase {
				return errors.New("the vault opened with KMS, not a passphrase: give the current passphrase with --passphrase-file (or add one with `key add --new-passphrase`)")
			}
			p, err := readNewPassphrase(newFile)
			if err != nil {
				return err
			}
			defer clear(p)
			if err := v.ChangePassphrase(ctx, p, cipher.KDFParams{}); err != nil {
				return conflictHint(err)
			}
			fmt.Printf("passphrase changed (slot %d); the old one no longer opens the vault\n", v.Slot())
			return nil
		},
	}
	addGroups(cmd, sec, nw, st)
	registerCompletions(cmd)
	return cmd
}

func newRecoverCommand() *cobra.Command {
	var o vaultOpener
	var newFile string
	sec, st := unlockGroup(&o)
	nw := newGroup("New passphrase")
	nw.fs.StringVar(&newFile, "new-passphrase-file", "", "read the new passphrase from this file (default: $"+newPassphraseEnv+", else a prompt, twice)")
	cmd := &cobra.Command{
		Use:   "recover --recovery-key-file FILE [options] STORE",
		Short: "set a new passphrase with the recovery key (the old passphrases stop working)",
		Long: `Unlock with the recovery key and set a new passphrase: a passphrase slot for it
is added, then every other passphrase slot is removed. The recovery key,
key files and KMS slots stay.`,
		Args: exactArgs(1, "exactly one STORE"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.validate(args[0]); err != nil {
				return err
			}
			if o.secret.recoveryKeyFile == "" {
				return usagef("recover needs --recovery-key-file FILE (the key init printed)")
			}
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			v, _, err := o.open(ctx, args[0])
			if err != nil {
				return err
			}
			p, err := readNewPassphrase(newFile)
			if err != nil {
				return err
			}
			defer clear(p)
			// Added first, then the old ones removed: if the command is
			// interrupted in between, both passphrases open the vault,
			// never neither.
			if err := v.AddPassphrase(ctx, p, cipher.KDFParams{}); err != nil {
				return conflictHint(err)
			}
			slots := v.Config().Slots()
			removed := 0
			for i := len(slots) - 2; i >= 0; i-- { // the new slot is last
				if slots[i].Kind != cipher.SlotPassphrase {
					continue
				}
				if err := v.RemoveSlot(ctx, i); err != nil {
					return fmt.Errorf("the new passphrase was added, but removing old passphrase slot %d failed: %w (run `s3cryptfs key remove` for it)", i, err)
				}
				removed++
			}
			fmt.Printf("new passphrase set; %d old passphrase slot(s) removed\n", removed)
			return nil
		},
	}
	addGroups(cmd, sec, nw, st)
	registerCompletions(cmd)
	return cmd
}

func newKeyCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "key",
		Short: "list, add and remove the vault's key slots",
		Args:  cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("want a subcommand: list, add or remove")
			}
			return usagef("unknown subcommand %q (want list, add or remove)", args[0])
		},
	}
	cmd.AddCommand(newKeyListCommand(), newKeyAddCommand(), newKeyRemoveCommand())
	return cmd
}

// slotJSON is one slot in `key list --json`.
type slotJSON struct {
	Slot     int    `json:"slot"`
	Kind     string `json:"kind"`
	KMSKeyID string `json:"kms_key_id,omitempty"`
	KDF      *struct {
		Time      uint32 `json:"time"`
		MemoryKiB uint32 `json:"memory_kib"`
		Threads   uint8  `json:"threads"`
	} `json:"kdf,omitempty"`
}

func newKeyListCommand() *cobra.Command {
	var o vaultOpener
	var asJSON bool
	var configFile string
	st := newGroup("Store")
	o.store.register(st.fs)
	out := newGroup("Output")
	out.fs.BoolVar(&asJSON, "json", false, "print JSON for scripts")
	out.fs.StringVar(&configFile, "config", "", "list the slots of this exported config instead of the store's")
	cmd := &cobra.Command{
		Use:   "list [options] STORE",
		Short: "list the key slots (needs no secret)",
		Long: `List the vault's key slots: index, kind, KMS key id, passphrase KDF cost. The
slot table is not secret, so no secret is asked for.`,
		Args: exactArgs(1, "exactly one STORE"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.store.validate(args[0]); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			var data []byte
			var err error
			if configFile != "" {
				data, err = readConfigFile(configFile)
			} else {
				st, oerr := openStore(ctx, args[0], &o.store)
				if oerr != nil {
					return oerr
				}
				data, err = readStoreConfig(ctx, st)
			}
			if err != nil {
				return err
			}
			cfg, err := parseVaultConfig(data, args[0])
			if err != nil {
				return err
			}
			return printSlots(os.Stdout, cfg, asJSON)
		},
	}
	addGroups(cmd, out, st)
	registerCompletions(cmd)
	return cmd
}

// namesMode says how the vault stores names: "encrypted" or "plaintext".
func namesMode(cfg *cipher.Config) string {
	if cfg.EncryptedNames() {
		return "encrypted"
	}
	return "plaintext"
}

func printSlots(w io.Writer, cfg *cipher.Config, asJSON bool) error {
	slots := cfg.Slots()
	if asJSON {
		out := struct {
			Version int        `json:"version"`
			Keys    int        `json:"master_keys"`
			Names   string     `json:"names"`
			Slots   []slotJSON `json:"slots"`
		}{cfg.Version(), cfg.NumKeys(), namesMode(cfg), []slotJSON{}}
		for i, s := range slots {
			j := slotJSON{Slot: i, Kind: s.Kind.String(), KMSKeyID: s.KMSKeyID}
			if s.Kind == cipher.SlotPassphrase {
				j.KDF = &struct {
					Time      uint32 `json:"time"`
					MemoryKiB uint32 `json:"memory_kib"`
					Threads   uint8  `json:"threads"`
				}{s.KDF.Time, s.KDF.MemoryKiB, s.KDF.Threads}
			}
			out.Slots = append(out.Slots, j)
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	fmt.Fprintf(w, "vault config version %d, %d master key(s), %s names\n", cfg.Version(), cfg.NumKeys(), namesMode(cfg))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SLOT\tKIND\tKMS KEY\tKDF")
	for i, s := range slots {
		kms, kdf := "-", "-"
		if s.KMSKeyID != "" {
			kms = s.KMSKeyID
		}
		if s.Kind == cipher.SlotPassphrase {
			kdf = fmt.Sprintf("argon2id t=%d m=%dMiB p=%d", s.KDF.Time, s.KDF.MemoryKiB>>10, s.KDF.Threads)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", i, s.Kind, kms, kdf)
	}
	return tw.Flush()
}

func newKeyAddCommand() *cobra.Command {
	var o vaultOpener
	var (
		newPass     bool
		newPassFile string
		newKeyFile  string
		recovery    bool
		kmsKeyID    string
	)
	sec, st := unlockGroup(&o)
	add := newGroup("Slot to add (exactly one)")
	add.fs.BoolVar(&newPass, "new-passphrase", false, "a passphrase ($"+newPassphraseEnv+", else a prompt, twice)")
	add.fs.StringVar(&newPassFile, "new-passphrase-file", "", "a passphrase read from this file")
	add.fs.StringVar(&newKeyFile, "new-key-file", "", "a new random key, written to this file (base64, mode 0600; never overwrites)")
	add.fs.BoolVar(&recovery, "recovery-key", false, "a new recovery key, printed once")
	add.fs.StringVar(&kmsKeyID, "kms-key-id", "", "a KMS slot for this KMS key (id, ARN or alias): mounts need no secret while the key is usable")
	cmd := &cobra.Command{
		Use:   "add [unlock options] --new-passphrase|--new-passphrase-file F|--new-key-file F|--recovery-key|--kms-key-id ID STORE",
		Short: "add a key slot",
		Args:  exactArgs(1, "exactly one STORE"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.validate(args[0]); err != nil {
				return err
			}
			n := 0
			for _, b := range []bool{newPass, newPassFile != "", newKeyFile != "", recovery, kmsKeyID != ""} {
				if b {
					n++
				}
			}
			if n != 1 {
				return usagef("give exactly one of --new-passphrase, --new-passphrase-file, --new-key-file, --recovery-key, --kms-key-id")
			}
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			v, _, err := o.open(ctx, args[0])
			if err != nil {
				return err
			}
			switch {
			case newPass || newPassFile != "":
				p, err := readNewPassphrase(newPassFile)
				if err != nil {
					return err
				}
				defer clear(p)
				err = v.AddPassphrase(ctx, p, cipher.KDFParams{})
				if err != nil {
					return conflictHint(err)
				}
			case newKeyFile != "":
				k, err := writeNewKeyFile(newKeyFile)
				if err != nil {
					return err
				}
				defer clear(k)
				if err := v.AddKeyFile(ctx, k); err != nil {
					if errors.Is(err, vault.ErrConflict) {
						os.Remove(newKeyFile) // its slot was not stored: the key opens nothing
						return conflictHint(err)
					}
					// Other failures may come after the write: keep the key.
					return fmt.Errorf("%w (the new key file %s was kept: `s3cryptfs key list` shows whether its slot was added)", err, newKeyFile)
				}
			case recovery:
				printed, err := v.AddRecoveryKey(ctx)
				if err != nil {
					return conflictHint(err)
				}
				fmt.Printf("recovery key (shown only this once; write it down and keep it offline)\n\n    %s\n\n", printed)
			default:
				if err := v.AddKMS(ctx, kmsKeyID); err != nil {
					return conflictHint(err)
				}
			}
			fmt.Printf("added slot %d (%s)\n", len(v.Config().Slots())-1, v.Config().Slots()[len(v.Config().Slots())-1].Kind)
			return nil
		},
	}
	addGroups(cmd, add, sec, st)
	registerCompletions(cmd)
	return cmd
}

func newKeyRemoveCommand() *cobra.Command {
	var o vaultOpener
	sec, st := unlockGroup(&o)
	cmd := &cobra.Command{
		Use:   "remove [unlock options] STORE SLOT",
		Short: "remove key slot SLOT (see key list); never the last one",
		Long: `Remove a key slot. Its secret stops opening the stored config, but a copy of
the config kept from before (an export, an S3 object version) still opens
with it: run rekey afterwards to make such copies useless (docs/FORMAT.md).`,
		Args: exactArgs(2, "STORE and SLOT"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.validate(args[0]); err != nil {
				return err
			}
			i, err := strconv.Atoi(args[1])
			if err != nil || i < 0 {
				return usagef("SLOT must be a slot number from `s3cryptfs key list`, not %q", args[1])
			}
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			v, _, err := o.open(ctx, args[0])
			if err != nil {
				return err
			}
			slots := v.Config().Slots()
			if i >= len(slots) {
				return fmt.Errorf("no slot %d: the vault has %d (0..%d; see `s3cryptfs key list`)", i, len(slots), len(slots)-1)
			}
			if len(slots) == 1 {
				return fmt.Errorf("slot %d is the vault's last: removing it would lock everyone out; add another slot first (`s3cryptfs key add`)", i)
			}
			if err := v.RemoveSlot(ctx, i); err != nil {
				return conflictHint(err)
			}
			fmt.Printf("removed slot %d (%s); run `s3cryptfs rekey` so that old copies of the config no longer open with its secret\n", i, slots[i].Kind)
			return nil
		},
	}
	addGroups(cmd, sec, st)
	registerCompletions(cmd)
	return cmd
}

func newConfigCommand() *cobra.Command {
	var o vaultOpener
	sec, st := unlockGroup(&o)
	export := &cobra.Command{
		Use:   "export [unlock options] STORE FILE",
		Short: "write a copy of the vault config to FILE (for mount --config when the store's is lost)",
		Long: `Unlock the vault (to check the copy is whole and opens) and write its config to
FILE (mode 0600, never overwriting). The file holds no secret in the clear,
but every slot as it is now: a secret removed later still opens this copy.`,
		Args: exactArgs(2, "STORE and FILE"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.validate(args[0]); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			v, _, err := o.open(ctx, args[0])
			if err != nil {
				return err
			}
			if err := writeNewFile(args[1], v.Export()); err != nil {
				return err
			}
			fmt.Printf("vault config written to %s; mount with --config %s if the store's copy is lost\n", args[1], shellQuote(args[1]))
			return nil
		},
	}
	addGroups(export, sec, st)
	registerCompletions(export)
	cmd := &cobra.Command{
		Use:   "config",
		Short: "export the vault config",
		Args:  cobra.ArbitraryArgs,
		RunE: func(_ *cobra.Command, args []string) error {
			return usagef("want a subcommand: export")
		},
	}
	cmd.AddCommand(export)
	return cmd
}

// writeNewFile creates path (never overwriting, not following a symlink,
// mode 0600) with data, synced.
func writeNewFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return fmt.Errorf("%s already exists; refusing to overwrite it (remove it or choose another name)", path)
		}
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

func newRotateCommand() *cobra.Command {
	var o vaultOpener
	var rewrite bool
	var parallel int
	sec, st := unlockGroup(&o)
	rw := newGroup("Rewrite")
	rw.fs.BoolVar(&rewrite, "rewrite", false, "instead of adding a key: re-encrypt every object still under an older key with the current one, then drop the older keys (resumable: run it again after an interruption)")
	rw.fs.IntVar(&parallel, "parallel", 4, "objects rewritten at once with --rewrite")
	cmd := &cobra.Command{
		Use:   "rotate [unlock options] [--rewrite] STORE",
		Short: "make a new master key current (new files use it from the next mount); --rewrite moves every object to it",
		Long: `Add a new random master key to the keyring and make it current. Existing
objects keep their key (all keys stay in the keyring) and stay readable;
files written by mounts made after this use the new key. Running mounts
keep the old current key until they are remounted.

rotate --rewrite then re-encrypts, under the current key, every object still
sealed under an older one (streamed, bounded memory, each replaced only if
it did not change meanwhile), and once none is left drops the older keys
from the keyring. Interrupted, it can simply be run again.`,
		Args: exactArgs(1, "exactly one STORE"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.validate(args[0]); err != nil {
				return err
			}
			if rewrite {
				return rotateRewrite(&o, args[0], parallel)
			}
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			v, _, err := o.open(ctx, args[0])
			if err != nil {
				return err
			}
			id, err := v.Rotate(ctx)
			if err != nil {
				return conflictHint(err)
			}
			fmt.Printf("new current master key %s (%d in the keyring); remount to use it for new files\n", id, v.Config().NumKeys())
			return nil
		},
	}
	addGroups(cmd, sec, st, rw)
	registerCompletions(cmd)
	return cmd
}

func newRekeyCommand() *cobra.Command {
	var o vaultOpener
	var alsoPass, alsoKey, alsoRecovery []string
	sec, st := unlockGroup(&o)
	oth := newGroup("Secrets of the other slots (each slot is rewrapped, so each needs its secret; KMS slots need KMS)")
	oth.fs.StringArrayVar(&alsoPass, "also-passphrase-file", nil, "a passphrase of another slot, from this file (repeatable)")
	oth.fs.StringArrayVar(&alsoKey, "also-key-file", nil, "a key file of another slot (repeatable)")
	oth.fs.StringArrayVar(&alsoRecovery, "also-recovery-key-file", nil, "a recovery key of another slot, from this file (repeatable)")
	cmd := &cobra.Command{
		Use:   "rekey [unlock options] [--also-...] STORE",
		Short: "replace the config key, so that no older copy of the config opens the current one",
		Long: `Replace the config key and rewrap every slot under the new one. After a
key remove, this makes older copies of the config (exports, S3 object
versions) useless for the current keyring with any removed secret. Every
slot must be rewrapped: the one you unlock with, KMS slots through KMS, and
the others with their secrets given by --also-* (or remove them first).`,
		Args: exactArgs(1, "exactly one STORE"),
		RunE: func(_ *cobra.Command, args []string) error {
			if err := o.validate(args[0]); err != nil {
				return err
			}
			var others []cipher.Secret
			defer func() {
				for _, s := range others {
					clear(s.Key)
				}
			}()
			for _, f := range alsoPass {
				b, err := readSecretFile(f, "passphrase file")
				if err != nil {
					return err
				}
				others = append(others, cipher.Passphrase(trimNewline(b)))
			}
			for _, f := range alsoKey {
				k, err := readKeyFile(f)
				if err != nil {
					return err
				}
				others = append(others, cipher.KeyFile(k))
			}
			for _, f := range alsoRecovery {
				k, err := readRecoveryKeyFile(f)
				if err != nil {
					return err
				}
				others = append(others, cipher.RecoveryKey(k))
			}
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			v, _, err := o.open(ctx, args[0])
			if err != nil {
				return err
			}
			if err := v.Rekey(ctx, others...); err != nil {
				return conflictHint(err)
			}
			fmt.Printf("config key replaced; %d slot(s) rewrapped\n", len(v.Config().Slots()))
			return nil
		},
	}
	addGroups(cmd, sec, oth, st)
	registerCompletions(cmd)
	return cmd
}
