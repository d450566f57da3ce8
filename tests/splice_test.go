package tests

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/s3cryptfs/s3cryptfs/backend/local"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// replaceRaw stores data as key's bytes behind the mount's back, keeping
// the object's metadata (an attacker with write access to the bucket).
func (st *store) replaceRaw(t *testing.T, key string, data []byte) {
	t.Helper()
	key = st.key(t, key)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if st.kind == "minio" {
		c := st.srv.SDKClient(t)
		head, err := c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(st.bucket), Key: aws.String(key),
			Body: bytes.NewReader(data), Metadata: head.Metadata}); err != nil {
			t.Fatal(err)
		}
		return
	}
	ls, err := local.New(st.dir)
	if err != nil {
		t.Fatal(err)
	}
	info, err := ls.Stat(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.Put(ctx, key, bytes.NewReader(data), int64(len(data)), info.Metadata); err != nil {
		t.Fatal(err)
	}
}

const bs = cipher.DefaultBlockSize

// sealedAt is where sealed block i starts in an object (default block size).
func sealedAt(i int) int { return cipher.HeaderSize + i*(bs+cipher.BlockOverhead) }

func sealedBlock(obj []byte, i int) []byte {
	return obj[sealedAt(i):min(sealedAt(i+1), len(obj))]
}

func pwrite(t *testing.T, path string, data []byte, off int64, flags int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|flags, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data, off); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestSpliceThroughMount writes versions of one file through a real mount,
// splices sealed blocks of older versions into a newer one in the store,
// and reads the result through a fresh mount: EIO and a log line naming
// the object, every time.
func TestSpliceThroughMount(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		long := bytes.Repeat([]byte("0123456789abcdef"), 4*bs/16) // blocks 0-3, all full
		writeFile(t, m.path("f"), string(long))
		v1 := st.raw(t, "f")
		pwrite(t, m.path("f"), []byte("changed"), 2*bs+10, 0) // version 2: block 2 differs
		v2 := st.raw(t, "f")
		if err := os.Truncate(m.path("f"), 2*bs+100); err != nil { // version 3: short
			t.Fatal(err)
		}
		v3 := st.raw(t, "f")
		pwrite(t, m.path("f"), long, 0, os.O_TRUNC) // version 4: O_TRUNC, the same bytes as version 1
		v4 := st.raw(t, "f")
		m.unmount()

		for i := range 4 {
			for j := range 4 {
				if bytes.Equal(sealedBlock(v1, i), sealedBlock(v2, j)) {
					t.Fatalf("versions 1 and 2 share a sealed block (%d, %d)", i, j)
				}
			}
		}
		cases := []struct {
			name string
			obj  []byte
			off  int64 // where the read must fail
		}{
			{"v1 block 1 into v2", splice(v2, sealedAt(1), sealedBlock(v1, 1)), bs + 5},
			{"v1 block 3 (final) into v2", splice(v2, sealedAt(3), sealedBlock(v1, 3)), 3*bs + 5},
			{"v3's final block after v2's blocks (truncation)", cat(v2[:sealedAt(2)], sealedBlock(v3, 2)), 2*bs + 5},
			{"v2's blocks 2-3 after v3's blocks (extension)", cat(v3[:sealedAt(2)], v2[sealedAt(2):]), 3*bs + 5},
			{"block 0 from before the O_TRUNC", splice(v4, sealedAt(0), sealedBlock(v1, 0)), 5},
		}
		for _, c := range cases {
			st.replaceRaw(t, "f", c.obj)
			m2, r := st.tryMountAt(t, m.dir, "--passphrase-file", passFile(t, passphrase))
			if r.code != 0 {
				t.Fatalf("%s: mount: %s", c.name, r.stderr)
			}
			fd, err := os.Open(m2.path("f"))
			if err != nil {
				t.Fatalf("%s: open: %v", c.name, err)
			}
			_, err = fd.ReadAt(make([]byte, 10), c.off)
			fd.Close()
			wantErrno(t, c.name, err, syscall.EIO)
			if log := readLog(m2.log); !strings.Contains(log, "key="+st.key(t, "f")+" ") || !strings.Contains(log, "corrupt") {
				t.Fatalf("%s: the log does not name the object:\n%s", c.name, log)
			}
			m2.unmount()
		}
	})
}

func splice(obj []byte, at int, block []byte) []byte {
	out := bytes.Clone(obj)
	copy(out[at:], block)
	return out
}

func cat(a, b []byte) []byte { return append(bytes.Clone(a), b...) }

