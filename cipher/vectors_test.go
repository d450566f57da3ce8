package cipher

import (
	"bufio"
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// The test vectors live in docs/FORMAT.md, section "Test vectors", as
// `name = hex` lines inside fenced code blocks (a value may continue on
// following lines that hold only hex). This test reads the inputs from the
// document, recomputes every output with this package and compares, so the
// document and the code cannot drift apart. To regenerate after a deliberate
// format change: S3CRYPTFS_PRINT_VECTORS=1 go test -run TestVectors -v.

const formatDoc = "../docs/FORMAT.md"

var vectorLine = regexp.MustCompile(`^([a-z0-9][a-z0-9 .]*[a-z0-9]) += ([0-9a-f]*)$`)
var hexLine = regexp.MustCompile(`^ +([0-9a-f]+)$`)

func readVectors(t *testing.T) map[string][]byte {
	t.Helper()
	f, err := os.Open(formatDoc)
	if err != nil {
		t.Fatalf("test vectors: %v", err)
	}
	defer f.Close()
	out := map[string]string{}
	var inSection, inFence bool
	var last string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			inSection = strings.HasPrefix(line, "## Test vectors")
			continue
		case strings.HasPrefix(line, "```"):
			inFence = !inFence
			last = ""
			continue
		}
		if !inSection || !inFence {
			continue
		}
		if m := vectorLine.FindStringSubmatch(line); m != nil {
			if _, dup := out[m[1]]; dup {
				t.Fatalf("FORMAT.md: vector %q twice", m[1])
			}
			last = m[1]
			out[last] = m[2]
		} else if m := hexLine.FindStringSubmatch(line); m != nil && last != "" {
			out[last] += m[1]
		} else {
			last = ""
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	res := map[string][]byte{}
	for k, v := range out {
		b, err := hex.DecodeString(v)
		if err != nil {
			t.Fatalf("FORMAT.md: vector %q: %v", k, err)
		}
		res[k] = b
	}
	return res
}

// script is an io.Reader that hands out fixed chunks and insists that each
// Read asks for exactly the next chunk's length, so a change in the order
// the code consumes randomness fails loudly.
type script struct {
	chunks [][]byte
}

func (s *script) Read(p []byte) (int, error) {
	if len(s.chunks) == 0 {
		return 0, fmt.Errorf("script: unexpected read of %d bytes", len(p))
	}
	c := s.chunks[0]
	if len(c) != len(p) {
		return 0, fmt.Errorf("script: read of %d bytes, next chunk has %d", len(p), len(c))
	}
	s.chunks = s.chunks[1:]
	return copy(p, c), nil
}

// vectorPattern is the plaintext of object C: byte i is i mod 251.
func vectorPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

// computeVectors derives every output vector from the inputs in in.
func computeVectors(t *testing.T, in map[string][]byte) map[string][]byte {
	t.Helper()
	get := func(name string) []byte {
		v, ok := in[name]
		if !ok {
			t.Fatalf("FORMAT.md lacks input vector %q", name)
		}
		return v
	}
	out := map[string][]byte{}
	const bs = 4096

	// Passphrase config, production KDF parameters.
	pass := get("passphrase")
	master := get("master key")
	rng := &script{chunks: [][]byte{master, get("config salt"), get("config nonce")}}
	c, k, err := newConfig(rng, pass, ConfigOptions{BlockSize: bs, KDF: DefaultKDF}, false)
	if err != nil {
		t.Fatal(err)
	}
	if out["config wrapping key"], err = c.wrappingKey(pass); err != nil {
		t.Fatal(err)
	}
	out["config"] = c.Marshal()
	if k2, err := c.Unlock(pass); err != nil || !sameKeys(t, k2, k) {
		t.Fatalf("vector config does not unlock: %v", err)
	}

	// Key-file config holding the same master key.
	kf := get("key file")
	rng = &script{chunks: [][]byte{master, get("key file config salt"), get("key file config nonce")}}
	kc, _, err := newConfig(rng, kf, ConfigOptions{BlockSize: bs, KeyFile: true}, false)
	if err != nil {
		t.Fatal(err)
	}
	if out["key file wrapping key"], err = kc.wrappingKey(kf); err != nil {
		t.Fatal(err)
	}
	out["key file config"] = kc.Marshal()

	// Subkeys.
	for name, label := range map[string]string{
		"header wrap key": labelHeaderWrap,
		"commitment key":  labelCommitment,
	} {
		if out[name], err = hkdf.Key(newHash, master, nil, label, 32); err != nil {
			t.Fatal(err)
		}
	}
	if out["key id"], err = hkdf.Key(newHash, master, nil, labelKeyID, keyIDSize); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out["key id"], k.keyID[:]) || !bytes.Equal(out["commitment key"], k.commitKey) {
		t.Fatal("Keys derived other subkeys than the vector computation")
	}

	// Version 1: one file key; objects A (empty), B (13 bytes), C (4101
	// bytes) share it.
	k.rand = &script{chunks: [][]byte{
		get("file id"), get("data key"), get("header nonce"),
		get("object a block 0 nonce"), get("object b block 0 nonce"),
		get("object c block 0 nonce"), get("object c block 1 nonce"),
	}}
	fk, err := k.newFileV1()
	if err != nil {
		t.Fatal(err)
	}
	h := fk.Header()
	out["header"] = h
	out["header commitment"] = h[hdrCommitmentOff:]
	out["object a"] = append(bytes.Clone(h), fk.Seal(nil, nil, 0, true)...)
	out["object b"] = append(bytes.Clone(h), fk.Seal(nil, get("object b plaintext"), 0, true)...)
	pc := vectorPattern(bs + 5)
	objC := fk.Seal(bytes.Clone(h), pc[:bs], 0, false)
	objC = fk.Seal(objC, pc[bs:], 1, true)
	out["object c block 1"] = objC[HeaderSize+bs+BlockOverhead:]
	sum := sha256.Sum256(objC)
	out["object c sha256"] = sum[:]
	if len(objC) != 4289 {
		t.Fatalf("object c is %d bytes, FORMAT.md says 4289", len(objC))
	}

	// Everything computed must also open again.
	for _, name := range []string{"object a", "object b"} {
		if _, err := openAll(k, out[name]); err != nil {
			t.Fatalf("%s does not open: %v", name, err)
		}
	}
	if got, err := openAll(k, objC); err != nil || !bytes.Equal(got, pc) {
		t.Fatalf("object c does not open: %v", err)
	}

	// Version 2: object D (13 bytes) and object E (4101 bytes), each a
	// version of its own (one header each, as real writers do).
	if out["content key"], err = hkdf.Key(newHash, master, nil, labelContentKey, 32); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out["content key"], k.contentKey) {
		t.Fatal("Keys derived another content key than the vector computation")
	}
	k.rand = &script{chunks: [][]byte{
		get("object d file id"), get("object d salt"), get("object d block 0 nonce"),
		get("object e file id"), get("object e salt"),
		get("object e block 0 nonce"), get("object e block 1 nonce"),
	}}
	fd, err := k.NewFile()
	if err != nil {
		t.Fatal(err)
	}
	hd := fd.Header()
	out["object d header"] = hd
	if out["object d data key"], err = k.deriveDataKey(hd); err != nil {
		t.Fatal(err)
	}
	out["object d"] = fd.Seal(bytes.Clone(hd), get("object b plaintext"), 0, true)
	fe, err := k.NewFile()
	if err != nil {
		t.Fatal(err)
	}
	objE := fe.Seal(fe.Header(), pc[:bs], 0, false)
	objE = fe.Seal(objE, pc[bs:], 1, true)
	out["object e header"] = objE[:HeaderSize]
	out["object e block 1"] = objE[HeaderSize+bs+BlockOverhead:]
	sumE := sha256.Sum256(objE)
	out["object e sha256"] = sumE[:]
	if got, err := openAll(k, out["object d"]); err != nil || !bytes.Equal(got, get("object b plaintext")) {
		t.Fatalf("object d does not open: %v", err)
	}
	if got, err := openAll(k, objE); err != nil || !bytes.Equal(got, pc) {
		t.Fatalf("object e does not open: %v", err)
	}

	computeConfigV2Vectors(t, get, out)
	return out
}

