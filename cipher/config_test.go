package cipher

import (
	"bytes"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
	"time"
)

var testPass = []byte("correct horse battery staple")

func newTestConfig(t *testing.T, opts ConfigOptions, secret []byte) (*Config, *Keys) {
	t.Helper()
	if opts.KDF == (KDFParams{}) && !opts.KeyFile {
		opts.KDF = TestKDF
	}
	c, k, err := newConfig(rand.Reader, secret, opts, true)
	if err != nil {
		t.Fatalf("newConfig: %v", err)
	}
	return c, k
}

// sameKeys reports whether two Keys hold the same master key, by sealing with
// one and opening with the other.
func sameKeys(t *testing.T, a, b *Keys) bool {
	t.Helper()
	fk, err := a.NewFile()
	if err != nil {
		t.Fatal(err)
	}
	_, err = b.OpenHeader(fk.Header())
	return err == nil
}

func TestConfigRoundTrip(t *testing.T) {
	for _, opts := range []ConfigOptions{
		{},
		{BlockSize: MinBlockSize},
		{BlockSize: MaxBlockSize},
		{KDF: KDFParams{Time: 2, MemoryKiB: 256, Threads: 2}},
	} {
		c, k := newTestConfig(t, opts, testPass)
		data := c.Marshal()
		if len(data) != configSize {
			t.Fatalf("Marshal: %d bytes, want %d", len(data), configSize)
		}
		c2, err := parseConfig(data, true)
		if err != nil {
			t.Fatalf("%+v: parse: %v", opts, err)
		}
		if !bytes.Equal(c2.Marshal(), data) {
			t.Fatal("parse+marshal is not the identity")
		}
		wantBS := opts.BlockSize
		if wantBS == 0 {
			wantBS = DefaultBlockSize
		}
		if c2.BlockSize() != wantBS || k.Layout().BlockSize != wantBS {
			t.Fatalf("block size %d / %d, want %d", c2.BlockSize(), k.Layout().BlockSize, wantBS)
		}
		k2, err := c2.Unlock(testPass)
		if err != nil {
			t.Fatalf("unlock: %v", err)
		}
		if !sameKeys(t, k, k2) || !sameKeys(t, k2, k) {
			t.Fatal("unlocked keys differ from the created ones")
		}
	}
}

func TestConfigKeyFile(t *testing.T) {
	kf := pattern(keyFileSize, 1)
	c, k := newTestConfig(t, ConfigOptions{KeyFile: true}, kf)
	c2, err := parseConfig(c.Marshal(), false) // no KDF: the minimum does not apply
	if err != nil {
		t.Fatal(err)
	}
	k2, err := c2.Unlock(kf)
	if err != nil || !sameKeys(t, k, k2) {
		t.Fatalf("unlock with key file: %v", err)
	}
	other := bytes.Clone(kf)
	other[31] ^= 1
	for _, bad := range [][]byte{other, kf[:31], append(bytes.Clone(kf), 0), nil} {
		if _, err := c2.Unlock(bad); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("unlock with a wrong key file (%d bytes): %v, want ErrWrongKey", len(bad), err)
		}
	}
	if _, _, err := newConfig(rand.Reader, kf[:16], ConfigOptions{KeyFile: true}, false); err == nil {
		t.Fatal("NewConfig accepted a 16-byte key file")
	}
}

// TestWrongPassphraseVsCorrupt: a wrong passphrase says ErrWrongKey; a
// corrupted config says ErrCorrupt (at parse time, via the checksum), and
// the two messages differ.
func TestWrongPassphraseVsCorrupt(t *testing.T) {
	c, _ := newTestConfig(t, ConfigOptions{}, testPass)
	data := c.Marshal()
	_, errWrong := c.Unlock([]byte("Correct horse battery staple"))
	if !errors.Is(errWrong, ErrWrongKey) || errors.Is(errWrong, ErrCorrupt) {
		t.Fatalf("wrong passphrase: %v, want ErrWrongKey only", errWrong)
	}
	for i := range data {
		mut := bytes.Clone(data)
		mut[i] ^= 1 << (i % 8)
		_, err := parseConfig(mut, true)
		if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongKey) {
			t.Fatalf("byte %d flipped: %v, want ErrCorrupt", i, err)
		}
		if err.Error() == errWrong.Error() {
			t.Fatal("corrupt and wrong-key messages are the same")
		}
	}
	for _, n := range []int{0, 7, 10, configSize - 1, configSize + 1, 2 * configSize} {
		mut := make([]byte, n)
		copy(mut, data)
		if _, err := parseConfig(mut, true); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%d bytes: %v, want ErrCorrupt", n, err)
		}
	}
}

