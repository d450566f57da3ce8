// Package cipher owns the s3cryptfs encrypted formats: the vault config
// (version 2: a config key wrapped in slots for passphrases, key files,
// recovery keys and KMS, and a sealed keyring of master keys; version 1: one
// master key under a passphrase or key file), the per-purpose subkeys
// derived from each master key, the fixed-size header at the start of
// every object, and the AES-256-GCM blocks that follow it.
//
// The byte layout is specified in docs/FORMAT.md, which also holds test
// vectors that a test in this package reproduces; the guarantees and their
// limits are in docs/THREAT_MODEL.md. The package does no I/O of its own
// beyond the io.Reader, io.Writer and io.ReaderAt it is handed, and imports
// no other package of the project, so it can be reused by tools that read a
// vault without mounting it.
//
// Errors: ErrCorrupt for anything that fails authentication or has an
// impossible layout, ErrWrongKey when the secret (or master key) is not the
// one the data was sealed under, ErrWeakKDF for configs that ask for a
// password hash cheaper than the enforced minimum, ErrKDFTooCostly for
// configs that ask for one costlier than the enforced cap. Callers test
// them with errors.Is; the wrapped messages say where (which block, which
// field).
package cipher

import "errors"

// Sentinel errors; always returned wrapped with context.
var (
	// ErrWrongKey means the passphrase or key file does not unlock the
	// config, or an object header names a different master key. It is kept
	// apart from ErrCorrupt so a user is told to check the secret rather
	// than the storage.
	ErrWrongKey = errors.New("wrong key")
	// ErrCorrupt means authentication failed or the bytes have a layout no
	// writer of this format produces (bad magic, impossible size, ...).
	ErrCorrupt = errors.New("corrupt data")
	// ErrWeakKDF means a config asks for Argon2id parameters below the
	// enforced minimum: an attacker with write access to the config could
	// otherwise downgrade the password hash that the next passphrase change
	// would inherit.
	ErrWeakKDF = errors.New("KDF parameters below the enforced minimum")
	// ErrKDFTooCostly means a config asks for Argon2id parameters above the
	// enforced cap. The KDF runs before anything in the config is
	// authenticated, so without the cap a forged config could make every
	// unlock allocate gigabytes and run for minutes; it is refused before
	// the KDF runs.
	ErrKDFTooCostly = errors.New("KDF parameters above the enforced maximum")
)
