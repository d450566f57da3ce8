package tests

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// helperPath is where mount(8) looks for the helper of type fuse.s3cryptfs
// (libmount searches /sbin only; `make install` puts the link there).
const helperPath = "/sbin/mount.fuse.s3cryptfs"

// installHelper links helperPath to the binary under test for the test's
// duration, putting back whatever was there.
func installHelper(t *testing.T) {
	t.Helper()
	backup := helperPath + ".s3cryptfs-test-backup"
	if _, err := os.Lstat(helperPath); err == nil {
		if err := os.Rename(helperPath, backup); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(binary, helperPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		os.Remove(helperPath)
		if _, err := os.Lstat(backup); err == nil {
			os.Rename(backup, helperPath)
		}
	})
}

// runCmd runs a program (mount, umount) with the given environment only,
// bounded in time.
func runCmd(t *testing.T, env []string, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s %v: %v", name, args, err)
	}
	return r
}

// baseEnv is a minimal environment, like the one systemd gives mount(8):
// no AWS_* variables unless a test adds them.
func baseEnv() []string {
	return []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=" + os.Getenv("HOME")}
}

// TestFstabMount: a temporary fstab with an s3cryptfs line (local store,
// and MinIO with the endpoint, CA bundle and path style given as mount
// options) mounts through mount(8) and the helper, reads and writes, is
// read-only with mount -o ro, and unmounts with umount(8); mount -t
// fuse.s3cryptfs without fstab works too. Credentials reach the helper
// through mount(8)'s environment.
func TestFstabMount(t *testing.T) {
	requireFUSE(t)
	installHelper(t)
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		mnt := t.TempDir()
		log := filepath.Join(t.TempDir(), "mount.log")
		opts := []string{"_netdev", "nofail", "noatime", "x-systemd.requires=network-online.target",
			"passphrase_file=" + passFile(t, passphrase), "log_file=" + log, "attr_timeout=200ms", "cache_size=64MiB", "uid=1234"}
		env := baseEnv()
		if st.kind == "minio" {
			opts = append(opts, "endpoint="+st.srv.Endpoint, "ca_bundle="+st.srv.CAFile, "path_style")
			env = append(env, "AWS_ACCESS_KEY_ID="+st.srv.AccessKey, "AWS_SECRET_ACCESS_KEY="+st.srv.SecretKey, "AWS_REGION="+st.srv.Region)
		}
		fstab := filepath.Join(t.TempDir(), "fstab")
		line := st.spec + "\t" + mnt + "\tfuse.s3cryptfs\t" + strings.Join(opts, ",") + "\t0 0\n"
		if err := os.WriteFile(fstab, []byte("# test fstab\n"+line), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if isMounted(mnt) {
				syscall.Unmount(mnt, unix.MNT_DETACH)
			}
		})
		if r := runCmd(t, env, "mount", "-T", fstab, mnt); r.code != 0 || !isMounted(mnt) {
			t.Fatalf("mount -T %s %s: exit %d %s\nfstab: %slog:\n%s", fstab, mnt, r.code, r.stderr, line, readLog(log))
		}
		writeFile(t, filepath.Join(mnt, "hello.txt"), "written through an fstab mount")
		wantContent(t, filepath.Join(mnt, "hello.txt"), "written through an fstab mount")
		// uid= is the owner of what carries no ownership metadata: the
		// root directory here (a file created through the mount stores its
		// creator, root, and shows that).
		var sys syscall.Stat_t
		if err := syscall.Stat(mnt, &sys); err != nil || sys.Uid != 1234 {
			t.Fatalf("stat of the root: uid %d %v; want 1234 from -o uid=1234", sys.Uid, err)
		}
		if err := syscall.Stat(filepath.Join(mnt, "hello.txt"), &sys); err != nil || sys.Uid != 0 {
			t.Fatalf("stat of a file root created: uid %d %v; want 0 (stored)", sys.Uid, err)
		}
		if raw := st.raw(t, "hello.txt"); bytes.Contains(raw, []byte("fstab mount")) {
			t.Fatal("stored object holds the plaintext")
		}
		if r := runCmd(t, env, "umount", mnt); r.code != 0 || isMounted(mnt) {
			t.Fatalf("umount: exit %d %s; mounted=%v", r.code, r.stderr, isMounted(mnt))
		}

		// mount -o ro on top of the fstab options.
		if r := runCmd(t, env, "mount", "-T", fstab, "-o", "ro", mnt); r.code != 0 {
			t.Fatalf("mount -T -o ro: exit %d %s\nlog:\n%s", r.code, r.stderr, readLog(log))
		}
		wantContent(t, filepath.Join(mnt, "hello.txt"), "written through an fstab mount")
		err := os.WriteFile(filepath.Join(mnt, "new.txt"), []byte("x"), 0o644)
		wantErrno(t, "create on an ro mount", err, syscall.EROFS)
		if r := runCmd(t, env, "umount", mnt); r.code != 0 || isMounted(mnt) {
			t.Fatalf("umount: exit %d %s", r.code, r.stderr)
		}

		// mount -t without fstab; a wrong option fails with the helper's
		// message and leaves nothing mounted.
		o := strings.Join(opts, ",")
		if r := runCmd(t, env, "mount", "-t", "fuse.s3cryptfs", "-o", o+",cache_size=lots", st.spec, mnt); r.code == 0 ||
			!strings.Contains(r.stderr, "invalid size") || isMounted(mnt) {
			t.Fatalf("mount -t with a bad option: exit %d %q, mounted=%v", r.code, r.stderr, isMounted(mnt))
		}
		if r := runCmd(t, env, "mount", "-t", "fuse.s3cryptfs", "-o", o, st.spec, mnt); r.code != 0 {
			t.Fatalf("mount -t fuse.s3cryptfs: exit %d %s\nlog:\n%s", r.code, r.stderr, readLog(log))
		}
		wantContent(t, filepath.Join(mnt, "hello.txt"), "written through an fstab mount")
		if r := runCmd(t, env, "umount", mnt); r.code != 0 || isMounted(mnt) {
			t.Fatalf("umount: exit %d %s", r.code, r.stderr)
		}
	})
}

