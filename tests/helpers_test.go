package tests

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/local"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
	fsnames "github.com/s3cryptfs/s3cryptfs/fs/names"
	"github.com/s3cryptfs/s3cryptfs/internal/miniotest"
)

// binary is the s3cryptfs executable built by TestMain.
var binary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "s3cryptfs-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "s3cryptfs")
	build := exec.Command("go", "build", "-o", binary, "github.com/s3cryptfs/s3cryptfs/cmd/s3cryptfs")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "tests: building s3cryptfs:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := miniotest.Main(m)
	os.RemoveAll(dir)
	os.Exit(code)
}

const passphrase = "correct horse battery staple"

// store is one place a vault lives, with everything needed to run the
// binary against it and to look at its raw objects.
type store struct {
	kind string   // "local" or "minio"
	spec string   // STORE argument
	args []string // store options for init and mount
	env  []string

	dir    string // local
	srv    *miniotest.Server
	bucket string

	// layout is the vault's names layer, learned on the first raw access
	// (nil: not yet; fsnames.Plain() for plaintext names).
	layout *fsnames.Layout
}

// newStore makes an empty store of the given kind.
func newStore(t *testing.T, kind string) *store {
	t.Helper()
	requireFUSE(t)
	switch kind {
	case "local":
		d := t.TempDir()
		return &store{kind: kind, spec: d, dir: d}
	case "minio":
		srv := miniotest.Get(t)
		b := srv.NewBucket(t)
		return &store{kind: kind, spec: "s3://" + b, args: []string{"--path-style"}, env: srv.Env(), srv: srv, bucket: b}
	}
	t.Fatalf("BUG: unknown store kind %q", kind)
	return nil
}

// eachStore runs fn as a subtest on the local store and on MinIO.
func eachStore(t *testing.T, fn func(t *testing.T, st *store)) {
	for _, kind := range []string{"local", "minio"} {
		t.Run(kind, func(t *testing.T) { fn(t, newStore(t, kind)) })
	}
}

func requireFUSE(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("mounts through FUSE: skipped under -short")
	}
	if os.Geteuid() != 0 {
		t.Fatal("these tests mount with mount(2) and need root (or run go test -short)")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Fatalf("these tests need /dev/fuse: %v", err)
	}
}

// result of one run of the binary.
type result struct {
	code           int
	stdout, stderr string
}

// run runs the binary with args, bounded in time.
func (st *store) run(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = append(append(os.Environ(), st.env...), env...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run s3cryptfs %v: %v", args, err)
	}
	return r
}

