package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/s3cryptfs/s3cryptfs/backend/local"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// readArgs are the options ls, cat, get and verify need for st.
func (st *store) readArgs(t *testing.T) []string {
	return append([]string{"--passphrase-file", passFile(t, passphrase)}, st.args...)
}

// reader runs a reading command: s3cryptfs CMD [options] STORE operands...
func (st *store) reader(t *testing.T, cmd string, extra []string, operands ...string) result {
	t.Helper()
	args := append(append([]string{cmd}, st.readArgs(t)...), extra...)
	return st.run(t, nil, append(append(args, st.spec), operands...)...)
}

// rawPut stores data under key, bypassing s3cryptfs (an object "uploaded
// by another tool"), with meta as its user metadata.
func (st *store) rawPut(t *testing.T, key string, data []byte, meta map[string]string) {
	t.Helper()
	key = st.key(t, key)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st.kind == "minio" {
		if _, err := st.srv.SDKClient(t).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key),
			Body: bytes.NewReader(data), Metadata: meta}); err != nil {
			t.Fatalf("raw put %s: %v", key, err)
		}
		return
	}
	ls, err := local.New(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Put(ctx, key, bytes.NewReader(data), int64(len(data)), meta); err != nil {
		t.Fatalf("raw put %s: %v", key, err)
	}
}

