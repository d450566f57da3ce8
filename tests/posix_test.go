package tests

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"
	"unsafe"

	"github.com/s3cryptfs/s3cryptfs/backend/local"
)

// wantErrno fails unless err carries errno (nil errno: no error).
func wantErrno(t *testing.T, what string, err error, errno syscall.Errno) {
	t.Helper()
	if errno == 0 {
		if err != nil {
			t.Fatalf("%s: %v, want success", what, err)
		}
		return
	}
	if !errors.Is(err, errno) {
		t.Fatalf("%s: %v, want %v (%d)", what, err, errno, int(errno))
	}
}

func writeFile(t *testing.T, p string, data string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
		t.Fatalf("write %s: %v", p, err)
	}
}

func wantContent(t *testing.T, p, want string) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	if string(got) != want {
		t.Fatalf("%s holds %q, want %q", p, trunc(got), trunc([]byte(want)))
	}
}

func trunc(b []byte) string {
	if len(b) > 80 {
		return string(b[:80]) + "..."
	}
	return string(b)
}

func names(t *testing.T, dir string) string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var n []string
	for _, e := range ents {
		s := e.Name()
		if e.IsDir() {
			s += "/"
		} else if e.Type()&os.ModeSymlink != 0 {
			s += "@"
		}
		n = append(n, s)
	}
	sort.Strings(n)
	return strings.Join(n, " ")
}

