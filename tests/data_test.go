package tests

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// fio runs fio with args, bounded in time, and fails the test with its
// output if it reports an error.
func fio(t *testing.T, args ...string) {
	t.Helper()
	if _, err := exec.LookPath("fio"); err != nil {
		t.Fatal("fio is not installed (apt-get install fio)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "fio", append([]string{"--verify_state_save=0"}, args...)...)
	cmd.Dir = t.TempDir() // fio drops state files in its working directory
	out, err := cmd.CombinedOutput()
	if err != nil || bytes.Contains(out, []byte("verify: bad")) || bytes.Contains(out, []byte("err=")) && !bytes.Contains(out, []byte("err= 0")) {
		t.Fatalf("fio %v: %v\n%s", args, err, out)
	}
}

// TestFioVerify: random writes of mixed sizes into a 64 MiB file, verified
// by fio in the same mount, then again after unmount and remount.
func TestFioVerify(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		job := []string{"--name=v", "--filename=" + m.path("fio.dat"), "--size=64m", "--rw=randwrite",
			"--bsrange=1k-256k", "--verify=crc32c", "--direct=0", "--ioengine=psync", "--randrepeat=1",
			"--verify_fatal=1"}
		fio(t, append(job, "--do_verify=1")...)
		m = m.remount()
		fio(t, append(job, "--verify_only=1")...)
		if fi, err := os.Stat(m.path("fio.dat")); err != nil || fi.Size() != 64<<20 {
			t.Fatalf("fio.dat after remount: %v %v", fi, err)
		}
	})
}

// gen is a deterministic byte stream (ChaCha8 from a fixed seed), so a
// large file can be checked without keeping a copy.
func gen(seed uint64) io.Reader {
	var s [32]byte
	s[0] = byte(seed)
	return mrand.NewChaCha8(s)
}

// TestLargeFile writes 1 GiB through the mount on MinIO (a streamed
// multipart upload), and reads it back after a remount with the same
// SHA-256.
func TestLargeFile(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	m := st.mount(t)
	const size = 1 << 30
	f, err := os.Create(m.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	start := time.Now()
	n, err := io.CopyBuffer(io.MultiWriter(f, h), io.LimitReader(gen(1), size), make([]byte, 1<<20))
	if err != nil || n != size {
		t.Fatalf("write: %d bytes, %v", n, err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close (upload): %v", err)
	}
	wrote := time.Since(start)
	want := h.Sum(nil)
	m = m.remount()
	start = time.Now()
	r, err := os.Open(m.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	h.Reset()
	if n, err := io.CopyBuffer(h, r, make([]byte, 1<<20)); err != nil || n != size {
		t.Fatalf("read back: %d bytes, %v", n, err)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		t.Fatal("1 GiB file read back with a different SHA-256")
	}
	t.Logf("1 GiB: write+close %v (%.0f MiB/s), read after remount %v (%.0f MiB/s)",
		wrote, 1024/wrote.Seconds(), time.Since(start), 1024/time.Since(start).Seconds())
}

// TestKernelReadahead: a mount by root raises the kernel's readahead for it
// to 1 MiB (the kernel's FUSE default is 128 KiB, which splits a sequential
// read into 128 KiB READs), a sequential read then leaves the log clean
// (go-fuse logged a failed splice for every 1 MiB READ until splicing was
// turned off), and the setting goes with the mount.
func TestKernelReadahead(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root can set a mount's readahead")
	}
	st := newStore(t, "local")
	st.init(t)
	m := st.mount(t)
	var sb unix.Stat_t
	if err := unix.Stat(m.dir, &sb); err != nil {
		t.Fatal(err)
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(sb.Dev), unix.Minor(sb.Dev))
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("the mount's backing device info: %v", err)
	}
	if got := strings.TrimSpace(string(b)); got != "1024" {
		t.Errorf("%s = %s, want 1024", path, got)
	}
	data := make([]byte, 8<<20)
	rand.Read(data)
	if err := os.WriteFile(m.path("seq"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	m = m.remount() // a cold page cache: the reads reach the mount
	if got, err := os.ReadFile(m.path("seq")); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read back: %v", err)
	}
	if l := readLog(m.log); strings.Contains(l, "splice") {
		t.Errorf("the log mentions splice after a sequential read:\n%s", l)
	}
	// The remount has a device number of its own: that is the one whose
	// backing device info must go with it (unless another mount, e.g. a
	// test of another package running meanwhile, took the number since).
	if err := unix.Stat(m.dir, &sb); err != nil {
		t.Fatal(err)
	}
	dev := fmt.Sprintf("%d:%d", unix.Major(sb.Dev), unix.Minor(sb.Dev))
	path = "/sys/class/bdi/" + dev + "/read_ahead_kb"
	m.unmount()
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) && !devMounted(dev) {
		t.Errorf("%s still there after unmount: %v", path, err)
	}
}

// TestCiphertextAtRest: what the store holds is ciphertext, and its size is
// the one docs/FORMAT.md gives (cipher.Layout).
func TestCiphertextAtRest(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		const bs = 16 << 10
		st.init(t, "--block-size", "16KiB")
		m := st.mount(t)
		marker := []byte("PLAINTEXT-MARKER-s3cryptfs-")
		layout := cipher.NewLayout(bs)
		for _, n := range []int{0, 1, bs - 1, bs, bs + 1, 200000} {
			name := fmt.Sprintf("f%d", n)
			data := bytes.Repeat(marker, n/len(marker)+1)[:n]
			writeFile(t, m.path(name), string(data))
			raw := st.raw(t, name)
			if n >= len(marker) && bytes.Contains(raw, marker) {
				t.Fatalf("%s: raw object contains the plaintext marker", name)
			}
			if want := layout.PlainSizeToCipherSize(int64(n)); int64(len(raw)) != want {
				t.Fatalf("%s: object is %d bytes, format says %d for %d plaintext bytes", name, len(raw), want, n)
			}
			wantContent(t, m.path(name), string(data))
		}
	})
}

