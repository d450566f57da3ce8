package main

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func writeTemp(t *testing.T, data []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
	return p
}

// captureStderr returns what fn wrote to os.Stderr.
func captureStderr(t *testing.T, fn func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stderr
	os.Stderr = w
	fn()
	os.Stderr = old
	w.Close()
	b, _ := io.ReadAll(r)
	r.Close()
	return string(b)
}

// TestReadKeyFile: key files are 32 bytes in hex or base64 with at most one
// trailing newline; everything else is refused, a raw 32-byte file with the
// command that converts it.
func TestReadKeyFile(t *testing.T) {
	key := bytes.Repeat([]byte{0xa5, 0x01, 0xfe, 0x7f}, 8)
	hx, b64 := hex.EncodeToString(key), base64.StdEncoding.EncodeToString(key)
	for _, c := range []struct {
		name, data string
		err        string // "" = accepted
	}{
		{"hex", hx, ""},
		{"hex newline", hx + "\n", ""},
		{"hex upper crlf", strings.ToUpper(hx) + "\r\n", ""},
		{"base64", b64, ""},
		{"base64 newline", b64 + "\n", ""},
		{"raw 32 bytes", string(key), "base64 -w0"},
		{"32 ascii characters", "0123456789abcdefghijklmnopqrstuv", "base64 -w0"},
		{"two newlines", hx + "\n\n", "not a key"},
		{"hex short", hx[:62], "not a key"},
		{"hex long", hx + "00", "not a key"},
		{"hex not hex", "zz" + hx[2:], "not a key"},
		{"base64 of 31 bytes", base64.StdEncoding.EncodeToString(key[:31]), "not a key"},
		{"base64 url alphabet", strings.NewReplacer("+", "-", "/", "_").Replace(base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xfb, 0xff}, 16))), "not a key"},
		{"spaces", " " + hx, "not a key"},
		{"empty", "", "not a key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := readKeyFile(writeTemp(t, []byte(c.data), 0o600))
			if c.err == "" {
				if err != nil || !bytes.Equal(got, key) {
					t.Fatalf("got %x, %v; want the key", got, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Fatalf("got %x, %v; want an error mentioning %q", got, err, c.err)
			}
		})
	}
}

// TestSecretFilePermissions: a key file that group or others may access is
// refused, a passphrase file only warned about; both say how to fix it.
func TestSecretFilePermissions(t *testing.T) {
	hx := strings.Repeat("ab", 32) + "\n"
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o620} {
		p := writeTemp(t, []byte(hx), mode)
		_, err := readKeyFile(p)
		if err == nil || !strings.Contains(err.Error(), "chmod 600 "+p) {
			t.Fatalf("key file mode %04o: %v, want a refusal saying chmod 600 %s", mode, err, p)
		}
	}
	if _, err := readKeyFile(writeTemp(t, []byte(hx), 0o400)); err != nil {
		t.Fatalf("key file mode 0400: %v", err)
	}
	p := writeTemp(t, []byte("pass phrase\n"), 0o644)
	var s secret
	var err error
	out := captureStderr(t, func() { s, err = (&secretFlags{passphraseFile: p}).read(false) })
	if err != nil || string(s.b) != "pass phrase" {
		t.Fatalf("passphrase file 0644: %q, %v; want it read (with a warning)", s.b, err)
	}
	if !strings.Contains(out, "warning") || !strings.Contains(out, "chmod 600 "+p) {
		t.Fatalf("no warning about a passphrase file readable by others: %q", out)
	}
	p = writeTemp(t, []byte("pass phrase\n"), 0o600)
	if out := captureStderr(t, func() { (&secretFlags{passphraseFile: p}).read(false) }); out != "" {
		t.Fatalf("warning for a 0600 passphrase file: %q", out)
	}
}

// TestWriteNewKeyFile: a fresh key in base64, mode 0600, readable back;
// never overwrites a file or follows a symlink.
func TestWriteNewKeyFile(t *testing.T) {
	old := syscall.Umask(0) // so a creation mode wider than 0600 would show
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "vault.key")
	k, err := writeNewKeyFile(p)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v; want 0600", st.Mode(), err)
	}
	got, err := readKeyFile(p)
	if err != nil || !bytes.Equal(got, k) || len(k) != keySize {
		t.Fatalf("read back: %x %v, want %x", got, err, k)
	}
	if k2, err := writeNewKeyFile(filepath.Join(dir, "other.key")); err != nil || bytes.Equal(k, k2) {
		t.Fatalf("second key %x, %v: want a different one", k2, err)
	}
	before, _ := os.ReadFile(p)
	if _, err := writeNewKeyFile(p); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("overwrite: %v", err)
	}
	if after, _ := os.ReadFile(p); !bytes.Equal(before, after) {
		t.Fatal("existing key file changed")
	}
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "link")
	os.Symlink(target, link)
	if _, err := writeNewKeyFile(link); err == nil {
		t.Fatal("followed a symlink")
	}
	if _, err := os.Lstat(target); err == nil {
		t.Fatal("created the symlink's target")
	}
}