// putRaw writes an object into the store behind the mount's back, as
// another tool would (no s3cryptfs metadata).
func (st *store) putRaw(t *testing.T, key string, data []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st.kind == "minio" {
		_, err := st.srv.SDKClient(t).PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key), Body: bytes.NewReader(data)})
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	ls, err := local.New(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Put(ctx, key, bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
}

// posixCases is the table of system calls and their expected results,
// errnos included (docs/SEMANTICS.md states each). Every case works in its
// own directory d of the mount.
var posixCases = []struct {
	name string
	fn   func(t *testing.T, m *mount, d string)
}{
	{"create write read", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "hello")
		wantContent(t, d+"/f", "hello")
	}},
	{"open missing ENOENT", func(t *testing.T, m *mount, d string) {
		_, err := os.Open(d + "/nope")
		wantErrno(t, "open", err, syscall.ENOENT)
		_, err = os.Stat(d + "/nope/deeper")
		wantErrno(t, "stat", err, syscall.ENOENT)
	}},
	{"O_EXCL on existing EEXIST", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		_, err := os.OpenFile(d+"/f", os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		wantErrno(t, "open O_EXCL", err, syscall.EEXIST)
	}},
	{"mkdir existing EEXIST", func(t *testing.T, m *mount, d string) {
		wantErrno(t, "mkdir", os.Mkdir(d+"/sub", 0o755), 0)
		wantErrno(t, "mkdir again", os.Mkdir(d+"/sub", 0o755), syscall.EEXIST)
		writeFile(t, d+"/f", "x")
		wantErrno(t, "mkdir over file", os.Mkdir(d+"/f", 0o755), syscall.EEXIST)
	}},
	{"rmdir non-empty ENOTEMPTY, empty ok", func(t *testing.T, m *mount, d string) {
		os.Mkdir(d+"/sub", 0o755)
		writeFile(t, d+"/sub/f", "x")
		wantErrno(t, "rmdir", os.Remove(d+"/sub"), syscall.ENOTEMPTY)
		wantErrno(t, "unlink", os.Remove(d+"/sub/f"), 0)
		wantErrno(t, "rmdir empty", syscall.Rmdir(d+"/sub"), 0)
		_, err := os.Stat(d + "/sub")
		wantErrno(t, "stat removed dir", err, syscall.ENOENT)
	}},
	{"rmdir file ENOTDIR, unlink dir EISDIR", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		os.Mkdir(d+"/sub", 0o755)
		wantErrno(t, "rmdir file", syscall.Rmdir(d+"/f"), syscall.ENOTDIR)
		wantErrno(t, "unlink dir", syscall.Unlink(d+"/sub"), syscall.EISDIR)
		_, err := os.OpenFile(d+"/sub", os.O_WRONLY, 0)
		wantErrno(t, "open dir for write", err, syscall.EISDIR)
		wantErrno(t, "mkdir under file", os.Mkdir(d+"/f/x", 0o755), syscall.ENOTDIR)
	}},
	{"hard link EPERM", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		wantErrno(t, "link", os.Link(d+"/f", d+"/g"), syscall.EPERM)
	}},
	{"mknod regular file", func(t *testing.T, m *mount, d string) {
		wantErrno(t, "mknod reg", unix.Mknod(d+"/reg", unix.S_IFREG|0o600, 0), 0)
		wantContent(t, d+"/reg", "")
		wantErrno(t, "mknod existing", unix.Mknod(d+"/reg", unix.S_IFIFO|0o600, 0), syscall.EEXIST)
	}},
	{"mkfifo passes data", func(t *testing.T, m *mount, d string) {
		wantErrno(t, "mkfifo", unix.Mkfifo(d+"/fifo", 0o640), 0)
		fi, err := os.Lstat(d + "/fifo")
		if err != nil || fi.Mode()&os.ModeNamedPipe == 0 || fi.Mode().Perm() != 0o640 || fi.Size() != 0 {
			t.Fatalf("lstat fifo: %v %v", fi, err)
		}
		// A writer and a reader meet in the kernel's pipe.
		done := make(chan error, 1)
		go func() {
			w, err := os.OpenFile(d+"/fifo", os.O_WRONLY, 0)
			if err != nil {
				done <- err
				return
			}
			_, err = w.WriteString("through the fifo")
			w.Close()
			done <- err
		}()
		r, err := os.Open(d + "/fifo")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(got) != "through the fifo" {
			t.Fatalf("read fifo: %q %v", got, err)
		}
		if err := <-done; err != nil {
			t.Fatalf("write fifo: %v", err)
		}
		if got := names(t, d); got != "fifo" {
			t.Fatalf("readdir: %q", got)
		}
		ents, _ := os.ReadDir(d)
		if len(ents) != 1 || ents[0].Type()&os.ModeNamedPipe == 0 {
			t.Fatalf("readdir type: %v", ents)
		}
	}},
	{"mknod devices", func(t *testing.T, m *mount, d string) {
		wantErrno(t, "mknod chr", unix.Mknod(d+"/chr", unix.S_IFCHR|0o600, int(unix.Mkdev(4, 64))), 0)
		wantErrno(t, "mknod blk", unix.Mknod(d+"/blk", unix.S_IFBLK|0o640, int(unix.Mkdev(259, 1048575))), 0)
		for _, c := range []struct {
			name         string
			typ, perm    uint32
			major, minor uint32
		}{{"chr", unix.S_IFCHR, 0o600, 4, 64}, {"blk", unix.S_IFBLK, 0o640, 259, 1048575}} {
			var s unix.Stat_t
			wantErrno(t, "stat "+c.name, unix.Lstat(d+"/"+c.name, &s), 0)
			if s.Mode&unix.S_IFMT != c.typ || s.Mode&0o7777 != c.perm || unix.Major(s.Rdev) != c.major || unix.Minor(s.Rdev) != c.minor {
				t.Fatalf("%s: mode %o rdev %d:%d, want %o|%o %d:%d", c.name, s.Mode, unix.Major(s.Rdev), unix.Minor(s.Rdev), c.typ, c.perm, c.major, c.minor)
			}
		}
		// The mount is nodev: a device node found in the bucket cannot
		// reach a driver.
		_, err := os.Open(d + "/chr")
		wantErrno(t, "open device on a nodev mount", err, syscall.EACCES)
	}},
	{"unix socket bind connect", func(t *testing.T, m *mount, d string) {
		l, err := net.Listen("unix", d+"/sock")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		go func() {
			c, err := l.Accept()
			if err == nil {
				c.Write([]byte("over the socket"))
				c.Close()
			}
		}()
		c, err := net.Dial("unix", d+"/sock")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(c)
		c.Close()
		if err != nil || string(got) != "over the socket" {
			t.Fatalf("read socket: %q %v", got, err)
		}
		fi, err := os.Lstat(d + "/sock")
		if err != nil || fi.Mode()&os.ModeSocket == 0 {
			t.Fatalf("lstat socket: %v %v", fi, err)
		}
	}},
	{"special files chmod chown utimes rename unlink", func(t *testing.T, m *mount, d string) {
		wantErrno(t, "mkfifo", unix.Mkfifo(d+"/p", 0o600), 0)
		wantErrno(t, "mknod chr", unix.Mknod(d+"/c", unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))), 0)
		mt := time.Date(2003, 4, 5, 6, 7, 8, 9, time.UTC)
		for _, n := range []string{"p", "c"} {
			wantErrno(t, "chmod", os.Chmod(d+"/"+n, 0o644), 0)
			wantErrno(t, "chown", os.Lchown(d+"/"+n, 4321, 8765), 0)
			wantErrno(t, "utimes", os.Chtimes(d+"/"+n, mt, mt), 0)
			wantErrno(t, "rename", os.Rename(d+"/"+n, d+"/"+n+"2"), 0)
			var s unix.Stat_t
			wantErrno(t, "stat", unix.Lstat(d+"/"+n+"2", &s), 0)
			if s.Mode&0o7777 != 0o644 || s.Uid != 4321 || s.Gid != 8765 || s.Mtim.Nano() != mt.UnixNano() {
				t.Fatalf("%s: mode %o uid %d gid %d mtime %d", n, s.Mode, s.Uid, s.Gid, s.Mtim.Nano())
			}
			if n == "c" && (unix.Major(s.Rdev) != 1 || unix.Minor(s.Rdev) != 3) {
				t.Fatalf("rdev after rename: %d:%d", unix.Major(s.Rdev), unix.Minor(s.Rdev))
			}
		}
		wantErrno(t, "unlink fifo", os.Remove(d+"/p2"), 0)
		wantErrno(t, "unlink dev", os.Remove(d+"/c2"), 0)
		if got := names(t, d); got != "" {
			t.Fatalf("after unlink: %q", got)
		}
	}},
	{"rename over file replaces it", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/a", "AAA")
		writeFile(t, d+"/b", "BBBBBB")
		wantErrno(t, "rename", os.Rename(d+"/a", d+"/b"), 0)
		wantContent(t, d+"/b", "AAA")
		_, err := os.Stat(d + "/a")
		wantErrno(t, "stat old name", err, syscall.ENOENT)
	}},
	{"RENAME_NOREPLACE EEXIST", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/a", "A")
		writeFile(t, d+"/b", "B")
		wantErrno(t, "renameat2 NOREPLACE", unix.Renameat2(unix.AT_FDCWD, d+"/a", unix.AT_FDCWD, d+"/b", unix.RENAME_NOREPLACE), syscall.EEXIST)
		wantContent(t, d+"/b", "B")
		wantErrno(t, "renameat2 NOREPLACE free", unix.Renameat2(unix.AT_FDCWD, d+"/a", unix.AT_FDCWD, d+"/c", unix.RENAME_NOREPLACE), 0)
		wantContent(t, d+"/c", "A")
	}},
	{"RENAME_EXCHANGE refused", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/a", "A")
		writeFile(t, d+"/b", "B")
		err := unix.Renameat2(unix.AT_FDCWD, d+"/a", unix.AT_FDCWD, d+"/b", unix.RENAME_EXCHANGE)
		if !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOTSUP) {
			t.Fatalf("RENAME_EXCHANGE: %v, want EINVAL or ENOTSUP", err)
		}
		wantContent(t, d+"/a", "A")
		wantContent(t, d+"/b", "B")
	}},
	{"rename directory with children", func(t *testing.T, m *mount, d string) {
		os.MkdirAll(d+"/src/deep/er", 0o755)
		writeFile(t, d+"/src/f1", "one")
		writeFile(t, d+"/src/deep/f2", "two")
		writeFile(t, d+"/src/deep/er/f3", "three")
		wantErrno(t, "rename dir", os.Rename(d+"/src", d+"/dst"), 0)
		wantContent(t, d+"/dst/f1", "one")
		wantContent(t, d+"/dst/deep/f2", "two")
		wantContent(t, d+"/dst/deep/er/f3", "three")
		if got := names(t, d); got != "dst/" {
			t.Fatalf("after rename: %q", got)
		}
	}},
	{"rename dir over empty dir ok, over non-empty ENOTEMPTY", func(t *testing.T, m *mount, d string) {
		os.Mkdir(d+"/a", 0o755)
		writeFile(t, d+"/a/f", "x")
		os.Mkdir(d+"/empty", 0o755)
		os.Mkdir(d+"/full", 0o755)
		writeFile(t, d+"/full/g", "y")
		// unix.Rename: os.Rename itself refuses any existing directory target.
		wantErrno(t, "rename over non-empty", unix.Rename(d+"/a", d+"/full"), syscall.ENOTEMPTY)
		wantErrno(t, "rename over empty", unix.Rename(d+"/a", d+"/empty"), 0)
		wantContent(t, d+"/empty/f", "x")
	}},
	{"rename file over dir EISDIR, dir over file ENOTDIR", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		os.Mkdir(d+"/dir", 0o755)
		wantErrno(t, "file over dir", unix.Rename(d+"/f", d+"/dir"), syscall.EISDIR)
		wantErrno(t, "dir over file", unix.Rename(d+"/dir", d+"/f"), syscall.ENOTDIR)
	}},
	{"random writes", func(t *testing.T, m *mount, d string) {
		want := bytes.Repeat([]byte("."), 300000)
		writeFile(t, d+"/f", string(want))
		f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int{0, 65535, 65536, 131071, 299990, 150000} {
			if _, err := f.WriteAt([]byte("0123456789"), int64(off)); err != nil {
				t.Fatal(err)
			}
			copy(want[off:], "0123456789")
		}
		if _, err := f.WriteAt([]byte("tail"), 400000); err != nil { // past EOF: a hole
			t.Fatal(err)
		}
		want = append(want, make([]byte, 100000)...)
		want = append(want, "tail"...)
		wantErrno(t, "close", f.Close(), 0)
		wantContent(t, d+"/f", string(want))
	}},
	{"O_APPEND", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "start;")
		for _, s := range []string{"one;", "two;"} {
			f, err := os.OpenFile(d+"/f", os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			f.WriteString(s)
			wantErrno(t, "close", f.Close(), 0)
		}
		wantContent(t, d+"/f", "start;one;two;")
	}},
	{"truncate grow and shrink, ftruncate", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "0123456789")
		wantErrno(t, "truncate shrink", os.Truncate(d+"/f", 4), 0)
		wantContent(t, d+"/f", "0123")
		wantErrno(t, "truncate grow", os.Truncate(d+"/f", 70000), 0)
		wantContent(t, d+"/f", "0123"+string(make([]byte, 70000-4)))
		f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		wantErrno(t, "ftruncate", f.Truncate(2), 0)
		if fi, _ := f.Stat(); fi.Size() != 2 {
			t.Fatalf("fstat after ftruncate: size %d", fi.Size())
		}
		f.Close()
		wantContent(t, d+"/f", "01")
		f, err = os.OpenFile(d+"/f", os.O_WRONLY|os.O_TRUNC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.Close()
		wantContent(t, d+"/f", "")
	}},
	{"symlink readlink lstat", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/target", "via link")
		wantErrno(t, "symlink", os.Symlink("target", d+"/ln"), 0)
		got, err := os.Readlink(d + "/ln")
		if err != nil || got != "target" {
			t.Fatalf("readlink: %q %v", got, err)
		}
		fi, err := os.Lstat(d + "/ln")
		if err != nil || fi.Mode()&os.ModeSymlink == 0 {
			t.Fatalf("lstat: %v %v", fi, err)
		}
		wantContent(t, d+"/ln", "via link")
		wantErrno(t, "symlink over existing", os.Symlink("x", d+"/ln"), syscall.EEXIST)
	}},
	{"chmod chown utimes", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		os.Mkdir(d+"/sub", 0o755)
		wantErrno(t, "chmod", os.Chmod(d+"/f", 0o600), 0)
		wantErrno(t, "chown", os.Chown(d+"/f", 1234, 5678), 0)
		mt := time.Date(2001, 2, 3, 4, 5, 6, 789, time.UTC)
		wantErrno(t, "utimes", os.Chtimes(d+"/f", mt, mt), 0)
		wantErrno(t, "chmod dir", os.Chmod(d+"/sub", 0o701), 0)
		var s unix.Stat_t
		if err := unix.Stat(d+"/f", &s); err != nil {
			t.Fatal(err)
		}
		if s.Mode&0o7777 != 0o600 || s.Uid != 1234 || s.Gid != 5678 || s.Mtim.Nano() != mt.UnixNano() {
			t.Fatalf("stat: mode %o uid %d gid %d mtime %d, want 600 1234 5678 %d", s.Mode&0o7777, s.Uid, s.Gid, s.Mtim.Nano(), mt.UnixNano())
		}
		if err := unix.Stat(d+"/sub", &s); err != nil || s.Mode&0o7777 != 0o701 {
			t.Fatalf("dir mode %o %v", s.Mode&0o7777, err)
		}
		wantContent(t, d+"/f", "x")
	}},
	{"fsync makes data durable while open", func(t *testing.T, m *mount, d string) {
		f, err := os.Create(d + "/f")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteString("synced")
		wantErrno(t, "fsync", f.Sync(), 0)
		rel, _ := filepath.Rel(m.dir, d+"/f")
		if len(m.st.raw(t, rel)) == 0 {
			t.Fatal("object empty or missing after fsync")
		}
	}},
	{"fsync of a directory stores new files", func(t *testing.T, m *mount, d string) {
		f, err := os.Create(d + "/new")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.WriteString("entry")
		dir, err := os.Open(d)
		if err != nil {
			t.Fatal(err)
		}
		defer dir.Close()
		wantErrno(t, "fsync dir", dir.Sync(), 0)
		rel, _ := filepath.Rel(m.dir, d+"/new")
		if m.st.rawMaybe(t, rel) == nil {
			t.Fatal("file entry not in the store after fsync of its directory")
		}
	}},
	{"vault config name reserved at the root", func(t *testing.T, m *mount, d string) {
		root := m.dir
		if m.st.nameLayout(t).Encrypted() {
			// Entries live under d/ there, apart from the config and the
			// indexes: the names are ordinary.
			writeFile(t, root+"/.s3cryptfs.conf", "an ordinary name")
			wantContent(t, root+"/.s3cryptfs.conf", "an ordinary name")
			wantErrno(t, "remove", os.Remove(root+"/.s3cryptfs.conf"), 0)
			if m.st.rawMaybe(t, ".s3cryptfs.conf") == nil {
				t.Fatal("the vault config is gone")
			}
			return
		}
		for _, e := range strings.Fields(names(t, root)) {
			if strings.HasPrefix(e, ".s3cryptfs.conf") {
				t.Fatalf("root listing shows %s", e)
			}
		}
		_, err := os.OpenFile(root+"/.s3cryptfs.conf", os.O_CREATE|os.O_WRONLY, 0o644)
		wantErrno(t, "create config name", err, syscall.EPERM)
		writeFile(t, d+"/f", "x")
		wantErrno(t, "rename onto config name", os.Rename(d+"/f", root+"/.s3cryptfs.conf"), syscall.EPERM)
		writeFile(t, d+"/.s3cryptfs.conf", "fine below the root")
		wantContent(t, d+"/.s3cryptfs.conf", "fine below the root")
	}},
	{"statfs", func(t *testing.T, m *mount, d string) {
		var s unix.Statfs_t
		wantErrno(t, "statfs", unix.Statfs(d, &s), 0)
		if s.Bavail == 0 || s.Blocks == 0 {
			t.Fatalf("statfs: %+v", s)
		}
	}},
	{"unlink open file", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "still here")
		f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		wantErrno(t, "unlink", os.Remove(d+"/f"), 0)
		if fi, err := f.Stat(); err != nil || fi.Sys().(*syscall.Stat_t).Nlink != 0 {
			t.Fatalf("fstat of an unlinked open file: nlink %v, want 0 (%v)", fi.Sys().(*syscall.Stat_t).Nlink, err)
		}
		f.WriteAt([]byte("S"), 0)
		buf := make([]byte, 10)
		if n, _ := f.ReadAt(buf, 0); string(buf[:n]) != "Still here" {
			t.Fatalf("read unlinked file: %q", buf[:n])
		}
		wantErrno(t, "close", f.Close(), 0)
		if got := names(t, d); got != "" {
			t.Fatalf("unlinked file came back: %q", got)
		}
	}},
	{"readdir types and sizes", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/file", "12345")
		os.Mkdir(d+"/dir", 0o755)
		os.Symlink("file", d+"/link")
		if got := names(t, d); got != "dir/ file link@" {
			t.Fatalf("readdir: %q", got)
		}
		fi, err := os.Stat(d + "/file")
		if err != nil || fi.Size() != 5 {
			t.Fatalf("size: %v %v", fi, err)
		}
	}},
	{"mode 0000 and owner root kept", func(t *testing.T, m *mount, d string) {
		fd, err := unix.Open(d+"/f", unix.O_CREAT|unix.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		var s unix.Stat_t
		unix.Fstat(fd, &s)
		unix.Close(fd)
		if s.Mode&0o7777 != 0 {
			t.Fatalf("open(O_CREAT, 0): mode %o", s.Mode&0o7777)
		}
		wantErrno(t, "mkdir 0", unix.Mkdir(d+"/dir", 0), 0)
		writeFile(t, d+"/g", "x")
		wantErrno(t, "chmod 0", os.Chmod(d+"/g", 0), 0)
		wantErrno(t, "chown root", os.Chown(d+"/g", 0, 0), 0)
		time.Sleep(300 * time.Millisecond) // what is stored
		for _, n := range []string{"f", "dir", "g"} {
			if err := unix.Lstat(d+"/"+n, &s); err != nil || s.Mode&0o7777 != 0 || s.Uid != 0 || s.Gid != 0 {
				t.Fatalf("%s: mode %o owner %d:%d %v", n, s.Mode&0o7777, s.Uid, s.Gid, err)
			}
		}
	}},
	{"flock within one mount", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		a, err := os.Open(d + "/f")
		if err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		b, err := os.Open(d + "/f")
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		wantErrno(t, "flock", unix.Flock(int(a.Fd()), unix.LOCK_EX|unix.LOCK_NB), 0)
		wantErrno(t, "flock held", unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB), syscall.EWOULDBLOCK)
		wantErrno(t, "unlock", unix.Flock(int(a.Fd()), unix.LOCK_UN), 0)
		wantErrno(t, "flock free", unix.Flock(int(b.Fd()), unix.LOCK_EX|unix.LOCK_NB), 0)
	}},
	{"sequentially written file keeps the stored mtime", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", strings.Repeat("s", 200000))
		var s1, s2 unix.Stat_t
		wantErrno(t, "stat", unix.Stat(d+"/f", &s1), 0)
		time.Sleep(300 * time.Millisecond) // past the attribute timeout: what is stored
		wantErrno(t, "stat again", unix.Stat(d+"/f", &s2), 0)
		if s1.Mtim != s2.Mtim {
			t.Fatalf("mtime %v, then %v from the store", s1.Mtim, s2.Mtim)
		}
	}},
	{"fallocate EOPNOTSUPP", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		wantErrno(t, "fallocate", unix.Fallocate(int(f.Fd()), 0, 0, 1<<20), syscall.EOPNOTSUPP)
	}},
	{"xattrs set get list remove", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		os.Mkdir(d+"/sub", 0o755)
		for _, p := range []string{d + "/f", d + "/sub"} {
			wantErrno(t, "setxattr", unix.Setxattr(p, "user.one", []byte("value one"), 0), 0)
			wantErrno(t, "setxattr binary", unix.Setxattr(p, "user.bin", []byte{0, 1, 2, 255}, 0), 0)
			wantErrno(t, "setxattr empty", unix.Setxattr(p, "user.empty", nil, 0), 0)
			wantXattr(t, p, "user.one", "value one")
			wantXattr(t, p, "user.bin", "\x00\x01\x02\xff")
			wantXattr(t, p, "user.empty", "")
			if got := listXattrs(t, p); got != "user.bin user.empty user.one" {
				t.Fatalf("listxattr %s: %q", p, got)
			}
			wantErrno(t, "setxattr replace", unix.Setxattr(p, "user.one", []byte("1"), 0), 0)
			wantXattr(t, p, "user.one", "1")
			wantErrno(t, "removexattr", unix.Removexattr(p, "user.one"), 0)
			_, err := unix.Getxattr(p, "user.one", make([]byte, 16))
			wantErrno(t, "getxattr removed", err, syscall.ENODATA)
			wantErrno(t, "removexattr missing", unix.Removexattr(p, "user.one"), syscall.ENODATA)
			// ERANGE when the buffer is too small, the size when it is empty.
			_, err = unix.Getxattr(p, "user.bin", make([]byte, 2))
			wantErrno(t, "getxattr small buffer", err, syscall.ERANGE)
			if n, err := unix.Getxattr(p, "user.bin", nil); n != 4 || err != nil {
				t.Fatalf("getxattr size: %d %v", n, err)
			}
		}
		wantContent(t, d+"/f", "x")
		// They follow a rename (a server-side copy keeps the metadata).
		wantErrno(t, "rename", os.Rename(d+"/f", d+"/g"), 0)
		wantXattr(t, d+"/g", "user.bin", "\x00\x01\x02\xff")
		// On an open file with unsaved data they go out with the close.
		f, err := os.OpenFile(d+"/g", os.O_WRONLY|os.O_APPEND, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("y")
		wantErrno(t, "setxattr open", unix.Setxattr(d+"/g", "user.open", []byte("o"), 0), 0)
		wantErrno(t, "close", f.Close(), 0)
		wantXattr(t, d+"/g", "user.open", "o")
		wantContent(t, d+"/g", "xy")
	}},
	{"xattr flags, limits and namespaces", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		p := d + "/f"
		wantErrno(t, "XATTR_REPLACE missing", unix.Setxattr(p, "user.a", []byte("1"), unix.XATTR_REPLACE), syscall.ENODATA)
		wantErrno(t, "XATTR_CREATE", unix.Setxattr(p, "user.a", []byte("1"), unix.XATTR_CREATE), 0)
		wantErrno(t, "XATTR_CREATE existing", unix.Setxattr(p, "user.a", []byte("2"), unix.XATTR_CREATE), syscall.EEXIST)
		wantErrno(t, "XATTR_REPLACE", unix.Setxattr(p, "user.a", []byte("3"), unix.XATTR_REPLACE), 0)
		wantXattr(t, p, "user.a", "3")
		// S3 holds 2 KiB of metadata per object: a value that cannot fit
		// is refused whole, and what was there stays.
		wantErrno(t, "setxattr too large", unix.Setxattr(p, "user.big", bytes.Repeat([]byte("b"), 1500), 0), syscall.ENOSPC)
		wantXattr(t, p, "user.a", "3")
		wantErrno(t, "setxattr 1000 bytes", unix.Setxattr(p, "user.big", bytes.Repeat([]byte("b"), 1000), 0), 0)
		if n, err := unix.Getxattr(p, "user.big", make([]byte, 2000)); n != 1000 || err != nil {
			t.Fatalf("getxattr 1000 bytes: %d %v", n, err)
		}
		wantErrno(t, "setxattr over the rest", unix.Setxattr(p, "user.more", bytes.Repeat([]byte("m"), 400), 0), syscall.ENOSPC)
		// Other namespaces are not stored.
		wantErrno(t, "setxattr security", unix.Setxattr(p, "security.foo", []byte("1"), 0), syscall.EOPNOTSUPP)
		wantErrno(t, "setxattr trusted", unix.Setxattr(p, "trusted.foo", []byte("1"), 0), syscall.EOPNOTSUPP)
		_, err := unix.Getxattr(p, "security.selinux", make([]byte, 64))
		wantErrno(t, "getxattr security", err, syscall.ENODATA)
		wantErrno(t, "POSIX ACL", unix.Setxattr(p, "system.posix_acl_access", []byte{2, 0, 0, 0}, 0), syscall.EOPNOTSUPP)
		// The kernel allows user.* only on files and directories.
		os.Symlink("f", d+"/ln")
		wantErrno(t, "setxattr symlink", unix.Lsetxattr(d+"/ln", "user.a", []byte("1"), 0), syscall.EPERM)
	}},
	{"atime set explicitly, never by reads", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		at := time.Date(2004, 5, 6, 7, 8, 9, 123456789, time.UTC)
		mt := time.Date(2005, 6, 7, 8, 9, 10, 0, time.UTC)
		wantErrno(t, "utimes", os.Chtimes(d+"/f", at, mt), 0)
		wantContent(t, d+"/f", "x")
		wantTimes(t, d+"/f", at, mt)
		// touch -a: only atime.
		at2 := time.Date(2006, 1, 1, 0, 0, 0, 0, time.UTC)
		ts := []unix.Timespec{unix.NsecToTimespec(at2.UnixNano()), {Nsec: unix.UTIME_OMIT}}
		wantErrno(t, "utimensat atime only", unix.UtimesNanoAt(unix.AT_FDCWD, d+"/f", ts, 0), 0)
		time.Sleep(300 * time.Millisecond) // past the attribute timeout: read what is stored
		wantTimes(t, d+"/f", at2, mt)
		// ctime is not stored: it reads as mtime.
		var st unix.Stat_t
		unix.Stat(d+"/f", &st)
		if st.Ctim != st.Mtim {
			t.Fatalf("ctime %v, mtime %v", st.Ctim, st.Mtim)
		}
		// A directory too.
		os.Mkdir(d+"/sub", 0o755)
		wantErrno(t, "utimes dir", os.Chtimes(d+"/sub", at, mt), 0)
		time.Sleep(300 * time.Millisecond)
		wantTimes(t, d+"/sub", at, mt)
	}},
	{"directory nlink counted or 1, never wrong", func(t *testing.T, m *mount, d string) {
		for _, n := range []string{"a", "b", "c"} {
			os.Mkdir(d+"/"+n, 0o755)
		}
		writeFile(t, d+"/f", "x")
		names(t, d)
		// Exact counts in TestDirNlink (a longer attribute timeout); here
		// the count may have expired already on a slow machine.
		if n := nlinkOf(t, d); n != 5 && n != 1 {
			t.Fatalf("nlink %d, want 5 (or 1: not counted)", n)
		}
		if n := nlinkOf(t, d+"/f"); n != 1 {
			t.Fatalf("file nlink %d", n)
		}
	}},
	{"inode numbers stable and unique", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		os.Mkdir(d+"/sub", 0o755)
		os.Symlink("f", d+"/ln")
		unix.Mkfifo(d+"/p", 0o600)
		seen := map[uint64]string{}
		for _, n := range []string{"f", "sub", "ln", "p"} {
			ino := inoOf(t, d+"/"+n)
			if ino == 0 || ino >= 1<<63 {
				t.Fatalf("%s: inode number %d", n, ino)
			}
			if o, dup := seen[ino]; dup {
				t.Fatalf("%s and %s share inode number %d", n, o, ino)
			}
			seen[ino] = n
		}
		if ino := inoOf(t, m.dir); ino != 1 {
			t.Fatalf("root inode %d, want 1", ino)
		}
		// readdir's d_ino is stat's st_ino (ls -i uses it).
		wantDirInos(t, d)
		f0, s0 := inoOf(t, d+"/f"), inoOf(t, d+"/sub")
		wantErrno(t, "rename", os.Rename(d+"/f", d+"/g"), 0)
		wantErrno(t, "rename dir", os.Rename(d+"/sub", d+"/sub2"), 0)
		time.Sleep(300 * time.Millisecond) // the kernel forgets: numbers come from the store
		if got := inoOf(t, d+"/g"); got != f0 {
			t.Fatalf("after rename: inode %d, want %d", got, f0)
		}
		if got := inoOf(t, d+"/sub2"); got != s0 {
			t.Fatalf("dir after rename: inode %d, want %d", got, s0)
		}
		rel, _ := filepath.Rel(m.dir, d)
		// Objects written by other tools are outside an encrypted-name tree.
		if !m.st.nameLayout(t).Encrypted() {
			// An object written by another tool has no stored number: it shows
			// a hash of its key, and a rename here stores that number.
			m.st.putRaw(t, rel+"/legacy", []byte("other tool"))
			m.st.putRaw(t, rel+"/ldir/inner", []byte("other tool"))
			l0, i0 := inoOf(t, d+"/legacy"), inoOf(t, d+"/ldir/inner")
			wantErrno(t, "rename legacy", os.Rename(d+"/legacy", d+"/legacy2"), 0)
			wantErrno(t, "rename legacy dir", os.Rename(d+"/ldir", d+"/ldir2"), 0)
			time.Sleep(300 * time.Millisecond)
			if l, i := inoOf(t, d+"/legacy2"), inoOf(t, d+"/ldir2/inner"); l != l0 || i != i0 {
				t.Fatalf("objects without a stored number, renamed: inodes %d %d, want %d %d", l, i, l0, i0)
			}
			if _, ok := m.st.rawMeta(t, rel+"/legacy2")["ino"]; !ok {
				t.Fatal("renamed object without a number still has none")
			}
		}
		// A copy made by another tool keeps the metadata and so the number:
		// the mount gives the second one another number.
		m.st.copyRaw(t, rel+"/g", rel+"/copy")
		a, b := inoOf(t, d+"/g"), inoOf(t, d+"/copy")
		if a == b || b == 0 || b >= 1<<63 {
			t.Fatalf("copy with the same stored number: inodes %d and %d", a, b)
		}
	}},
	{"name too long ENAMETOOLONG", func(t *testing.T, m *mount, d string) {
		max := 255 // S3: the Linux limit
		encrypted := m.st.nameLayout(t).Encrypted()
		if m.st.kind == "local" && !encrypted {
			max = 251 // the local store appends a 4-byte suffix
		}
		long := strings.Repeat("n", max+1)
		wantErrno(t, "create", os.WriteFile(d+"/"+long, nil, 0o644), syscall.ENAMETOOLONG)
		wantErrno(t, "mkdir", os.Mkdir(d+"/"+long, 0o755), syscall.ENAMETOOLONG)
		writeFile(t, d+"/short", "s")
		wantErrno(t, "rename", os.Rename(d+"/short", d+"/"+long), syscall.ENAMETOOLONG)
		ok := max
		if m.st.kind == "minio" && !encrypted {
			ok = 200 // MinIO keeps keys as files and refuses a 255-byte segment
		}
		writeFile(t, d+"/"+long[:ok], "max")
		wantContent(t, d+"/"+long[:ok], "max")
	}},
	{"mmap shared write", func(t *testing.T, m *mount, d string) {
		f, err := os.OpenFile(d+"/m", os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(8192); err != nil {
			t.Fatal(err)
		}
		b, err := unix.Mmap(int(f.Fd()), 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
		if err != nil {
			t.Fatal(err)
		}
		copy(b[4000:], "mapped")
		wantErrno(t, "msync", unix.Msync(b, unix.MS_SYNC), 0)
		wantErrno(t, "munmap", unix.Munmap(b), 0)
		wantErrno(t, "close", f.Close(), 0)
		got, err := os.ReadFile(d + "/m")
		if err != nil || len(got) != 8192 || string(got[4000:4006]) != "mapped" {
			t.Fatalf("after mmap write: len %d, %v", len(got), err)
		}
	}},
	{"O_DIRECT", func(t *testing.T, m *mount, d string) {
		f, err := os.OpenFile(d+"/direct", os.O_RDWR|os.O_CREATE|syscall.O_DIRECT, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(bytes.Repeat([]byte("D"), 4096)); err != nil {
			t.Fatal(err)
		}
		wantErrno(t, "close", f.Close(), 0)
		wantContent(t, d+"/direct", strings.Repeat("D", 4096))
	}},
	{"directories written by other tools", func(t *testing.T, m *mount, d string) {
		skipEncrypted(t, m)
		rel, _ := filepath.Rel(m.dir, d)
		m.st.putRaw(t, rel+"/implicit/x/y", nil) // no markers for implicit/ or implicit/x/
		time.Sleep(300 * time.Millisecond)       // the attribute/entry TTL of the test mounts
		if got := names(t, d); got != "implicit/" {
			t.Fatalf("readdir: %q", got)
		}
		fi, err := os.Stat(d + "/implicit/x")
		if err != nil || !fi.IsDir() {
			t.Fatalf("implicit dir: %v %v", fi, err)
		}
	}},
}

// TestPOSIX runs the system-call table on both stores, mounted as a POSIX
// conformance suite runs it: by root with --allow-other (the kernel's
// default_permissions checks on).
// skipEncrypted skips a case about objects other S3 tools write by path:
// in an encrypted-name vault they are outside the tree by design (they
// carry no name that decrypts).
func skipEncrypted(t *testing.T, m *mount) {
	t.Helper()
	if m.st.nameLayout(t).Encrypted() {
		t.Skip("objects written by other tools by path: a plaintext-names case")
	}
}

func TestPOSIX(t *testing.T) {
	eachLayout(t, func(t *testing.T, st *store) {
		m := st.mount(t, "--allow-other")
		for i, c := range posixCases {
			t.Run(c.name, func(t *testing.T) {
				d := m.path(strings.Repeat("c", 1) + string(rune('a'+i%26)) + string(rune('a'+i/26)))
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
				c.fn(t, m, d)
			})
		}
	})
}

// TestReadOnly: a --read-only mount refuses every change with EROFS and
// still reads.
func TestReadOnly(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		writeFile(t, m.path("f"), "data")
		os.Mkdir(m.path("d"), 0o755)
		m.unmount()
		ro := st.mount(t, "--read-only")
		wantContent(t, ro.path("f"), "data")
		wantErrno(t, "create", os.WriteFile(ro.path("g"), nil, 0o644), syscall.EROFS)
		_, err := os.OpenFile(ro.path("f"), os.O_WRONLY, 0)
		wantErrno(t, "open for write", err, syscall.EROFS)
		wantErrno(t, "mkdir", os.Mkdir(ro.path("e"), 0o755), syscall.EROFS)
		wantErrno(t, "unlink", os.Remove(ro.path("f")), syscall.EROFS)
		wantErrno(t, "rmdir", os.Remove(ro.path("d")), syscall.EROFS)
		wantErrno(t, "rename", os.Rename(ro.path("f"), ro.path("h")), syscall.EROFS)
		wantErrno(t, "chmod", os.Chmod(ro.path("f"), 0o600), syscall.EROFS)
		wantErrno(t, "symlink", os.Symlink("f", ro.path("l")), syscall.EROFS)
	})
}