// TestConfigFieldsAreAuthenticated changes a field and recomputes the
// checksum, as a deliberate attacker would: the wrap's associated data must
// still refuse it (reported as ErrWrongKey, since it then looks exactly like
// a wrong secret; the checksum only classifies accidents).
func TestConfigFieldsAreAuthenticated(t *testing.T) {
	c, _ := newTestConfig(t, ConfigOptions{BlockSize: MinBlockSize}, testPass)
	for _, edit := range []func(*Config){
		func(c *Config) { c.log2Block++ },
		func(c *Config) { c.kdf.Time++ },
		func(c *Config) { c.kdf.MemoryKiB += 8 },
		func(c *Config) { c.salt[0] ^= 1 },
		func(c *Config) { c.nonce[0] ^= 1 },
		func(c *Config) { c.wrapped[40] ^= 1 },
	} {
		m := *c
		edit(&m)
		c2, err := parseConfig(m.Marshal(), true)
		if err != nil {
			t.Fatalf("re-checksummed config refused at parse: %v", err)
		}
		if _, err := c2.Unlock(testPass); !errors.Is(err, ErrWrongKey) {
			t.Fatalf("edited config unlocked: %v", err)
		}
	}
}

func TestWeakKDFRefused(t *testing.T) {
	c, _ := newTestConfig(t, ConfigOptions{KDF: TestKDF}, testPass)
	data := c.Marshal()
	if _, err := parseConfig(data, false); !errors.Is(err, ErrWeakKDF) {
		t.Fatalf("weak config parsed without the test knob: %v", err)
	}
	for _, p := range []KDFParams{
		{Time: minKDF.Time - 1, MemoryKiB: DefaultKDF.MemoryKiB, Threads: 4},
		{Time: DefaultKDF.Time, MemoryKiB: minKDF.MemoryKiB - 1, Threads: 4},
	} {
		m := *c
		m.kdf = p
		if _, err := parseConfig(m.Marshal(), false); !errors.Is(err, ErrWeakKDF) {
			t.Fatalf("%+v: %v, want ErrWeakKDF", p, err)
		}
		if _, _, err := newConfig(rand.Reader, testPass, ConfigOptions{KDF: p}, false); !errors.Is(err, ErrWeakKDF) {
			t.Fatalf("NewConfig %+v: %v, want ErrWeakKDF", p, err)
		}
	}
	if MinimumKDF() != minKDF || minKDF.Time > DefaultKDF.Time || minKDF.MemoryKiB > DefaultKDF.MemoryKiB {
		t.Fatalf("MinimumKDF %+v is inconsistent with DefaultKDF %+v", MinimumKDF(), DefaultKDF)
	}
	m := *c
	m.kdf = MinimumKDF()
	if _, err := parseConfig(m.Marshal(), false); err != nil {
		t.Fatalf("minKDF refused: %v", err)
	}
	for _, p := range []KDFParams{
		{Time: 0, MemoryKiB: 1 << 16, Threads: 1},
		{Time: 3, MemoryKiB: 1 << 16, Threads: 0},
		{Time: 3, MemoryKiB: 8*4 - 1, Threads: 4}, // Argon2 needs 8 KiB per lane
	} {
		m.kdf = p
		if _, err := parseConfig(m.Marshal(), true); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("%+v: %v, want ErrCorrupt", p, err)
		}
	}
}

// TestKDFCapRefusedBeforeKDF forges configs (valid checksum, as anyone with
// write access to the store can) asking for Argon2id costs above the cap:
// opening one the way mount does (ParseConfig, then Unlock) must fail with
// ErrKDFTooCostly in well under a second, i.e. before Argon2id runs (each
// of these would take seconds to minutes and up to 4 GiB if it ran).
// NewConfig refuses the same parameters, also before the KDF.
func TestKDFCapRefusedBeforeKDF(t *testing.T) {
	c, _ := newTestConfig(t, ConfigOptions{}, testPass)
	open := func(data []byte) error {
		pc, err := ParseConfig(data) // exported path, no test knob
		if err != nil {
			return err
		}
		_, err = pc.Unlock(testPass)
		return err
	}
	for _, p := range []KDFParams{
		{Time: 64, MemoryKiB: 4 << 20, Threads: 64}, // the old bound: 4 GiB, 64 passes
		{Time: 3, MemoryKiB: 1<<20 + 8, Threads: 4}, // memory over 1 GiB
		{Time: 17, MemoryKiB: 64 << 10, Threads: 4}, // passes over 16
		{Time: 3, MemoryKiB: 64 << 10, Threads: 17},
		{Time: 5, MemoryKiB: 1 << 20, Threads: 16},   // each axis in range, work 5 GiB
		{Time: 16, MemoryKiB: 512 << 10, Threads: 4}, // work 8 GiB
		{Time: 0xffffffff, MemoryKiB: 0xffffffff, Threads: 255},
	} {
		m := *c
		m.kdf = p
		start := time.Now()
		err := open(m.Marshal())
		if el := time.Since(start); !errors.Is(err, ErrKDFTooCostly) || el >= time.Second {
			t.Fatalf("forged config %+v: %v after %v, want ErrKDFTooCostly in under 1s", p, err, el)
		}
		if !strings.Contains(err.Error(), "above the cap") {
			t.Fatalf("message does not say why: %v", err)
		}
		start = time.Now()
		_, _, err = NewConfig(testPass, ConfigOptions{KDF: p})
		if el := time.Since(start); !errors.Is(err, ErrKDFTooCostly) || el >= time.Second {
			t.Fatalf("NewConfig %+v: %v after %v, want ErrKDFTooCostly in under 1s", p, err, el)
		}
	}
	// The edges of the cap are accepted (parsed only: running them would
	// take seconds).
	for _, p := range []KDFParams{
		{Time: 4, MemoryKiB: 1 << 20, Threads: 16},
		{Time: 16, MemoryKiB: 256 << 10, Threads: 16},
		DefaultKDF,
	} {
		m := *c
		m.kdf = p
		if _, err := ParseConfig(m.Marshal()); err != nil {
			t.Fatalf("%+v at the cap refused: %v", p, err)
		}
	}
	if uint64(DefaultKDF.MemoryKiB)*uint64(DefaultKDF.Time)*16 > maxKDFWork {
		t.Fatalf("the cap (%d KiB x passes) leaves less than 16x the default's work", maxKDFWork)
	}
}

