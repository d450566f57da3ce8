package vault

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/local"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/internal/kmstest"
	"github.com/s3cryptfs/s3cryptfs/internal/vault/awskms"
)

// kmsEnv starts (or reuses) local-kms, points the standard AWS chain at it
// through the environment (AWS_ENDPOINT_URL_KMS and friends, as a user
// would) and returns the server, a fresh key and the production client.
func kmsEnv(t *testing.T) (*kmstest.Server, string, *awskms.KMS) {
	t.Helper()
	srv := kmstest.Get(t)
	for k, v := range srv.Env() {
		t.Setenv(k, v)
	}
	t.Setenv("AWS_CONFIG_FILE", "/dev/null")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
	k, err := awskms.New(ctxT(t), awskms.Config{AllowHTTP: true})
	if err != nil {
		t.Fatal(err)
	}
	return srv, srv.CreateKey(t), k
}

// TestKMSSlot: a vault with a KMS slot opens with no secret at all, to the
// same keys as its passphrase; a KMS-only vault opens by KMS or by its
// recovery key.
func TestKMSSlot(t *testing.T) {
	_, keyID, k := kmsEnv(t)
	for _, name := range []string{"mem", "local"} {
		t.Run(name, func(t *testing.T) {
			cipher.AllowWeakKDFForTests(t)
			var st backend.Store = mem.New()
			if name == "local" {
				var err error
				if st, err = local.New(t.TempDir()); err != nil {
					t.Fatal(err)
				}
			}
			v, rec, err := Init(ctxT(t), st, InitOptions{
				Secret: cipher.Passphrase(pass1), KDF: cipher.TestKDF, KMSKeyID: keyID, KMS: k,
			})
			if err != nil {
				t.Fatalf("Init with a KMS slot: %v", err)
			}
			slots := v.Config().Slots()
			if len(slots) != 3 || slots[2].Kind != cipher.SlotKMS || slots[2].KMSKeyID != keyID {
				t.Fatalf("slots %+v", slots)
			}
			byKMS, err := Open(ctxT(t), st, OpenOptions{KMS: k})
			if err != nil {
				t.Fatalf("Open by KMS: %v", err)
			}
			if byKMS.Slot() != 2 || byKMS.Keys().CurrentKeyID() != v.Keys().CurrentKeyID() {
				t.Fatalf("KMS opened slot %d, key %v", byKMS.Slot(), byKMS.Keys().CurrentKeyID())
			}
			// A vault opened by KMS administers like any other.
			if err := byKMS.AddPassphrase(ctxT(t), pass2, cipher.TestKDF); err != nil {
				t.Fatal(err)
			}
			mustOpen(t, st, cipher.Passphrase(pass2))
			mustOpen(t, st, recoverySecret(t, rec))
			if _, err := Open(ctxT(t), st, OpenOptions{}); err == nil || !strings.Contains(err.Error(), "no secret") {
				t.Errorf("Open with neither secret nor KMS: %v", err)
			}

			// KMS only (and the recovery key Init insists on).
			st2 := mem.New()
			w, rec2, err := Init(ctxT(t), st2, InitOptions{KMSKeyID: keyID, KMS: k})
			if err != nil {
				t.Fatalf("Init with KMS only: %v", err)
			}
			if s := w.Config().Slots(); len(s) != 2 || s[0].Kind != cipher.SlotRecovery || s[1].Kind != cipher.SlotKMS {
				t.Fatalf("KMS-only slots %+v", s)
			}
			if _, err := Open(ctxT(t), st2, OpenOptions{KMS: k}); err != nil {
				t.Fatalf("KMS-only vault by KMS: %v", err)
			}
			mustOpen(t, st2, recoverySecret(t, rec2))
			if _, _, err := Init(ctxT(t), mem.New(), InitOptions{KMSKeyID: keyID, KMS: k, NoRecoveryKey: true}); err == nil {
				t.Error("a KMS-only vault without a recovery key was created")
			}
		})
	}
}