func wantXattr(t *testing.T, p, name, want string) {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Getxattr(p, name, buf)
	if err != nil {
		t.Fatalf("getxattr %s %s: %v", p, name, err)
	}
	if got := fmt.Sprintf("%q", buf[:n]); got != fmt.Sprintf("%q", want) {
		t.Fatalf("getxattr %s %s: %s, want %q", p, name, got, want)
	}
}

// listXattrs returns the names listxattr gives, space-separated, sorted.
func listXattrs(t *testing.T, p string) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := unix.Listxattr(p, buf)
	if err != nil {
		t.Fatalf("listxattr %s: %v", p, err)
	}
	var out []string
	for _, s := range strings.Split(string(buf[:n]), "\x00") {
		if s != "" {
			out = append(out, s)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func wantTimes(t *testing.T, p string, atime, mtime time.Time) {
	t.Helper()
	var s unix.Stat_t
	if err := unix.Lstat(p, &s); err != nil {
		t.Fatal(err)
	}
	if s.Atim.Nano() != atime.UnixNano() || s.Mtim.Nano() != mtime.UnixNano() {
		t.Fatalf("%s: atime %v mtime %v, want %v %v", p, time.Unix(0, s.Atim.Nano()).UTC(), time.Unix(0, s.Mtim.Nano()).UTC(), atime, mtime)
	}
}

func wantNlink(t *testing.T, p string, want uint64) {
	t.Helper()
	if n := nlinkOf(t, p); n != want {
		t.Fatalf("%s: nlink %d, want %d", p, n, want)
	}
}

func nlinkOf(t *testing.T, p string) uint64 {
	t.Helper()
	var s unix.Stat_t
	if err := unix.Stat(p, &s); err != nil {
		t.Fatal(err)
	}
	return uint64(s.Nlink)
}

func inoOf(t *testing.T, p string) uint64 {
	t.Helper()
	var s unix.Stat_t
	if err := unix.Lstat(p, &s); err != nil {
		t.Fatal(err)
	}
	return s.Ino
}

// wantDirInos checks that readdir's d_ino of every entry of dir equals
// lstat's st_ino.
func wantDirInos(t *testing.T, dir string) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	buf := make([]byte, 64<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			return
		}
		for b := buf[:n]; len(b) > 0; {
			de := (*unix.Dirent)(unsafe.Pointer(&b[0]))
			var nb []byte
			for _, c := range de.Name {
				if c == 0 {
					break
				}
				nb = append(nb, byte(c))
			}
			name := string(nb)
			if name != "." && name != ".." {
				if st := inoOf(t, filepath.Join(dir, name)); st != de.Ino {
					t.Fatalf("%s: d_ino %d, st_ino %d", name, de.Ino, st)
				}
			}
			b = b[de.Reclen:]
		}
	}
}