// TestAllowWeakKDFForTests checks the exported knob other packages use, and
// that it is scoped to the test that set it.
func TestAllowWeakKDFForTests(t *testing.T) {
	if weakKDFAllowed.Load() != 0 {
		t.Skip("another test holds the knob") // only if someone runs this in parallel
	}
	c, _ := newTestConfig(t, ConfigOptions{KDF: TestKDF}, testPass)
	t.Run("on", func(t *testing.T) {
		AllowWeakKDFForTests(t)
		if _, err := ParseConfig(c.Marshal()); err != nil {
			t.Fatalf("knob on: %v", err)
		}
		if _, _, err := NewConfig(testPass, ConfigOptions{KDF: TestKDF}); err != nil {
			t.Fatalf("knob on: %v", err)
		}
	})
	if _, err := ParseConfig(c.Marshal()); !errors.Is(err, ErrWeakKDF) {
		t.Fatalf("knob still on after its test ended: %v", err)
	}
}

// TestDefaultConfigProduction runs the real Argon2id defaults once through
// the exported API with no knob.
func TestDefaultConfigProduction(t *testing.T) {
	if testing.Short() {
		t.Skip("64 MiB Argon2id twice; skipped with -short")
	}
	c, k, err := NewConfig(testPass, ConfigOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := ParseConfig(c.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if c2.kdf != DefaultKDF || c2.BlockSize() != DefaultBlockSize {
		t.Fatalf("defaults not applied: %+v, block %d", c2.kdf, c2.BlockSize())
	}
	k2, err := c2.Unlock(testPass)
	if err != nil || !sameKeys(t, k, k2) {
		t.Fatalf("unlock: %v", err)
	}
}

func TestRewrap(t *testing.T) {
	c, k := newTestConfig(t, ConfigOptions{BlockSize: MinBlockSize, KDF: KDFParams{Time: 2, MemoryKiB: 128, Threads: 2}}, testPass)
	fk, _ := k.NewFile()
	obj := sealAll(t, fk, pattern(5000, 3))
	newPass := []byte("new passphrase")
	if _, err := c.Rewrap([]byte("wrong"), newPass); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("rewrap with wrong old passphrase: %v", err)
	}
	n, err := c.Rewrap(testPass, newPass)
	if err != nil {
		t.Fatal(err)
	}
	if n.kind != c.kind || n.log2Block != c.log2Block || n.kdf != c.kdf {
		t.Fatal("rewrap changed more than salt and wrap")
	}
	if n.salt == c.salt || n.nonce == c.nonce {
		t.Fatal("rewrap kept the salt or nonce")
	}
	n2, err := parseConfig(n.Marshal(), true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := n2.Unlock(testPass); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old passphrase still opens: %v", err)
	}
	k2, err := n2.Unlock(newPass)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := openAll(k2, obj); err != nil || !bytes.Equal(got, pattern(5000, 3)) {
		t.Fatalf("object no longer opens after rewrap: %v", err)
	}
	if _, err := c.Rewrap(testPass, nil); err == nil {
		t.Fatal("rewrap to an empty passphrase accepted")
	}
}

func TestNewConfigRejects(t *testing.T) {
	for _, c := range []struct {
		secret []byte
		opts   ConfigOptions
		want   string
	}{
		{nil, ConfigOptions{KDF: TestKDF}, "empty passphrase"},
		{testPass, ConfigOptions{BlockSize: 3000, KDF: TestKDF}, "block size"},
		{testPass, ConfigOptions{BlockSize: 2 << 20, KDF: TestKDF}, "block size"},
	} {
		_, _, err := newConfig(rand.Reader, c.secret, c.opts, true)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("%+v: %v, want an error about %q", c.opts, err, c.want)
		}
	}
}