func putFile(t *testing.T, p string, data []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(p, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// verifyReport runs verify --json and decodes its report.
type verifyReport struct {
	Objects  int   `json:"objects"`
	Bytes    int64 `json:"bytes"`
	Problems []struct {
		Key    string  `json:"key"`
		Kind   string  `json:"problem"`
		Block  *uint64 `json:"block"`
		KeyID  string  `json:"key_id"`
		Detail string  `json:"detail"`
	} `json:"problems"`
}

func (st *store) verifyJSON(t *testing.T) (verifyReport, result) {
	t.Helper()
	r := st.reader(t, "verify", []string{"--json"})
	var rep verifyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("verify --json: exit %d, not JSON (%v): %q\nstderr: %s", r.code, err, r.stdout, r.stderr)
	}
	return rep, r
}

// TestVerify: an intact vault verifies (exit 0, every object counted,
// symlinks and attribute indexes included); then one flipped byte in one
// block, a plaintext upload over a file and an object copied from another
// vault are each named, with the block, the key id and the kind, and the
// exit status is 1.
func TestVerify(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		// Damage is planted by path: keys that mirror paths
		// (TestVerifyEncryptedNames covers the encrypted layout).
		st.init(t, "--plaintext-names")
		m := st.mount(t)
		bs := cipher.DefaultBlockSize
		if err := os.MkdirAll(m.path("d/e"), 0o755); err != nil {
			t.Fatal(err)
		}
		putFile(t, m.path("d/multi"), randBytes(1, 3*bs+100), 0o644) // 4 blocks
		putFile(t, m.path("d/e/small"), []byte("small\n"), 0o600)
		putFile(t, m.path("d/plain"), []byte("to be replaced"), 0o644)
		putFile(t, m.path("empty"), nil, 0o644)
		if err := os.Symlink("../multi", m.path("d/e/link")); err != nil {
			t.Fatal(err)
		}
		m.unmount()

		rep, r := st.verifyJSON(t)
		if r.code != 0 || len(rep.Problems) != 0 {
			t.Fatalf("intact vault: exit %d, problems %+v\nstderr: %s", r.code, rep.Problems, r.stderr)
		}
		// 5 entries' objects, plus at least the root's and d's indexes.
		if rep.Objects < 7 {
			t.Errorf("intact vault: %d objects verified, want the 5 files and symlinks and the indexes", rep.Objects)
		}

		// Another vault's object (same passphrase, other master key).
		other := newStore(t, st.kind)
		other.init(t, "--plaintext-names")
		om := other.mount(t)
		putFile(t, om.path("x"), []byte("from the other vault"), 0o644)
		om.unmount()
		foreign := other.raw(t, "x")
		st.rawPut(t, "d/foreign", foreign, nil)
		otherID, _ := cipher.HeaderKeyID(foreign)

		sealed := bs + cipher.BlockOverhead
		st.corrupt(t, "d/multi", cipher.HeaderSize+2*sealed+77) // block 2
		st.rawPut(t, "d/plain", []byte("plaintext uploaded by another tool"), nil)

		rep, r = st.verifyJSON(t)
		if r.code != 1 {
			t.Errorf("damaged vault: exit %d, want 1", r.code)
		}
		got := map[string]string{}
		for _, p := range rep.Problems {
			got[p.Key] = p.Kind
			switch p.Key {
			case "d/multi":
				if p.Block == nil || *p.Block != 2 {
					t.Errorf("corrupt block: reported %s, want block 2 (%s)", blockString(p.Block), p.Detail)
				}
			case "d/foreign":
				if p.KeyID != otherID.String() {
					t.Errorf("foreign object: key id %q, want %s", p.KeyID, otherID)
				}
			}
		}
		want := map[string]string{"d/multi": "corrupt", "d/plain": "not-encrypted", "d/foreign": "foreign-key"}
		for k, kind := range want {
			if got[k] != kind {
				t.Errorf("%s: reported %q, want %q (all: %v)", k, got[k], kind, got)
			}
		}
		if len(got) != len(want) {
			t.Errorf("problems %v, want exactly %v", got, want)
		}

		// The text report names them too, and a size no layout fits.
		st.rawPut(t, "d/e/cut", foreign[:cipher.HeaderSize+5], nil)
		r = st.reader(t, "verify", nil)
		if r.code != 1 {
			t.Errorf("verify (text): exit %d, want 1", r.code)
		}
		for _, s := range []string{"corrupt", "d/multi", "block 2", "not-encrypted", "d/plain", "foreign-key", "d/foreign", "d/e/cut"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("verify output lacks %q:\n%s", s, r.stdout)
			}
		}
		if !strings.Contains(r.stderr, "4 of") {
			t.Errorf("verify stderr: %q, want the count of failed objects", r.stderr)
		}
		// Under PATH only: d/e holds the truncated object only.
		r = st.reader(t, "verify", []string{"--json"}, "d/e")
		if r.code != 1 || !strings.Contains(r.stdout, "d/e/cut") || strings.Contains(r.stdout, "d/multi") {
			t.Errorf("verify STORE d/e: exit %d\n%s", r.code, r.stdout)
		}
		if r := st.reader(t, "verify", nil, "d/e/small"); r.code != 0 {
			t.Errorf("verify of one intact file: exit %d: %s%s", r.code, r.stdout, r.stderr)
		}
	})
}

// tree is what a walk of a directory sees: per relative path, type, mode,
// mtime and content (hash) or link target.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		desc := fmt.Sprintf("%v %d", fi.Mode(), fi.ModTime().UnixNano())
		switch {
		case fi.Mode()&os.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h := sha256.Sum256(b)
			desc += fmt.Sprintf(" %d %x", len(b), h[:8])
		}
		out[rel] = desc
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// eachLayout runs fn on a new vault of each store, once with encrypted
// names (the default) and once with --plaintext-names.
func eachLayout(t *testing.T, fn func(t *testing.T, st *store)) {
	for _, layout := range []string{"encrypted-names", "plaintext-names"} {
		t.Run(layout, func(t *testing.T) {
			eachStore(t, func(t *testing.T, st *store) {
				if layout == "plaintext-names" {
					st.init(t, "--plaintext-names")
				} else {
					st.init(t)
				}
				fn(t, st)
			})
		})
	}
}

