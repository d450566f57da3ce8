package cipher

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"testing"

	sha256simd "github.com/minio/sha256-simd"
)

var (
	testKeyFile  = pattern(32, 0x5a)
	testRecovery = pattern(32, 0xa5)
)

// fakeKMS stands in for KMS in unit tests: it "encrypts" by sealing under
// its own key with the encryption context as associated data, so a wrong
// context or key id fails as it would with KMS. (vault's tests use a real
// local-kms.)
type fakeKMS struct {
	key   []byte
	calls int
}

func newFakeKMS() *fakeKMS { return &fakeKMS{key: pattern(32, 0x33)} }

func kmsAD(keyID string, encCtx map[string]string) []byte {
	return []byte(fmt.Sprintf("%s|%v", keyID, encCtx))
}

func (f *fakeKMS) encrypt(keyID string, plain []byte, encCtx map[string]string) ([]byte, error) {
	f.calls++
	nonce := make([]byte, NonceSize)
	_, _ = rand.Read(nonce)
	return newGCM(f.key).Seal(nonce, nonce, plain, kmsAD(keyID, encCtx)), nil
}

func (f *fakeKMS) decrypt(keyID string, blob []byte, encCtx map[string]string) ([]byte, error) {
	f.calls++
	if len(blob) < NonceSize {
		return nil, errors.New("fake KMS: short blob")
	}
	p, err := newGCM(f.key).Open(nil, blob[:NonceSize], blob[NonceSize:], kmsAD(keyID, encCtx))
	if err != nil {
		return nil, errors.New("fake KMS: InvalidCiphertextException")
	}
	return p, nil
}

// newTestVault makes a version-2 vault with a passphrase slot (TestKDF).
func newTestVault(t testing.TB) *Unlocked {
	t.Helper()
	u, err := newVault(rand.Reader, Passphrase(testPass), TestKDF, MinBlockSize, true, false)
	if err != nil {
		t.Fatalf("newVault: %v", err)
	}
	return u
}

// fullVault has one slot of every kind and two master keys.
func fullVault(t testing.TB, kms *fakeKMS) *Unlocked {
	t.Helper()
	u := newTestVault(t)
	must := func(n *Unlocked, e error) *Unlocked {
		t.Helper()
		if e != nil {
			t.Fatal(e)
		}
		return n
	}
	u = must(u.addSlot(KeyFile(testKeyFile), KDFParams{}, true))
	u = must(u.addSlot(RecoveryKey(testRecovery), KDFParams{}, true))
	u = must(u.AddKMSSlot("alias/s3cryptfs-test", kms.encrypt))
	u = must(u.Rotate())
	return u
}

func reparse(t testing.TB, c *Config) *Config {
	t.Helper()
	c2, err := parseConfig(c.Marshal(), true)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	if !bytes.Equal(c2.Marshal(), c.Marshal()) {
		t.Fatal("parse+marshal is not the identity")
	}
	return c2
}

func TestConfigV2RoundTrip(t *testing.T) {
	kms := newFakeKMS()
	u := fullVault(t, kms)
	c := reparse(t, u.Config())
	if c.Version() != 2 || c.BlockSize() != MinBlockSize || c.NumKeys() != 2 {
		t.Fatalf("version %d, block size %d, %d keys", c.Version(), c.BlockSize(), c.NumKeys())
	}
	want := []SlotKind{SlotPassphrase, SlotKeyFile, SlotRecovery, SlotKMS}
	slots := c.Slots()
	if len(slots) != len(want) {
		t.Fatalf("%d slots, want %d", len(slots), len(want))
	}
	for i, s := range slots {
		if s.Kind != want[i] {
			t.Errorf("slot %d is %s, want %s", i, s.Kind, want[i])
		}
	}
	if slots[0].KDF != TestKDF || slots[3].KMSKeyID != "alias/s3cryptfs-test" {
		t.Errorf("slot details lost: %+v", slots)
	}
	ids := u.Keys().KeyIDs()
	for i, sec := range []Secret{Passphrase(testPass), KeyFile(testKeyFile), RecoveryKey(testRecovery)} {
		got, err := c.UnlockSecret(sec)
		if err != nil {
			t.Fatalf("unlock with the %s: %v", sec.Kind, err)
		}
		if got.Slot() != i || fmt.Sprint(got.Keys().KeyIDs()) != fmt.Sprint(ids) {
			t.Errorf("%s: slot %d, keys %v; want slot %d, keys %v", sec.Kind, got.Slot(), got.Keys().KeyIDs(), i, ids)
		}
	}
	got, err := c.UnlockKMS(kms.decrypt)
	if err != nil || got.Slot() != 3 || fmt.Sprint(got.Keys().KeyIDs()) != fmt.Sprint(ids) {
		t.Fatalf("unlock with KMS: slot %v, err %v", got, err)
	}
	// The compatibility entry point the mount uses finds the slot by itself.
	for _, sec := range [][]byte{testPass, testKeyFile, testRecovery} {
		k, err := c.Unlock(sec)
		if err != nil || k.CurrentKeyID() != ids[0] {
			t.Errorf("Unlock(%x...): %v", sec[:4], err)
		}
	}
	if c.VaultID() == ([16]byte{}) || c.KMSContext()[KMSContextKey] == "" {
		t.Error("no vault id")
	}
}