// TestMountDashO: s3cryptfs mount itself takes -o lists (ro here), after
// the operands as in fstab.
func TestMountDashO(t *testing.T) {
	st := newStore(t, "local")
	st.init(t)
	m := st.mount(t)
	writeFile(t, m.path("f"), "before ro")
	m = m.remount("-o", "ro,noexec,attr_timeout=0")
	wantContent(t, m.path("f"), "before ro")
	wantErrno(t, "write on -o ro", os.WriteFile(m.path("g"), nil, 0o644), syscall.EROFS)
	var sfs unix.Statfs_t
	if err := unix.Statfs(m.dir, &sfs); err != nil || sfs.Flags&unix.ST_RDONLY == 0 || sfs.Flags&unix.ST_NOEXEC == 0 {
		t.Fatalf("statfs flags %#x %v; want ST_RDONLY and ST_NOEXEC", sfs.Flags, err)
	}
}

// TestMakeInstall: make install with DESTDIR and PREFIX puts the binary in
// PREFIX/bin, the helper link in /sbin (where mount(8) looks) pointing at
// it, and the completions; uninstall removes them.
func TestMakeInstall(t *testing.T) {
	if testing.Short() {
		t.Skip("builds with make")
	}
	dest := t.TempDir()
	out, err := exec.Command("make", "-C", "..", "install", "DESTDIR="+dest, "PREFIX=/opt/s3c").CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	bin := filepath.Join(dest, "opt/s3c/bin/s3cryptfs")
	if fi, err := os.Stat(bin); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("binary: %v %v", fi, err)
	}
	if tgt, err := os.Readlink(filepath.Join(dest, "sbin/mount.fuse.s3cryptfs")); err != nil || tgt != "/opt/s3c/bin/s3cryptfs" {
		t.Fatalf("helper link: %q %v, want -> /opt/s3c/bin/s3cryptfs", tgt, err)
	}
	for _, f := range []string{"opt/s3c/share/bash-completion/completions/s3cryptfs", "opt/s3c/share/zsh/site-functions/_s3cryptfs"} {
		if b, err := os.ReadFile(filepath.Join(dest, f)); err != nil || !bytes.Contains(b, []byte("s3cryptfs")) {
			t.Fatalf("completion %s: %v", f, err)
		}
	}
	// The installed helper, run by its name, is the helper: -f (fake)
	// checks the arguments and mounts nothing.
	link := filepath.Join(t.TempDir(), "mount.fuse.s3cryptfs")
	if err := os.Symlink(bin, link); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(link, "-f", "/srv/v", "/mnt/v", "-o", "ro").CombinedOutput(); err != nil {
		t.Fatalf("helper -f: %v %s", err, out)
	}
	if out, err := exec.Command(link, "only-one").CombinedOutput(); err == nil || !strings.Contains(string(out), "usage: mount.fuse.s3cryptfs") {
		t.Fatalf("helper with one operand: %v %s", err, out)
	}
	if out, err := exec.Command("make", "-C", "..", "uninstall", "DESTDIR="+dest, "PREFIX=/opt/s3c").CombinedOutput(); err != nil {
		t.Fatalf("make uninstall: %v\n%s", err, out)
	}
	if _, err := os.Lstat(bin); !os.IsNotExist(err) {
		t.Fatalf("binary left after uninstall: %v", err)
	}
}

// docUnits returns the systemd units in docs/CONFIGURATION.md: fenced
// ```ini blocks whose first line is "# /etc/systemd/system/NAME".
func docUnits(t *testing.T) map[string]string {
	t.Helper()
	b, err := os.ReadFile("../docs/CONFIGURATION.md")
	if err != nil {
		t.Fatal(err)
	}
	units := map[string]string{}
	re := regexp.MustCompile("(?s)```ini\n# /etc/systemd/system/([^\n]+)\n(.*?)```")
	for _, m := range re.FindAllStringSubmatch(string(b), -1) {
		units[m[1]] = m[2]
	}
	return units
}

