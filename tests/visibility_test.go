package tests

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestTwoMounts: what another client of the same store sees, and when
// (docs/SEMANTICS.md "What other clients see"): a file written in one mount
// appears in the other once closed, within the attribute TTL; a rewrite is
// read fresh at the next open (no stale page cache); unlink and rename show
// up too.
func TestTwoMounts(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		a := st.mount(t)
		b := st.mount(t)
		const ttl = 300 * time.Millisecond // > the tests' --attr-timeout of 200ms

		f, err := os.Create(a.path("f"))
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("version one")
		time.Sleep(ttl)
		if _, err := os.Stat(b.path("f")); err == nil {
			t.Fatal("a file not yet closed is visible to another mount")
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		wantContent(t, b.path("f"), "version one") // negative lookups are not cached

		writeFile(t, a.path("f"), "version two, longer")
		time.Sleep(ttl)
		wantContent(t, b.path("f"), "version two, longer")

		if err := os.Rename(a.path("f"), a.path("g")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl)
		_, err = os.Stat(b.path("f"))
		wantErrno(t, "stat renamed-away name", err, syscall.ENOENT)
		wantContent(t, b.path("g"), "version two, longer")
		if got := names(t, b.dir); got != "g" {
			t.Fatalf("listing in the other mount: %q", got)
		}

		if err := os.Remove(a.path("g")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl)
		_, err = os.Stat(b.path("g"))
		wantErrno(t, "stat deleted file", err, syscall.ENOENT)

		// A file kept open in one mount while the other replaces it: reads
		// of data not yet cached fail with EIO instead of mixing versions.
		big := bytes.Repeat([]byte("old version "), 4<<20) // 48 MiB
		if err := os.WriteFile(a.path("big"), big, 0o644); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl)
		rb, err := os.Open(b.path("big"))
		if err != nil {
			t.Fatal(err)
		}
		defer rb.Close()
		buf := make([]byte, 4096)
		if _, err := rb.ReadAt(buf, 0); err != nil || !bytes.HasPrefix(buf, []byte("old version")) {
			t.Fatalf("first read: %v", err)
		}
		if err := os.WriteFile(a.path("big"), bytes.ToUpper(big), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err = rb.ReadAt(buf, 40<<20)
		switch {
		case errors.Is(err, syscall.EIO):
		case err == nil && bytes.Contains(buf, []byte("OLD VERSION")):
			t.Fatal("a descriptor opened on the old version read the new one (mixed versions)")
		default:
			t.Fatalf("read after the object was replaced: %v, want EIO", err)
		}
		rb.Close()
		wantContent(t, b.path("big"), string(bytes.ToUpper(big))) // a new open sees the new version

		// Last writer wins: both mounts write the same file; the content is
		// one whole version, the one closed last.
		wa, err := os.Create(a.path("h"))
		if err != nil {
			t.Fatal(err)
		}
		wb, err := os.Create(b.path("h"))
		if err != nil {
			t.Fatal(err)
		}
		wa.WriteString("from A")
		wb.WriteString("from B, closed last")
		if err := wa.Close(); err != nil {
			t.Fatal(err)
		}
		if err := wb.Close(); err != nil {
			t.Fatal(err)
		}
		time.Sleep(ttl)
		wantContent(t, a.path("h"), "from B, closed last")
	})
}

// TestExclusiveCreateBetweenMounts: O_EXCL holds between two mounts of one
// vault. B creates "lock" with O_EXCL (nothing is stored until its close);
// A then creates and stores the same name; B's close fails with EEXIST and
// stores nothing: both mounts read A's content. Symlinks are exclusive the
// same way.
func TestExclusiveCreateBetweenMounts(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		a := st.mount(t)
		b := st.mount(t)
		const ttl = 300 * time.Millisecond
		f, err := os.OpenFile(b.path("lock"), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.WriteString("B holds it"); err != nil {
			t.Fatal(err)
		}
		writeFile(t, a.path("lock"), "A holds it")
		wantErrno(t, "close of the losing O_EXCL create", f.Close(), syscall.EEXIST)
		time.Sleep(ttl)
		wantContent(t, a.path("lock"), "A holds it")
		wantContent(t, b.path("lock"), "A holds it")
		if !strings.Contains(readLog(b.log), "another writer stored this name first") {
			t.Errorf("B's log does not say why its create failed:\n%s", readLog(b.log))
		}
		// Without O_EXCL the last writer wins, as documented.
		f, err = os.OpenFile(b.path("plain"), os.O_CREATE|os.O_WRONLY, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteString("B wins")
		writeFile(t, a.path("plain"), "A first")
		if err := f.Close(); err != nil {
			t.Fatalf("close without O_EXCL: %v", err)
		}
		time.Sleep(ttl)
		wantContent(t, a.path("plain"), "B wins")
	})
}