// computeConfigV2Vectors builds the version-2 config of FORMAT.md: a
// passphrase slot (production KDF) and a key-file slot over a keyring of
// two master keys, "v2 master key 2" current and "master key" (the one of
// every vector above) after it, as a rotation leaves them.
func computeConfigV2Vectors(t *testing.T, get func(string) []byte, out map[string][]byte) {
	t.Helper()
	master, master2 := get("master key"), get("v2 master key 2")
	u := &Unlocked{
		cfg:       &Config{log2Block: 12, v2: &configV2Data{}},
		configKey: get("v2 config key"),
		masters:   [][]byte{master2, master},
		rand: &script{chunks: [][]byte{
			get("v2 passphrase slot salt"), get("v2 passphrase slot nonce"),
			get("v2 key file slot salt"), get("v2 key file slot nonce"),
			get("v2 keyring nonce"),
		}},
	}
	copy(u.cfg.v2.vaultID[:], get("v2 vault id"))
	for _, sec := range []struct {
		kind SlotKind
		key  []byte
		name string
	}{{SlotPassphrase, get("passphrase"), "v2 passphrase slot wrapping key"}, {SlotKeyFile, get("key file"), "v2 key file slot wrapping key"}} {
		s := slot{kind: sec.kind}
		if sec.kind == SlotPassphrase {
			s.kdf = DefaultKDF
		}
		if _, err := io.ReadFull(u.rand, s.salt[:]); err != nil {
			t.Fatal(err)
		}
		kek, err := slotKEK(&s, sec.key)
		if err != nil {
			t.Fatal(err)
		}
		out[sec.name] = kek
		if err := u.wrapSlot(&s, kek); err != nil {
			t.Fatal(err)
		}
		u.cfg.v2.slots = append(u.cfg.v2.slots, s)
	}
	if _, err := u.seal(); err != nil {
		t.Fatal(err)
	}
	out["v2 config"] = u.Config().Marshal()
	out["v2 keyring key"] = keyringKey(get("v2 config key"))
	id2, err := hkdf.Key(newHash, master2, nil, labelKeyID, keyIDSize)
	if err != nil {
		t.Fatal(err)
	}
	out["v2 key id 2"] = id2

	// The same vault with encrypted names: flag 0x01, one key-file slot,
	// the keyring "master key" then the name key.
	un := &Unlocked{
		cfg:       &Config{log2Block: 12, v2: &configV2Data{flags: FlagEncryptedNames}},
		configKey: get("v2 config key"),
		masters:   [][]byte{master},
		nameKey:   get("name key"),
		rand: &script{chunks: [][]byte{
			get("v2 key file slot salt"), get("v2 key file slot nonce"), get("v2 keyring nonce"),
		}},
	}
	copy(un.cfg.v2.vaultID[:], get("v2 vault id"))
	ks := slot{kind: SlotKeyFile}
	if _, err := io.ReadFull(un.rand, ks.salt[:]); err != nil {
		t.Fatal(err)
	}
	kek, err := slotKEK(&ks, get("key file"))
	if err != nil {
		t.Fatal(err)
	}
	if err := un.wrapSlot(&ks, kek); err != nil {
		t.Fatal(err)
	}
	un.cfg.v2.slots = append(un.cfg.v2.slots, ks)
	if _, err := un.seal(); err != nil {
		t.Fatal(err)
	}
	out["names config"] = un.Config().Marshal()
	if c, err := parseConfig(out["names config"], false); err != nil {
		t.Fatalf("names config does not parse: %v", err)
	} else if got, err := c.UnlockSecret(KeyFile(get("key file"))); err != nil || !bytes.Equal(got.Keys().NameKey(), get("name key")) || !c.EncryptedNames() {
		t.Fatalf("names config: %v", err)
	}

	// The stored bytes open with either secret, to both keys.
	c, err := parseConfig(out["v2 config"], false)
	if err != nil {
		t.Fatalf("v2 config does not parse: %v", err)
	}
	for _, sec := range []Secret{Passphrase(get("passphrase")), KeyFile(get("key file"))} {
		got, err := c.UnlockSecret(sec)
		if err != nil {
			t.Fatalf("v2 config does not unlock with the %s: %v", sec.Kind, err)
		}
		ids := got.Keys().KeyIDs()
		if len(ids) != 2 || !bytes.Equal(ids[0][:], id2) || !bytes.Equal(ids[1][:], out["key id"]) {
			t.Fatalf("v2 config keyring: %v", ids)
		}
	}
}

func TestVectors(t *testing.T) {
	in := readVectors(t)
	out := computeVectors(t, in)
	if os.Getenv("S3CRYPTFS_PRINT_VECTORS") != "" {
		names := make([]string, 0, len(out))
		for n := range out {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			s := hex.EncodeToString(out[n])
			t.Logf("%s = %s", n, s)
		}
	}
	for name, want := range out {
		got, ok := in[name]
		if !ok {
			t.Errorf("FORMAT.md lacks output vector %q = %x", name, want)
			continue
		}
		if !bytes.Equal(got, want) {
			t.Errorf("vector %q:\n FORMAT.md %x\n computed  %x", name, got, want)
		}
	}
}