// TestDirNlink: a directory's st_nlink is 2 plus its subdirectories once a
// listing counted them, follows this mount's mkdir, rmdir and renames, and
// is 1 ("not counted") when no listing is recent, e.g. on a fresh mount.
func TestDirNlink(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t, "--plaintext-names") // other tools write by path
		m := st.mount(t, "--attr-timeout", "30s")
		d := m.path("d")
		os.Mkdir(d, 0o755)
		for _, n := range []string{"a", "b", "c"} {
			os.Mkdir(d+"/"+n, 0o755)
		}
		writeFile(t, d+"/f", "x")
		rel := "d/implicit/x"
		st.putRaw(t, rel, nil) // a directory without a marker counts too
		names(t, d)
		wantNlink(t, d, 6)
		wantNlink(t, d+"/a", 2) // made here: known empty
		wantErrno(t, "mkdir", os.Mkdir(d+"/e", 0o755), 0)
		wantNlink(t, d, 7)
		wantErrno(t, "rmdir", syscall.Rmdir(d+"/e"), 0)
		wantNlink(t, d, 6)
		wantErrno(t, "rename dir away", os.Rename(d+"/c", d+"/a/c"), 0)
		wantNlink(t, d, 5)
		wantNlink(t, d+"/a", 3)
		wantErrno(t, "rename dir over empty dir", unix.Rename(d+"/a/c", d+"/b"), 0)
		wantNlink(t, d+"/a", 2)
		wantNlink(t, d, 5)
		m = m.remount("--attr-timeout", "30s")
		wantNlink(t, d, 1) // not listed yet
		wantNlink(t, m.dir, 1)
		names(t, d)
		wantNlink(t, d, 5)
		names(t, m.dir)
		wantNlink(t, m.dir, 3)
	})
}