// TestPassphraseEnvRemoved: the passphrase from the environment is taken
// out of this process's environment and of the one for child processes.
func TestPassphraseEnvRemoved(t *testing.T) {
	t.Setenv(passphraseEnv, "env secret")
	if env := envWithoutSecrets(); strings.Contains(strings.Join(env, "\n"), "env secret") {
		t.Fatal("envWithoutSecrets kept the passphrase")
	}
	s, err := (&secretFlags{}).read(false)
	if err != nil || string(s.b) != "env secret" {
		t.Fatalf("read: %q %v", s.b, err)
	}
	if _, ok := os.LookupEnv(passphraseEnv); ok {
		t.Fatal("passphrase still in the environment after reading it")
	}
}

func TestDefaultLogFile(t *testing.T) {
	const mnt = "/mnt/my vault"
	run := t.TempDir()
	t.Setenv("XDG_RUNTIME_DIR", run)
	if p, err := defaultLogFile(mnt); err != nil || p != filepath.Join(run, "s3cryptfs-mnt-my vault.log") {
		t.Fatalf("with XDG_RUNTIME_DIR: %q %v", p, err)
	}
	for _, c := range []struct{ runtime, state, home, want string }{
		{"", t.TempDir(), "/nonexistent", "state"},
		{"relative/run", t.TempDir(), "/nonexistent", "state"},
		{"", "", t.TempDir(), "home"},
		{"", "relative/state", t.TempDir(), "home"},
	} {
		t.Setenv("XDG_RUNTIME_DIR", c.runtime)
		t.Setenv("XDG_STATE_HOME", c.state)
		t.Setenv("HOME", c.home)
		dir := filepath.Join(c.state, "s3cryptfs")
		if c.want == "home" {
			dir = filepath.Join(c.home, ".local", "state", "s3cryptfs")
		}
		p, err := defaultLogFile(mnt)
		if err != nil || p != filepath.Join(dir, "s3cryptfs-mnt-my vault.log") {
			t.Fatalf("%+v: %q %v, want in %s", c, p, err, dir)
		}
		if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
			t.Fatalf("%+v: log directory %v %v, want mode 0700", c, st, err)
		}
	}
	t.Setenv("XDG_RUNTIME_DIR", "")
	t.Setenv("XDG_STATE_HOME", "")
	t.Setenv("HOME", "")
	if os.Geteuid() == 0 {
		// root without HOME (mount(8) under systemd): its own /run.
		rootRunDir = t.TempDir()
		defer func() { rootRunDir = "/run" }()
		dir := filepath.Join(rootRunDir, "s3cryptfs")
		if p, err := defaultLogFile(mnt); err != nil || p != filepath.Join(dir, "s3cryptfs-mnt-my vault.log") {
			t.Fatalf("root without HOME: %q %v, want in %s", p, err, dir)
		}
		return
	}
	if p, err := defaultLogFile(mnt); err == nil || !strings.Contains(err.Error(), "--log-file") {
		t.Fatalf("no per-user directory: %q %v, want an error naming --log-file", p, err)
	}
}

// TestOpenLogFile: created 0600, appended to, never through a symlink.
func TestOpenLogFile(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := t.TempDir()
	p := filepath.Join(dir, "x.log")
	for _, line := range []string{"one\n", "two\n"} {
		f, err := openLogFile(p)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString(line)
		f.Close()
	}
	if b, _ := os.ReadFile(p); string(b) != "one\ntwo\n" {
		t.Fatalf("log %q: not appended", b)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o600 {
		t.Fatalf("log mode %v, want 0600", st.Mode())
	}
	target := filepath.Join(dir, "target")
	link := filepath.Join(dir, "planted.log")
	os.WriteFile(target, nil, 0o666)
	os.Symlink(target, link)
	if f, err := openLogFile(link); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		f.Close()
		t.Fatalf("symlink: %v, want a refusal", err)
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(dir, "other.log")
		os.WriteFile(other, nil, 0o666)
		os.Chown(other, 12345, 12345)
		if f, err := openLogFile(other); err == nil || !strings.Contains(err.Error(), "uid 12345") {
			f.Close()
			t.Fatalf("another user's file: %v, want a refusal", err)
		}
	}
}
