package tests

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// TestRotateRewriteKilled: rotate, writes under the new key, then rotate
// --rewrite killed (SIGKILL of the real binary) twice while it rewrites,
// each time in the middle of the multipart upload of a large object (which
// stays incomplete, the object under the old key; before it, objects
// already rewritten), and run a third time to the end, over MinIO with TLS.
// Meanwhile and afterwards every file reads back identical (content,
// extended attributes, symlink, FIFO); at the end no object and no sealed
// metadata is left under the old key, the old key is gone from the config,
// and verify is clean.
func TestRotateRewriteKilled(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	m := st.mount(t)
	want := map[string][]byte{}
	put := func(name string, data []byte) {
		t.Helper()
		want[name] = data
		if err := os.WriteFile(m.path(name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// a*: small files (up to 3 blocks); z*: large ones (multipart uploads
	// when rewritten).
	for i := range 40 {
		put(fmt.Sprintf("a%02d", i), randBytes(uint64(i), 1+i*5000))
	}
	for i := range 3 {
		put(fmt.Sprintf("z%d", i), randBytes(uint64(100+i), 40<<20+i*1000))
	}
	if err := os.Mkdir(m.path("d"), 0o750); err != nil {
		t.Fatal(err)
	}
	put("d/in", []byte("inside d"))
	wantXattrs := map[string]string{"a05": "on a file, before the rotation", "d": "on a directory, before the rotation"}
	for name, v := range wantXattrs {
		if err := unix.Setxattr(m.path(name), "user.k", []byte(v), 0); err != nil {
			t.Fatalf("setxattr %s: %v", name, err)
		}
	}
	if err := unix.Mkfifo(m.path("d/fifo"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a01", m.path("link")); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	oldID, ok := cipher.HeaderKeyID(st.raw(t, "a03"))
	if !ok {
		t.Fatal("a03 has no s3cryptfs header")
	}

	st.mustRun(t, "rotate", "--passphrase-file", passFile(t, passphrase))
	m = st.mount(t)
	put("later", []byte("written under the new key"))
	put("a02", []byte("a02 replaced under the new key"))
	wantXattrs["a03"] = "set after the rotation"
	if err := unix.Setxattr(m.path("a03"), "user.k", []byte(wantXattrs["a03"]), 0); err != nil {
		t.Fatal(err)
	}
	m.unmount()
	newID, _ := cipher.HeaderKeyID(st.raw(t, "later"))
	if newID == oldID {
		t.Fatal("the rotation did not change the key new files use")
	}

	// underNew counts the objects of keys whose header names the new key.
	underNew := func(keys ...string) int {
		n := 0
		for _, k := range keys {
			if id, ok := cipher.HeaderKeyID(st.rawRange(t, k, cipher.HeaderSize)); ok && id == newID {
				n++
			}
		}
		return n
	}
	var small []string
	for i := range 40 {
		if i != 2 {
			small = append(small, fmt.Sprintf("a%02d", i))
		}
	}
	// The rewrite takes objects in key order (--parallel 1: one at a
	// time), which with encrypted names is no order of the paths: the
	// large files are taken in the order of their keys, and each run is
	// killed in the middle of the multipart upload of the next one.
	large := []string{"z0", "z1", "z2"}
	sort.Slice(large, func(i, j int) bool { return st.key(t, large[i]) < st.key(t, large[j]) })
	midUpload := func(r *rewriteRun, z string) {
		t.Helper()
		r.killWhen(t, func() bool { return len(st.multipartUploads(t, z)) > 0 })
		if underNew(z) != 0 || len(st.multipartUploads(t, z)) == 0 {
			t.Fatalf("killed during the multipart upload of %s: under the new key %v, incomplete upload %v; want false and one",
				z, underNew(z) == 1, st.multipartUploads(t, z))
		}
		t.Logf("killed during the multipart upload of %s (left incomplete, %s still under the old key); small files under the new key: %d of %d",
			z, z, underNew(small...), len(small))
	}

	// First run: killed in the middle of the first large object.
	midUpload(st.startRewrite(t), large[0])
	st.wantKeyring(t, oldID, newID)
	// Half rewritten, every file reads back identical (get needs both keys).
	st.wantTree(t, want)

	// Second run: resumes, and is killed in the middle of the second.
	midUpload(st.startRewrite(t), large[1])
	if underNew(large[0]) != 1 {
		t.Fatalf("the second run did not finish %s", large[0])
	}
	st.wantKeyring(t, oldID, newID)
	st.wantTree(t, want)

	// Third run: to the end, on a terminal (script(1) makes one), where
	// it shows a progress bar.
	out := st.onTerminal(t, st.cmd("rotate", "--rewrite", "--passphrase-file", passFile(t, passphrase))...)
	if !strings.Contains(out, "1 older keys dropped") || !progressRE.MatchString(out) {
		t.Fatalf("rotate --rewrite after two kills, on a terminal: want a progress bar and the keys dropped:\n%q", out)
	}
	st.wantKeyring(t, newID)
	st.wantNothingUnder(t, oldID)
	if rep, r := st.verifyJSON(t); r.code != 0 || len(rep.Problems) != 0 || rep.Objects < len(want) {
		t.Fatalf("verify after the rewrite: exit %d: %s%s", r.code, r.stdout, r.stderr)
	}
	st.wantTree(t, want)

	m = st.mount(t)
	for name, data := range want {
		got, err := os.ReadFile(m.path(name))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s after the rewrite: %d bytes, %v; want %d bytes", name, len(got), err, len(data))
		}
	}
	for name, v := range wantXattrs {
		buf := make([]byte, 256)
		n, err := unix.Getxattr(m.path(name), "user.k", buf)
		if err != nil || string(buf[:n]) != v {
			t.Fatalf("xattr of %s after the rewrite: %q, %v; want %q", name, buf[:max(n, 0)], err, v)
		}
	}
	if target, err := os.Readlink(m.path("link")); err != nil || target != "a01" {
		t.Fatalf("symlink after the rewrite: %q %v", target, err)
	}
	if fi, err := os.Lstat(m.path("d/fifo")); err != nil || fi.Mode().Type() != os.ModeNamedPipe || fi.Mode().Perm() != 0o640 {
		t.Fatalf("FIFO after the rewrite: %v %v", fi, err)
	}
}

// progressRE matches rotate --rewrite's progress bar: rewritten so far,
// then objects looked at of those listed.
var progressRE = regexp.MustCompile(`\d+ rewritten .*\(\d+/\d+, `)

// onTerminal runs the binary with args on a pseudo-terminal (script(1))
// and returns what it wrote there; it fails the test on a non-zero exit.
func (st *store) onTerminal(t *testing.T, args ...string) string {
	t.Helper()
	quoted := []string{"'" + binary + "'"}
	for _, a := range args {
		quoted = append(quoted, "'"+strings.ReplaceAll(a, "'", `'\''`)+"'")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-q", "-e", "-c", strings.Join(quoted, " "), "/dev/null")
	cmd.Env = append(os.Environ(), st.env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v on a terminal: %v\n%s", args, err, out)
	}
	return string(out)
}

// rewriteRun is rotate --rewrite running in the background.
type rewriteRun struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

// startRewrite starts rotate --rewrite --parallel 1 (one object at a time,
// so that a kill lands between known objects).
func (st *store) startRewrite(t *testing.T) *rewriteRun {
	t.Helper()
	r := &rewriteRun{done: make(chan error, 1)}
	r.cmd = exec.Command(binary, st.cmd("rotate", "--rewrite", "--parallel", "1", "--passphrase-file", passFile(t, passphrase))...)
	r.cmd.Env = append(os.Environ(), st.env...)
	r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- r.cmd.Wait() }()
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			r.cmd.Process.Kill()
			<-r.done
		}
	})
	return r
}

// killWhen SIGKILLs the run as soon as cond holds; it fails the test if
// the run ends first.
func (r *rewriteRun) killWhen(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		select {
		case err := <-r.done:
			r.done <- err
			t.Fatalf("rotate --rewrite ended (%v) before it could be killed halfway:\n%s", err, r.out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("rotate --rewrite made no progress in 3 minutes:\n%s", r.out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	err := <-r.done
	r.done <- err
	if ee, ok := err.(*exec.ExitError); !ok || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("rotate --rewrite was not killed by SIGKILL: %v\n%s", err, r.out.String())
	}
	t.Logf("rotate --rewrite killed by SIGKILL; its output: %q", r.out.String())
}

// multipartUploads lists the upload ids of the incomplete multipart
// uploads of the object of path (what a killed upload leaves behind; MinIO lists them
// per object, not for a whole bucket).
func (st *store) multipartUploads(t *testing.T, path string) []string {
	t.Helper()
	key := st.key(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := st.srv.SDKClient(t).ListMultipartUploads(ctx, &s3.ListMultipartUploadsInput{Bucket: aws.String(st.bucket), Prefix: aws.String(key)})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range out.Uploads {
		if aws.ToString(u.Key) == key {
			ids = append(ids, aws.ToString(u.UploadId))
		}
	}
	return ids
}

// rawRange returns the first n bytes of the object of a path or key
// (fewer if it is shorter).
func (st *store) rawRange(t *testing.T, path string, n int) []byte {
	t.Helper()
	key := st.key(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := st.srv.SDKClient(t).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key),
		Range: aws.String(fmt.Sprintf("bytes=0-%d", n-1))})
	if err != nil {
		t.Fatalf("raw get %s: %v", key, err)
	}
	defer out.Body.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(out.Body); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// wantKeyring checks that the stored config's keyring holds exactly ids.
func (st *store) wantKeyring(t *testing.T, ids ...cipher.KeyID) {
	t.Helper()
	cfg, err := cipher.ParseConfig(st.raw(t, ".s3cryptfs.conf"))
	if err != nil {
		t.Fatal(err)
	}
	u, err := cfg.UnlockSecret(cipher.Passphrase([]byte(passphrase)))
	if err != nil {
		t.Fatal(err)
	}
	got := u.Keys().KeyIDs()
	if len(got) != len(ids) {
		t.Fatalf("keyring %v, want %v", got, ids)
	}
	for _, id := range ids {
		found := false
		for _, g := range got {
			found = found || g == id
		}
		if !found {
			t.Fatalf("keyring %v, want %v", got, ids)
		}
	}
}

// wantNothingUnder checks every object of the bucket (data, symlinks,
// specials, directory markers, attribute indexes): no header and no sealed
// extended attributes in its metadata name master key id.
func (st *store) wantNothingUnder(t *testing.T, id cipher.KeyID) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := st.srv.SDKClient(t)
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(st.bucket)})
	checked, sealedMeta := 0, 0
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range page.Contents {
			k := aws.ToString(o.Key)
			if k == ".s3cryptfs.conf" {
				continue
			}
			checked++
			if aws.ToInt64(o.Size) >= cipher.HeaderSize {
				if got, ok := cipher.HeaderKeyID(st.rawRange(t, k, cipher.HeaderSize)); !ok || got == id {
					t.Errorf("%s: header names key %s (ok %v): still under the old key", k, got, ok)
				}
			}
			if x := st.rawMeta(t, k)["xattr"]; x != "" {
				sealedMeta++
				b, err := base64.RawStdEncoding.DecodeString(x)
				if err != nil {
					t.Fatalf("%s: xattr metadata: %v", k, err)
				}
				if got, ok := cipher.HeaderKeyID(b); !ok || got == id {
					t.Errorf("%s: extended attributes sealed under key %s (ok %v): still under the old key", k, got, ok)
				}
			}
		}
	}
	if sealedMeta < 3 {
		t.Fatalf("only %d objects carry sealed extended attributes; the test sets 3", sealedMeta)
	}
	if !t.Failed() {
		t.Logf("%d objects checked, %d with sealed extended attributes: none under %s", checked, sealedMeta, id)
	}
}

// wantTree gets the whole vault with the get command and compares every
// file of want.
func (st *store) wantTree(t *testing.T, want map[string][]byte) {
	t.Helper()
	dest := filepath.Join(t.TempDir(), "get")
	st.mustRun(t, "get", "--passphrase-file", passFile(t, passphrase), "--", "/", dest)
	for name, data := range want {
		got, err := os.ReadFile(filepath.Join(dest, name))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("get %s: %d bytes, %v; want %d bytes", name, len(got), err, len(data))
		}
	}
	os.RemoveAll(dest)
}