// nodeState is what a remount must keep of a node.
type nodeState struct {
	ino                uint64
	mode, uid, gid     uint32
	rdev               uint64
	atime, mtime, size int64
	xattrs             string
}

func stateOf(t *testing.T, p string) nodeState {
	t.Helper()
	var s unix.Stat_t
	if err := unix.Lstat(p, &s); err != nil {
		t.Fatal(err)
	}
	ns := nodeState{ino: s.Ino, mode: s.Mode, uid: s.Uid, gid: s.Gid, rdev: s.Rdev, atime: s.Atim.Nano(), mtime: s.Mtim.Nano()}
	if s.Mode&unix.S_IFMT == unix.S_IFREG {
		ns.size = s.Size
	}
	if m := s.Mode & unix.S_IFMT; m == unix.S_IFREG || m == unix.S_IFDIR {
		for _, n := range strings.Fields(listXattrs(t, p)) {
			buf := make([]byte, 4096)
			k, err := unix.Getxattr(p, n, buf)
			if err != nil {
				t.Fatal(err)
			}
			ns.xattrs += fmt.Sprintf("%s=%q ", n, buf[:k])
		}
	}
	return ns
}

// TestPOSIXAcrossRemount: inode numbers, special files (type, mode, owner,
// device number), explicit atimes and extended attributes are stored, so a
// fresh mount (fresh kernel state, attributes from the store and its
// indexes) shows exactly what the first one did; inode numbers follow a
// rename and are below 2^63; xattr names and values are not in the bucket
// in plaintext.
func TestPOSIXAcrossRemount(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t, "--plaintext-names") // other tools write by path
		m := st.mount(t, "--allow-other")
		os.MkdirAll(m.path("d/sub"), 0o750)
		writeFile(t, m.path("d/f"), "content")
		writeFile(t, m.path("d/moved"), "to be renamed")
		os.Symlink("f", m.path("d/ln"))
		wantErrno(t, "mkfifo", unix.Mkfifo(m.path("d/fifo"), 0o600), 0)
		wantErrno(t, "mknod chr", unix.Mknod(m.path("d/chr"), unix.S_IFCHR|0o600, int(unix.Mkdev(136, 7))), 0)
		wantErrno(t, "mknod blk", unix.Mknod(m.path("d/blk"), unix.S_IFBLK|0o640, int(unix.Mkdev(8, 17))), 0)
		l, err := net.Listen("unix", m.path("d/sock"))
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		os.Lchown(m.path("d/chr"), 11, 22)
		st.putRaw(t, "d/legacy", []byte("written by another tool")) // no metadata, no number
		st.putRaw(t, "d/implicit/x", nil)                           // a directory without a marker
		wantErrno(t, "setxattr", unix.Setxattr(m.path("d/f"), "user.secret-name", []byte("secret-xattr-value"), 0), 0)
		wantErrno(t, "setxattr dir", unix.Setxattr(m.path("d/sub"), "user.dir", []byte("on a directory"), 0), 0)
		at := time.Date(2001, 2, 3, 4, 5, 6, 7, time.UTC)
		mt := time.Date(2002, 3, 4, 5, 6, 7, 8, time.UTC)
		os.Chtimes(m.path("d/f"), at, mt)
		os.Chtimes(m.path("d/sub"), at, mt)
		os.Chtimes(m.path("d/fifo"), at, mt)
		time.Sleep(300 * time.Millisecond)

		all := []string{"d", "d/sub", "d/f", "d/moved", "d/ln", "d/fifo", "d/chr", "d/blk", "d/sock", "d/legacy", "d/implicit"}
		before := map[string]nodeState{}
		for _, n := range all {
			before[n] = stateOf(t, m.path(n))
			if ino := before[n].ino; ino < 2 || ino >= 1<<63 {
				t.Fatalf("%s: inode number %d", n, ino)
			}
		}
		wantErrno(t, "rename", os.Rename(m.path("d/moved"), m.path("d/renamed")), 0)
		before["d/renamed"] = before["d/moved"]
		delete(before, "d/moved")

		// What the bucket holds: no xattr name or value in plaintext.
		for k, v := range st.rawMeta(t, "d/f") {
			if strings.Contains(k+v, "secret") {
				t.Fatalf("metadata %s=%s reveals the xattr", k, v)
			}
			if raw, err := base64.RawStdEncoding.DecodeString(v); err == nil && bytes.Contains(raw, []byte("secret")) {
				t.Fatalf("metadata %s decodes to the xattr in plaintext", k)
			}
		}

		// Attributes from HEADs (lookups of each name), then from a listing
		// and the directory's attribute index.
		for _, pass := range []string{"lookup", "listing"} {
			m = m.remount("--allow-other")
			if pass == "listing" {
				names(t, m.path("d"))
			}
			for n, want := range before {
				got := stateOf(t, m.path(n))
				if n == "d/implicit" {
					got.atime, got.mtime = want.atime, want.mtime // no marker: the mount's time
				}
				if got != want {
					t.Fatalf("%s: %s\n got %+v\nwant %+v", pass, n, got, want)
				}
			}
		}
		wantXattr(t, m.path("d/f"), "user.secret-name", "secret-xattr-value")
		var s unix.Stat_t
		unix.Lstat(m.path("d/chr"), &s)
		if unix.Major(s.Rdev) != 136 || unix.Minor(s.Rdev) != 7 || s.Uid != 11 || s.Gid != 22 {
			t.Fatalf("chr after remount: %d:%d owner %d:%d", unix.Major(s.Rdev), unix.Minor(s.Rdev), s.Uid, s.Gid)
		}
		// The FIFO still works after the remount.
		go func() {
			if w, err := os.OpenFile(m.path("d/fifo"), os.O_WRONLY, 0); err == nil {
				w.WriteString("again")
				w.Close()
			}
		}()
		r, err := os.Open(m.path("d/fifo"))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(r)
		r.Close()
		if string(got) != "again" {
			t.Fatalf("fifo after remount: %q", got)
		}
	})
}