// TestConfigV2WrongSecretVsCorrupt: for every slot kind a wrong secret is
// ErrWrongKey and damage is ErrCorrupt, told apart by the checksum before
// any secret is tried.
func TestConfigV2WrongSecretVsCorrupt(t *testing.T) {
	kms := newFakeKMS()
	c := reparse(t, fullVault(t, kms).Config())
	for _, sec := range []Secret{
		Passphrase([]byte("Correct horse battery staple")),
		KeyFile(pattern(32, 1)),
		RecoveryKey(pattern(32, 2)),
		KeyFile(pattern(31, 1)),
	} {
		if _, err := c.UnlockSecret(sec); !errors.Is(err, ErrWrongKey) {
			t.Errorf("wrong %s: %v, want ErrWrongKey", sec.Kind, err)
		}
	}
	other := newFakeKMS()
	other.key = pattern(32, 0x44)
	if _, err := c.UnlockKMS(other.decrypt); err == nil || !strings.Contains(err.Error(), "InvalidCiphertext") {
		t.Errorf("KMS that cannot decrypt: %v", err)
	}
	// KMS answering with another 32-byte key: the keyring does not open.
	liar := func(string, []byte, map[string]string) ([]byte, error) { return pattern(32, 9), nil }
	if _, err := c.UnlockKMS(liar); !errors.Is(err, ErrCorrupt) {
		t.Errorf("KMS answering a wrong key: %v, want ErrCorrupt", err)
	}
	// A passphrase-only vault has no slot for a key file.
	if _, err := newTestVault(t).Config().UnlockSecret(KeyFile(testKeyFile)); !errors.Is(err, ErrWrongKey) ||
		!strings.Contains(err.Error(), "no key file slot") {
		t.Errorf("no such slot: %v", err)
	}
	data := c.Marshal()
	for _, off := range []int{0, 20, configV2SlotsOff + 10, len(data) / 2, len(data) - 40, len(data) - 1} {
		bad := bytes.Clone(data)
		bad[off] ^= 0x10
		if _, err := parseConfig(bad, true); !errors.Is(err, ErrCorrupt) {
			t.Errorf("flip at %d: %v, want ErrCorrupt", off, err)
		}
	}
	if _, err := parseConfig(data[:len(data)-1], true); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated: %v", err)
	}
	if _, err := parseConfig(append(bytes.Clone(data), 0), true); !errors.Is(err, ErrCorrupt) {
		t.Errorf("appended: %v", err)
	}
}

// fixSum recomputes the checksum, as someone editing the config on purpose
// would.
func fixSum(b []byte) []byte {
	sum := sha256simd.Sum256(b[:len(b)-checksumSize])
	copy(b[len(b)-checksumSize:], sum[:])
	return b
}

