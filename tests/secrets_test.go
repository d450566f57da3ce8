package tests

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	encbin "encoding/binary"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend/local"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
)

// putLocal stores an object in a local store directly, as anyone with
// write access to the store could.
func (st *store) putLocal(t *testing.T, key string, data []byte) {
	t.Helper()
	ls, err := local.New(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := ls.Put(ctx, key, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
}

// newMount is a mount record for a mount made with st.run directly, with
// the usual cleanup.
func (st *store) newMount(t *testing.T, log string) *mount {
	m := &mount{dir: t.TempDir(), log: log, st: st, t: t}
	t.Cleanup(m.cleanup)
	return m
}

// TestKDFCapForgedConfig: a vault config forged (valid checksum) to ask for
// an Argon2id cost above the cap is refused by mount in under a second,
// i.e. before the KDF runs: 64 MiB x 17 passes alone takes seconds, and
// 4 GiB x 64 passes (the old bound) minutes.
func TestKDFCapForgedConfig(t *testing.T) {
	st := newStore(t, "local")
	st.init(t)
	good := st.raw(t, fs.ConfigKey)
	pf := passFile(t, passphrase)
	for _, p := range []struct {
		time, memKiB uint32
		threads      uint8
	}{{17, 64 << 10, 4}, {64, 4 << 20, 64}} {
		// init writes a version-2 config whose first slot (at 32) is the
		// passphrase's: kind, reserved, body length, then the KDF cost.
		forged := bytes.Clone(good)
		if forged[32] != byte(cipher.SlotPassphrase) {
			t.Fatalf("first slot has kind %d, want a passphrase slot", forged[32])
		}
		encbin.BigEndian.PutUint32(forged[36:40], p.time)
		encbin.BigEndian.PutUint32(forged[40:44], p.memKiB)
		forged[44] = p.threads
		end := len(forged) - sha256.Size
		sum := sha256.Sum256(forged[:end])
		copy(forged[end:], sum[:])
		st.putLocal(t, fs.ConfigKey, forged)

		start := time.Now()
		m, r := st.tryMount(t, "--passphrase-file", pf)
		el := time.Since(start)
		if r.code != 1 || !strings.Contains(r.stderr, "above the cap") || isMounted(m.dir) {
			t.Fatalf("forged config %+v: exit %d after %v, stderr %q; want exit 1 naming the cap, nothing mounted", p, r.code, el, r.stderr)
		}
		if el >= time.Second {
			t.Fatalf("forged config %+v refused only after %v: the KDF ran first", p, el)
		}
		t.Logf("forged config %+v refused in %v: %s", p, el, strings.TrimSpace(r.stderr))
	}
}

// daemonPID finds the background mount serving mnt in the process list.
func daemonPID(t *testing.T, mnt string) int {
	t.Helper()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if filepath.Base(args[0]) == "s3cryptfs" && slices.Contains(args, "--foreground") && slices.Contains(args, mnt) {
			pids = append(pids, pid)
		}
	}
	if len(pids) != 1 {
		t.Fatalf("want one s3cryptfs process serving %s, found %v", mnt, pids)
	}
	return pids[0]
}

// TestPassphraseNotInDaemonEnvironment: a background mount given the
// passphrase in S3CRYPTFS_PASSPHRASE serves from a process whose
// environment (and command line) does not hold it.
func TestPassphraseNotInDaemonEnvironment(t *testing.T) {
	st := newStore(t, "local")
	st.init(t)
	m := st.newMount(t, filepath.Join(t.TempDir(), "mount.log"))
	const marker = "S3CRYPTFS_TEST_MARKER=inherited"
	r := st.run(t, []string{"S3CRYPTFS_PASSPHRASE=" + passphrase, marker}, "mount", "--log-file", m.log, st.spec, m.dir)
	if r.code != 0 {
		t.Fatalf("mount with S3CRYPTFS_PASSPHRASE: exit %d %s", r.code, r.stderr)
	}
	writeFile(t, m.path("f"), "unlocked")
	wantContent(t, m.path("f"), "unlocked")
	pid := daemonPID(t, m.dir)
	env, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(env, []byte(marker)) {
		t.Fatalf("process %d does not have the environment the mount was started with", pid)
	}
	if bytes.Contains(env, []byte(passphrase)) || bytes.Contains(env, []byte("S3CRYPTFS_PASSPHRASE")) {
		t.Fatalf("the passphrase is in the environment of the background mount (pid %d)", pid)
	}
	cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if bytes.Contains(cmdline, []byte(passphrase)) {
		t.Fatal("the passphrase is on the background mount's command line")
	}
}

// TestKeyFiles: init --new-key-file makes a 0600 key file that mounts the
// vault and is never overwritten; a key file others can read is refused
// with the chmod to run; a vault made with a raw 32-byte key file (earlier
// versions) is refused with the conversion command, and the converted file
// opens it.
func TestKeyFiles(t *testing.T) {
	st := newStore(t, "local")
	kf := filepath.Join(t.TempDir(), "vault.key")
	if r := st.run(t, nil, "init", "--new-key-file", kf, st.spec); r.code != 0 {
		t.Fatalf("init --new-key-file: exit %d %s", r.code, r.stderr)
	}
	fi, err := os.Stat(kf)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != 45 {
		t.Fatalf("new key file: %v %v; want mode 0600, 44 base64 characters and a newline", fi, err)
	}
	key, _ := os.ReadFile(kf)
	m, r := st.tryMount(t, "--key-file", kf)
	if r.code != 0 {
		t.Fatalf("mount --key-file: exit %d %s", r.code, r.stderr)
	}
	writeFile(t, m.path("f"), "key file vault")
	m.unmount()

	st2 := newStore(t, "local")
	if r := st2.run(t, nil, "init", "--new-key-file", kf, st2.spec); r.code != 1 || !strings.Contains(r.stderr, "already exists") {
		t.Fatalf("init --new-key-file over an existing file: exit %d %s", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(kf); !bytes.Equal(b, key) {
		t.Fatal("init overwrote an existing key file")
	}
	if st2.rawMaybe(t, fs.ConfigKey) != nil {
		t.Fatal("init created a vault after refusing the key file")
	}

	if err := os.Chmod(kf, 0o644); err != nil {
		t.Fatal(err)
	}
	m, r = st.tryMount(t, "--key-file", kf)
	if r.code != 1 || !strings.Contains(r.stderr, "chmod 600 "+kf) || isMounted(m.dir) {
		t.Fatalf("key file mode 0644: exit %d, stderr %q; want a refusal saying chmod 600 %s", r.code, r.stderr, kf)
	}
	os.Chmod(kf, 0o600)

	// A vault made by an earlier version with a raw key file.
	raw := make([]byte, 32)
	rand.Read(raw)
	cfg, _, err := cipher.NewConfig(raw, cipher.ConfigOptions{KeyFile: true})
	if err != nil {
		t.Fatal(err)
	}
	old := newStore(t, "local")
	old.putLocal(t, fs.ConfigKey, cfg.Marshal())
	rawPath := filepath.Join(t.TempDir(), "raw.key")
	if err := os.WriteFile(rawPath, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	m, r = old.tryMount(t, "--key-file", rawPath)
	if r.code != 1 || isMounted(m.dir) {
		t.Fatalf("raw key file: exit %d %s; want a refusal", r.code, r.stderr)
	}
	conv := regexp.MustCompile("`(\\(umask 077; base64 -w0 [^`]*)`").FindStringSubmatch(r.stderr)
	if conv == nil {
		t.Fatalf("raw key file refused without the conversion command: %q", r.stderr)
	}
	if out, err := exec.Command("sh", "-c", conv[1]).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v %s", conv[1], err, out)
	}
	m, r = old.tryMount(t, "--key-file", rawPath+".b64")
	if r.code != 0 {
		t.Fatalf("converted key file (%s): exit %d %s", conv[1], r.code, r.stderr)
	}
	writeFile(t, m.path("g"), "old vault, new key file")
	wantContent(t, m.path("g"), "old vault, new key file")
}

// TestDefaultLogFile: without --log-file a background mount logs to
// $XDG_RUNTIME_DIR (else $XDG_STATE_HOME/s3cryptfs, made 0700) in a 0600
// file, and a symlink planted at that path is not followed.
func TestDefaultLogFile(t *testing.T) {
	st := newStore(t, "local")
	st.init(t)
	pf := passFile(t, passphrase)
	logName := func(mnt string) string {
		return "s3cryptfs-" + strings.Trim(strings.ReplaceAll(mnt, "/", "-"), "-") + ".log"
	}
	runDir := t.TempDir()
	env := []string{"XDG_RUNTIME_DIR=" + runDir}
	m := st.newMount(t, "")
	m.log = filepath.Join(runDir, logName(m.dir))
	target := filepath.Join(t.TempDir(), "target")
	if err := os.WriteFile(target, nil, 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, m.log); err != nil {
		t.Fatal(err)
	}
	r := st.run(t, env, "mount", "--passphrase-file", pf, st.spec, m.dir)
	if r.code != 1 || !strings.Contains(r.stderr, "symbolic link") || isMounted(m.dir) {
		t.Fatalf("planted symlink: exit %d, stderr %q; want a refusal, nothing mounted", r.code, r.stderr)
	}
	if b, _ := os.ReadFile(target); len(b) != 0 {
		t.Fatalf("wrote through the planted symlink: %q", b)
	}
	os.Remove(m.log)
	if r := st.run(t, env, "mount", "--passphrase-file", pf, st.spec, m.dir); r.code != 0 {
		t.Fatalf("mount: exit %d %s", r.code, r.stderr)
	}
	if fi, err := os.Lstat(m.log); err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o600 {
		t.Fatalf("log file %s: %v %v, want a regular file, mode 0600", m.log, fi, err)
	}
	m.unmount()
	if !strings.Contains(readLog(m.log), "mounted") {
		t.Fatalf("log %s does not record the mount:\n%s", m.log, readLog(m.log))
	}

	state := t.TempDir()
	env = []string{"XDG_RUNTIME_DIR=", "XDG_STATE_HOME=" + state}
	m = st.newMount(t, "")
	if r := st.run(t, env, "mount", "--passphrase-file", pf, st.spec, m.dir); r.code != 0 {
		t.Fatalf("mount: exit %d %s", r.code, r.stderr)
	}
	dir := filepath.Join(state, "s3cryptfs")
	if fi, err := os.Stat(dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("log directory %s: %v %v, want mode 0700", dir, fi, err)
	}
	if fi, err := os.Lstat(filepath.Join(dir, logName(m.dir))); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("log file: %v %v, want mode 0600", fi, err)
	}
}

// TestFuseDebugFlag: FUSE request logging (which records file names and
// data) happens only with --fuse-debug, which warns; the old environment
// variable no longer turns it on.
func TestFuseDebugFlag(t *testing.T) {
	st := newStore(t, "local")
	st.init(t)
	pf := passFile(t, passphrase)
	const name = "canary-name.txt"
	m := st.newMount(t, filepath.Join(t.TempDir(), "env.log"))
	r := st.run(t, []string{"S3CRYPTFS_FUSE_DEBUG=1"}, "mount", "--passphrase-file", pf, "--log-file", m.log, st.spec, m.dir)
	if r.code != 0 || !strings.Contains(r.stderr, "no longer read") {
		t.Fatalf("mount with S3CRYPTFS_FUSE_DEBUG: exit %d, stderr %q; want a warning that it is ignored", r.code, r.stderr)
	}
	writeFile(t, m.path(name), "data")
	m.unmount()
	if strings.Contains(readLog(m.log), name) {
		t.Fatalf("S3CRYPTFS_FUSE_DEBUG still logs requests:\n%s", readLog(m.log))
	}

	m = st.newMount(t, filepath.Join(t.TempDir(), "flag.log"))
	r = st.run(t, nil, "mount", "--fuse-debug", "--passphrase-file", pf, "--log-file", m.log, st.spec, m.dir)
	if r.code != 0 || !strings.Contains(r.stderr, "--fuse-debug logs file names") {
		t.Fatalf("mount --fuse-debug: exit %d, stderr %q; want a warning", r.code, r.stderr)
	}
	writeFile(t, m.path(name+"2"), "data")
	m.unmount()
	if log := readLog(m.log); !strings.Contains(log, name+"2") || !strings.Contains(log, "--fuse-debug logs file names") {
		t.Fatalf("--fuse-debug: log lacks the requests or the warning:\n%s", log)
	}
}
