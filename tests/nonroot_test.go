package tests

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// asUser runs the binary as uid/gid with a small environment of its own
// (HOME in a directory the user owns, no XDG_RUNTIME_DIR).
func asUser(t *testing.T, uid, gid uint32, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("run as %d: %v", uid, err)
	}
	return r
}

// asUserSh runs a shell command as uid/gid.
func asUserSh(t *testing.T, uid, gid uint32, script string) (string, error) {
	t.Helper()
	cmd := exec.Command("/bin/sh", "-c", script)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid}}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestNonRootMount: the user nobody, without root, inits a vault in a
// directory it owns, mounts it with fusermount3, writes and reads, sees
// its files owned by itself (root, not allowed in without allow_other,
// gets EACCES), and unmounts with s3cryptfs unmount (fusermount3 -u).
// --allow-other without user_allow_other in /etc/fuse.conf, and a PATH
// without fusermount3, are refused with the fix; nothing is mounted.
func TestNonRootMount(t *testing.T) {
	requireFUSE(t)
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody: %v", err)
	}
	uid64, _ := strconv.ParseUint(u.Uid, 10, 32)
	gid64, _ := strconv.ParseUint(u.Gid, 10, 32)
	uid, gid := uint32(uid64), uint32(gid64)

	// fusermount3 opens /dev/fuse with the user's rights. Distributions
	// make it 0666; this container has 0600. Check the refusal's message
	// first, then open it up for the test, putting the mode back after.
	fi, err := os.Stat("/dev/fuse")
	if err != nil {
		t.Fatal(err)
	}
	devMode := fi.Mode().Perm()
	t.Cleanup(func() { os.Chmod("/dev/fuse", devMode) })

	// The binary's directory is root's 0700 temp dir: let others in.
	if err := os.Chmod(filepath.Dir(binary), 0o755); err != nil {
		t.Fatal(err)
	}
	home, err := os.MkdirTemp("", "s3cryptfs-nonroot-")
	if err != nil {
		t.Fatal(err)
	}
	mnt := filepath.Join(home, "mnt")
	t.Cleanup(func() {
		if isMounted(mnt) {
			syscall.Unmount(mnt, unix.MNT_DETACH)
		}
		os.RemoveAll(home)
	})
	os.Chmod(home, 0o755)
	for _, d := range []string{mnt, filepath.Join(home, "store")} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	pass := filepath.Join(home, "pass")
	if err := os.WriteFile(pass, []byte(passphrase+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{home, mnt, filepath.Join(home, "store"), pass} {
		if err := os.Chown(p, int(uid), int(gid)); err != nil {
			t.Fatal(err)
		}
	}
	env := []string{"HOME=" + home, "PATH=/usr/local/bin:/usr/bin:/bin"}
	storeDir := filepath.Join(home, "store")

	if r := asUser(t, uid, gid, env, "init", "--passphrase-file", pass, storeDir); r.code != 0 {
		t.Fatalf("init as nobody: exit %d %s", r.code, r.stderr)
	}
	if err := os.Chmod("/dev/fuse", 0o600); err != nil {
		t.Fatal(err)
	}
	r := asUser(t, uid, gid, env, "mount", "--passphrase-file", pass, storeDir, mnt)
	if r.code != 1 || !strings.Contains(r.stderr, "chmod 666 /dev/fuse") || isMounted(mnt) {
		t.Errorf("mount as nobody with /dev/fuse 0600: exit %d %q; want exit 1 saying chmod 666 /dev/fuse", r.code, r.stderr)
	}
	if err := os.Chmod("/dev/fuse", 0o666); err != nil {
		t.Fatal(err)
	}
	r = asUser(t, uid, gid, env, "mount", "--passphrase-file", pass, storeDir, mnt)
	if r.code != 0 || !isMounted(mnt) {
		logs, _ := filepath.Glob(filepath.Join(home, ".local/state/s3cryptfs/*.log"))
		var log string
		for _, l := range logs {
			log += readLog(l)
		}
		t.Fatalf("mount as nobody: exit %d %s\nlog:\n%s", r.code, r.stderr, log)
	}
	// The mount is the user's: fusermount3 recorded it with user_id.
	info, _ := os.ReadFile("/proc/self/mountinfo")
	if !regexp.MustCompile(regexp.QuoteMeta(mnt) + ` .*fuse\.s3cryptfs .*user_id=` + u.Uid + `\b`).Match(info) {
		t.Errorf("mountinfo has no fuse.s3cryptfs mount of %s for user_id=%s:\n%s", mnt, u.Uid, info)
	}
	out, err := asUserSh(t, uid, gid, "echo 'from nobody' > "+mnt+"/mine && cat "+mnt+"/mine && stat -c '%u:%g' "+mnt+"/mine "+mnt)
	if err != nil {
		t.Fatalf("write and read as nobody: %v %s", err, out)
	}
	if want := "from nobody\n" + u.Uid + ":" + u.Gid + "\n" + u.Uid + ":" + u.Gid + "\n"; out != want {
		t.Fatalf("as nobody: %q, want %q (content, then the file's and the root directory's owner)", out, want)
	}
	if _, err := os.Stat(filepath.Join(mnt, "mine")); !errors.Is(err, syscall.EACCES) {
		t.Errorf("root's stat in nobody's mount without allow_other: %v, want EACCES", err)
	}
	if r := asUser(t, uid, gid, env, "unmount", mnt); r.code != 0 || isMounted(mnt) {
		t.Fatalf("unmount as nobody: exit %d %s, mounted %v", r.code, r.stderr, isMounted(mnt))
	}
	// Stored, encrypted, in nobody's store.
	st := &store{kind: "local", spec: storeDir, dir: storeDir}
	if raw := st.raw(t, "mine"); len(raw) == 0 || bytes.Contains(raw, []byte("from nobody")) {
		t.Fatalf("stored object: %d bytes, plaintext visible: %v", len(raw), bytes.Contains(raw, []byte("from nobody")))
	}

	// --allow-other without user_allow_other.
	conf, _ := os.ReadFile("/etc/fuse.conf")
	if regexp.MustCompile(`(?m)^\s*user_allow_other\s*$`).Match(conf) {
		t.Log("/etc/fuse.conf allows user_allow_other: the refusal is not checked here")
	} else {
		r := asUser(t, uid, gid, env, "mount", "--passphrase-file", pass, "--allow-other", storeDir, mnt)
		if r.code != 1 || !strings.Contains(r.stderr, "user_allow_other") || !strings.Contains(r.stderr, "/etc/fuse.conf") || isMounted(mnt) {
			t.Errorf("--allow-other as nobody: exit %d %q; want exit 1 naming user_allow_other in /etc/fuse.conf", r.code, r.stderr)
		}
	}
	// No fusermount3 in PATH.
	noFuse := []string{"HOME=" + home, "PATH=" + filepath.Join(home, "empty")}
	r = asUser(t, uid, gid, noFuse, "mount", "--passphrase-file", pass, storeDir, mnt)
	if r.code != 1 || !strings.Contains(r.stderr, "fusermount3 not found") || !strings.Contains(r.stderr, "fuse3") || isMounted(mnt) {
		t.Errorf("mount without fusermount3: exit %d %q", r.code, r.stderr)
	}
}