// TestConfigV2EveryByteAuthenticated flips every bit pattern 0x01 and
// 0x80 of every byte of a version-2 config with two slots and two keys, and
// recomputes the checksum: either the parser refuses it or no slot's
// secret opens it. Nothing is ever unlocked from an edited config.
func TestConfigV2EveryByteAuthenticated(t *testing.T) {
	u := newTestVault(t)
	u, err := u.addSlot(KeyFile(testKeyFile), KDFParams{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if u, err = u.Rotate(); err != nil {
		t.Fatal(err)
	}
	data := u.Config().Marshal()
	for i := 0; i < len(data)-checksumSize; i++ {
		for _, bit := range []byte{0x01, 0x80} {
			bad := bytes.Clone(data)
			bad[i] ^= bit
			if _, err := parseConfig(bad, true); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("byte %d ^%#x without checksum fix: %v, want ErrCorrupt", i, bit, err)
			}
			c, err := parseConfig(fixSum(bad), true)
			if err != nil {
				if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrWeakKDF) && !errors.Is(err, ErrKDFTooCostly) {
					t.Fatalf("byte %d: parse error of no class: %v", i, err)
				}
				continue
			}
			for _, sec := range []Secret{KeyFile(testKeyFile), Passphrase(testPass)} {
				if sec.Kind == SlotPassphrase && (c.v2.slots[0].kdf.MemoryKiB > 4096 || c.v2.slots[0].kdf.Time > 8) {
					continue // an edited cost: refused by the tag all the same, but slow to show
				}
				if _, err := c.UnlockSecret(sec); err == nil {
					t.Fatalf("byte %d ^%#x (checksum fixed): the %s still unlocks it", i, bit, sec.Kind)
				} else if !errors.Is(err, ErrWrongKey) && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("byte %d: unlock error of no class: %v", i, err)
				}
			}
		}
	}
}

// TestConfigV2OtherSlotEditIsCorrupt: editing a slot other than the one
// that opens (and fixing the checksum) is reported as a modified config,
// not as a wrong secret: the secret's own slot verified.
func TestConfigV2OtherSlotEditIsCorrupt(t *testing.T) {
	u, err := newTestVault(t).addSlot(KeyFile(testKeyFile), KDFParams{}, true)
	if err != nil {
		t.Fatal(err)
	}
	data := u.Config().Marshal()
	data[configV2SlotsOff+slotHeadSize+12+5] ^= 1 // the passphrase slot's salt
	c, err := parseConfig(fixSum(data), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.UnlockSecret(KeyFile(testKeyFile)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "modified") {
		t.Fatalf("key file after an edit of the passphrase slot: %v, want ErrCorrupt", err)
	}
	if _, err := c.UnlockSecret(Passphrase(testPass)); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("passphrase of the edited slot: %v, want ErrWrongKey", err)
	}
}

func TestConfigV2SlotLimits(t *testing.T) {
	u := newTestVault(t)
	var err error
	for i := 1; i < MaxSlots; i++ {
		if u, err = u.addSlot(KeyFile(pattern(32, byte(i))), KDFParams{}, true); err != nil {
			t.Fatalf("slot %d: %v", i, err)
		}
	}
	if _, err := u.addSlot(KeyFile(testKeyFile), KDFParams{}, true); err == nil || !strings.Contains(err.Error(), "most") {
		t.Fatalf("slot %d: %v, want refused", MaxSlots+1, err)
	}
	if _, err := u.AddKMSSlot("k", newFakeKMS().encrypt); err == nil {
		t.Fatalf("KMS slot %d accepted", MaxSlots+1)
	}
	c := reparse(t, u.Config())
	if len(c.Slots()) != MaxSlots {
		t.Fatalf("%d slots", len(c.Slots()))
	}
	if _, err := c.UnlockSecret(KeyFile(pattern(32, MaxSlots-1))); err != nil {
		t.Fatalf("last slot: %v", err)
	}
	// A count above the bound is refused before the slots are walked.
	for _, tc := range []struct {
		off  int
		val  byte
		what string
	}{{11, MaxSlots + 1, "slots"}, {11, 0, "slots"}, {12, MaxKeys + 1, "master keys"}, {12, 0, "master keys"}} {
		bad := u.Config().Marshal()
		bad[tc.off] = tc.val
		if _, err := parseConfig(fixSum(bad), true); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), tc.what) {
			t.Errorf("count %d at %d: %v", tc.val, tc.off, err)
		}
	}
	// Keys: MaxKeys at most.
	k := newTestVault(t)
	for i := 1; i < MaxKeys; i++ {
		if k, err = k.Rotate(); err != nil {
			t.Fatalf("rotation %d: %v", i, err)
		}
	}
	if _, err := k.Rotate(); err == nil {
		t.Fatalf("key %d accepted", MaxKeys+1)
	}
	if c := reparse(t, k.Config()); c.NumKeys() != MaxKeys {
		t.Fatalf("%d keys", c.NumKeys())
	}
	// The last slot cannot go.
	if _, err := newTestVault(t).RemoveSlot(0); err == nil || !strings.Contains(err.Error(), "last") {
		t.Fatalf("removing the last slot: %v", err)
	}
}