// TestPersistence: content, sizes, modes, owners, mtimes, symlinks and
// empty directories survive unmount and remount.
func TestPersistence(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		mt := time.Date(2020, 1, 2, 3, 4, 5, 600700800, time.UTC)
		big := make([]byte, 333333)
		rand.Read(big)
		must := func(what string, err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		}
		must("mkdir", os.MkdirAll(m.path("a/b/empty"), 0o711))
		must("mkdir", os.Mkdir(m.path("emptytop"), 0o700))
		must("write", os.WriteFile(m.path("a/b/big"), big, 0o600))
		must("write", os.WriteFile(m.path("a/small"), []byte("small"), 0o644))
		must("write", os.WriteFile(m.path("zero"), nil, 0o644))
		// chown clears set-user-ID (POSIX), so chmod comes after it.
		must("chown", os.Chown(m.path("a/small"), 4242, 2424))
		must("chmod", unix.Chmod(m.path("a/small"), 0o4751)) // os.Chmod drops 0o4000
		must("chtimes", os.Chtimes(m.path("a/small"), mt, mt))
		must("symlink", os.Symlink("../a/b/big", m.path("a/link")))
		must("lchown", os.Lchown(m.path("a/link"), 77, 88))
		m = m.remount()
		if got := names(t, m.dir); got != "a/ emptytop/ zero" {
			t.Fatalf("root: %q", got)
		}
		if got := names(t, m.path("a")); got != "b/ link@ small" {
			t.Fatalf("a: %q", got)
		}
		if got := names(t, m.path("a/b")); got != "big empty/" {
			t.Fatalf("a/b: %q", got)
		}
		got, err := os.ReadFile(m.path("a/b/big"))
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("big: %v", err)
		}
		wantContent(t, m.path("a/small"), "small")
		wantContent(t, m.path("zero"), "")
		var s unix.Stat_t
		must("stat", unix.Stat(m.path("a/small"), &s))
		if s.Mode&0o7777 != 0o4751 || s.Uid != 4242 || s.Gid != 2424 || s.Mtim.Nano() != mt.UnixNano() || s.Size != 5 {
			t.Fatalf("small: mode %o uid %d gid %d mtime %d size %d", s.Mode&0o7777, s.Uid, s.Gid, s.Mtim.Nano(), s.Size)
		}
		must("stat", unix.Stat(m.path("a/b/big"), &s))
		if s.Mode&0o777 != 0o600 || s.Size != int64(len(big)) {
			t.Fatalf("big: mode %o size %d", s.Mode&0o777, s.Size)
		}
		must("stat", unix.Stat(m.path("a/b/empty"), &s))
		if s.Mode&0o777 != 0o711 || s.Mode&unix.S_IFMT != unix.S_IFDIR {
			t.Fatalf("empty dir: mode %o", s.Mode)
		}
		must("lstat", unix.Lstat(m.path("a/link"), &s))
		if s.Mode&unix.S_IFMT != unix.S_IFLNK || s.Uid != 77 || s.Gid != 88 {
			t.Fatalf("link: mode %o uid %d gid %d", s.Mode, s.Uid, s.Gid)
		}
		if tgt, err := os.Readlink(m.path("a/link")); err != nil || tgt != "../a/b/big" {
			t.Fatalf("readlink: %q %v", tgt, err)
		}
		got, err = os.ReadFile(m.path("a/link"))
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("read through link: %v", err)
		}
	})
}

