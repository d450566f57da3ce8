package tests

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
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
