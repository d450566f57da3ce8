package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
)

// The key-management commands through the binary, over MinIO with TLS
// (and local-kms for KMS slots, in kms_test.go).

// dataETags maps every data object of the bucket (everything but the
// vault config and the index) to its ETag: a command that claims to touch
// only the config must leave this map as it was.
func (st *store) dataETags(t *testing.T) map[string]string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out := map[string]string{}
	p := s3.NewListObjectsV2Paginator(st.srv.SDKClient(t), &s3.ListObjectsV2Input{Bucket: aws.String(st.bucket)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			if k := aws.ToString(o.Key); !strings.HasPrefix(k, ".s3cryptfs") {
				out[k] = aws.ToString(o.ETag)
			}
		}
	}
	return out
}

// initRecovery inits the store with the test passphrase and returns the
// path of a file holding the recovery key init printed.
func (st *store) initRecovery(t *testing.T, extra ...string) string {
	t.Helper()
	args := append([]string{"init", "--passphrase-file", passFile(t, passphrase)}, st.args...)
	r := st.run(t, nil, append(append(args, extra...), st.spec)...)
	if r.code != 0 {
		t.Fatalf("init: exit %d: %s", r.code, r.stderr)
	}
	return recoveryFile(t, r.stdout)
}

var recoveryRE = regexp.MustCompile(`(?m)^\s+([A-Z2-7]{8}(?:-[A-Z2-7]{8})+)\s*$`)

// recoveryFile finds the recovery key in a command's output and writes it
// to a 0600 file, as a user would keep it.
func recoveryFile(t *testing.T, out string) string {
	t.Helper()
	m := recoveryRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no recovery key in the output:\n%s", out)
	}
	if _, err := cipher.ParseRecoveryKey(m[1]); err != nil {
		t.Fatalf("printed recovery key %q does not parse: %v", m[1], err)
	}
	p := filepath.Join(t.TempDir(), "recovery")
	if err := os.WriteFile(p, []byte(m[1]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// mustRun runs the binary with the store's options and fails on a non-zero
// exit.
func (st *store) mustRun(t *testing.T, args ...string) result {
	t.Helper()
	r := st.run(t, nil, st.cmd(args...)...)
	if r.code != 0 {
		t.Fatalf("%v: exit %d: %s", args, r.code, r.stderr)
	}
	return r
}

// cmd is args (a command and its options) with the store's options and
// the store appended; operands after the store go in with "--" splitting.
func (st *store) cmd(args ...string) []string {
	var before, after []string
	seen := false
	for _, a := range args {
		switch {
		case a == "--":
			seen = true
		case seen:
			after = append(after, a)
		default:
			before = append(before, a)
		}
	}
	out := append(append(before, st.args...), st.spec)
	return append(out, after...)
}

// wantMountFails checks a mount that must fail: exit 1, the message, and
// nothing mounted.
func wantMountFails(t *testing.T, st *store, msg string, opts ...string) {
	t.Helper()
	m, r := st.tryMount(t, opts...)
	if r.code != 1 || !strings.Contains(r.stderr, msg) {
		t.Fatalf("mount %v: exit %d, stderr %q; want exit 1 and %q", opts, r.code, r.stderr, msg)
	}
	t.Logf("mount %v refused: %s", opts, strings.TrimSpace(r.stderr))
	if strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
		t.Fatalf("mount error is not one line: %q", r.stderr)
	}
	if isMounted(m.dir) {
		t.Fatalf("%s mounted although mount failed", m.dir)
	}
}

// TestPasswd: passwd changes the passphrase (the new one mounts, the old
// one fails, no data object is rewritten), and of two passwd at once one
// wins, the other fails with a clear message, and the vault still opens.
func TestPasswd(t *testing.T) {
	st := newStore(t, "minio")
	st.initRecovery(t)
	m := st.mount(t)
	writeFile(t, m.path("a"), "alpha")
	writeFile(t, m.path("b"), strings.Repeat("b", 200000))
	m.unmount()
	before := st.dataETags(t)
	if len(before) < 2 {
		t.Fatalf("data objects: %v", before)
	}

	newPass := passFile(t, "a brand new passphrase")
	r := st.mustRun(t, "passwd", "--passphrase-file", passFile(t, passphrase), "--new-passphrase-file", newPass)
	if !strings.Contains(r.stdout, "passphrase changed") {
		t.Fatalf("passwd output: %q", r.stdout)
	}
	wantMountFails(t, st, "wrong passphrase", "--passphrase-file", passFile(t, passphrase))
	m, r = st.tryMount(t, "--passphrase-file", newPass)
	if r.code != 0 {
		t.Fatalf("mount with the new passphrase: exit %d: %s", r.code, r.stderr)
	}
	wantContent(t, m.path("a"), "alpha")
	wantContent(t, m.path("b"), strings.Repeat("b", 200000))
	m.unmount()
	if after := st.dataETags(t); !maps.Equal(before, after) {
		t.Fatalf("passwd rewrote data objects:\nbefore %v\nafter  %v", before, after)
	}

	// Two at once from the same passphrase: both read the config, run the
	// KDF (about as long as each takes), and write conditionally.
	news := []string{passFile(t, "racer one"), passFile(t, "racer two")}
	var wg sync.WaitGroup
	res := make([]result, 2)
	for i := range res {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i] = st.run(t, nil, st.cmd("passwd", "--passphrase-file", newPass, "--new-passphrase-file", news[i])...)
		}()
	}
	wg.Wait()
	winner := -1
	for i, r := range res {
		switch {
		case r.code == 0 && winner < 0:
			winner = i
		case r.code == 0:
			t.Fatalf("both passwd succeeded: %+v", res)
		case r.code == 1 && (strings.Contains(r.stderr, "another change to the vault config was written while this one ran") || strings.Contains(r.stderr, "wrong passphrase")):
			t.Logf("loser: %s", strings.TrimSpace(r.stderr))
		default:
			t.Fatalf("passwd %d: exit %d: %q", i, r.code, r.stderr)
		}
	}
	if winner < 0 {
		t.Fatalf("no passwd won: %+v", res)
	}
	m, r = st.tryMount(t, "--passphrase-file", news[winner])
	if r.code != 0 {
		t.Fatalf("mount with the winner's passphrase: exit %d: %s", r.code, r.stderr)
	}
	wantContent(t, m.path("a"), "alpha")
	m.unmount()
	wantMountFails(t, st, "wrong passphrase", "--passphrase-file", news[1-winner])
}