// TestKMSAddSlot adds a KMS slot to a passphrase vault.
func TestKMSAddSlot(t *testing.T) {
	_, keyID, k := kmsEnv(t)
	st := mem.New()
	_, rec := initVault(t, st)
	v, err := Open(ctxT(t), st, OpenOptions{Secret: cipher.Passphrase(pass1), KMS: k})
	if err != nil {
		t.Fatal(err)
	}
	if err := v.AddKMS(ctxT(t), keyID); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctxT(t), st, OpenOptions{KMS: k}); err != nil {
		t.Fatalf("Open by the added KMS slot: %v", err)
	}
	// Replacing the config key re-encrypts the KMS slot through KMS.
	if err := v.Rekey(ctxT(t), recoverySecret(t, rec)); err != nil {
		t.Fatalf("Rekey: %v", err)
	}
	if _, err := Open(ctxT(t), st, OpenOptions{KMS: k}); err != nil {
		t.Fatalf("Open by KMS after Rekey: %v", err)
	}
	if err := mustOpen(t, st, cipher.Passphrase(pass1)).AddKMS(ctxT(t), keyID); err == nil {
		t.Error("AddKMS without a KMS client")
	}
}

// TestKMSDisabledKey: when KMS refuses (the key disabled), Open fails with
// an error that says so, names the key, and is not ErrWrongKey; other
// slots still open the vault; enabling the key again restores the slot.
func TestKMSDisabledKey(t *testing.T) {
	srv, keyID, k := kmsEnv(t)
	st := mem.New()
	cipher.AllowWeakKDFForTests(t)
	if _, _, err := Init(ctxT(t), st, InitOptions{Secret: cipher.Passphrase(pass1), KDF: cipher.TestKDF, KMSKeyID: keyID, KMS: k}); err != nil {
		t.Fatal(err)
	}
	admin := srv.Client()
	if _, err := admin.DisableKey(ctxT(t), &kms.DisableKeyInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}
	_, err := Open(ctxT(t), st, OpenOptions{KMS: k})
	if !errors.Is(err, awskms.ErrKeyUnusable) || !strings.Contains(err.Error(), "disabled") ||
		!strings.Contains(err.Error(), keyID) || errors.Is(err, cipher.ErrWrongKey) {
		t.Fatalf("Open with the KMS key disabled: %v, want a clear 'disabled' error", err)
	}
	mustOpen(t, st, cipher.Passphrase(pass1))
	if _, err := admin.EnableKey(ctxT(t), &kms.EnableKeyInput{KeyId: aws.String(keyID)}); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(ctxT(t), st, OpenOptions{KMS: k}); err != nil {
		t.Fatalf("Open after enabling the key again: %v", err)
	}
}

// TestKMSEncryptionContext: KMS itself refuses a ciphertext under another
// vault's encryption context, and a ciphertext of another key.
func TestKMSEncryptionContext(t *testing.T) {
	srv, keyID, k := kmsEnv(t)
	secret := bytes.Repeat([]byte{0x42}, 32)
	a := map[string]string{cipher.KMSContextKey: "00112233445566778899aabbccddeeff"}
	b := map[string]string{cipher.KMSContextKey: "ffeeddccbbaa99887766554433221100"}
	blob, err := k.Encrypt(ctxT(t), keyID, secret, a)
	if err != nil {
		t.Fatal(err)
	}
	got, err := k.Decrypt(ctxT(t), keyID, blob, a)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Decrypt with the right context: %v", err)
	}
	if _, err := k.Decrypt(ctxT(t), keyID, blob, b); !errors.Is(err, awskms.ErrRefused) || !strings.Contains(err.Error(), "encryption context") {
		t.Errorf("Decrypt with another vault's context: %v, want ErrRefused", err)
	}
	other := srv.CreateKey(t)
	if _, err := k.Decrypt(ctxT(t), other, blob, a); err == nil {
		t.Error("Decrypt naming another key succeeded")
	}
}

// TestKMSRefusesHTTP: without AllowHTTP the client refuses a plain-http
// endpoint before sending the config key anywhere.
func TestKMSRefusesHTTP(t *testing.T) {
	_, keyID, _ := kmsEnv(t)
	strict, err := awskms.New(ctxT(t), awskms.Config{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = strict.Encrypt(ctxT(t), keyID, make([]byte, 32), nil)
	if err == nil || !strings.Contains(err.Error(), "not https") {
		t.Fatalf("Encrypt over http: %v, want refused", err)
	}
}

func TestKMSConfigErrors(t *testing.T) {
	if _, err := awskms.New(ctxT(t), awskms.Config{Region: "eu-west-2", CABundle: "/nonexistent/ca.pem"}); err == nil ||
		!strings.Contains(err.Error(), "CA bundle") {
		t.Errorf("missing CA bundle: %v", err)
	}
}