// semanticsRows maps each row of the system-call table in
// docs/SEMANTICS.md (its first cell) to the tests through a real mount that
// check what the row says: "TestX" is a test function of this package,
// "TestPOSIX/<case>" a case of posixCases. TestSemanticsTable keeps both
// sides in step.
var semanticsRows = map[string][]string{
	"`open`, `creat`":                        {"TestPOSIX/create write read", "TestPOSIX/O_EXCL on existing EEXIST", "TestPOSIX/open missing ENOENT", "TestPOSIX/rmdir file ENOTDIR, unlink dir EISDIR", "TestTwoMounts"},
	"create (new file)":                      {"TestPOSIX/fsync of a directory stores new files", "TestTwoMounts"},
	"`read`, `pread`":                        {"TestPOSIX/random writes", "TestTwoMounts", "TestCorruptObject"},
	"`write`, `pwrite`":                      {"TestPOSIX/random writes", "TestFioVerify"},
	"`O_APPEND`":                             {"TestPOSIX/O_APPEND"},
	"`truncate`, `ftruncate`":                {"TestPOSIX/truncate grow and shrink, ftruncate"},
	"`close` (FLUSH)":                        {"TestPersistence", "TestPOSIX/create write read"},
	"`fsync`, `fdatasync`":                   {"TestPOSIX/fsync makes data durable while open"},
	"`fsync` of a directory":                 {"TestPOSIX/fsync of a directory stores new files"},
	"`unlink`":                               {"TestPOSIX/unlink open file", "TestPOSIX/rmdir file ENOTDIR, unlink dir EISDIR"},
	"`mkdir`":                                {"TestPOSIX/mkdir existing EEXIST", "TestPOSIX/rmdir file ENOTDIR, unlink dir EISDIR"},
	"`rmdir`":                                {"TestPOSIX/rmdir non-empty ENOTEMPTY, empty ok", "TestPOSIX/rmdir file ENOTDIR, unlink dir EISDIR"},
	"`rename` of a file or symlink":          {"TestPOSIX/rename over file replaces it", "TestPOSIX/rename file over dir EISDIR, dir over file ENOTDIR"},
	"`rename` of a directory":                {"TestPOSIX/rename directory with children", "TestPOSIX/rename dir over empty dir ok, over non-empty ENOTEMPTY"},
	"`renameat2(RENAME_NOREPLACE)`":          {"TestPOSIX/RENAME_NOREPLACE EEXIST"},
	"`renameat2(RENAME_EXCHANGE)`":           {"TestPOSIX/RENAME_EXCHANGE refused"},
	"`symlink`, `readlink`":                  {"TestPOSIX/symlink readlink lstat"},
	"`link` (hard link)":                     {"TestPOSIX/hard link EPERM"},
	"`mknod`, `mkfifo`":                      {"TestPOSIX/mknod regular file", "TestPOSIX/mkfifo passes data", "TestPOSIX/mknod devices", "TestPOSIX/special files chmod chown utimes rename unlink", "TestPOSIXAcrossRemount", "TestRoundTripRsyncTarRestic"},
	"`bind` of a unix socket":                {"TestPOSIX/unix socket bind connect", "TestPOSIXAcrossRemount"},
	"`chmod`, `chown`, `utimes`/`utimensat`": {"TestPOSIX/chmod chown utimes", "TestPOSIX/mode 0000 and owner root kept", "TestPOSIX/special files chmod chown utimes rename unlink", "TestPersistence"},
	"atime":                                  {"TestPOSIX/atime set explicitly, never by reads", "TestPOSIXAcrossRemount", "TestRoundTripRsyncTarRestic"},
	"ctime":                                  {"TestPOSIX/atime set explicitly, never by reads"},
	"mtime of a file written in one sequential pass": {"TestPOSIX/sequentially written file keeps the stored mtime"},
	"`stat`, `lstat`": {"TestPOSIX/readdir types and sizes", "TestPOSIX/inode numbers stable and unique", "TestPOSIX/directory nlink counted or 1, never wrong", "TestDirNlink", "TestPOSIXAcrossRemount", "TestRoundTripRsyncTarRestic"},
	"`readdir`":       {"TestPOSIX/readdir types and sizes", "TestPOSIX/directories written by other tools", "TestPOSIX/inode numbers stable and unique", "TestPOSIX/mkfifo passes data"},
	"`statfs`":        {"TestPOSIX/statfs"},
	"`getxattr`, `setxattr`, `listxattr`, `removexattr`": {"TestPOSIX/xattrs set get list remove", "TestPOSIX/xattr flags, limits and namespaces", "TestPOSIXAcrossRemount", "TestRoundTripRsyncTarRestic", "TestNoXattrs"},
	"`flock`, `fcntl` locks":                             {"TestPOSIX/flock within one mount"},
	"`mmap`":                                             {"TestPOSIX/mmap shared write"},
	"`O_DIRECT`":                                         {"TestPOSIX/O_DIRECT"},
	"`fallocate`, `copy_file_range`, `O_TMPFILE`":        {"TestPOSIX/fallocate EOPNOTSUPP"},
}

