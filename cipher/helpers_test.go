package cipher

import (
	"crypto/rand"
	"testing"
)

// testKeys makes a vault with cheap KDF parameters (bypassing the minimum
// for this call only, so tests that check the minimum are unaffected).
func testKeys(t testing.TB, blockSize int) *Keys {
	t.Helper()
	_, k, err := newConfig(rand.Reader, []byte("test passphrase"),
		ConfigOptions{BlockSize: blockSize, KDF: TestKDF}, true)
	if err != nil {
		t.Fatalf("newConfig: %v", err)
	}
	return k
}

// pattern returns n bytes of deterministic, position-dependent content.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7+i/251) ^ seed
	}
	return b
}
