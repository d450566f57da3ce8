package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// sh runs a shell command with a time bound and fails the test with its
// output if it fails.
func sh(t *testing.T, dir, script string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-euo", "pipefail", "-c", script)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", script, err, out)
	}
	return string(out)
}

// makeTree writes a small source tree with nested directories, an empty
// directory, a symlink, odd modes and a file larger than a block.
func makeTree(t *testing.T) string {
	t.Helper()
	src := t.TempDir()
	for i := 0; i < 20; i++ {
		d := filepath.Join(src, fmt.Sprintf("d%d", i%4), fmt.Sprintf("e%d", i%3))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%d.txt", i)), []byte(fmt.Sprintf("file %d\n", i)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	sh(t, src, `mkdir empty; head -c 300000 /dev/urandom > big.bin; chmod 600 big.bin; ln -s d0/e0/f0.txt link; touch -d 2001-01-01 d1/e1/f4.txt`)
	return src
}

// TestTools: everyday tools work on the mount: cp -a and tar round-trip a
// tree (contents, modes, mtimes, symlinks, empty dirs) across a remount,
// git can init, commit and fsck a repository, and sqlite3 can write a
// database (random writes, fsync, rename of its journal).
func TestTools(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		src := makeTree(t)
		sh(t, m.dir, fmt.Sprintf(`cp -a %s cp-copy && tar --format=posix -C %s -cf - . | (mkdir tar-copy && tar -C tar-copy -xpf -)`, src, src))
		sh(t, m.dir, `git init -q repo && cd repo && echo hi > a && git add a && git -c user.email=t@t -c user.name=t commit -qm one && git fsck --strict`)
		sh(t, m.dir, `sqlite3 db.sqlite 'create table t(x); insert into t values (1),(2),(3); pragma journal_mode=delete; insert into t select x+10 from t;'`)
		m = m.remount()
		for _, d := range []string{"cp-copy", "tar-copy"} {
			sh(t, m.dir, fmt.Sprintf(`diff -r --no-dereference %s %s`, src, d))
			a := sh(t, src, `find . -printf '%p %m %y %T@\n' | sort`)
			b := sh(t, m.path(d), `find . -printf '%p %m %y %T@\n' | sort`)
			if a != b {
				t.Fatalf("%s: modes/types/mtimes differ from the source:\n--- source\n%s--- copy\n%s", d, a, b)
			}
		}
		sh(t, m.path("repo"), `git fsck --strict && git log --oneline | grep -q one`)
		if out := sh(t, m.dir, `sqlite3 db.sqlite 'select count(*), sum(x) from t;'`); out != "6|42\n" {
			t.Fatalf("sqlite: %q", out)
		}
	})
}

func needTool(t *testing.T, name, pkg string) {
	t.Helper()
	if _, err := exec.LookPath(name); err != nil {
		t.Fatalf("%s is not installed (make test-deps, or apt-get install %s)", name, pkg)
	}
}