// TestKeySlots: key list as a table and JSON, key add (key file, passphrase),
// key remove, and the last slot's removal refused.
func TestKeySlots(t *testing.T) {
	st := newStore(t, "minio")
	rec := st.initRecovery(t)
	r := st.mustRun(t, "key", "list")
	for _, want := range []string{"vault config version 2, 1 master key(s), encrypted names", "SLOT  KIND", "0     passphrase    -        argon2id t=3 m=64MiB p=4", "1     recovery key  -        -"} {
		if !strings.Contains(r.stdout, want) {
			t.Fatalf("key list lacks %q:\n%s", want, r.stdout)
		}
	}
	kf := filepath.Join(t.TempDir(), "key")
	st.mustRun(t, "key", "add", "--recovery-key-file", rec, "--new-key-file", kf)
	st.mustRun(t, "key", "add", "--key-file", kf, "--new-passphrase-file", passFile(t, "second passphrase"))

	type listing struct {
		Version int `json:"version"`
		Keys    int `json:"master_keys"`
		Slots   []struct {
			Slot int    `json:"slot"`
			Kind string `json:"kind"`
			KDF  *struct {
				Time      uint32 `json:"time"`
				MemoryKiB uint32 `json:"memory_kib"`
			} `json:"kdf"`
		} `json:"slots"`
	}
	list := func() listing {
		t.Helper()
		var l listing
		r := st.mustRun(t, "key", "list", "--json")
		if err := json.Unmarshal([]byte(r.stdout), &l); err != nil {
			t.Fatalf("key list --json: %v\n%s", err, r.stdout)
		}
		return l
	}
	l := list()
	var kinds []string
	for i, s := range l.Slots {
		if s.Slot != i {
			t.Fatalf("slot index %d at %d", s.Slot, i)
		}
		kinds = append(kinds, s.Kind)
	}
	if l.Version != 2 || l.Keys != 1 || strings.Join(kinds, ",") != "passphrase,recovery key,key file,passphrase" ||
		l.Slots[0].KDF == nil || l.Slots[0].KDF.MemoryKiB != 64<<10 || l.Slots[1].KDF != nil {
		t.Fatalf("key list --json: %+v", l)
	}
	// Each secret mounts.
	for _, opt := range [][]string{{"--key-file", kf}, {"--recovery-key-file", rec}, {"--passphrase-file", passFile(t, "second passphrase")}} {
		m, r := st.tryMount(t, opt...)
		if r.code != 0 {
			t.Fatalf("mount %v: exit %d: %s", opt, r.code, r.stderr)
		}
		m.unmount()
	}
	// Remove down to one slot, with the key file (slot 2) unlocking.
	for _, i := range []string{"3", "1", "0"} {
		st.mustRun(t, "key", "remove", "--key-file", kf, "--", i)
	}
	if l := list(); len(l.Slots) != 1 || l.Slots[0].Kind != "key file" {
		t.Fatalf("after removals: %+v", l)
	}
	r = st.run(t, nil, st.cmd("key", "remove", "--key-file", kf, "--", "0")...)
	if r.code != 1 || !strings.Contains(r.stderr, "the vault's last") || !strings.Contains(r.stderr, "key add") {
		t.Fatalf("removing the last slot: exit %d: %q", r.code, r.stderr)
	}
	wantMountFails(t, st, "no recovery key slot", "--recovery-key-file", rec) // the removed recovery key opens nothing
	m, r := st.tryMount(t, "--key-file", kf)
	if r.code != 0 {
		t.Fatalf("mount with the key file: exit %d: %s", r.code, r.stderr)
	}
	m.unmount()
}

