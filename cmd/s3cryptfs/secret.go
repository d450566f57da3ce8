package main

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"golang.org/x/term"
)

// passphraseEnv carries the passphrase for scripts that cannot use a file.
// It is removed from this process's environment once read, and never passed
// to the background mount (see daemonize).
const passphraseEnv = "S3CRYPTFS_PASSPHRASE"

// keySize is the length of a vault key: what a key file decodes to.
const keySize = 32

// maxSecretFile bounds what is read from a passphrase or key file, so a
// wrong path such as /dev/zero fails instead of filling memory.
const maxSecretFile = 64 << 10

// secretFlags choose where the vault secret comes from.
type secretFlags struct {
	passphraseFile  string
	keyFile         string
	passwordCommand string
	recoveryKeyFile string // unlock with the recovery key (not for init)
}

// register adds the secret options; keyFileHelp differs between init and
// mount.
func (s *secretFlags) register(fs *pflag.FlagSet, keyFileHelp string) {
	fs.StringVar(&s.keyFile, "key-file", "", keyFileHelp)
	fs.StringVar(&s.passphraseFile, "passphrase-file", "", "read the passphrase from this file (one trailing newline is ignored)")
	fs.StringVar(&s.passwordCommand, "password-command", "", "run this command with sh -c; its output (one trailing newline removed) is the passphrase (e.g. 'secret-tool lookup s3cryptfs vault', 'pass show s3cryptfs')")
}

// registerRecovery adds --recovery-key-file, for the commands that unlock.
func (s *secretFlags) registerRecovery(fs *pflag.FlagSet) {
	fs.StringVar(&s.recoveryKeyFile, "recovery-key-file", "", "unlock with the recovery key init printed, kept in this file (mode 0600)")
}

// given reports whether an option names the secret.
func (s *secretFlags) given() bool {
	return s.passphraseFile != "" || s.keyFile != "" || s.passwordCommand != "" || s.recoveryKeyFile != ""
}

// secret is the vault secret and whether it is a key file.
type secret struct {
	b       []byte
	keyFile bool
}

func (s *secretFlags) validate() error {
	n := 0
	for _, v := range []string{s.passphraseFile, s.keyFile, s.passwordCommand, s.recoveryKeyFile} {
		if v != "" {
			n++
		}
	}
	if n > 1 {
		return usagef("--passphrase-file, --key-file, --password-command and --recovery-key-file exclude each other")
	}
	return nil
}

// read returns the secret from --key-file, --passphrase-file,
// --password-command, the environment, or (confirm: twice) an interactive
// prompt without echo.
func (s *secretFlags) read(confirm bool) (secret, error) {
	switch {
	case s.keyFile != "":
		k, err := readKeyFile(s.keyFile)
		return secret{b: k, keyFile: true}, err
	case s.passphraseFile != "":
		b, err := readSecretFile(s.passphraseFile, "passphrase file")
		if err != nil {
			return secret{}, err
		}
		b = trimNewline(b)
		if len(b) == 0 {
			return secret{}, fmt.Errorf("passphrase file %s is empty", s.passphraseFile)
		}
		return secret{b: b}, nil
	case s.passwordCommand != "":
		b, err := runPasswordCommand(s.passwordCommand)
		return secret{b: b}, err
	case os.Getenv(passphraseEnv) != "":
		p := os.Getenv(passphraseEnv)
		// Keep it from every process this one starts. (The kernel's copy,
		// /proc/PID/environ, cannot be changed from Go; it is readable by
		// the same user and root only.)
		os.Unsetenv(passphraseEnv)
		return secret{b: []byte(p)}, nil
	}
	return prompt(confirm)
}

// runPasswordCommand runs cmd with sh -c and returns what it printed, less
// one trailing newline. Its stdin and stderr are ours, so a command that
// asks (systemd-ask-password, pinentry through pass) can; its environment
// lacks S3CRYPTFS_PASSPHRASE. A failure or empty output is an error, so
// nothing is mounted with a secret the user did not mean.
func runPasswordCommand(cmd string) ([]byte, error) {
	c := exec.Command("/bin/sh", "-c", cmd)
	c.Env = envWithoutSecrets()
	c.Stdin, c.Stderr = os.Stdin, os.Stderr
	out, err := c.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("--password-command: %w", err)
	}
	b, rerr := io.ReadAll(io.LimitReader(out, maxSecretFile+1))
	io.Copy(io.Discard, out) // let it finish writing whatever it writes
	werr := c.Wait()
	var ee *exec.ExitError
	switch {
	case errors.As(werr, &ee):
		clear(b)
		return nil, fmt.Errorf("--password-command %s failed (%v)", shellQuote(cmd), ee)
	case werr != nil:
		clear(b)
		return nil, fmt.Errorf("--password-command %s: %w", shellQuote(cmd), werr)
	case rerr != nil:
		clear(b)
		return nil, fmt.Errorf("--password-command %s: %w", shellQuote(cmd), rerr)
	case len(b) > maxSecretFile:
		clear(b)
		return nil, fmt.Errorf("--password-command %s printed more than %d bytes", shellQuote(cmd), maxSecretFile)
	}
	b = trimNewline(b)
	if len(b) == 0 {
		return nil, fmt.Errorf("--password-command %s printed no passphrase", shellQuote(cmd))
	}
	return b, nil
}