// TestSemanticsTable: every row of SEMANTICS.md's system-call table names
// tests that exist, every row that claims support has at least one, and no
// entry of semanticsRows names a row the table no longer has.
func TestSemanticsTable(t *testing.T) {
	doc, err := os.ReadFile("../docs/SEMANTICS.md")
	if err != nil {
		t.Fatal(err)
	}
	var src bytes.Buffer
	files, _ := filepath.Glob("*_test.go")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src.Write(b)
	}
	cases := map[string]bool{}
	for _, c := range posixCases {
		cases[c.name] = true
	}
	sec := string(doc)
	i := strings.Index(sec, "\n## System calls")
	if i < 0 {
		t.Fatal("SEMANTICS.md has no System calls section")
	}
	sec = sec[i+1:]
	if j := strings.Index(sec[1:], "\n## "); j >= 0 {
		sec = sec[:j+1]
	}
	rows := map[string]bool{}
	for _, line := range strings.Split(sec, "\n") {
		cells := strings.Split(line, " | ")
		if !strings.HasPrefix(line, "| ") || len(cells) < 2 || strings.HasPrefix(line, "|---") {
			continue
		}
		row := strings.TrimPrefix(cells[0], "| ")
		if row == "Call" {
			continue
		}
		rows[row] = true
		tests, ok := semanticsRows[row]
		if !ok {
			t.Errorf("SEMANTICS.md row %q has no entry in semanticsRows", row)
			continue
		}
		behaviour := strings.ToLower(strings.Join(cells[1:], " | "))
		claims := strings.Contains(behaviour, "supported") && !strings.HasPrefix(strings.TrimSpace(behaviour), "not supported")
		if claims && len(tests) == 0 {
			t.Errorf("SEMANTICS.md row %q says supported but names no test", row)
		}
		for _, name := range tests {
			if c, ok := strings.CutPrefix(name, "TestPOSIX/"); ok {
				if !cases[c] {
					t.Errorf("row %q: no case %q in posixCases", row, c)
				}
			} else if !bytes.Contains(src.Bytes(), []byte("func "+name+"(t *testing.T)")) {
				t.Errorf("row %q: no test function %s", row, name)
			}
		}
	}
	if len(rows) < 20 {
		t.Fatalf("parsed only %d rows of the system-call table", len(rows))
	}
	for row := range semanticsRows {
		if !rows[row] {
			t.Errorf("semanticsRows names %q, which SEMANTICS.md's table does not have", row)
		}
	}
}