// TestLostConfigAndPassphrase: the recovery key sets a new passphrase
// (recover; the old one stops working), and with the store's config
// deleted, mount --config of an exported copy mounts and reads every file.
func TestLostConfigAndPassphrase(t *testing.T) {
	st := newStore(t, "minio")
	rec := st.initRecovery(t)
	m := st.mount(t)
	var r result
	files := map[string]string{"a": "alpha", "d/b": strings.Repeat("xyz", 100000), "d/e/c": "gamma"}
	os.MkdirAll(m.path("d/e"), 0o755)
	for n, c := range files {
		writeFile(t, m.path(n), c)
	}
	m.unmount()
	before := st.dataETags(t)

	newPass := passFile(t, "after the recovery")
	r = st.mustRun(t, "recover", "--recovery-key-file", rec, "--new-passphrase-file", newPass)
	if !strings.Contains(r.stdout, "1 old passphrase slot(s) removed") {
		t.Fatalf("recover: %q", r.stdout)
	}
	wantMountFails(t, st, "wrong passphrase", "--passphrase-file", passFile(t, passphrase))

	exp := filepath.Join(t.TempDir(), "vault.conf")
	st.mustRun(t, "config", "export", "--passphrase-file", newPass, "--", exp)
	if fi, err := os.Stat(exp); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("export: %v %v", fi, err)
	}
	if r := st.run(t, nil, st.cmd("config", "export", "--passphrase-file", newPass, "--", exp)...); r.code != 1 || !strings.Contains(r.stderr, "refusing to overwrite") {
		t.Fatalf("export over an existing file: exit %d: %q", r.code, r.stderr)
	}

	// A damaged config: mount names --config; with it, the vault mounts.
	good := st.raw(t, fs.ConfigKey)
	st.putRaw(t, fs.ConfigKey, append(good[:len(good)-1:len(good)-1], good[len(good)-1]^1))
	wantMountFails(t, st, "--config FILE", "--passphrase-file", newPass)
	m, r = st.tryMount(t, "--config", exp, "--passphrase-file", newPass)
	if r.code != 0 {
		t.Fatalf("mount --config over a damaged config: exit %d: %s", r.code, r.stderr)
	}
	wantContent(t, m.path("a"), "alpha")
	m.unmount()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := st.srv.SDKClient(t).DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(fs.ConfigKey)}); err != nil {
		t.Fatal(err)
	}
	wantMountFails(t, st, "--config FILE", "--passphrase-file", newPass)
	for _, opt := range [][]string{{"--passphrase-file", newPass}, {"--recovery-key-file", rec}} {
		m, r := st.tryMount(t, append([]string{"--config", exp}, opt...)...)
		if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", daemonPID(t, m.dir))); err != nil || bytes.Contains(b, []byte("recovery-key-file")) || bytes.Contains(b, []byte("passphrase-file")) {
			t.Fatalf("background mount's command line names the secret's source: %q %v", b, err)
		}
		if r.code != 0 {
			t.Fatalf("mount --config %v: exit %d: %s", opt, r.code, r.stderr)
		}
		for n, c := range files {
			wantContent(t, m.path(n), c)
		}
		m.unmount()
	}
	wantMountFails(t, st, "wrong passphrase", "--config", exp, "--passphrase-file", passFile(t, passphrase))
	if after := st.dataETags(t); !maps.Equal(before, after) {
		t.Fatalf("data objects changed:\nbefore %v\nafter  %v", before, after)
	}
}