// TestWrongPassphrase: a wrong passphrase refuses the mount with a clear
// message and a non-zero exit, and nothing is mounted.
func TestWrongPassphrase(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m, r := st.tryMount(t, "--passphrase-file", passFile(t, "not the passphrase"))
		if r.code != 1 || !strings.Contains(r.stderr, "wrong passphrase or key file") {
			t.Fatalf("wrong passphrase: exit %d, stderr %q", r.code, r.stderr)
		}
		if isMounted(m.dir) {
			t.Fatal("mounted despite the wrong passphrase")
		}
		m, r = st.tryMount(t, "--client-encryption=false")
		if r.code != 1 || !strings.Contains(r.stderr, "encrypted vault") || isMounted(m.dir) {
			t.Fatalf("--client-encryption=false on a vault: exit %d, stderr %q", r.code, r.stderr)
		}
		// The passphrase may also come from the environment.
		m, r = st.tryMount(t)
		if r.code == 0 {
			t.Fatal("mount without any passphrase source succeeded")
		}
		args := append([]string{"mount", "--log-file", m.log}, st.args...)
		r = st.run(t, []string{"S3CRYPTFS_PASSPHRASE=" + passphrase}, append(args, st.spec, m.dir)...)
		if r.code != 0 || !isMounted(m.dir) {
			t.Fatalf("mount with S3CRYPTFS_PASSPHRASE: exit %d %s", r.code, r.stderr)
		}
	})
}

// TestNoVault: mounting a store without a vault config is refused (unless
// client-side encryption is off).
func TestNoVault(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		m, r := st.tryMount(t, "--passphrase-file", passFile(t, passphrase))
		if r.code != 1 || !strings.Contains(r.stderr, "s3cryptfs init") || isMounted(m.dir) {
			t.Fatalf("mount without vault: exit %d, stderr %q", r.code, r.stderr)
		}
	})
}

// TestCorruptObject: a flipped byte in an object gives EIO on read and a
// log line naming the object; other files still read.
func TestCorruptObject(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		data := bytes.Repeat([]byte("0123456789abcdef"), 20000)
		writeFile(t, m.path("victim.bin"), string(data))
		writeFile(t, m.path("bystander.bin"), "unharmed")
		m.unmount()
		st.corrupt(t, "victim.bin", cipher.HeaderSize+cipher.NonceSize+100) // inside block 0's ciphertext
		m, r := st.tryMountAt(t, m.dir, "--passphrase-file", passFile(t, passphrase))
		if r.code != 0 {
			t.Fatalf("remount: %s", r.stderr)
		}
		_, err := os.ReadFile(m.path("victim.bin"))
		wantErrno(t, "read corrupted object", err, syscall.EIO)
		wantContent(t, m.path("bystander.bin"), "unharmed")
		// A read of an untouched later block still works.
		f, err := os.Open(m.path("victim.bin"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		buf := make([]byte, 16)
		if _, err := f.ReadAt(buf, 200000); err != nil || string(buf) != "0123456789abcdef" {
			t.Fatalf("read of an intact block: %q %v", buf, err)
		}
		log := readLog(m.log)
		if !strings.Contains(log, "victim.bin") || !strings.Contains(strings.ToLower(log), "corrupt") {
			t.Fatalf("log does not name the corrupted object:\n%s", log)
		}
	})
}