// TestGetCatLs: get of the whole tree and of a subtree equals what the
// mount shows (content, modes, mtimes, symlinks); it refuses to overwrite
// without --force; cat pipes a file's exact bytes; ls shows the entries.
func TestGetCatLs(t *testing.T) {
	eachLayout(t, func(t *testing.T, st *store) {
		m := st.mount(t)
		if err := os.MkdirAll(m.path("a/b/c"), 0o755); err != nil {
			t.Fatal(err)
		}
		big := randBytes(2, 5<<20+12345)
		putFile(t, m.path("a/big"), big, 0o640)
		putFile(t, m.path("a/b/exec"), []byte("#!/bin/sh\necho hi\n"), 0o755)
		putFile(t, m.path("a/b/c/ro"), []byte("read only"), 0o444)
		putFile(t, m.path("top"), []byte("top"), 0o600)
		putFile(t, m.path("a/b/c/empty"), nil, 0o644)
		for _, l := range [][2]string{{"../big", "a/b/rel"}, {"/etc/hostname", "abs"}, {"nowhere", "a/dangling"}} {
			if err := os.Symlink(l[0], m.path(l[1])); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chmod(m.path("a/b"), 0o750); err != nil {
			t.Fatal(err)
		}
		base := time.Date(2021, 3, 4, 5, 6, 7, 123456789, time.UTC)
		for i, p := range []string{"a/big", "a/b/exec", "a/b/c/ro", "top", "a/b/c", "a/b", "a"} {
			ts := base.Add(time.Duration(i) * time.Hour)
			if err := os.Chtimes(m.path(p), ts, ts); err != nil {
				t.Fatal(err)
			}
		}
		m = m.remount() // what the mount shows from the store alone
		want := snapshot(t, m.dir)
		wantA := snapshot(t, m.path("a"))
		m.unmount()

		dest := filepath.Join(t.TempDir(), "all")
		if r := st.reader(t, "get", nil, "/", dest); r.code != 0 {
			t.Fatalf("get /: exit %d: %s", r.code, r.stderr)
		}
		got := snapshot(t, dest)
		if len(got) != len(want) {
			t.Errorf("get /: %d entries, mount shows %d\ngot  %v\nwant %v", len(got), len(want), got, want)
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("get /: %s: got %q, mount shows %q", k, got[k], w)
			}
		}
		// A subtree, to a new name.
		destA := filepath.Join(t.TempDir(), "copy-of-a")
		if r := st.reader(t, "get", nil, "a", destA); r.code != 0 {
			t.Fatalf("get a: exit %d: %s", r.code, r.stderr)
		}
		if gotA := snapshot(t, destA); fmt.Sprint(gotA) != fmt.Sprint(wantA) {
			t.Errorf("get a:\ngot  %v\nwant %v", gotA, wantA)
		}
		// One file; then no overwriting without --force.
		one := filepath.Join(t.TempDir(), "big")
		if r := st.reader(t, "get", nil, "a/big", one); r.code != 0 {
			t.Fatalf("get a/big: exit %d: %s", r.code, r.stderr)
		}
		if b, _ := os.ReadFile(one); !bytes.Equal(b, big) {
			t.Error("get a/big: content differs")
		}
		os.WriteFile(one, []byte("mine"), 0o600)
		if r := st.reader(t, "get", nil, "a/big", one); r.code != 1 || !strings.Contains(r.stderr, "--force") {
			t.Errorf("get over an existing file: exit %d: %s", r.code, r.stderr)
		}
		if b, _ := os.ReadFile(one); string(b) != "mine" {
			t.Error("get without --force changed the existing file")
		}
		if r := st.reader(t, "get", []string{"--force"}, "a/big", one); r.code != 0 {
			t.Errorf("get --force: exit %d: %s", r.code, r.stderr)
		}
		if b, _ := os.ReadFile(one); !bytes.Equal(b, big) {
			t.Error("get --force: content differs")
		}
		if r := st.reader(t, "get", []string{"--force"}, "/", dest); r.code != 0 {
			t.Errorf("get --force / over the earlier copy: exit %d: %s", r.code, r.stderr)
		}
		if r := st.reader(t, "get", nil, "missing", filepath.Join(t.TempDir(), "x")); r.code != 1 {
			t.Errorf("get of a missing path: exit %d", r.code)
		}

		// cat | sha256sum.
		cmd := exec.Command("sh", "-c", `"$0" "$@" | sha256sum`, binary)
		cmd.Args = append(cmd.Args, append(append([]string{"cat"}, st.readArgs(t)...), st.spec, "a/big")...)
		cmd.Env = append(os.Environ(), st.env...)
		out, err := cmd.CombinedOutput()
		h := sha256.Sum256(big)
		if err != nil || !strings.HasPrefix(string(out), hex.EncodeToString(h[:])) {
			t.Errorf("cat a/big | sha256sum: %v: %s, want %x", err, out, h)
		}
		if r := st.reader(t, "cat", nil, "a"); r.code != 1 || !strings.Contains(r.stderr, "directory") {
			t.Errorf("cat of a directory: exit %d: %s", r.code, r.stderr)
		}

		// ls: long format, -R, symlink targets, reserved names hidden.
		r := st.reader(t, "ls", nil)
		if r.code != 0 || !strings.Contains(r.stdout, "-rw------- ") || !strings.Contains(r.stdout, " top\n") ||
			!strings.Contains(r.stdout, "abs -> /etc/hostname") || strings.Contains(r.stdout, ".s3cryptfs") {
			t.Errorf("ls: exit %d:\n%s%s", r.code, r.stdout, r.stderr)
		}
		r = st.reader(t, "ls", []string{"-R"})
		for _, s := range []string{"a/b/c:\n", "-r--r--r-- ", " 9 ", "2021-03-04", "rel -> ../big", fmt.Sprintf(" %d ", len(big)), "drwxr-x--- "} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("ls -R lacks %q:\n%s", s, r.stdout)
			}
		}
		if r := st.reader(t, "ls", nil, ".s3cryptfs.conf"); r.code != 2 {
			t.Errorf("ls of the config: exit %d, want 2 (usage)", r.code)
		}
		if r := st.run(t, nil, "ls", "--passphrase-file", passFile(t, "wrong"), st.spec); r.code != 1 || !strings.Contains(r.stderr, "wrong passphrase") {
			t.Errorf("ls with a wrong passphrase: exit %d: %s", r.code, r.stderr)
		}
	})
}

