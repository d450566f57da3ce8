package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"

	"golang.org/x/term"
)

// passphraseEnv carries the passphrase for scripts that cannot use a file.
const passphraseEnv = "S3CRYPTFS_PASSPHRASE"

// secretFlags choose where the vault secret comes from.
type secretFlags struct {
	passphraseFile string
	keyFile        string
}

// secret is the vault secret and whether it is a key file.
type secret struct {
	b       []byte
	keyFile bool
}

// have reports whether the secret comes from somewhere other than a prompt.
func (s *secretFlags) have() bool {
	return s.passphraseFile != "" || s.keyFile != "" || os.Getenv(passphraseEnv) != ""
}

func (s *secretFlags) validate() error {
	if s.passphraseFile != "" && s.keyFile != "" {
		return usagef("--passphrase-file and --key-file exclude each other")
	}
	return nil
}

// read returns the secret from --key-file, --passphrase-file, the
// environment, or (confirm: twice) an interactive prompt without echo.
func (s *secretFlags) read(confirm bool) (secret, error) {
	switch {
	case s.keyFile != "":
		k, err := readKeyFile(s.keyFile)
		return secret{b: k, keyFile: true}, err
	case s.passphraseFile != "":
		b, err := os.ReadFile(s.passphraseFile)
		if err != nil {
			return secret{}, fmt.Errorf("passphrase file: %w", err)
		}
		b = trimNewline(b)
		if len(b) == 0 {
			return secret{}, fmt.Errorf("passphrase file %s is empty", s.passphraseFile)
		}
		return secret{b: b}, nil
	case os.Getenv(passphraseEnv) != "":
		return secret{b: []byte(os.Getenv(passphraseEnv))}, nil
	}
	return prompt(confirm)
}

func trimNewline(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte("\n"))
	return bytes.TrimSuffix(b, []byte("\r"))
}

// readKeyFile accepts 32 raw bytes, or 32 bytes in base64 or hex.
func readKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if len(b) == 32 {
		return b, nil
	}
	t := bytes.TrimSpace(b)
	if k, err := base64.StdEncoding.DecodeString(string(t)); err == nil && len(k) == 32 {
		return k, nil
	}
	if k, err := hex.DecodeString(string(t)); err == nil && len(k) == 32 {
		return k, nil
	}
	return nil, fmt.Errorf("key file %s: want 32 bytes (raw, base64 or hex), got %d bytes", path, len(b))
}

// prompt asks for the passphrase on the terminal, without echo.
func prompt(confirm bool) (secret, error) {
	fd := int(os.Stdin.Fd())
	if !term.IsTerminal(fd) {
		return secret{}, errors.New("no passphrase: use --passphrase-file, --key-file, " + passphraseEnv + " or run from a terminal")
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