// TestConcurrentClients: parallel writers on different files and a reader
// of a file during writes, through the real binary (run with -race: the
// detector sees this process; fs/ has the in-process equivalent).
func TestConcurrentClients(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		stable := make([]byte, 500000)
		rand.Read(stable)
		if err := os.WriteFile(m.path("stable"), stable, 0o644); err != nil {
			t.Fatal(err)
		}
		const writers = 6
		var wg sync.WaitGroup
		errc := make(chan error, writers+1)
		stop := make(chan struct{})
		for i := 0; i < writers; i++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				data := make([]byte, 2<<20+i*12345)
				io.ReadFull(gen(uint64(i+10)), data)
				p := m.path(fmt.Sprintf("w%d", i))
				f, err := os.Create(p)
				if err != nil {
					errc <- err
					return
				}
				for off := 0; off < len(data); off += 100000 {
					if _, err := f.Write(data[off:min(off+100000, len(data))]); err != nil {
						errc <- err
						return
					}
				}
				if err := f.Close(); err != nil {
					errc <- fmt.Errorf("close w%d: %w", i, err)
					return
				}
				got, err := os.ReadFile(p)
				if err != nil || !bytes.Equal(got, data) {
					errc <- fmt.Errorf("w%d read back: %v (len %d)", i, err, len(got))
				}
			}(i)
		}
		var rg sync.WaitGroup
		rg.Add(1)
		go func() {
			defer rg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := os.ReadFile(m.path("stable"))
				if err != nil || !bytes.Equal(got, stable) {
					errc <- fmt.Errorf("reader during writes: %v", err)
					return
				}
			}
		}()
		wg.Wait()
		close(stop)
		rg.Wait()
		close(errc)
		for err := range errc {
			t.Error(err)
		}
	})
}

// ssecHeaders returns the SSE-C request fields for key.
func ssecHeaders(key []byte) (alg, k, md *string) {
	sum := md5.Sum(key)
	return aws.String("AES256"), aws.String(base64.StdEncoding.EncodeToString(key)), aws.String(base64.StdEncoding.EncodeToString(sum[:]))
}