// craftV2 builds a config from raw slots with a dummy keyring: for parser
// bounds that no API call can produce.
func craftV2(slots []slot) []byte {
	c := &Config{log2Block: 12, v2: &configV2Data{slots: slots, nkeys: 1, ring: make([]byte, masterKeySize+TagSize)}}
	return c.marshalV2(true)
}

func TestConfigV2KDFBoundsPerSlot(t *testing.T) {
	costly := slot{kind: SlotPassphrase, kdf: KDFParams{Time: 17, MemoryKiB: 1 << 16, Threads: 1}}
	if _, err := parseConfig(craftV2([]slot{{kind: SlotKeyFile}, costly}), true); !errors.Is(err, ErrKDFTooCostly) {
		t.Errorf("slot above the cap: %v", err)
	}
	weak := slot{kind: SlotPassphrase, kdf: TestKDF}
	if _, err := parseConfig(craftV2([]slot{weak}), false); !errors.Is(err, ErrWeakKDF) {
		t.Errorf("slot below the minimum: %v", err)
	}
	// Each slot within the cap, but 16 of them add up to more than four
	// times the cap: refused before any KDF.
	big := slot{kind: SlotPassphrase, kdf: KDFParams{Time: 4, MemoryKiB: 1 << 20, Threads: 4}}
	many := []slot{big, big, big, big, big}
	if _, err := parseConfig(craftV2(many), true); !errors.Is(err, ErrKDFTooCostly) {
		t.Errorf("five slots at the cap: %v", err)
	}
	if _, err := parseConfig(craftV2(many[:4]), true); err != nil {
		t.Errorf("four slots at the cap: %v", err)
	}
	// Lengths: a KMS slot whose inner lengths disagree with its body.
	k := slot{kind: SlotKMS, kmsKeyID: "key", kmsBlob: []byte("blob")}
	good := craftV2([]slot{k})
	if _, err := parseConfig(good, true); err != nil {
		t.Fatalf("KMS slot: %v", err)
	}
	for _, off := range []int{configV2SlotsOff + 2, configV2SlotsOff + 4, configV2SlotsOff + 4 + 2 + 3} {
		for _, v := range []uint16{0, 1, 0xffff} {
			bad := bytes.Clone(good)
			binary.BigEndian.PutUint16(bad[off:], v)
			if _, err := parseConfig(fixSum(bad), true); !errors.Is(err, ErrCorrupt) {
				t.Errorf("length %d at %d: %v", v, off, err)
			}
		}
	}
	if _, err := parseConfig(craftV2([]slot{{kind: SlotKMS, kmsKeyID: "a b", kmsBlob: []byte("x")}}), true); !errors.Is(err, ErrCorrupt) {
		t.Errorf("KMS key id with a space: %v", err)
	}
	if _, err := parseConfig(craftV2([]slot{{kind: 9}}), true); !errors.Is(err, ErrCorrupt) {
		t.Errorf("unknown slot kind: %v", err)
	}
	huge := make([]byte, maxConfigSize+1)
	copy(huge, configMagic)
	huge[9] = 2
	if _, err := parseConfig(huge, true); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "at most") {
		t.Errorf("oversized config: %v", err)
	}
}