// unitValue returns the value of key in a unit file.
func unitValue(unit, key string) string {
	sc := bufio.NewScanner(strings.NewReader(unit))
	for sc.Scan() {
		if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.TrimSpace(k) == key {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestSystemdUnitExamples: the mount and automount units documented in
// CONFIGURATION.md pass systemd-analyze verify without a warning, name
// the type fuse.s3cryptfs, and options this binary accepts. A copy with a
// misspelt key is caught, so the check can fail.
func TestSystemdUnitExamples(t *testing.T) {
	units := docUnits(t)
	mountUnit, ok := units["mnt-vault.mount"]
	if !ok || units["mnt-vault.automount"] == "" {
		t.Fatalf("CONFIGURATION.md lacks mnt-vault.mount and mnt-vault.automount examples (found %d units)", len(units))
	}
	if unitValue(mountUnit, "Type") != "fuse.s3cryptfs" || unitValue(mountUnit, "Where") != "/mnt/vault" ||
		!strings.HasPrefix(unitValue(mountUnit, "What"), "s3://") {
		t.Fatalf("mount unit fields: Type=%q Where=%q What=%q", unitValue(mountUnit, "Type"), unitValue(mountUnit, "Where"), unitValue(mountUnit, "What"))
	}
	// Its options parse as this binary's mount options (-f: fake mount).
	link := filepath.Join(t.TempDir(), "mount.fuse.s3cryptfs")
	if err := os.Symlink(binary, link); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(link, "-f", unitValue(mountUnit, "What"), "/mnt/vault", "-o", unitValue(mountUnit, "Options")).CombinedOutput(); err != nil {
		t.Fatalf("helper -f with the unit's options: %v %s", err, out)
	}
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatal("systemd-analyze not found: make test-deps installs systemd")
	}
	verify := func(units map[string]string) (string, error) {
		dir := t.TempDir()
		var paths []string
		for name, body := range units {
			p := filepath.Join(dir, name)
			if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			paths = append(paths, p)
		}
		out, err := exec.Command("systemd-analyze", append([]string{"verify", "--man=no"}, paths...)...).CombinedOutput()
		return string(out), err
	}
	if out, err := verify(units); err != nil || strings.TrimSpace(out) != "" {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	bad := map[string]string{"mnt-vault.mount": strings.Replace(mountUnit, "Type=", "Typ=", 1)}
	if out, _ := verify(bad); !strings.Contains(out, "Typ") {
		t.Fatalf("systemd-analyze verify did not catch a misspelt key: %q", out)
	}
}

// TestMakeDemo: make demo creates and mounts a new vault asking for the
// passphrase once (given on stdin here), and the mount works. Skipped if
// the checkout already has a ./vault, which it would reuse.
func TestMakeDemo(t *testing.T) {
	requireFUSE(t)
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	vault, mnt := filepath.Join(root, "vault"), filepath.Join(root, "mnt")
	if _, err := os.Stat(vault); err == nil {
		t.Skipf("%s exists: not touching it", vault)
	}
	t.Cleanup(func() {
		if isMounted(mnt) {
			syscall.Unmount(mnt, unix.MNT_DETACH)
		}
		os.RemoveAll(vault)
		os.Remove(mnt)
	})
	// On a terminal (script(1) makes one), as a person would run it:
	// bash's read shows its prompt only there.
	// Bounded: a demo that asks again waits for input forever.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "script", "-q", "-e", "-c", "make -s -C "+root+" demo", "/dev/null")
	cmd.WaitDelay = 5 * time.Second
	cmd.Stdin = strings.NewReader("demo passphrase\n")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("make demo: %v\n%s%s", err, out.String(), errb.String())
	}
	// Prompts end in ':'; the typed-ahead input echoed by the terminal
	// does not.
	if n := len(regexp.MustCompile(`(?i)passphrase[^\n]*:`).FindAllString(out.String(), -1)); n != 1 {
		t.Fatalf("make demo asked %d times for the passphrase:\n%s", n, out.String())
	}
	writeFile(t, filepath.Join(mnt, "demo.txt"), "demo")
	wantContent(t, filepath.Join(mnt, "demo.txt"), "demo")
	if r := runCmd(t, os.Environ(), filepath.Join(root, "bin/s3cryptfs"), "unmount", mnt); r.code != 0 {
		t.Fatalf("unmount: %d %s", r.code, r.stderr)
	}
	// The vault opens with that passphrase.
	st := &store{kind: "local", spec: vault, dir: vault}
	m, r := st.tryMount(t, "--passphrase-file", passFile(t, "demo passphrase"))
	if r.code != 0 {
		t.Fatalf("mount the demo vault: %d %s", r.code, r.stderr)
	}
	wantContent(t, m.path("demo.txt"), "demo")
	m.unmount()
}