// TestServerSideEncryption: with --sse s3, kms and c the objects carry that
// encryption (HeadObject through the bare SDK) and read back after a
// remount; with --client-encryption=false and --sse kms another S3 client
// reads the plaintext.
func TestServerSideEncryption(t *testing.T) {
	keyFile := func(t *testing.T) (string, []byte) {
		k := make([]byte, 32)
		rand.Read(k)
		p := filepath.Join(t.TempDir(), "ssec.key")
		if err := os.WriteFile(p, k, 0o600); err != nil {
			t.Fatal(err)
		}
		return p, k
	}
	for _, mode := range []string{"s3", "kms", "c"} {
		t.Run(mode, func(t *testing.T) {
			st := newStore(t, "minio")
			opts := []string{"--sse", mode}
			var key []byte
			switch mode {
			case "kms":
				opts = append(opts, "--sse-kms-key-id", st.srv.KMSKeyID)
			case "c":
				var p string
				p, key = keyFile(t)
				opts = append(opts, "--sse-c-key-file", p)
			}
			st.args = append(st.args, opts...)
			st.init(t, "--plaintext-names") // the raw HEAD below names the object by its path
			m := st.mount(t)
			writeFile(t, m.path("f"), "server-side too")
			m.unmount()

			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			in := &s3.HeadObjectInput{Bucket: aws.String(st.bucket), Key: aws.String("f")}
			if key != nil {
				in.SSECustomerAlgorithm, in.SSECustomerKey, in.SSECustomerKeyMD5 = ssecHeaders(key)
			}
			head, err := st.srv.SDKClient(t).HeadObject(ctx, in)
			if err != nil {
				t.Fatalf("head: %v", err)
			}
			switch mode {
			case "s3":
				if head.ServerSideEncryption != types.ServerSideEncryptionAes256 {
					t.Fatalf("SSE = %q, want AES256", head.ServerSideEncryption)
				}
			case "kms":
				if head.ServerSideEncryption != types.ServerSideEncryptionAwsKms {
					t.Fatalf("SSE = %q, want aws:kms", head.ServerSideEncryption)
				}
			case "c":
				if aws.ToString(head.SSECustomerAlgorithm) != "AES256" {
					t.Fatalf("SSE-C algorithm = %q", aws.ToString(head.SSECustomerAlgorithm))
				}
				// Without the key, the object cannot even be read raw.
				_, err := st.srv.SDKClient(t).GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(st.bucket), Key: aws.String("f")})
				if err == nil {
					t.Fatal("SSE-C object readable without the key")
				}
			}
			m = st.mount(t)
			wantContent(t, m.path("f"), "server-side too")
		})
	}

	t.Run("kms without client encryption", func(t *testing.T) {
		st := newStore(t, "minio")
		st.args = append(st.args, "--sse", "kms", "--sse-kms-key-id", st.srv.KMSKeyID, "--client-encryption=false")
		m, r := st.tryMount(t)
		if r.code != 0 {
			t.Fatalf("mount: %d %s", r.code, r.stderr)
		}
		writeFile(t, m.path("plain.txt"), "readable by any S3 client")
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		c := st.srv.SDKClient(t)
		out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(st.bucket), Key: aws.String("plain.txt")})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(out.Body)
		out.Body.Close()
		if string(b) != "readable by any S3 client" || out.ServerSideEncryption != types.ServerSideEncryptionAwsKms {
			t.Fatalf("bare GET: %q, SSE %q", b, out.ServerSideEncryption)
		}
	})

	t.Run("SSE-C wrong key", func(t *testing.T) {
		st := newStore(t, "minio")
		p1, _ := keyFile(t)
		p2, _ := keyFile(t)
		base := append([]string{}, st.args...)
		st.args = append(base, "--sse", "c", "--sse-c-key-file", p1, "--client-encryption=false")
		m, r := st.tryMount(t)
		if r.code != 0 {
			t.Fatalf("mount: %d %s", r.code, r.stderr)
		}
		writeFile(t, m.path("secret"), "needs key one")
		m.unmount()
		st.args = append(base, "--sse", "c", "--sse-c-key-file", p2, "--client-encryption=false")
		m, r = st.tryMount(t)
		if r.code != 0 {
			t.Fatalf("mount: %d %s", r.code, r.stderr)
		}
		_, err := os.ReadFile(m.path("secret"))
		if !errors.Is(err, syscall.EACCES) && !errors.Is(err, syscall.EIO) {
			t.Fatalf("read with the wrong SSE-C key: %v, want EACCES or EIO", err)
		}
		if log := readLog(m.log); !strings.Contains(log, "secret") || !strings.Contains(log, "SSE-C") {
			t.Fatalf("log does not explain the failed read:\n%s", log)
		}

		// With client-side encryption on, the vault config itself is
		// unreadable with the wrong key: the mount is refused.
		st2 := newStore(t, "minio")
		base2 := append([]string{}, st2.args...)
		st2.args = append(base2, "--sse", "c", "--sse-c-key-file", p1)
		st2.init(t)
		st2.args = append(base2, "--sse", "c", "--sse-c-key-file", p2)
		m, r = st2.tryMount(t, "--passphrase-file", passFile(t, passphrase))
		if r.code != 1 || isMounted(m.dir) {
			t.Fatalf("vault mount with the wrong SSE-C key: exit %d %s", r.code, r.stderr)
		}
		t.Logf("wrong SSE-C key on a vault: %s", strings.TrimSpace(r.stderr))
	})
}