// TestConfigV1OpensAndUpgrades: a version-1 config opens through the new
// entry points, and its first change makes it version 2 with the same
// master key, so every object stays readable.
func TestConfigV1OpensAndUpgrades(t *testing.T) {
	for _, kind := range []SlotKind{SlotPassphrase, SlotKeyFile} {
		t.Run(kind.String(), func(t *testing.T) {
			AllowWeakKDFForTests(t)
			secret := testPass
			if kind == SlotKeyFile {
				secret = testKeyFile
			}
			c1, k1 := newTestConfig(t, ConfigOptions{KeyFile: kind == SlotKeyFile, BlockSize: MinBlockSize}, secret)
			obj, err := k1.NewFile()
			if err != nil {
				t.Fatal(err)
			}
			legacy, err := k1.newFileV1()
			if err != nil {
				t.Fatal(err)
			}
			c1 = reparse(t, c1)
			if c1.Version() != 1 || len(c1.Slots()) != 1 || c1.Slots()[0].Kind != kind || c1.NumKeys() != 1 {
				t.Fatalf("v1 seen as version %d, slots %+v", c1.Version(), c1.Slots())
			}
			u, err := c1.UnlockSecret(Secret{Kind: kind, Key: secret})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c1.UnlockSecret(Secret{Kind: SlotRecovery, Key: testRecovery}); !errors.Is(err, ErrWrongKey) {
				t.Errorf("v1 with a recovery key: %v", err)
			}
			u2, err := u.AddSlot(RecoveryKey(testRecovery), KDFParams{})
			if err != nil {
				t.Fatal(err)
			}
			c2 := reparse(t, u2.Config())
			if c2.Version() != 2 || len(c2.Slots()) != 2 || c2.Slots()[0].Kind != kind {
				t.Fatalf("upgraded: version %d, slots %+v", c2.Version(), c2.Slots())
			}
			if u.Config().Version() != 1 {
				t.Fatal("AddSlot changed its receiver")
			}
			for _, sec := range []Secret{{Kind: kind, Key: secret}, RecoveryKey(testRecovery)} {
				got, err := c2.UnlockSecret(sec)
				if err != nil {
					t.Fatalf("upgraded config with the %s: %v", sec.Kind, err)
				}
				if got.Keys().CurrentKeyID() != k1.CurrentKeyID() {
					t.Fatal("the upgrade changed the master key")
				}
				for _, h := range [][]byte{obj.Header(), legacy.Header()} {
					if _, err := got.Keys().OpenHeader(h); err != nil {
						t.Fatalf("object written before the upgrade: %v", err)
					}
				}
			}
			// The upgraded slot can change its secret too.
			u3, err := u2.ChangeSecret(Secret{Kind: kind, Key: pattern(len(secret), 7)}, KDFParams{})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := reparse(t, u3.Config()).UnlockSecret(Secret{Kind: kind, Key: secret}); !errors.Is(err, ErrWrongKey) {
				t.Errorf("old secret after change: %v", err)
			}
		})
	}
}

func TestConfigV2ChangeSecret(t *testing.T) {
	AllowWeakKDFForTests(t)
	u, err := newTestVault(t).AddSlot(KeyFile(testKeyFile), KDFParams{})
	if err != nil {
		t.Fatal(err)
	}
	newPass := []byte("a new passphrase")
	stronger := KDFParams{Time: 2, MemoryKiB: 128, Threads: 1}
	n, err := u.ChangeSecret(Passphrase(newPass), stronger)
	if err != nil {
		t.Fatal(err)
	}
	c := reparse(t, n.Config())
	if c.Slots()[0].KDF != stronger {
		t.Errorf("KDF %+v, want %+v", c.Slots()[0].KDF, stronger)
	}
	if _, err := c.UnlockSecret(Passphrase(testPass)); !errors.Is(err, ErrWrongKey) {
		t.Errorf("old passphrase: %v", err)
	}
	for _, sec := range []Secret{Passphrase(newPass), KeyFile(testKeyFile)} {
		if got, err := c.UnlockSecret(sec); err != nil || got.Keys().CurrentKeyID() != u.Keys().CurrentKeyID() {
			t.Errorf("%s after the change: %v", sec.Kind, err)
		}
	}
	if _, err := u.ChangeSecret(KeyFile(testKeyFile), KDFParams{}); err == nil {
		t.Error("a key file replaced a passphrase slot's secret")
	}
	// Opened by KMS: there is no secret to change.
	kms := newFakeKMS()
	k, err := u.AddKMSSlot("key", kms.encrypt)
	if err != nil {
		t.Fatal(err)
	}
	byKMS, err := reparse(t, k.Config()).UnlockKMS(kms.decrypt)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := byKMS.ChangeSecret(Passphrase(newPass), KDFParams{}); err == nil {
		t.Error("ChangeSecret on a vault opened by KMS")
	}
}