// TestNoXattrs: --no-xattrs turns extended attributes off (EOPNOTSUPP) and
// with them the GETXATTR of security.capability the kernel otherwise sends
// before every write(2), the cost CONFIGURATION.md names for the flag.
func TestNoXattrs(t *testing.T) {
	st := newStore(t, "local")
	st.init(t)
	getxattrs := func(m *mount) int {
		f, err := os.Create(m.path("f"))
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 20; i++ {
			if _, err := f.Write([]byte("small write")); err != nil {
				t.Fatal(err)
			}
		}
		f.Close()
		m.unmount()
		return strings.Count(readLog(m.log), `GETXATTR`)
	}
	m := st.mount(t, "--fuse-debug")
	if n := getxattrs(m); n < 20 {
		t.Fatalf("with xattrs: %d GETXATTR requests for 20 writes, want one per write (the documented cost)", n)
	}
	m = st.mount(t, "--fuse-debug", "--no-xattrs")
	writeFile(t, m.path("g"), "x")
	wantErrno(t, "setxattr", unix.Setxattr(m.path("g"), "user.a", []byte("1"), 0), syscall.EOPNOTSUPP)
	_, err := unix.Getxattr(m.path("g"), "user.a", make([]byte, 8))
	wantErrno(t, "getxattr", err, syscall.EOPNOTSUPP)
	if n := getxattrs(m); n > 1 {
		t.Fatalf("with --no-xattrs: %d GETXATTR requests reached the mount", n)
	}
}