// TestMountErrors: each common mistake gives a non-zero exit, one line
// naming the cause and the fix (a usage error adds a pointer to --help),
// and no mount. fusermount3 missing and --allow-other without
// user_allow_other, which concern users other than root, are in
// TestNonRootMount.
func TestMountErrors(t *testing.T) {
	st := newStore(t, "minio")
	pf := passFile(t, passphrase)
	kf := filepath.Join(t.TempDir(), "ssec.key")
	if err := os.WriteFile(kf, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	kfOpen := filepath.Join(t.TempDir(), "ssec-open.key")
	if err := os.WriteFile(kfOpen, bytes.Repeat([]byte{7}, 32), 0o644); err != nil {
		t.Fatal(err)
	}
	shortKey := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(shortKey, bytes.Repeat([]byte{7}, 16), 0o600); err != nil {
		t.Fatal(err)
	}
	st.init(t)
	empty := newStore(t, "minio") // no vault in it
	missingMnt := func(t *testing.T) string { return filepath.Join(t.TempDir(), "no", "such", "dir") }
	nonEmptyMnt := func(t *testing.T) string {
		d := t.TempDir()
		writeFile(t, filepath.Join(d, "precious"), "x")
		return d
	}
	noCreds := []string{"AWS_ACCESS_KEY_ID=", "AWS_SECRET_ACCESS_KEY=", "AWS_EC2_METADATA_DISABLED=true",
		"AWS_SHARED_CREDENTIALS_FILE=/nonexistent", "AWS_CONFIG_FILE=/nonexistent"}
	// A mount namespace whose /dev is an empty tmpfs (but for a null
	// device file): a machine without /dev/fuse.
	noDevFuse := []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
		`mount -t tmpfs none /dev && : > /dev/null && exec "$0" "$@"`}
	cases := []struct {
		name   string
		spec   string
		env    []string
		args   []string
		mnt    func(t *testing.T) string // default: a new empty directory
		prefix []string                  // runs the binary under this command
		code   int
		msg    []string // all in the first line of stderr
	}{
		{"unknown bucket", "s3://no-such-bucket-s3cryptfs", nil, nil, nil, nil, 1, []string{"no-such-bucket-s3cryptfs", "does not exist", "check the bucket name"}},
		{"missing credentials", st.spec, noCreds, nil, nil, nil, 1, []string{"no usable AWS credentials", "AWS_ACCESS_KEY_ID"}},
		{"wrong endpoint", st.spec, nil, []string{"--endpoint", "https://no-such-host.invalid:9000"}, nil, nil, 1, []string{"cannot reach the S3 endpoint https://no-such-host.invalid:9000", "no such host", "check --endpoint"}},
		{"wrong region", st.spec, []string{"AWS_REGION=ap-south-2"}, nil, nil, nil, 1, []string{"not ap-south-2", "set the region to"}},
		{"no vault", empty.spec, nil, nil, nil, nil, 1, []string{"no vault config", "run `s3cryptfs init`"}},
		{"wrong passphrase", st.spec, nil, []string{"--passphrase-file", passFile(t, "wrong")}, nil, nil, 1, []string{"wrong passphrase or key file"}},
		{"mountpoint missing", st.spec, nil, nil, missingMnt, nil, 1, []string{"does not exist", "mkdir -p"}},
		{"mountpoint not empty", st.spec, nil, nil, nonEmptyMnt, nil, 1, []string{"is not empty", "--allow-non-empty"}},
		{"no /dev/fuse", st.spec, nil, nil, nil, noDevFuse, 1, []string{"/dev/fuse does not exist", "modprobe fuse"}},
		{"SSE-C key of 16 bytes", st.spec, nil, []string{"--sse", "c", "--sse-c-key-file", shortKey}, nil, nil, 1, []string{"32 raw bytes", "got 16 bytes"}},
		{"SSE-C over http", st.spec, nil, []string{"--endpoint", "http://127.0.0.1:9", "--allow-http", "--sse", "c", "--sse-c-key-file", kf}, nil, nil, 1, []string{"http"}},
		{"SSE-C key file readable by others", st.spec, nil, []string{"--sse", "c", "--sse-c-key-file", kfOpen}, nil, nil, 1, []string{"chmod 600"}},
		{"http without opt-in", st.spec, nil, []string{"--endpoint", "http://127.0.0.1:9"}, nil, nil, 1, []string{"--allow-http"}},
		{"invalid size", st.spec, nil, []string{"--cache-size", "lots"}, nil, nil, 2, []string{`invalid size "lots"`, "--cache-size"}},
		{"invalid size in -o", st.spec, nil, []string{"-o", "max_dirty=12XB"}, nil, nil, 2, []string{"-o max_dirty=12XB", "invalid size"}},
		{"invalid duration", st.spec, nil, []string{"--attr-timeout", "5"}, nil, nil, 2, []string{"--attr-timeout", `duration like "30s"`}},
		{"bad sse value", st.spec, nil, []string{"--sse", "rot13"}, nil, nil, 2, []string{"--sse must be none, s3, kms or c"}},
		{"unknown option", st.spec, nil, []string{"--no-such-option"}, nil, nil, 2, []string{"no-such-option"}},
		{"unknown -o option", st.spec, nil, []string{"-o", "no_such_option"}, nil, nil, 2, []string{"unknown mount option", "no_such_option"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mnt := t.TempDir()
			if c.mnt != nil {
				mnt = c.mnt(t)
			}
			args := append([]string{"mount", "--passphrase-file", pf, "--log-file", filepath.Join(t.TempDir(), "log")}, st.args...)
			args = append(append(args, c.args...), c.spec, mnt)
			start := time.Now()
			var r result
			if c.prefix != nil {
				r = runCmd(t, append(append(os.Environ(), st.env...), c.env...), c.prefix[0], append(append(c.prefix[1:], binary), args...)...)
			} else {
				r = st.run(t, c.env, args...)
			}
			t.Cleanup(func() {
				if isMounted(mnt) {
					syscall.Unmount(mnt, unix.MNT_DETACH)
				}
			})
			first, rest, _ := strings.Cut(strings.TrimSpace(r.stderr), "\n")
			if r.code != c.code {
				t.Fatalf("exit %d, want %d; stderr %q", r.code, c.code, r.stderr)
			}
			for _, m := range c.msg {
				if !strings.Contains(first, m) {
					t.Errorf("first line %q does not say %q", first, m)
				}
			}
			if c.code == 1 && rest != "" || c.code == 2 && !strings.HasPrefix(rest, "(see s3cryptfs mount --help)") {
				t.Errorf("more than the one line: %q", r.stderr)
			}
			if isMounted(mnt) {
				t.Fatal("something was mounted")
			}
			t.Logf("%v: %s", time.Since(start).Round(time.Millisecond), first)
		})
	}

	// A mount whose process was killed leaves a dead mountpoint: mount
	// says so and how to clear it; after that, the mount works.
	dead := st.mount(t)
	writeFile(t, dead.path("f"), "survives")
	if err := syscall.Kill(daemonPID(t, dead.dir), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		if _, err := os.Stat(dead.dir); errors.Is(err, syscall.ENOTCONN) {
			break
		} else if i == 100 {
			t.Fatalf("killed mount's stat: %v, want ENOTCONN", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	args := append([]string{"mount", "--passphrase-file", pf, "--log-file", dead.log}, st.args...)
	r := st.run(t, nil, append(args, st.spec, dead.dir)...)
	if lazy := "s3cryptfs unmount --lazy " + dead.dir; r.code != 1 || !strings.Contains(r.stderr, lazy) {
		t.Fatalf("mount over a dead mount: exit %d %q; want exit 1 saying %s", r.code, r.stderr, lazy)
	}
	if r := st.run(t, nil, "unmount", "--lazy", dead.dir); r.code != 0 || isMounted(dead.dir) {
		t.Fatalf("unmount --lazy of the dead mount: exit %d %s", r.code, r.stderr)
	}
	if r := st.run(t, nil, append(args, st.spec, dead.dir)...); r.code != 0 {
		t.Fatalf("mount after clearing the dead mount: exit %d %s", r.code, r.stderr)
	}
	wantContent(t, dead.path("f"), "survives")
	dead.unmount()

	// A second mount on a mountpoint in use is refused.
	m := st.mount(t)
	args = append([]string{"mount", "--passphrase-file", pf}, st.args...)
	if r := st.run(t, nil, append(args, st.spec, m.dir)...); r.code != 1 || !strings.Contains(r.stderr, "already a mountpoint") || !strings.Contains(r.stderr, "unmount it first") {
		t.Fatalf("mount over a mount: exit %d, %q", r.code, r.stderr)
	}
	writeFile(t, m.path("still"), "works")
	m.unmount()
	if r := st.run(t, nil, "unmount", m.dir); r.code != 1 || !strings.Contains(r.stderr, "not mounted") {
		t.Fatalf("unmount of a non-mountpoint: exit %d, %q", r.code, r.stderr)
	}

	r = st.run(t, nil, "mount", st.spec)
	if r.code != 2 {
		t.Fatalf("mount with one operand: exit %d, want 2", r.code)
	}
	r = st.run(t, nil, "version")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "s3cryptfs ") {
		t.Fatalf("version: %d %q", r.code, r.stdout)
	}
}

// devMounted reports whether a mount with device number dev ("major:minor")
// is listed in /proc/self/mountinfo.
func devMounted(dev string) bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == dev {
			return true
		}
	}
	return false
}