func TestConfigV2RotateAndDrop(t *testing.T) {
	u := newTestVault(t)
	old, err := u.Keys().NewFile()
	if err != nil {
		t.Fatal(err)
	}
	oldID := u.Keys().CurrentKeyID()
	r, err := u.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	got, err := reparse(t, r.Config()).UnlockSecret(Passphrase(testPass))
	if err != nil {
		t.Fatal(err)
	}
	k := got.Keys()
	if k.CurrentKeyID() == oldID || len(k.KeyIDs()) != 2 || k.KeyIDs()[1] != oldID {
		t.Fatalf("after rotation: keys %v, old %v", k.KeyIDs(), oldID)
	}
	if _, err := k.OpenHeader(old.Header()); err != nil {
		t.Fatalf("object from before the rotation: %v", err)
	}
	nf, err := k.NewFile()
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := HeaderKeyID(nf.Header()); !ok || id != k.CurrentKeyID() {
		t.Fatalf("new object names key %v, want the current %v", id, k.CurrentKeyID())
	}
	if id, _ := HeaderKeyID(old.Header()); id != oldID {
		t.Fatal("HeaderKeyID of the old object")
	}
	if _, err := u.Keys().OpenHeader(nf.Header()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("keys from before the rotation on a new object: %v", err)
	}
	if _, err := got.DropKey(k.CurrentKeyID()); err == nil {
		t.Fatal("dropped the current key")
	}
	d, err := got.DropKey(oldID)
	if err != nil {
		t.Fatal(err)
	}
	dk := reparse(t, d.Config())
	gd, err := dk.UnlockSecret(Passphrase(testPass))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gd.Keys().OpenHeader(old.Header()); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old object after dropping its key: %v", err)
	}
	if _, err := gd.Keys().OpenHeader(nf.Header()); err != nil {
		t.Fatalf("new object after dropping the old key: %v", err)
	}
	if _, err := gd.DropKey(oldID); err == nil {
		t.Fatal("dropped a key twice")
	}
}

func TestConfigV2RemoveSlot(t *testing.T) {
	kms := newFakeKMS()
	u := fullVault(t, kms)
	n, err := u.RemoveSlot(1) // the key file
	if err != nil {
		t.Fatal(err)
	}
	c := reparse(t, n.Config())
	if len(c.Slots()) != 3 || c.Slots()[1].Kind != SlotRecovery {
		t.Fatalf("slots %+v", c.Slots())
	}
	if _, err := c.UnlockSecret(KeyFile(testKeyFile)); !errors.Is(err, ErrWrongKey) {
		t.Errorf("removed key file: %v", err)
	}
	for _, sec := range []Secret{Passphrase(testPass), RecoveryKey(testRecovery)} {
		if _, err := c.UnlockSecret(sec); err != nil {
			t.Errorf("%s: %v", sec.Kind, err)
		}
	}
	if _, err := c.UnlockKMS(kms.decrypt); err != nil {
		t.Errorf("KMS: %v", err)
	}
	// Removing the slot that opened the vault: the handle keeps working
	// for other changes but cannot change that secret any more.
	self, err := n.RemoveSlot(0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := self.ChangeSecret(Passphrase([]byte("x")), KDFParams{}); err == nil {
		t.Error("changed the secret of a removed slot")
	}
	if _, err := self.Rotate(); err != nil {
		t.Errorf("rotate after removing the own slot: %v", err)
	}
}

func TestKMSContextBindsVault(t *testing.T) {
	kms := newFakeKMS()
	a, err := newTestVault(t).AddKMSSlot("key", kms.encrypt)
	if err != nil {
		t.Fatal(err)
	}
	var seen map[string]string
	spy := func(id string, blob []byte, ctx map[string]string) ([]byte, error) {
		seen = ctx
		return kms.decrypt(id, blob, ctx)
	}
	if _, err := a.Config().UnlockKMS(spy); err != nil {
		t.Fatal(err)
	}
	id := a.Config().VaultID()
	if want := fmt.Sprintf("%x", id[:]); seen[KMSContextKey] != want || len(seen) != 1 {
		t.Fatalf("encryption context %v, want {%s: %s}", seen, KMSContextKey, want)
	}
	// The KMS slot moved into another vault's config does not open there:
	// the encryption context names the first vault.
	b, err := newTestVault(t).AddKMSSlot("key", kms.encrypt)
	if err != nil {
		t.Fatal(err)
	}
	b.Config().v2.slots[1].kmsBlob = a.Config().v2.slots[1].kmsBlob
	if _, err := b.Config().UnlockKMS(kms.decrypt); err == nil || errors.Is(err, ErrCorrupt) {
		t.Fatalf("KMS blob of another vault: %v, want KMS to refuse", err)
	}
}

func TestRecoveryKeyFormat(t *testing.T) {
	key, printed := NewRecoveryKey()
	if len(printed) != 7*8+6 || strings.Count(printed, "-") != 6 {
		t.Fatalf("printed form %q", printed)
	}
	got, err := ParseRecoveryKey(printed)
	if err != nil || !bytes.Equal(got, key) {
		t.Fatalf("round trip: %v", err)
	}
	sloppy := strings.ToLower(strings.ReplaceAll(printed, "-", " ")) + "\n"
	sloppy = strings.NewReplacer("o", "0", "i", "1").Replace(sloppy)
	if got, err := ParseRecoveryKey(sloppy); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("as typed %q: %v", sloppy, err)
	}
	for i := 0; i < len(printed); i++ {
		if printed[i] == '-' {
			continue
		}
		typo := []byte(printed)
		typo[i] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"[(strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", typo[i])+1)%32]
		if _, err := ParseRecoveryKey(string(typo)); err == nil || errors.Is(err, ErrWrongKey) {
			t.Fatalf("typo at %d accepted or taken for a wrong key: %v", i, err)
		}
	}
	if _, err := ParseRecoveryKey(printed[:len(printed)-1]); err == nil {
		t.Fatal("short key accepted")
	}
	// Pinned (computed with Python too): the printed form is what a person
	// keeps on paper.
	if got, want := FormatRecoveryKey(make([]byte, 32)), "AAAAAAAA-AAAAAAAA-AAAAAAAA-AAAAAAAA-AAAAAAAA-AAAAAAAA-AAANPLSE"; got != want {
		t.Fatalf("zero key prints as %s", got)
	}
}

