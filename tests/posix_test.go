package tests

import (
	"bytes"
	"context"
	"errors"
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
	{"mknod device and fifo EPERM, regular ok", func(t *testing.T, m *mount, d string) {
		wantErrno(t, "mknod chr", unix.Mknod(d+"/dev", unix.S_IFCHR|0o600, int(unix.Mkdev(1, 3))), syscall.EPERM)
		wantErrno(t, "mkfifo", unix.Mkfifo(d+"/fifo", 0o600), syscall.EPERM)
		wantErrno(t, "mknod reg", unix.Mknod(d+"/reg", unix.S_IFREG|0o600, 0), 0)
		wantContent(t, d+"/reg", "")
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
	{"xattrs and fallocate EOPNOTSUPP", func(t *testing.T, m *mount, d string) {
		writeFile(t, d+"/f", "x")
		wantErrno(t, "setxattr", unix.Setxattr(d+"/f", "user.k", []byte("v"), 0), syscall.EOPNOTSUPP)
		_, err := unix.Getxattr(d+"/f", "user.k", make([]byte, 16))
		wantErrno(t, "getxattr", err, syscall.EOPNOTSUPP)
		f, err := os.OpenFile(d+"/f", os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		wantErrno(t, "fallocate", unix.Fallocate(int(f.Fd()), 0, 0, 1<<20), syscall.EOPNOTSUPP)
	}},
	{"name too long ENAMETOOLONG", func(t *testing.T, m *mount, d string) {
		max := 255 // S3: the Linux limit
		if m.st.kind == "local" {
			max = 251 // the local store appends a 4-byte suffix
		}
		long := strings.Repeat("n", max+1)
		wantErrno(t, "create", os.WriteFile(d+"/"+long, nil, 0o644), syscall.ENAMETOOLONG)
		wantErrno(t, "mkdir", os.Mkdir(d+"/"+long, 0o755), syscall.ENAMETOOLONG)
		writeFile(t, d+"/short", "s")
		wantErrno(t, "rename", os.Rename(d+"/short", d+"/"+long), syscall.ENAMETOOLONG)
		ok := max
		if m.st.kind == "minio" {
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

// TestPOSIX runs the system-call table on both stores.
func TestPOSIX(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
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
