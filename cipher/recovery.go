package cipher

import (
	"crypto/rand"
	"encoding/base32"
	"fmt"
	"strings"

	sha256simd "github.com/minio/sha256-simd"
)

// A recovery key is 32 random bytes that a person writes down. It is shown
// as 56 characters of RFC 4648 base32 (A-Z, 2-7: no 0/O or 1/I pairs to
// confuse), in 7 groups of 8 joined by '-', encoding the key followed by a
// 3-byte checksum, SHA-256("s3cryptfs recovery key" || key)[0:3]: a typo is
// reported as a typo (one wrong character goes unnoticed with probability
// 2^-24) instead of as a wrong key. The key is high-entropy, so its slot
// uses HKDF, not a slow KDF.
const (
	recoveryChecksum = 3
	recoveryChars    = (keyFileSize + recoveryChecksum) * 8 / 5 // 56
	recoveryGroup    = 8
	labelRecoverySum = "s3cryptfs recovery key"
)

var recoveryEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// NewRecoveryKey returns a fresh random recovery key and its printed form.
func NewRecoveryKey() (key []byte, printed string) {
	key = make([]byte, keyFileSize)
	_, _ = rand.Read(key) // crypto/rand.Read never fails (Go 1.24+)
	return key, FormatRecoveryKey(key)
}

func recoverySum(key []byte) []byte {
	h := sha256simd.New()
	h.Write([]byte(labelRecoverySum))
	h.Write(key)
	return h.Sum(nil)[:recoveryChecksum]
}

// FormatRecoveryKey prints a 32-byte key as a recovery key.
func FormatRecoveryKey(key []byte) string {
	if len(key) != keyFileSize {
		panic("BUG: cipher.FormatRecoveryKey: key of the wrong length")
	}
	s := recoveryEncoding.EncodeToString(append(append([]byte(nil), key...), recoverySum(key)...))
	var b strings.Builder
	for i := 0; i < len(s); i += recoveryGroup {
		if i > 0 {
			b.WriteByte('-')
		}
		b.WriteString(s[i : i+recoveryGroup])
	}
	return b.String()
}

// ParseRecoveryKey reads a recovery key as a person may type it: case,
// spaces and dashes do not matter, and the digits 0, 1 and 8 are read as
// the letters O, I and B they are mistaken for. A wrong length or checksum
// is an error that says so (and is not ErrWrongKey).
func ParseRecoveryKey(s string) ([]byte, error) {
	var b strings.Builder
	for _, r := range strings.ToUpper(s) {
		switch {
		case r == ' ' || r == '-' || r == '\t' || r == '\n' || r == '\r':
		case r == '0':
			b.WriteByte('O')
		case r == '1':
			b.WriteByte('I')
		case r == '8':
			b.WriteByte('B')
		default:
			b.WriteRune(r)
		}
	}
	clean := b.String()
	if len(clean) != recoveryChars {
		return nil, fmt.Errorf("recovery key: %d characters, want %d (7 groups of 8)", len(clean), recoveryChars)
	}
	raw, err := recoveryEncoding.DecodeString(clean)
	if err != nil {
		return nil, fmt.Errorf("recovery key: not base32 (letters A-Z and digits 2-7): %v", err)
	}
	key, sum := raw[:keyFileSize], raw[keyFileSize:]
	if string(sum) != string(recoverySum(key)) {
		return nil, fmt.Errorf("recovery key: checksum mismatch: a character is mistyped")
	}
	return key, nil
}