// TestConfigV2Rekey: removing a slot alone leaves the config key, so the
// removed secret with an old copy of the config still opens the current
// keyring; after Rekey it does not, while every remaining slot still opens.
func TestConfigV2Rekey(t *testing.T) {
	kms := newFakeKMS()
	u := fullVault(t, kms) // passphrase, key file, recovery, KMS
	oldCopy := reparse(t, u.Config())
	leaked := KeyFile(testKeyFile)
	removed, err := u.RemoveSlot(1)
	if err != nil {
		t.Fatal(err)
	}
	fromOld, err := oldCopy.UnlockSecret(leaked)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reparse(t, removed.Config()).openKeyring(fromOld.configKey, 0, rand.Reader); err != nil {
		t.Fatalf("without a rekey, the old copy's config key should still open the keyring (the documented limit): %v", err)
	}
	// Rekey needs every remaining slot's secret (or KMS).
	if _, err := removed.Rekey(nil, kms.encrypt); err == nil || !strings.Contains(err.Error(), "slot 1 (recovery key") {
		t.Fatalf("Rekey without the recovery key: %v", err)
	}
	if _, err := removed.Rekey([]Secret{RecoveryKey(testRecovery)}, nil); err == nil || !strings.Contains(err.Error(), "KMS") {
		t.Fatalf("Rekey without KMS: %v", err)
	}
	if _, err := removed.Rekey([]Secret{RecoveryKey(pattern(32, 3))}, kms.encrypt); err == nil {
		t.Fatal("Rekey with a wrong recovery key")
	}
	rk, err := removed.Rekey([]Secret{RecoveryKey(testRecovery)}, kms.encrypt)
	if err != nil {
		t.Fatal(err)
	}
	c := reparse(t, rk.Config())
	if _, err := c.openKeyring(fromOld.configKey, 0, rand.Reader); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("after Rekey the old config key opens the keyring: %v", err)
	}
	ids := u.Keys().KeyIDs()
	for _, sec := range []Secret{Passphrase(testPass), RecoveryKey(testRecovery)} {
		got, err := c.UnlockSecret(sec)
		if err != nil || fmt.Sprint(got.Keys().KeyIDs()) != fmt.Sprint(ids) {
			t.Errorf("%s after Rekey: %v", sec.Kind, err)
		}
	}
	if _, err := c.UnlockKMS(kms.decrypt); err != nil {
		t.Errorf("KMS after Rekey: %v", err)
	}
	if _, err := c.UnlockSecret(leaked); !errors.Is(err, ErrWrongKey) {
		t.Errorf("removed key file after Rekey: %v", err)
	}
	if c.VaultID() != u.Config().VaultID() {
		t.Error("Rekey changed the vault id")
	}
}