// makeSpecialTree is makeTree plus what a plain tree lacks: a FIFO, a unix
// socket, character and block devices (one not owned by root), user.*
// xattrs on a file and a directory, and explicit atimes.
func makeSpecialTree(t *testing.T) string {
	t.Helper()
	src := makeTree(t)
	sh(t, src, `mkfifo -m 640 fifo
mknod -m 600 chr c 136 9 && chown 1234:5678 chr
mknod -m 640 blk b 8 33
setfattr -n user.color -v blue d0/e0/f0.txt
setfattr -n user.bin -v 0x00ff00 d0/e0/f0.txt
setfattr -n user.dir -v "on a directory" d1
touch -a -d '2003-03-03 03:03:03.123456789' d0/e0/f0.txt big.bin
touch -a -d '2004-04-04' d2`)
	l, err := net.Listen("unix", filepath.Join(src, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	l.(*net.UnixListener).SetUnlinkOnClose(false)
	l.Close()
	return src
}

// TestRoundTripRsyncTarRestic: a tree with FIFOs, a socket, devices,
// xattrs and explicit atimes goes into the mount with rsync -aXU and with
// tar --xattrs; after a remount rsync -aXUn --itemize-changes finds
// nothing to do (tar keeps no sockets and no atimes: checked without
// them; sources are read with O_NOATIME so that their atimes stay put),
// and restic backs the mounted tree up twice across a remount with
// the second backup finding every file unmodified (same inode numbers,
// mtimes and ctimes) and storing no file data.
func TestRoundTripRsyncTarRestic(t *testing.T) {
	needTool(t, "rsync", "rsync")
	needTool(t, "restic", "restic")
	needTool(t, "setfattr", "attr")
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t, "--allow-other")
		src := makeSpecialTree(t)
		// Into a directory: the mount's root has no object to keep its own
		// mtime across a remount (SEMANTICS.md).
		sh(t, m.dir, fmt.Sprintf(`rsync -aXU --open-noatime %s/ rsync-copy/`, src))
		sh(t, m.dir, fmt.Sprintf(`mkdir tar-copy && tar --format=posix --atime-preserve=system --xattrs --xattrs-include='user.*' -C %s -cf - . 2>/dev/null | tar --xattrs --xattrs-include='user.*' -C tar-copy -xpf -`, src))
		if out := sh(t, m.dir, fmt.Sprintf(`rsync -aXUn --itemize-changes %s/ rsync-copy/`, src)); out != "" {
			t.Fatalf("rsync in the same mount finds differences:\n%s", out)
		}
		repo := t.TempDir()
		env := fmt.Sprintf(`export RESTIC_PASSWORD=test RESTIC_REPOSITORY=%s RESTIC_CACHE_DIR=%s; `, repo, t.TempDir())
		sh(t, m.dir, env+`restic init -q`)
		first := resticSummary(t, sh(t, m.path("rsync-copy"), env+`restic backup --json .`))
		if first.FilesNew == 0 || first.DataBlobs == 0 {
			t.Fatalf("first backup stored nothing: %+v", first)
		}

		m = m.remount("--allow-other")
		if out := sh(t, m.dir, fmt.Sprintf(`rsync -aXUn --itemize-changes %s/ rsync-copy/`, src)); out != "" {
			t.Fatalf("rsync after a remount finds differences:\n%s", out)
		}
		if out := sh(t, m.dir, fmt.Sprintf(`rsync -aXn --itemize-changes --exclude=sock %s/ tar-copy/`, src)); out != "" {
			t.Fatalf("tar copy differs after a remount:\n%s", out)
		}
		wantXattr(t, m.path("rsync-copy/d0/e0/f0.txt"), "user.bin", "\x00\xff\x00")
		var s unix.Stat_t
		if err := unix.Lstat(m.path("rsync-copy/chr"), &s); err != nil || unix.Major(s.Rdev) != 136 || unix.Minor(s.Rdev) != 9 || s.Uid != 1234 {
			t.Fatalf("chr: %d:%d uid %d %v", unix.Major(s.Rdev), unix.Minor(s.Rdev), s.Uid, err)
		}
		second := resticSummary(t, sh(t, m.path("rsync-copy"), env+`restic backup --json .`))
		if second.FilesNew != 0 || second.FilesChanged != 0 || second.FilesUnmodified != first.FilesNew || second.DataBlobs != 0 {
			t.Fatalf("second backup after a remount read or stored file contents: %+v (first: %+v)", second, first)
		}
	})
}

// resticStats is restic backup --json's summary.
type resticStats struct {
	FilesNew        int   `json:"files_new"`
	FilesChanged    int   `json:"files_changed"`
	FilesUnmodified int   `json:"files_unmodified"`
	DataBlobs       int   `json:"data_blobs"`
	TreeBlobs       int   `json:"tree_blobs"`
	DataAdded       int64 `json:"data_added"`
}

func resticSummary(t *testing.T, out string) resticStats {
	t.Helper()
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, `"message_type":"summary"`) {
			continue
		}
		var s resticStats
		if err := json.Unmarshal([]byte(line), &s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	t.Fatalf("no summary in restic's output:\n%s", out)
	return resticStats{}
}