// TestRewriteOverTamperedBlock: a write to one block re-encrypts the others;
// one that was tampered with makes fsync and close fail with EIO, the store
// keeps the tampered object (nothing uploaded), and the mount keeps working.
func TestRewriteOverTamperedBlock(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		writeFile(t, m.path("f"), strings.Repeat("x", 4*bs))
		st.corrupt(t, "f", sealedAt(1)+cipher.NonceSize+7) // behind the mount's back; remount forgets the cache
		tampered := st.raw(t, "f")
		m = m.remount()
		f, err := os.OpenFile(m.path("f"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteAt([]byte("y"), 3*bs+1); err != nil {
			t.Fatal(err)
		}
		wantErrno(t, "fsync over a tampered untouched block", f.Sync(), syscall.EIO)
		wantErrno(t, "close over a tampered untouched block", f.Close(), syscall.EIO)
		if !bytes.Equal(st.raw(t, "f"), tampered) {
			t.Fatal("the failed rewrite replaced the stored object")
		}
		if log := readLog(m.log); !strings.Contains(log, "key="+st.key(t, "f")+" ") || !strings.Contains(log, "block=1") {
			t.Fatalf("the log does not name the object and block:\n%s", log)
		}
		writeFile(t, m.path("other"), "still works")
		wantContent(t, m.path("other"), "still works")
	})
}

// TestVaultV1Fixture mounts a vault written by s3cryptfs before per-version
// keys (object header version 1, tests/testdata/vault-v1, made with the
// binary of commit b42c91f) and reads every file as written; a file changed
// now is stored as version 2 beside unchanged version-1 files, and both
// read back after a remount.
func TestVaultV1Fixture(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/vault-v1")); err != nil {
		t.Fatal(err)
	}
	st := &store{kind: "local", spec: dir, dir: dir}
	const pass = "fixture passphrase v1"
	m, r := st.tryMount(t, "--passphrase-file", passFile(t, pass))
	if r.code != 0 {
		t.Fatalf("mount of the version-1 vault: exit %d: %s\n%s", r.code, r.stderr, readLog(m.log))
	}
	want := map[string]string{
		"big.bin":            "e870fec3223bac8f6147b08b31e6e6e4bb9abd783820bcd212b7737af6a02174",
		"two-blocks.bin":     "7032a46aecacb66e28a8c454b6f5890495f9093dd355de31b86486593c7033b8",
		"hello.txt":          "853ff93762a06ddbf722c4ebe9ddd66d8f63ddaea97f521c3ecc20da7c976020",
		"dir/sub/nested.txt": "414f8e9fd34ff68f66cbdab5ec63a5e738aa107f3454fa7edb51f49528abf9c6",
		"empty":              "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	}
	check := func(m *mount) {
		t.Helper()
		for name, sum := range want {
			b, err := os.ReadFile(m.path(name))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if h := sha256.Sum256(b); hex.EncodeToString(h[:]) != sum {
				t.Fatalf("%s: content differs from what version 1 stored", name)
			}
		}
		if target, err := os.Readlink(m.path("link")); err != nil || target != "hello.txt" {
			t.Fatalf("symlink: %q %v", target, err)
		}
		fi, err := os.Stat(m.path("big.bin"))
		if err != nil || fi.ModTime().Unix() != 1735787045 || fi.Mode().Perm() != 0o644 {
			t.Fatalf("big.bin attributes: %v %v", fi, err)
		}
		if fi, err := os.Stat(m.path("hello.txt")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("hello.txt mode: %v %v", fi, err)
		}
	}
	check(m)
	if v := st.raw(t, "two-blocks.bin")[4]; v != 1 {
		t.Fatalf("fixture object has header version %d, want 1", v)
	}
	// A change makes a version-2 object; the others stay version 1.
	pwrite(t, m.path("two-blocks.bin"), []byte("new"), 70000, 0)
	b, err := os.ReadFile(m.path("two-blocks.bin"))
	if err != nil {
		t.Fatal(err)
	}
	m = m.remount("--passphrase-file", passFile(t, pass))
	want["two-blocks.bin"] = hexSum(b)
	check(m)
	if v := st.raw(t, "two-blocks.bin")[4]; v != 2 {
		t.Fatalf("rewritten object has header version %d, want 2", v)
	}
	if v := st.raw(t, "big.bin")[4]; v != 1 {
		t.Fatalf("untouched object has header version %d, want 1", v)
	}
	if _, err := os.Stat(filepath.Join(dir, "two-blocks.bin.obj")); err != nil {
		t.Fatal(err)
	}
}

func hexSum(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