// TestKeyringEveryHeaderByteFlip: with several master keys, a header sealed
// under an old one opens, and every flipped bit of it fails: ErrWrongKey
// for the key id bytes (naming a key the ring lacks), ErrCorrupt for
// everything else; never a FileKey.
func TestKeyringEveryHeaderByteFlip(t *testing.T) {
	u := newTestVault(t)
	old := u.Keys()
	var err error
	for range 2 {
		if u, err = u.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	k := u.Keys()
	for _, mk := range []func() (*FileKey, error){old.NewFile, old.newFileV1} {
		f, err := mk()
		if err != nil {
			t.Fatal(err)
		}
		h := f.Header()
		if _, err := k.OpenHeader(h); err != nil {
			t.Fatalf("header of version %d under the oldest of 3 keys: %v", f.Version(), err)
		}
		for i := range h {
			for _, bit := range []byte{0x01, 0x80} {
				bad := bytes.Clone(h)
				bad[i] ^= bit
				_, err := k.OpenHeader(bad)
				want := ErrCorrupt
				if i >= hdrKeyIDOff && i < hdrKeyIDOff+keyIDSize {
					want = ErrWrongKey
				}
				if !errors.Is(err, want) {
					t.Fatalf("version %d, byte %d ^%#x: %v, want %v", f.Version(), i, bit, err, want)
				}
			}
		}
	}
}

// TestConfigV2EncryptedNames: a vault made with encrypted names records the
// flag, keeps one name key through every change of slots and keys (a
// rotation, a dropped key, a new passphrase, a rekey), and a config whose
// flag is flipped (by an editor that fixed the checksum) does not open.
// A vault made without it has no name key, as before the flag existed.
func TestConfigV2EncryptedNames(t *testing.T) {
	AllowWeakKDFForTests(t)
	plain, err := newVault(rand.Reader, Passphrase(testPass), TestKDF, MinBlockSize, true, false)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Config().EncryptedNames() || plain.Keys().NameKey() != nil {
		t.Fatal("a vault made without encrypted names has a name key")
	}
	u, err := newVault(rand.Reader, Passphrase(testPass), TestKDF, MinBlockSize, true, true)
	if err != nil {
		t.Fatal(err)
	}
	nk := bytes.Clone(u.Keys().NameKey())
	if len(nk) != 32 || !u.Config().EncryptedNames() {
		t.Fatalf("name key %x, flag %v", nk, u.Config().EncryptedNames())
	}
	reopen := func(u *Unlocked, sec Secret) *Unlocked {
		t.Helper()
		c, err := parseConfig(u.Config().Marshal(), true)
		if err != nil {
			t.Fatal(err)
		}
		o, err := c.UnlockSecret(sec)
		if err != nil {
			t.Fatal(err)
		}
		if !c.EncryptedNames() || !bytes.Equal(o.Keys().NameKey(), nk) {
			t.Fatalf("after a change: flag %v, name key %x, want %x", c.EncryptedNames(), o.Keys().NameKey(), nk)
		}
		return o
	}
	u = reopen(u, Passphrase(testPass))
	if u, err = u.Rotate(); err != nil {
		t.Fatal(err)
	}
	u = reopen(u, Passphrase(testPass))
	if u, err = u.DropKey(u.Keys().KeyIDs()[1]); err != nil {
		t.Fatal(err)
	}
	u = reopen(u, Passphrase(testPass))
	newPass := []byte("another passphrase")
	if u, err = u.ChangeSecret(Passphrase(newPass), TestKDF); err != nil {
		t.Fatal(err)
	}
	u = reopen(u, Passphrase(newPass))
	if u, err = u.Rekey(nil, nil); err != nil {
		t.Fatal(err)
	}
	u = reopen(u, Passphrase(newPass))

	// Flip the flag (and fix the checksum): the slot still opens, the
	// keyring does not.
	b := u.Config().Marshal()
	b[13] = 0
	b = b[:len(b)-32]
	sum := sha256simd.Sum256(b)
	b = append(b, sum[:]...)
	if c, err := parseConfig(b, true); err == nil {
		_, err = c.UnlockSecret(Passphrase(newPass))
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("flag cleared: unlock = %v, want ErrCorrupt", err)
		}
	} else if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("flag cleared: parse = %v", err)
	}
	// An unknown flag is refused by the parser.
	b = u.Config().Marshal()
	b[13] |= 0x80
	b = b[:len(b)-32]
	sum = sha256simd.Sum256(b)
	b = append(b, sum[:]...)
	if _, err := parseConfig(b, true); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("unknown flag: parse = %v, want ErrCorrupt", err)
	}
}