// TestRotateRemount: after rotate, a remount writes new objects under the
// new master key, and the old objects still read.
func TestRotateRemount(t *testing.T) {
	st := newStore(t, "minio")
	rec := st.initRecovery(t)
	m := st.mount(t)
	writeFile(t, m.path("old"), "under the first key")
	m.unmount()
	oldID, ok := cipher.HeaderKeyID(st.raw(t, "old"))
	if !ok {
		t.Fatal("no key id in the old object's header")
	}
	r := st.mustRun(t, "rotate", "--passphrase-file", passFile(t, passphrase))
	if !strings.Contains(r.stdout, "2 in the keyring") {
		t.Fatalf("rotate: %q", r.stdout)
	}
	m = st.mount(t)
	writeFile(t, m.path("new"), "under the second key")
	wantContent(t, m.path("old"), "under the first key")
	m.unmount()
	newID, ok := cipher.HeaderKeyID(st.raw(t, "new"))
	if !ok || newID == oldID || !strings.Contains(r.stdout, newID.String()) {
		t.Fatalf("new object's key %s (ok %v), old %s, rotate said %q", newID, ok, oldID, r.stdout)
	}
	// rekey needs every slot's secret: without the recovery key it names
	// the slot and changes nothing.
	r = st.run(t, nil, st.cmd("rekey", "--passphrase-file", passFile(t, passphrase))...)
	if r.code != 1 || !strings.Contains(r.stderr, "slot 1 (recovery key") {
		t.Fatalf("rekey without the recovery key: exit %d: %q", r.code, r.stderr)
	}
	before := st.raw(t, fs.ConfigKey)
	// With it, every slot is rewrapped under a new config key: the config
	// changes, both secrets still open it, and the data reads.
	st.mustRun(t, "rekey", "--passphrase-file", passFile(t, passphrase), "--also-recovery-key-file", rec)
	if after := st.raw(t, fs.ConfigKey); bytes.Equal(before, after) {
		t.Fatal("rekey left the config as it was")
	}
	m = st.mount(t)
	wantContent(t, m.path("old"), "under the first key")
	m.unmount()
	m, r = st.tryMount(t, "--recovery-key-file", rec)
	if r.code != 0 {
		t.Fatalf("mount with the recovery key after rekey: exit %d: %s", r.code, r.stderr)
	}
	wantContent(t, m.path("new"), "under the second key")
	m.unmount()
}

