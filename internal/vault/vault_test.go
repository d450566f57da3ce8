package vault

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/local"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/backend/s3"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
	"github.com/s3cryptfs/s3cryptfs/internal/kmstest"
	"github.com/s3cryptfs/s3cryptfs/internal/miniotest"
)

func TestMain(m *testing.M) {
	code := miniotest.Main(m)
	kmstest.StopShared()
	os.Exit(code)
}

var (
	pass1 = []byte("first passphrase")
	pass2 = []byte("second passphrase")
)

// stores runs f once per store kind: memory, a local directory and MinIO
// (the last skipped under -short).
func stores(t *testing.T, f func(t *testing.T, newStore func(t *testing.T) backend.Store)) {
	t.Run("mem", func(t *testing.T) {
		f(t, func(*testing.T) backend.Store { return mem.New() })
	})
	t.Run("local", func(t *testing.T) {
		f(t, func(t *testing.T) backend.Store {
			s, err := local.New(t.TempDir())
			if err != nil {
				t.Fatal(err)
			}
			return s
		})
	})
	t.Run("minio", func(t *testing.T) {
		srv := miniotest.Get(t)
		for k, v := range map[string]string{
			"AWS_ACCESS_KEY_ID": srv.AccessKey, "AWS_SECRET_ACCESS_KEY": srv.SecretKey,
			"AWS_EC2_METADATA_DISABLED": "true",
			"AWS_CONFIG_FILE":           os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull,
		} {
			t.Setenv(k, v)
		}
		f(t, func(t *testing.T) backend.Store {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			st, err := s3.New(ctx, s3.Config{
				Bucket: srv.NewBucket(t), Endpoint: srv.Endpoint, Region: srv.Region, PathStyle: true, CABundle: srv.CAFile,
			})
			if err != nil {
				t.Fatal(err)
			}
			return st
		})
	})
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// initVault creates a vault with a cheap passphrase slot and a recovery key.
func initVault(t *testing.T, st backend.Store) (*Vault, string) {
	t.Helper()
	cipher.AllowWeakKDFForTests(t)
	v, rec, err := Init(ctxT(t), st, InitOptions{Secret: cipher.Passphrase(pass1), KDF: cipher.TestKDF, BlockSize: cipher.MinBlockSize})
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	if rec == "" {
		t.Fatal("Init returned no recovery key")
	}
	return v, rec
}

func open(t *testing.T, st backend.Store, sec cipher.Secret) (*Vault, error) {
	t.Helper()
	return Open(ctxT(t), st, OpenOptions{Secret: sec})
}

func mustOpen(t *testing.T, st backend.Store, sec cipher.Secret) *Vault {
	t.Helper()
	v, err := open(t, st, sec)
	if err != nil {
		t.Fatalf("Open with the %s: %v", sec.Kind, err)
	}
	return v
}

func recoverySecret(t *testing.T, printed string) cipher.Secret {
	t.Helper()
	key, err := cipher.ParseRecoveryKey(printed)
	if err != nil {
		t.Fatal(err)
	}
	return cipher.RecoveryKey(key)
}

func TestConfigKeyIsTheFilesystems(t *testing.T) {
	if ConfigKey != fs.ConfigKey {
		t.Fatalf("vault.ConfigKey %q, fs.ConfigKey %q", ConfigKey, fs.ConfigKey)
	}
}

func TestInitAndOpen(t *testing.T) {
	stores(t, func(t *testing.T, newStore func(*testing.T) backend.Store) {
		st := newStore(t)
		if _, err := open(t, st, cipher.Passphrase(pass1)); !errors.Is(err, ErrNoVault) {
			t.Fatalf("Open of an empty store: %v, want ErrNoVault", err)
		}
		v, rec := initVault(t, st)
		slots := v.Config().Slots()
		if len(slots) != 2 || slots[0].Kind != cipher.SlotPassphrase || slots[1].Kind != cipher.SlotRecovery {
			t.Fatalf("new vault's slots: %+v", slots)
		}
		id := v.Keys().CurrentKeyID()
		for _, sec := range []cipher.Secret{cipher.Passphrase(pass1), recoverySecret(t, rec)} {
			if got := mustOpen(t, st, sec); got.Keys().CurrentKeyID() != id {
				t.Errorf("%s opens another key", sec.Kind)
			}
		}
		if _, err := open(t, st, cipher.Passphrase(pass2)); !errors.Is(err, cipher.ErrWrongKey) {
			t.Errorf("wrong passphrase: %v, want ErrWrongKey", err)
		}
		if _, err := open(t, st, cipher.KeyFile(bytes.Repeat([]byte{1}, 32))); !errors.Is(err, cipher.ErrWrongKey) {
			t.Errorf("key file on a vault without one: %v, want ErrWrongKey", err)
		}
		// The store's copy is what a mount reads: the old entry point
		// unlocks it too.
		rc, err := st.Get(ctxT(t), ConfigKey, 0, -1, backend.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(rc)
		rc.Close()
		cfg, err := cipher.ParseConfig(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		if k, err := cfg.Unlock(pass1); err != nil || k.CurrentKeyID() != id {
			t.Errorf("Config.Unlock: %v", err)
		}
		// A second init never replaces the vault.
		_, _, err = Init(ctxT(t), st, InitOptions{Secret: cipher.Passphrase(pass2), KDF: cipher.TestKDF})
		if !errors.Is(err, ErrExists) {
			t.Fatalf("second Init: %v, want ErrExists", err)
		}
		if got := mustOpen(t, st, cipher.Passphrase(pass1)); got.Keys().CurrentKeyID() != id {
			t.Error("second Init changed the vault")
		}
	})
}

// TestConcurrentInit: of several Inits racing on one store, exactly one
// creates the vault; the others get ErrExists and the vault is the
// winner's.
func TestConcurrentInit(t *testing.T) {
	stores(t, func(t *testing.T, newStore func(*testing.T) backend.Store) {
		cipher.AllowWeakKDFForTests(t)
		st := newStore(t)
		const n = 4
		var wg sync.WaitGroup
		var mu sync.Mutex
		var won []int
		start := make(chan struct{})
		for i := range n {
			wg.Go(func() {
				<-start
				_, _, err := Init(ctxT(t), st, InitOptions{
					Secret: cipher.Passphrase([]byte{byte('a' + i)}), KDF: cipher.TestKDF, NoRecoveryKey: true,
				})
				switch {
				case err == nil:
					mu.Lock()
					won = append(won, i)
					mu.Unlock()
				case !errors.Is(err, ErrExists):
					t.Errorf("Init %d: %v, want success or ErrExists", i, err)
				}
			})
		}
		close(start)
		wg.Wait()
		if len(won) != 1 {
			t.Fatalf("%d Inits succeeded (%v), want 1", len(won), won)
		}
		for i := range n {
			_, err := open(t, st, cipher.Passphrase([]byte{byte('a' + i)}))
			if (err == nil) != (i == won[0]) {
				t.Errorf("passphrase of Init %d (winner %d): %v", i, won[0], err)
			}
		}
	})
}

// TestConcurrentChangePassphrase: two administrators open the vault and
// change the passphrase at the same time. One wins; the other gets
// ErrConflict and writes nothing; the vault opens with the winner's
// passphrase only (and still with the recovery key).
func TestConcurrentChangePassphrase(t *testing.T) {
	stores(t, func(t *testing.T, newStore func(*testing.T) backend.Store) {
		st := newStore(t)
		_, rec := initVault(t, st)
		a := mustOpen(t, st, cipher.Passphrase(pass1))
		b := mustOpen(t, st, cipher.Passphrase(pass1))
		newPass := map[*Vault][]byte{a: []byte("chosen by a"), b: []byte("chosen by b")}
		errs := map[*Vault]error{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		start := make(chan struct{})
		for _, v := range []*Vault{a, b} {
			wg.Go(func() {
				<-start
				err := v.ChangePassphrase(ctxT(t), newPass[v], cipher.KDFParams{})
				mu.Lock()
				errs[v] = err
				mu.Unlock()
			})
		}
		close(start)
		wg.Wait()
		var winner, loser *Vault
		switch {
		case errs[a] == nil && errs[b] != nil:
			winner, loser = a, b
		case errs[b] == nil && errs[a] != nil:
			winner, loser = b, a
		default:
			t.Fatalf("want exactly one change to succeed: a: %v, b: %v", errs[a], errs[b])
		}
		if err := errs[loser]; !errors.Is(err, ErrConflict) || !errors.Is(err, backend.ErrPreconditionFailed) ||
			!strings.Contains(err.Error(), "open the vault again") {
			t.Fatalf("the losing change: %v, want a clear ErrConflict", err)
		}
		mustOpen(t, st, cipher.Passphrase(newPass[winner]))
		mustOpen(t, st, recoverySecret(t, rec))
		for _, p := range [][]byte{pass1, newPass[loser]} {
			if _, err := open(t, st, cipher.Passphrase(p)); !errors.Is(err, cipher.ErrWrongKey) {
				t.Errorf("passphrase %q after the race: %v, want ErrWrongKey", p, err)
			}
		}
		// The loser's handle stays consistent: it still describes the
		// config it read, and any further change also conflicts.
		if err := loser.AddKeyFile(ctxT(t), bytes.Repeat([]byte{7}, 32)); !errors.Is(err, ErrConflict) {
			t.Errorf("stale handle: %v, want ErrConflict", err)
		}
		// The winner's handle goes on: its ETag is the stored one.
		if err := winner.AddKeyFile(ctxT(t), bytes.Repeat([]byte{7}, 32)); err != nil {
			t.Errorf("winner's next change: %v", err)
		}
		mustOpen(t, st, cipher.KeyFile(bytes.Repeat([]byte{7}, 32)))
	})
}

func TestSlots(t *testing.T) {
	stores(t, func(t *testing.T, newStore func(*testing.T) backend.Store) {
		st := newStore(t)
		v, rec := initVault(t, st)
		kf := bytes.Repeat([]byte{9}, 32)
		if err := v.AddKeyFile(ctxT(t), kf); err != nil {
			t.Fatal(err)
		}
		if err := v.AddPassphrase(ctxT(t), pass2, cipher.TestKDF); err != nil {
			t.Fatal(err)
		}
		rec2, err := v.AddRecoveryKey(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, sec := range []cipher.Secret{cipher.Passphrase(pass1), cipher.Passphrase(pass2), cipher.KeyFile(kf),
			recoverySecret(t, rec), recoverySecret(t, rec2)} {
			mustOpen(t, st, sec)
		}
		// Remove the first recovery key (slot 1) and the passphrase that
		// opened this handle (slot 0).
		if err := v.RemoveSlot(ctxT(t), 1); err != nil {
			t.Fatal(err)
		}
		if err := v.RemoveSlot(ctxT(t), 0); err != nil {
			t.Fatal(err)
		}
		if v.Slot() != -1 {
			t.Errorf("Slot() = %d after removing it", v.Slot())
		}
		for _, sec := range []cipher.Secret{cipher.Passphrase(pass1), recoverySecret(t, rec)} {
			if _, err := open(t, st, sec); !errors.Is(err, cipher.ErrWrongKey) {
				t.Errorf("removed %s: %v", sec.Kind, err)
			}
		}
		if err := v.ChangePassphrase(ctxT(t), []byte("x"), cipher.KDFParams{}); err == nil {
			t.Error("changed the passphrase of a removed slot")
		}
		// Down to the last slot (the slots are now key file, passphrase 2,
		// recovery key 2), which stays.
		w := mustOpen(t, st, cipher.KeyFile(kf))
		for _, i := range []int{2, 1} {
			if err := w.RemoveSlot(ctxT(t), i); err != nil {
				t.Fatal(err)
			}
		}
		if s := w.Config().Slots(); len(s) != 1 || s[0].Kind != cipher.SlotKeyFile {
			t.Fatalf("slots left: %+v", s)
		}
		before := w.Export()
		if err := w.RemoveSlot(ctxT(t), 0); err == nil || !strings.Contains(err.Error(), "last") {
			t.Fatalf("removing the last slot: %v", err)
		}
		if got := mustOpen(t, st, cipher.KeyFile(kf)).Export(); !bytes.Equal(got, before) {
			t.Error("a refused RemoveSlot changed the stored config")
		}
	})
}

// TestRotate: after a rotation new objects use a new master key, objects
// written before still open; DropKey removes the old key.
func TestRotate(t *testing.T) {
	stores(t, func(t *testing.T, newStore func(*testing.T) backend.Store) {
		st := newStore(t)
		v, _ := initVault(t, st)
		oldKeys := v.Keys()
		old, err := oldKeys.NewFile()
		if err != nil {
			t.Fatal(err)
		}
		sealed := old.Seal(old.Header(), []byte("written before the rotation"), 0, true)
		if _, err := st.Put(ctxT(t), "file", bytes.NewReader(sealed), int64(len(sealed)), nil); err != nil {
			t.Fatal(err)
		}
		newID, err := v.Rotate(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		if newID == oldKeys.CurrentKeyID() {
			t.Fatal("rotation kept the master key")
		}
		w := mustOpen(t, st, cipher.Passphrase(pass1))
		k := w.Keys()
		if k.CurrentKeyID() != newID || len(k.KeyIDs()) != 2 {
			t.Fatalf("after rotation: current %v, keys %v", k.CurrentKeyID(), k.KeyIDs())
		}
		readOld := func(k *cipher.Keys) error {
			rc, err := st.Get(ctxT(t), "file", 0, -1, backend.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			var buf bytes.Buffer
			buf.ReadFrom(rc)
			fk, err := k.OpenHeader(buf.Bytes()[:cipher.HeaderSize])
			if err != nil {
				return err
			}
			plain, err := fk.Open(nil, buf.Bytes()[cipher.HeaderSize:], 0, true)
			if err == nil && string(plain) != "written before the rotation" {
				t.Fatalf("old object reads %q", plain)
			}
			return err
		}
		if err := readOld(k); err != nil {
			t.Fatalf("object from before the rotation: %v", err)
		}
		nf, err := k.NewFile()
		if err != nil {
			t.Fatal(err)
		}
		if id, _ := cipher.HeaderKeyID(nf.Header()); id != newID {
			t.Fatalf("new object names key %v, want %v", id, newID)
		}
		if err := w.DropKey(ctxT(t), newID); err == nil {
			t.Fatal("dropped the current key")
		}
		if err := w.DropKey(ctxT(t), oldKeys.CurrentKeyID()); err != nil {
			t.Fatal(err)
		}
		if err := readOld(mustOpen(t, st, cipher.Passphrase(pass1)).Keys()); !errors.Is(err, cipher.ErrWrongKey) {
			t.Fatalf("object under a dropped key: %v, want ErrWrongKey", err)
		}
	})
}

// TestExportAndOpenWithConfig: an exported config opens the vault after the
// store's copy is deleted, and restores it; a config from a file never
// replaces one the store holds.
func TestExportAndOpenWithConfig(t *testing.T) {
	stores(t, func(t *testing.T, newStore func(*testing.T) backend.Store) {
		st := newStore(t)
		v, rec := initVault(t, st)
		exported := v.Export()
		id := v.Keys().CurrentKeyID()
		if err := st.Delete(ctxT(t), ConfigKey); err != nil {
			t.Fatal(err)
		}
		if _, err := open(t, st, cipher.Passphrase(pass1)); !errors.Is(err, ErrNoVault) {
			t.Fatalf("Open after the config was deleted: %v, want ErrNoVault", err)
		}
		w, err := Open(ctxT(t), st, OpenOptions{Secret: recoverySecret(t, rec), Config: exported})
		if err != nil {
			t.Fatalf("Open with the exported config: %v", err)
		}
		if w.Keys().CurrentKeyID() != id {
			t.Fatal("exported config holds another key")
		}
		if err := w.Restore(ctxT(t)); err != nil {
			t.Fatalf("Restore: %v", err)
		}
		if got := mustOpen(t, st, cipher.Passphrase(pass1)); !bytes.Equal(got.Export(), exported) {
			t.Error("restored config differs from the export")
		}
		// Now the store has a config again: a file's copy cannot replace
		// it, by Restore or by a change.
		x, err := Open(ctxT(t), st, OpenOptions{Secret: cipher.Passphrase(pass1), Config: exported})
		if err != nil {
			t.Fatal(err)
		}
		if err := x.Restore(ctxT(t)); !errors.Is(err, ErrExists) {
			t.Errorf("Restore over an existing config: %v, want ErrExists", err)
		}
		if err := x.AddPassphrase(ctxT(t), pass2, cipher.TestKDF); !errors.Is(err, ErrExists) {
			t.Errorf("change of a file's config over an existing one: %v, want ErrExists", err)
		}
		if err := mustOpen(t, st, cipher.Passphrase(pass1)).Restore(ctxT(t)); !errors.Is(err, ErrExists) {
			t.Errorf("Restore of a vault opened from the store: %v", err)
		}
		if _, err := Open(ctxT(t), st, OpenOptions{Secret: cipher.Passphrase(pass1), Config: exported[:40]}); !errors.Is(err, cipher.ErrCorrupt) {
			t.Errorf("truncated config file: %v, want ErrCorrupt", err)
		}
	})
}

// TestVersion1Vault: a vault made before slots existed opens, and its
// first change upgrades the config to version 2 with the same master key.
func TestVersion1Vault(t *testing.T) {
	stores(t, func(t *testing.T, newStore func(*testing.T) backend.Store) {
		cipher.AllowWeakKDFForTests(t)
		st := newStore(t)
		cfg, keys, err := cipher.NewConfig(pass1, cipher.ConfigOptions{KDF: cipher.TestKDF, BlockSize: cipher.MinBlockSize})
		if err != nil {
			t.Fatal(err)
		}
		data := cfg.Marshal()
		if _, err := st.Put(ctxT(t), ConfigKey, bytes.NewReader(data), int64(len(data)), nil); err != nil {
			t.Fatal(err)
		}
		v := mustOpen(t, st, cipher.Passphrase(pass1))
		if v.Config().Version() != 1 {
			t.Fatalf("version %d", v.Config().Version())
		}
		rec, err := v.AddRecoveryKey(ctxT(t))
		if err != nil {
			t.Fatal(err)
		}
		for _, sec := range []cipher.Secret{cipher.Passphrase(pass1), recoverySecret(t, rec)} {
			w := mustOpen(t, st, sec)
			if w.Config().Version() != 2 || w.Keys().CurrentKeyID() != keys.CurrentKeyID() {
				t.Fatalf("upgraded with the %s: version %d, key %v (want %v)", sec.Kind,
					w.Config().Version(), w.Keys().CurrentKeyID(), keys.CurrentKeyID())
			}
		}
	})
}

// TestRekey: the revocation sequence after a leak. The leaked key file's
// slot is removed and the config key replaced; the other secrets keep
// opening the vault, the leaked one opens only the old copy it may have.
func TestRekey(t *testing.T) {
	stores(t, func(t *testing.T, newStore func(*testing.T) backend.Store) {
		st := newStore(t)
		v, rec := initVault(t, st)
		leaked := bytes.Repeat([]byte{5}, 32)
		if err := v.AddKeyFile(ctxT(t), leaked); err != nil {
			t.Fatal(err)
		}
		oldCopy := v.Export()
		if err := v.RemoveSlot(ctxT(t), 2); err != nil {
			t.Fatal(err)
		}
		if err := v.Rekey(ctxT(t)); err == nil || !strings.Contains(err.Error(), "recovery key") {
			t.Fatalf("Rekey without the recovery key: %v", err)
		}
		if err := v.Rekey(ctxT(t), recoverySecret(t, rec)); err != nil {
			t.Fatal(err)
		}
		for _, sec := range []cipher.Secret{cipher.Passphrase(pass1), recoverySecret(t, rec)} {
			mustOpen(t, st, sec)
		}
		if _, err := open(t, st, cipher.KeyFile(leaked)); !errors.Is(err, cipher.ErrWrongKey) {
			t.Errorf("leaked key file on the current config: %v", err)
		}
		old, err := Open(ctxT(t), st, OpenOptions{Secret: cipher.KeyFile(leaked), Config: oldCopy})
		if err != nil {
			t.Fatalf("the old copy still opens with its secret (it holds the old config key only): %v", err)
		}
		if old.Keys().CurrentKeyID() != v.Keys().CurrentKeyID() {
			t.Error("Rekey changed the master key (only Rotate does)")
		}
	})
}

// lax is a store that ignores conditions, as some S3-compatible servers do.
type lax struct{ *mem.Store }

func (l lax) PutWith(ctx context.Context, key string, r io.Reader, size int64, opts backend.PutOptions) (backend.ObjectInfo, error) {
	return l.Store.PutWith(ctx, key, r, size, backend.PutOptions{Metadata: opts.Metadata})
}

// TestStoreIgnoringConditions: on a store that ignores If-Match and
// If-None-Match, Init refuses (and keeps nothing), changes are refused with
// the stored config unchanged, and Init never replaces an existing vault.
func TestStoreIgnoringConditions(t *testing.T) {
	cipher.AllowWeakKDFForTests(t)
	st := lax{mem.New()}
	_, _, err := Init(ctxT(t), st, InitOptions{Secret: cipher.Passphrase(pass1), KDF: cipher.TestKDF})
	if !errors.Is(err, ErrNoConditionalWrites) {
		t.Fatalf("Init on a store ignoring conditions: %v, want ErrNoConditionalWrites", err)
	}
	if _, err := st.Stat(ctxT(t), ConfigKey); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("the refused Init left a config: %v", err)
	}
	// A vault made elsewhere (on the same bytes) opens, but is not changed.
	good := mem.New()
	v, _ := initVault(t, good)
	data := v.Export()
	if _, err := st.Put(ctxT(t), ConfigKey, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	w := mustOpen(t, st, cipher.Passphrase(pass1))
	if err := w.ChangePassphrase(ctxT(t), pass2, cipher.KDFParams{}); !errors.Is(err, ErrNoConditionalWrites) {
		t.Fatalf("change on a store ignoring conditions: %v", err)
	}
	if got := mustOpen(t, st, cipher.Passphrase(pass1)).Export(); !bytes.Equal(got, data) {
		t.Error("the refused change altered the stored config")
	}
	if _, _, err := Init(ctxT(t), st, InitOptions{Secret: cipher.Passphrase(pass2), KDF: cipher.TestKDF}); !errors.Is(err, ErrExists) {
		t.Fatalf("Init over an existing vault on a store ignoring conditions: %v, want ErrExists", err)
	}
	mustOpen(t, st, cipher.Passphrase(pass1))
}
