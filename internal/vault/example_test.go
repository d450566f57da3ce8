package vault_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/internal/vault"
)

// The calls the CLI commands make: init, then open with any secret and
// change the config.
func Example() {
	ctx := context.Background()
	store := mem.New() // s3.New or local.New in the CLI
	keyFile := bytes.Repeat([]byte{0x11}, 32)

	// s3cryptfs init --key-file F: a key-file slot and a recovery key to
	// show once.
	v, recovery, err := vault.Init(ctx, store, vault.InitOptions{Secret: cipher.KeyFile(keyFile)})
	if err != nil {
		panic(err)
	}
	fmt.Println("slots:", v.Config().Slots()[0].Kind, "+", v.Config().Slots()[1].Kind)

	// s3cryptfs key add --passphrase (opened with the key file).
	v, err = vault.Open(ctx, store, vault.OpenOptions{Secret: cipher.KeyFile(keyFile)})
	if err != nil {
		panic(err)
	}
	if err := v.AddPassphrase(ctx, []byte("a passphrase"), cipher.MinimumKDF()); err != nil {
		panic(err)
	}

	// s3cryptfs mount with the recovery key, as typed by a person.
	key, err := cipher.ParseRecoveryKey(recovery)
	if err != nil {
		panic(err)
	}
	m, err := vault.Open(ctx, store, vault.OpenOptions{Secret: cipher.RecoveryKey(key)})
	if err != nil {
		panic(err)
	}
	fmt.Println("keys:", len(m.Keys().KeyIDs()), "config version:", m.Config().Version())

	// A wrong secret, and a change that lost a race.
	_, err = vault.Open(ctx, store, vault.OpenOptions{Secret: cipher.Passphrase([]byte("wrong"))})
	fmt.Println("wrong passphrase:", errors.Is(err, cipher.ErrWrongKey))
	if _, err := v.Rotate(ctx); err != nil {
		panic(err)
	}
	err = m.RemoveSlot(ctx, 0) // m read the config before the rotation
	fmt.Println("stale handle:", errors.Is(err, vault.ErrConflict))
	// Output:
	// slots: key file + recovery key
	// keys: 1 config version: 2
	// wrong passphrase: true
	// stale handle: true
}