// TestVaultV1Passwd: a version-1 vault (tests/testdata/vault-v1) mounts;
// passwd upgrades it to version 2 without rewriting any data object, and it
// mounts with the new passphrase.
func TestVaultV1Passwd(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/vault-v1")); err != nil {
		t.Fatal(err)
	}
	st := &store{kind: "local", spec: dir, dir: dir}
	sums := func() map[string][32]byte {
		out := map[string][32]byte{}
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() && !strings.Contains(p, ".s3cryptfs") {
				b, _ := os.ReadFile(p)
				out[p] = sha256.Sum256(b)
			}
			return nil
		})
		return out
	}
	before := sums()
	old := passFile(t, "fixture passphrase v1")
	r := st.mustRun(t, "key", "list", "--json")
	if !strings.Contains(r.stdout, `"version": 1`) {
		t.Fatalf("fixture config: %s", r.stdout)
	}
	// A version-1 vault has no recovery key: recover says so.
	key, printed := cipher.NewRecoveryKey()
	clear(key)
	rec := filepath.Join(t.TempDir(), "recovery")
	if err := os.WriteFile(rec, []byte(printed), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := st.run(t, nil, st.cmd("recover", "--recovery-key-file", rec, "--new-passphrase-file", old)...); r.code != 1 || !strings.Contains(r.stderr, "the vault has no recovery key slot") {
		t.Fatalf("recover on a version-1 vault: exit %d: %q", r.code, r.stderr)
	}
	m, r := st.tryMount(t, "--passphrase-file", old)
	if r.code != 0 {
		t.Fatalf("mount v1: exit %d: %s", r.code, r.stderr)
	}
	hello, err := os.ReadFile(m.path("hello.txt"))
	if err != nil {
		t.Fatal(err)
	}
	m.unmount()
	newPass := passFile(t, "upgraded passphrase")
	st.mustRun(t, "passwd", "--passphrase-file", old, "--new-passphrase-file", newPass)
	if r := st.mustRun(t, "key", "list", "--json"); !strings.Contains(r.stdout, `"version": 2`) {
		t.Fatalf("after passwd: %s", r.stdout)
	}
	wantMountFails(t, st, "wrong passphrase", "--passphrase-file", old)
	m, r = st.tryMount(t, "--passphrase-file", newPass)
	if r.code != 0 {
		t.Fatalf("mount upgraded: exit %d: %s", r.code, r.stderr)
	}
	wantContent(t, m.path("hello.txt"), string(hello))
	m.unmount()
	if !maps.Equal(before, sums()) {
		t.Fatal("passwd changed data objects of the version-1 vault")
	}
}

// TestRotateRewrite: after a rotation, rotate --rewrite moves every object
// (files, a symlink, the attribute indexes) under the current key, drops
// the older key, and every file reads back identical; a second run finds
// nothing to do.
func TestRotateRewrite(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		want := map[string]string{}
		for i := range 12 {
			name := fmt.Sprintf("f%02d", i)
			want[name] = strings.Repeat(name, 1000*i+1) // up to 3 blocks
			writeFile(t, m.path(name), want[name])
		}
		if err := os.Symlink("f01", m.path("link")); err != nil {
			t.Fatal(err)
		}
		m.unmount()
		oldID, _ := cipher.HeaderKeyID(st.raw(t, "f03"))
		st.mustRun(t, "rotate", "--passphrase-file", passFile(t, passphrase))
		m, r := st.tryMountAt(t, m.dir, "--passphrase-file", passFile(t, passphrase))
		if r.code != 0 {
			t.Fatalf("mount: %s", r.stderr)
		}
		want["later"] = "written under the new key"
		writeFile(t, m.path("later"), want["later"])
		m.unmount()

		r = st.mustRun(t, "rotate", "--rewrite", "--passphrase-file", passFile(t, passphrase))
		if !strings.Contains(r.stdout, "1 older keys dropped") {
			t.Fatalf("rotate --rewrite: %q", r.stdout)
		}
		for name := range want {
			if id, ok := cipher.HeaderKeyID(st.raw(t, name)); !ok || id == oldID {
				t.Fatalf("%s still under the old key %s", name, oldID)
			}
		}
		r = st.mustRun(t, "rotate", "--rewrite", "--passphrase-file", passFile(t, passphrase))
		if !strings.Contains(r.stdout, "0 objects rewritten") {
			t.Fatalf("second rotate --rewrite: %q", r.stdout)
		}
		m, r = st.tryMountAt(t, m.dir, "--passphrase-file", passFile(t, passphrase))
		if r.code != 0 {
			t.Fatalf("mount after the rewrite: %s", r.stderr)
		}
		for name, content := range want {
			wantContent(t, m.path(name), content)
		}
		if target, err := os.Readlink(m.path("link")); err != nil || target != "f01" {
			t.Fatalf("symlink after the rewrite: %q %v", target, err)
		}
		if r := st.run(t, nil, st.cmd("verify", "--passphrase-file", passFile(t, passphrase))...); r.code != 0 {
			t.Fatalf("verify after the rewrite: exit %d: %s%s", r.code, r.stdout, r.stderr)
		}
	})
}