// passFile writes a passphrase file and returns its path.
func passFile(t *testing.T, pass string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "pass")
	if err := os.WriteFile(p, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// init creates the vault with the test passphrase and extra init options.
func (st *store) init(t *testing.T, extra ...string) {
	t.Helper()
	args := append([]string{"init", "--passphrase-file", passFile(t, passphrase)}, st.args...)
	args = append(append(args, extra...), st.spec)
	if r := st.run(t, nil, args...); r.code != 0 {
		t.Fatalf("init: exit %d: %s", r.code, r.stderr)
	}
}

// mount is a live mount of the binary.
type mount struct {
	dir string
	log string
	st  *store
	t   *testing.T
}

// mount mounts the store (passphrase from a file) with extra options and
// registers a cleanup that always unmounts, lazily if need be.
func (st *store) mount(t *testing.T, extra ...string) *mount {
	t.Helper()
	m, r := st.tryMount(t, append([]string{"--passphrase-file", passFile(t, passphrase)}, extra...)...)
	if r.code != 0 {
		t.Fatalf("mount: exit %d: %s\nlog:\n%s", r.code, r.stderr, readLog(m.log))
	}
	return m
}

// tryMount runs mount with exactly the given options (plus the store's) and
// returns the result whatever it is.
func (st *store) tryMount(t *testing.T, opts ...string) (*mount, result) {
	t.Helper()
	return st.tryMountAt(t, t.TempDir(), opts...)
}

// remount unmounts m and mounts the store again on the same directory with
// the test passphrase and extra options.
func (m *mount) remount(extra ...string) *mount {
	m.t.Helper()
	m.unmount()
	n, r := m.st.tryMountAt(m.t, m.dir, append([]string{"--passphrase-file", passFile(m.t, passphrase)}, extra...)...)
	if r.code != 0 {
		m.t.Fatalf("remount: exit %d: %s\nlog:\n%s", r.code, r.stderr, readLog(n.log))
	}
	return n
}

func (st *store) tryMountAt(t *testing.T, dir string, opts ...string) (*mount, result) {
	t.Helper()
	m := &mount{dir: dir, log: filepath.Join(t.TempDir(), "mount.log"), st: st, t: t}
	args := append([]string{"mount", "--log-file", m.log, "--attr-timeout", "200ms"}, st.args...)
	args = append(append(args, opts...), st.spec, m.dir)
	r := st.run(t, nil, args...)
	t.Cleanup(func() { m.cleanup() })
	return m, r
}

func (m *mount) cleanup() {
	if !isMounted(m.dir) {
		return
	}
	if r := m.st.run(m.t, nil, "unmount", m.dir); r.code != 0 {
		m.t.Logf("unmount %s: %s; detaching lazily", m.dir, r.stderr)
		syscall.Unmount(m.dir, unix.MNT_DETACH)
	}
}

// unmount unmounts and fails the test if that does not work.
func (m *mount) unmount() {
	m.t.Helper()
	if r := m.st.run(m.t, nil, "unmount", m.dir); r.code != 0 {
		m.t.Fatalf("unmount: exit %d: %s", r.code, r.stderr)
	}
	if isMounted(m.dir) {
		m.t.Fatalf("%s still mounted after unmount", m.dir)
	}
}

func (m *mount) path(name string) string { return filepath.Join(m.dir, name) }

func readLog(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// isMounted reads /proc/self/mountinfo.
func isMounted(dir string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 4 && f[4] == dir {
			return true
		}
	}
	return false
}

// raw returns an object's stored bytes, bypassing s3cryptfs's data path:
// the bare SDK for MinIO, the local store's own reader for a directory.
func (st *store) raw(t *testing.T, key string) []byte {
	t.Helper()
	key = st.key(t, key)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st.kind == "minio" {
		out, err := st.srv.SDKClient(t).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatalf("raw get %s: %v", key, err)
		}
		defer out.Body.Close()
		b, err := io.ReadAll(out.Body)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ls, err := local.New(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ls.Get(ctx, key, 0, -1, backend.GetOptions{})
	if err != nil {
		t.Fatalf("raw get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rawMaybe is raw without failing: nil if the object is missing.
func (st *store) rawMaybe(t *testing.T, key string) []byte {
	t.Helper()
	key = st.key(t, key)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st.kind == "minio" {
		out, err := st.srv.SDKClient(t).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key)})
		if err != nil {
			return nil
		}
		defer out.Body.Close()
		b, _ := io.ReadAll(out.Body)
		return b
	}
	ls, err := local.New(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := ls.Get(ctx, key, 0, -1, backend.GetOptions{})
	if err != nil {
		return nil
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	return b
}

// corrupt flips one byte of the object's data at offset off.
func (st *store) corrupt(t *testing.T, key string, off int) {
	t.Helper()
	key = st.key(t, key)
	if st.kind == "local" {
		p := filepath.Join(st.dir, strings.ReplaceAll(key, "/", ".dir/")+".obj")
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		i := len(b) - len(st.raw(t, key)) + off // skip the store's own header
		b[i] ^= 0x5a
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := st.srv.SDKClient(t)
	head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	b := st.raw(t, key)
	b[off] ^= 0x5a
	if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key),
		Body: bytes.NewReader(b), Metadata: head.Metadata}); err != nil {
		t.Fatal(err)
	}
}

// rawMeta returns an object's user metadata as the store holds it.
func (st *store) rawMeta(t *testing.T, key string) map[string]string {
	t.Helper()
	return st.rawMetaKey(t, st.key(t, key))
}

// rawMetaKey is rawMeta of an object key (no path mapping).
func (st *store) rawMetaKey(t *testing.T, key string) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st.kind == "minio" {
		out, err := st.srv.SDKClient(t).HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatalf("raw head %s: %v", key, err)
		}
		return out.Metadata
	}
	ls, err := local.New(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ls.Stat(ctx, key)
	if err != nil {
		t.Fatalf("raw stat %s: %v", key, err)
	}
	return info.Metadata
}

// copyRaw copies an object with its metadata behind the mount's back, as
// another S3 tool would (a server-side copy keeps the user metadata).
func (st *store) copyRaw(t *testing.T, src, dst string) {
	t.Helper()
	src, dst = st.key(t, src), st.key(t, dst)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st.kind == "minio" {
		_, err := st.srv.SDKClient(t).CopyObject(ctx, &s3.CopyObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(dst),
			CopySource: aws.String(st.bucket + "/" + src)})
		if err != nil {
			t.Fatalf("raw copy %s %s: %v", src, dst, err)
		}
		return
	}
	ls, err := local.New(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Copy(ctx, src, dst, backend.CopyOptions{}); err != nil {
		t.Fatalf("raw copy %s %s: %v", src, dst, err)
	}
}

// encryptedKey matches the keys of the encrypted-name layout (fs/names).
var encryptedKey = regexp.MustCompile(`^d/[a-z2-7]{32}/`)

// key maps a path of the vault ("a/b", a marker "a/b/") to its object key,
// as the mount stores it: the path itself with plaintext names; through
// fs/names with encrypted names, resolving each directory by its marker.
// The vault's own objects (the config, the attribute indexes) and keys
// already in the encrypted layout ("d/...") are returned as they are. The
// vault must have been made with the test passphrase.
func (st *store) key(t *testing.T, path string) string {
	t.Helper()
	if path == fs.ConfigKey || strings.HasPrefix(path, fs.IndexRoot) || encryptedKey.MatchString(path) || strings.HasPrefix(path, "saved-") {
		return path
	}
	l := st.nameLayout(t)
	if !l.Encrypted() {
		return path
	}
	marker := strings.HasSuffix(path, "/")
	comps := strings.Split(strings.TrimSuffix(path, "/"), "/")
	loc := l.Root()
	for _, c := range comps[:len(comps)-1] {
		e, err := l.Entry(loc, c)
		if err != nil {
			t.Fatalf("key of %s: %v", path, err)
		}
		if loc, err = l.Child(loc, c, st.rawMetaKey(t, l.Marker(e.Key))); err != nil {
			t.Fatalf("key of %s: directory %s: %v", path, c, err)
		}
	}
	e, err := l.Entry(loc, comps[len(comps)-1])
	if err != nil {
		t.Fatalf("key of %s: %v", path, err)
	}
	if marker {
		return l.Marker(e.Key)
	}
	return e.Key
}

// names is the vault's names layer, from its config opened with the test
// passphrase (once per store).
func (st *store) nameLayout(t *testing.T) *fsnames.Layout {
	t.Helper()
	if st.layout != nil {
		return st.layout
	}
	data := st.raw(t, fs.ConfigKey)
	cfg, err := cipher.ParseConfig(data)
	if err != nil {
		t.Fatalf("vault config: %v", err)
	}
	st.layout = fsnames.Plain()
	if !cfg.EncryptedNames() {
		return st.layout
	}
	u, err := cfg.UnlockSecret(cipher.Passphrase([]byte(passphrase)))
	if err != nil {
		t.Fatalf("open the vault config with the test passphrase (to map paths to keys): %v", err)
	}
	if st.layout, err = fsnames.New(u.Keys().NameKey()); err != nil {
		t.Fatal(err)
	}
	return st.layout
}