// TestReaderThroughput logs verify's and cat's throughput against the
// mount's cold sequential read of the same data in the same run (MinIO over
// TLS). A measurement, not an assertion: timings on a shared machine vary.
// S3CRYPTFS_READER_MIB sets the size (default 256 MiB in 200 files).
func TestReaderThroughput(t *testing.T) {
	st := newStore(t, "minio")
	total := 256 << 20
	if v := os.Getenv("S3CRYPTFS_READER_MIB"); v != "" {
		fmt.Sscan(v, &total)
		total <<= 20
	}
	const files = 200
	// A key file, not a passphrase: no KDF, so a command's start-up is
	// small and the timings compare reading, not key stretching.
	key := filepath.Join(t.TempDir(), "key")
	if r := st.run(t, nil, append(append([]string{"init", "--new-key-file", key}, st.args...), st.spec)...); r.code != 0 {
		t.Fatalf("init: exit %d: %s", r.code, r.stderr)
	}
	keyArgs := []string{"--key-file", key}
	m, r := st.tryMount(t, keyArgs...)
	if r.code != 0 {
		t.Fatalf("mount: exit %d: %s", r.code, r.stderr)
	}
	chunk := randBytes(3, 1<<20)
	per := total / files
	for i := range files {
		f, err := os.Create(m.path(fmt.Sprintf("f%03d", i)))
		if err != nil {
			t.Fatal(err)
		}
		for n := 0; n < per; n += len(chunk) {
			f.Write(chunk[:min(len(chunk), per-n)])
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
	}
	putFile(t, m.path("tiny"), []byte("x"), 0o644)
	bigSize := 32 << 20
	f, _ := os.Create(m.path("big"))
	for n := 0; n < bigSize; n += len(chunk) {
		f.Write(chunk)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	m, r = st.tryMountAt(t, m.dir, append(keyArgs, "--cache-size", "0")...) // cold: nothing cached
	if r.code != 0 {
		t.Fatalf("remount: exit %d: %s", r.code, r.stderr)
	}
	start := time.Now()
	var read int64
	for i := range files {
		b, err := os.ReadFile(m.path(fmt.Sprintf("f%03d", i)))
		if err != nil {
			t.Fatal(err)
		}
		read += int64(len(b))
	}
	mountAll := time.Since(start)
	start = time.Now()
	fb, err := os.Open(m.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, fb)
	fb.Close()
	if err != nil || n != int64(bigSize) {
		t.Fatalf("read big through the mount: %d bytes, %v", n, err)
	}
	mountBig := time.Since(start)
	m.unmount()

	run := func(args ...string) (result, time.Duration) {
		start := time.Now()
		r := st.run(t, nil, append(append(append([]string{args[0]}, keyArgs...), st.args...), append([]string{st.spec}, args[1:]...)...)...)
		return r, time.Since(start)
	}
	r, verifyAll := run("verify", "--json")
	var rep verifyReport
	if err := json.Unmarshal([]byte(r.stdout), &rep); r.code != 0 || err != nil {
		t.Fatalf("verify: exit %d, %v: %s", r.code, err, r.stderr)
	}
	// The fixed cost of every command: start, reading the config.
	r, startup := run("cat", "tiny")
	if r.code != 0 || r.stdout != "x" {
		t.Fatalf("cat tiny: exit %d %q: %s", r.code, r.stdout, r.stderr)
	}
	catBig := map[string]time.Duration{}
	for _, par := range []string{"8", "16"} {
		start := time.Now()
		cmd := exec.Command(binary, append(append(append([]string{"cat", "--parallel", par}, keyArgs...), st.args...), st.spec, "big")...)
		cmd.Env = append(os.Environ(), st.env...)
		cw := &countWriter{}
		cmd.Stdout = cw
		if err := cmd.Run(); err != nil || cw.n != int64(bigSize) {
			t.Fatalf("cat big: %v, %d bytes", err, cw.n)
		}
		catBig[par] = time.Since(start)
	}
	mibs := func(b int64, d time.Duration) float64 { return float64(b) / (1 << 20) / d.Seconds() }
	t.Logf("mount cold read of %d files: %d MiB in %v = %.1f MiB/s", files, read>>20, mountAll.Round(time.Millisecond), mibs(read, mountAll))
	t.Logf("verify of %d objects: %d MiB in %v = %.1f MiB/s (%.2fx the mount's cold read; includes start-up and listing)",
		rep.Objects, rep.Bytes>>20, verifyAll.Round(time.Millisecond), mibs(rep.Bytes, verifyAll), mibs(rep.Bytes, verifyAll)/mibs(read, mountAll))
	t.Logf("start-up of a command (cat of a 1-byte file: process, store, config; no KDF with a key file): %v", startup.Round(time.Millisecond))
	t.Logf("verify less start-up: %.1f MiB/s (%.2fx the mount's cold read)", mibs(rep.Bytes, verifyAll-startup), mibs(rep.Bytes, verifyAll-startup)/mibs(read, mountAll))
	for _, par := range []string{"8", "16"} {
		d := catBig[par]
		t.Logf("one %d MiB file: mount cold read %v = %.1f MiB/s; s3cryptfs cat --parallel %s %v = %.1f MiB/s, %.1f MiB/s less start-up (%.2fx the mount)",
			bigSize>>20, mountBig.Round(time.Millisecond), mibs(int64(bigSize), mountBig), par, d.Round(time.Millisecond), mibs(int64(bigSize), d),
			mibs(int64(bigSize), d-startup), mibs(int64(bigSize), d-startup)/mibs(int64(bigSize), mountBig))
	}
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

func blockString(b *uint64) string {
	if b == nil {
		return "no block"
	}
	return fmt.Sprintf("block %d", *b)
}
