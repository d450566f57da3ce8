package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/internal/vaultread"
)

// TestReaderUsage: the reading commands' usage errors exit 2 with the
// cause, and their runtime errors (no vault in STORE) exit 1, before any
// secret is asked for.
func TestReaderUsage(t *testing.T) {
	empty := t.TempDir()
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"cat", empty}, 2, "STORE and PATH"},
		{[]string{"get", empty, "a"}, 2, "STORE, PATH and DEST"},
		{[]string{"ls", empty, "a", "b"}, 2, "STORE [PATH]"},
		{[]string{"verify"}, 2, "STORE [PATH]"},
		{[]string{"ls", empty, "../x"}, 2, "'..'"},
		{[]string{"cat", empty, ".s3cryptfs.conf"}, 2, "vault's own"},
		{[]string{"verify", "--parallel", "0", empty}, 2, "--parallel"},
		{[]string{"ls", "--key-file", "k", "--passphrase-file", "p", empty}, 2, "exclude each other"},
		{[]string{"ls", "--passphrase-file", "/nonexistent", empty}, 1, "no vault config"},
		{[]string{"verify", "--client-encryption=false", empty}, 1, "encrypted vault"},
	} {
		var out, errb bytes.Buffer
		code := runWith(c.args, &out, &errb)
		if code != c.code || !strings.Contains(errb.String(), c.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit %d and %q", c.args, code, errb.String(), c.code, c.want)
		}
	}
	// ls of an empty plaintext store lists nothing, successfully.
	os.MkdirAll(filepath.Join(empty, "x"), 0o700)
	var out, errb bytes.Buffer
	if code := runWith([]string{"ls", "--client-encryption=false", empty}, &out, &errb); code != 0 {
		t.Errorf("ls of a plaintext store: exit %d: %s", code, errb.String())
	}
}

func TestModeString(t *testing.T) {
	for mode, want := range map[uint32]string{0o644: "-rw-r--r--", 0o4755: "-rwsr-xr-x", 0o2644: "-rw-r-Sr--", 0o1777: "drwxrwxrwt", 0o1776: "drwxrwxrwT"} {
		e := entryWithMode(mode, mode&0o1000 != 0)
		if got := modeString(e); got != want {
			t.Errorf("%o: %s, want %s", mode, got, want)
		}
	}
}

func entryWithMode(mode uint32, dir bool) vaultread.Entry {
	var e vaultread.Entry
	e.Attr.Mode, e.Attr.Dir = mode, dir
	return e
}