// envWithoutSecrets is this process's environment minus the passphrase,
// for processes it starts.
func envWithoutSecrets() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, passphraseEnv+"=") {
			env = append(env, kv)
		}
	}
	return env
}

func trimNewline(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// readSecretFile reads a passphrase or key file (what names it in
// messages). A regular file that group or others may access is refused if
// it is a key file, and warned about if it is a passphrase file (refusing
// would break existing scripts; the passphrase is still guarded by the
// KDF). Pipes and other special files, e.g. --key-file <(vault read ...),
// are not checked.
func readSecretFile(path, what string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if perm := st.Mode().Perm(); st.Mode().IsRegular() && perm&0o077 != 0 {
		msg := fmt.Sprintf("%s %s can be read or changed by other users (mode %04o): run `chmod 600 %s`", what, path, perm, shellQuote(path))
		if what != "passphrase file" { // key files: the vault's, SSE-C's
			return nil, errors.New(msg)
		}
		fmt.Fprintln(os.Stderr, "s3cryptfs: warning:", msg)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFile+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(b) > maxSecretFile {
		return nil, fmt.Errorf("%s %s is larger than %d bytes", what, path, maxSecretFile)
	}
	return b, nil
}

// readKeyFile reads a vault key file: 32 random bytes written as 64 hex
// digits or 44 characters of standard base64, with at most one trailing
// newline. One explicit text encoding, so that a file that merely happens
// to be 32 bytes long (a typed password, a truncated key) is never taken
// as a key.
func readKeyFile(path string) ([]byte, error) {
	b, err := readSecretFile(path, "key file")
	if err != nil {
		return nil, err
	}
	t := trimNewline(b)
	switch len(t) {
	case 2 * keySize:
		if k, err := hex.DecodeString(string(t)); err == nil {
			return k, nil
		}
	case base64.StdEncoding.EncodedLen(keySize):
		if k, err := base64.StdEncoding.Strict().DecodeString(string(t)); err == nil && len(k) == keySize {
			return k, nil
		}
	}
	if len(b) == keySize {
		// Earlier versions took a 32-byte file as the raw key. The same 32
		// bytes in base64 are the same key: the vault opens after this.
		q := shellQuote(path)
		return nil, fmt.Errorf("key file %s holds 32 raw bytes, and key files are now hex or base64 text; convert it once (same key, same vault) with `(umask 077; base64 -w0 %s > %s.b64)` and use --key-file %s.b64",
			path, q, q, q)
	}
	return nil, fmt.Errorf("key file %s is not a key: want 32 bytes written as 64 hex digits or 44 base64 characters (one trailing newline allowed), got %d bytes; `s3cryptfs init --new-key-file FILE` makes one",
		path, len(b))
}

// writeNewKeyFile creates path (never overwriting anything, not following
// a symlink, mode 0600) holding a fresh random key in base64, synced to
// disk before it is used: a vault whose key was lost cannot be opened.
func writeNewKeyFile(path string) ([]byte, error) {
	key := make([]byte, keySize)
	rand.Read(key) // never fails (crypto/rand)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		if errors.Is(err, os.ErrExist) {
			return nil, fmt.Errorf("new key file %s already exists; refusing to overwrite it (use --key-file to reuse it)", path)
		}
		return nil, fmt.Errorf("new key file: %w", err)
	}
	_, err = f.WriteString(base64.StdEncoding.EncodeToString(key) + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path) // ours, and incomplete
		return nil, fmt.Errorf("new key file: %w", err)
	}
	return key, nil
}

// shellQuote quotes s for a POSIX shell if it needs it, so the commands in
// messages can be pasted.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789/._-+=:,@%") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// prompt asks for the passphrase on the terminal, without echo.
func prompt(confirm bool) (secret, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return secret{}, errors.New("no passphrase: use --passphrase-file, --key-file, --password-command, --recovery-key-file, " + passphraseEnv + " or run from a terminal")
	}
	fmt.Fprint(os.Stderr, "Passphrase: ")
	p, err := term.ReadPassword(fd)
	fmt.Fprintln(os.Stderr)
	if err != nil {
		return secret{}, fmt.Errorf("read passphrase: %w", err)
	}
	if len(p) == 0 {
		return secret{}, errors.New("empty passphrase")
	}
	if confirm {
		fmt.Fprint(os.Stderr, "Repeat passphrase: ")
		q, err := term.ReadPassword(fd)
		fmt.Fprintln(os.Stderr)
		if err != nil {
			return secret{}, fmt.Errorf("read passphrase: %w", err)
		}
		if !bytes.Equal(p, q) {
			return secret{}, errors.New("passphrases do not match")
		}
	}
	return secret{b: p}, nil
}
