package vaultread

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/internal/vault"
)

func put(t testing.TB, st backend.Store, keys *cipher.Keys, key string, plain []byte, meta map[string]string) {
	t.Helper()
	var buf bytes.Buffer
	w, err := cipher.NewWriter(&buf, keys)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plain)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Put(context.Background(), key, bytes.NewReader(buf.Bytes()), int64(buf.Len()), meta); err != nil {
		t.Fatal(err)
	}
}

func readAll(t testing.TB, st backend.Store, keys *cipher.Keys, key string) []byte {
	t.Helper()
	ctx := context.Background()
	info, err := st.Stat(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	r, size, err := Open(ctx, st, keys, info)
	if err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	var out bytes.Buffer
	if err := Copy(ctx, &out, r, size, ChunkSize(keys), 3); err != nil {
		t.Fatalf("%s: %v", key, err)
	}
	return out.Bytes()
}

func headerID(t *testing.T, st backend.Store, key string) cipher.KeyID {
	t.Helper()
	rc, err := st.Get(context.Background(), key, 0, cipher.HeaderSize, backend.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	h := make([]byte, cipher.HeaderSize)
	if _, err := rc.Read(h); err != nil {
		t.Fatal(err)
	}
	id, _ := cipher.HeaderKeyID(h)
	return id
}

// sealMeta seals plain as a mount seals extended attributes into metadata.
func sealMeta(t *testing.T, keys *cipher.Keys, plain string) string {
	t.Helper()
	var buf bytes.Buffer
	w, err := cipher.NewWriter(&buf, keys)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(plain))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return base64.RawStdEncoding.EncodeToString(buf.Bytes())
}

// openMeta opens a sealed metadata value; it fails the test unless it is
// sealed under want.
func openMeta(t *testing.T, keys *cipher.Keys, v string, want cipher.KeyID) string {
	t.Helper()
	b, err := base64.RawStdEncoding.DecodeString(v)
	if err != nil {
		t.Fatal(err)
	}
	if id, _ := cipher.HeaderKeyID(b); id != want {
		t.Fatalf("metadata sealed under %s, want %s", id, want)
	}
	r, err := cipher.NewReader(bytes.NewReader(b), int64(len(b)), keys)
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, r.Size())
	if n, err := r.ReadAt(plain, 0); n != len(plain) {
		t.Fatal(err)
	}
	return string(plain)
}

// TestRewriteAfterRotate: after a rotation, Rewrite puts every object
// under the new key with the same plaintext and metadata, extended
// attributes sealed in the metadata (of files, directory markers, and a
// file whose content is already current) resealed under the new key;
// leaves what it must not touch (plaintext, an empty object that is no
// special file) and says so; takes a file changed since the listing as it
// is now; a second pass finds nothing to do, and once the old key is
// dropped every object still verifies and every attribute opens.
func TestRewriteAfterRotate(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	pass := cipher.Passphrase([]byte("pw"))
	cipher.AllowWeakKDFForTests(t)
	v, _, err := vault.Init(ctx, st, vault.InitOptions{Secret: pass, KDF: cipher.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	old := v.Keys()
	bs := old.Layout().BlockSize
	rnd := rand.New(rand.NewPCG(1, 2))
	files := map[string][]byte{"a": nil, "d/b": make([]byte, 5*bs+3), "d/c": make([]byte, 40*bs), "e": []byte("x")}
	for _, b := range files {
		for i := range b {
			b[i] = byte(rnd.Uint32())
		}
	}
	meta := map[string]string{"mode": "640", "mtime": "12345"}
	for k, b := range files {
		put(t, st, old, k, b, meta)
	}
	xattrs := map[string]string{"d/b": "file attrs", "d/": "dir attrs", "g": "attrs of a file written after the rotation"}
	put(t, st, old, "d/b", files["d/b"], map[string]string{"mode": "640", "mtime": "12345", metaXattr: sealMeta(t, old, xattrs["d/b"])})
	st.Put(ctx, "d/", bytes.NewReader(nil), 0, map[string]string{"mode": "750", metaXattr: sealMeta(t, old, xattrs["d/"])})
	st.Put(ctx, "d/fifo", bytes.NewReader(nil), 0, map[string]string{"mode": "600", "type": "fifo"})
	st.Put(ctx, "empty", bytes.NewReader(nil), 0, nil)
	st.Put(ctx, "plain", bytes.NewReader([]byte("not encrypted")), 13, nil)
	oldID := old.CurrentKeyID()
	newID, err := v.Rotate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keys := v.Keys()
	// g: content under the new key, attributes still under the old one (a
	// mount that copied them along when it rewrote the file).
	put(t, st, keys, "g", []byte("gee"), map[string]string{"mode": "600", metaXattr: sealMeta(t, old, xattrs["g"])})
	files["g"] = []byte("gee")

	rw := &Rewriter{Store: st, Keys: keys, Parallel: 2}
	objs, err := rw.Objects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// "e" changes after the listing (a mount writing under the new key):
	// its newer content must survive, and it needs no rewrite.
	put(t, st, keys, "e", []byte("newer"), meta)
	files["e"] = []byte("newer")

	rep, err := rw.Rewrite(ctx, objs)
	if err != nil {
		t.Fatal(err)
	}
	probs := map[string]string{}
	for _, p := range rep.Problems {
		probs[p.Key] = p.Kind
	}
	// Rewritten: a, d/b, d/c, d/ (attributes only), g (attributes); current: e, d/fifo.
	if rep.Rewritten != 5 || rep.Current != 2 || probs["plain"] != ProblemNotEncrypted || probs["empty"] != ProblemNotEncrypted || len(probs) != 2 {
		t.Fatalf("rewrite: %+v", rep)
	}
	for k, b := range files {
		if id := headerID(t, st, k); id != newID {
			t.Errorf("%s: key %s after rewrite, want %s", k, id, newID)
		}
		if got := readAll(t, st, keys, k); !bytes.Equal(got, b) {
			t.Errorf("%s: content changed by the rewrite", k)
		}
		info, _ := st.Stat(ctx, k)
		if k != "g" && (info.Metadata["mode"] != "640" || info.Metadata["mtime"] != "12345") {
			t.Errorf("%s: metadata %v after rewrite", k, info.Metadata)
		}
	}

	objs, _ = rw.Objects(ctx)
	rep, err = rw.Rewrite(ctx, objs)
	if err != nil || rep.Rewritten != 0 || rep.Current != 7 {
		t.Errorf("second pass: %+v, %v", rep, err)
	}
	if err := v.DropKey(ctx, oldID); err != nil {
		t.Fatal(err)
	}
	ver := &Verifier{Store: st, Keys: v.Keys()}
	objs, _ = ver.Objects(ctx, "")
	vr, err := ver.Verify(ctx, objs)
	if err != nil {
		t.Fatal(err)
	}
	if len(vr.Problems) != 2 || vr.Problems[0].Key != "empty" || vr.Problems[1].Key != "plain" {
		t.Errorf("verify after dropping the old key: %+v", vr.Problems)
	}
	for k, want := range xattrs {
		info, err := st.Stat(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if got := openMeta(t, v.Keys(), info.Metadata[metaXattr], newID); got != want {
			t.Errorf("%s: extended attributes %q after the rewrite, want %q", k, got, want)
		}
		if info.Metadata["mode"] == "" {
			t.Errorf("%s: metadata %v after the rewrite", k, info.Metadata)
		}
	}
}

// racingStore writes key's newer version after the rewrite has read the
// old one and before its upload lands: a mount's write landing between the rewrite's read and
// its conditional put.
type racingStore struct {
	backend.Store
	key  string
	race func()
}

func (r *racingStore) PutWith(ctx context.Context, key string, rd io.Reader, size int64, opts backend.PutOptions) (backend.ObjectInfo, error) {
	if key != r.key || r.race == nil {
		return r.Store.PutWith(ctx, key, rd, size, opts)
	}
	// The whole upload is read first (test objects are small), so that
	// every read of the old version is done when the race happens: only
	// the put's own condition can then keep the newer version.
	b, err := io.ReadAll(rd)
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	r.race()
	r.race = nil
	return r.Store.PutWith(ctx, key, bytes.NewReader(b), size, opts)
}

// TestRewriteRace: a file replaced between the rewrite's read and its
// upload keeps the newer version (the upload is conditional on the ETag
// read), and is reported as changed.
func TestRewriteRace(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	cipher.AllowWeakKDFForTests(t)
	v, _, err := vault.Init(ctx, st, vault.InitOptions{Secret: cipher.Passphrase([]byte("pw")), KDF: cipher.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	put(t, st, v.Keys(), "a", []byte("old"), nil)
	put(t, st, v.Keys(), "b", []byte("bee"), nil)
	if _, err := v.Rotate(ctx); err != nil {
		t.Fatal(err)
	}
	keys := v.Keys()
	rs := &racingStore{Store: st, key: "a", race: func() { put(t, st, keys, "a", []byte("newer"), nil) }}
	objs, _ := (&Verifier{Store: st, Keys: keys}).Objects(ctx, "")
	rep, err := (&Rewriter{Store: rs, Keys: keys}).Rewrite(ctx, objs)
	if err != nil || rep.Rewritten != 1 || len(rep.Problems) != 1 || rep.Problems[0].Kind != ProblemChanged {
		t.Fatalf("rewrite with a racing write: %+v, %v", rep, err)
	}
	if got := readAll(t, st, keys, "a"); string(got) != "newer" {
		t.Errorf("a: %q, want the racing write's content", got)
	}
}

// TestVerifyChunks: with chunks of 2 blocks a 40-block object is read in
// 20 ranged GETs; a flipped byte in block 33 is found and named, and the
// byte count covers the whole object when all is well.
func TestVerifyChunks(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	cipher.AllowWeakKDFForTests(t)
	v, _, err := vault.Init(ctx, st, vault.InitOptions{Secret: cipher.Passphrase([]byte("pw")), KDF: cipher.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	keys := v.Keys()
	bs := keys.Layout().BlockSize
	put(t, st, keys, "f", make([]byte, 40*bs-7), nil)
	var counted atomic.Int64
	ver := &Verifier{Store: st, Keys: keys, ChunkBlocks: 2, Parallel: 3, Done: func(_ int, b int64) { counted.Add(b) }}
	objs, _ := ver.Objects(ctx, "")
	rep, err := ver.Verify(ctx, objs)
	if err != nil || len(rep.Problems) != 0 || counted.Load() != rep.Bytes {
		t.Fatalf("intact: %+v %v, %d bytes counted of %d", rep, err, counted.Load(), rep.Bytes)
	}
	info, _ := st.Stat(ctx, "f")
	rc, _ := st.Get(ctx, "f", 0, -1, backend.GetOptions{})
	b := make([]byte, info.Size)
	n, _ := rc.Read(b)
	for n < len(b) {
		m, err := rc.Read(b[n:])
		if err != nil {
			break
		}
		n += m
	}
	rc.Close()
	b[keys.Layout().BlockIndexToCipherOff(33)+40] ^= 1
	st.Put(ctx, "f", bytes.NewReader(b), int64(len(b)), nil)
	objs, _ = ver.Objects(ctx, "")
	rep, err = ver.Verify(ctx, objs)
	if err != nil || len(rep.Problems) != 1 || rep.Problems[0].Block == nil || *rep.Problems[0].Block != 33 {
		t.Fatalf("flipped byte in block 33: %+v %v", rep.Problems, err)
	}
	// cat and get stop at that block too (NewReader checked only the
	// header and the last block).
	info, _ = st.Stat(ctx, "f")
	r, size, err := Open(ctx, st, keys, info)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := Copy(ctx, &out, r, size, ChunkSize(keys), 4); !errors.Is(err, cipher.ErrCorrupt) || int64(out.Len()) > 33*int64(bs) {
		t.Errorf("Copy of a corrupt object: %v after %d bytes, want ErrCorrupt before block 33", err, out.Len())
	}
}

// TestVerifyChangedMeanwhile: objects a mount replaces or removes after
// the listing are no problem: the removed one is skipped, the replaced
// one verified as it is now; a replacement that is damaged is reported.
func TestVerifyChangedMeanwhile(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	cipher.AllowWeakKDFForTests(t)
	v, _, err := vault.Init(ctx, st, vault.InitOptions{Secret: cipher.Passphrase([]byte("pw")), KDF: cipher.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	keys := v.Keys()
	for _, k := range []string{"gone", "replaced", "damaged"} {
		put(t, st, keys, k, []byte("first "+k), nil)
	}
	ver := &Verifier{Store: st, Keys: keys}
	objs, _ := ver.Objects(ctx, "")
	st.Delete(ctx, "gone")
	put(t, st, keys, "replaced", []byte("second"), nil)
	st.Put(ctx, "damaged", bytes.NewReader([]byte("plain now")), 9, nil)
	rep, err := ver.Verify(ctx, objs)
	if err != nil || len(rep.Problems) != 1 || rep.Problems[0].Key != "damaged" || rep.Problems[0].Kind != ProblemNotEncrypted {
		t.Fatalf("verify with changes after the listing: %+v, %v", rep.Problems, err)
	}
}

// TestSpecialFiles: a FIFO node (a zero-length object whose metadata says
// fifo, as the POSIX work stores it) is not content: verify skips it, get
// makes a FIFO with its mode and mtime; an empty object without such
// metadata is reported as not encrypted.
func TestSpecialFiles(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	cipher.AllowWeakKDFForTests(t)
	v, _, err := vault.Init(ctx, st, vault.InitOptions{Secret: cipher.Passphrase([]byte("pw")), KDF: cipher.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	keys := v.Keys()
	st.Put(ctx, "d/pipe", bytes.NewReader(nil), 0, map[string]string{"type": "fifo", "mode": "620", "mtime": "1000000000000000000", "atime": "1100000000000000000"})
	st.Put(ctx, "d/empty", bytes.NewReader(nil), 0, nil)
	put(t, st, keys, "d/file", []byte("content"), map[string]string{"mode": "600"})
	ver := &Verifier{Store: st, Keys: keys}
	objs, _ := ver.Objects(ctx, "d")
	rep, err := ver.Verify(ctx, objs)
	if err != nil || len(rep.Problems) != 1 || rep.Problems[0].Key != "d/empty" || rep.Problems[0].Kind != ProblemNotEncrypted {
		t.Errorf("verify: %+v, %v", rep.Problems, err)
	}
	st.Delete(ctx, "d/empty")
	tr := &Tree{Store: st, Keys: keys}
	top, err := tr.Stat(ctx, "d")
	if err != nil {
		t.Fatal(err)
	}
	dest := filepath.Join(t.TempDir(), "d")
	if err := (&Getter{Tree: tr}).Get(ctx, top, dest); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(filepath.Join(dest, "pipe"))
	if err != nil || fi.Mode() != os.ModeNamedPipe|0o620 || fi.ModTime().UnixNano() != 1e18 {
		t.Fatalf("get of a FIFO: %v %v %v", fi.Mode(), fi.ModTime(), err)
	}
	if at := fi.Sys().(*syscall.Stat_t).Atim; at.Nano() != 11e17 {
		t.Errorf("get of a FIFO: atime %v, want the stored one", time.Unix(0, at.Nano()))
	}
	if b, err := os.ReadFile(filepath.Join(dest, "file")); string(b) != "content" {
		t.Errorf("get of a file: %q %v", b, err)
	}
}

// TestStream: cat's reader returns every byte of files of any size (empty,
// one byte, around a block, many blocks) from an encrypted and from a
// plaintext vault; a flipped byte in block 7 of 20 ends the stream with an
// error wrapping cipher.ErrCorrupt that names the object and block 7, after
// writing at most the blocks before it.
func TestStream(t *testing.T) {
	ctx := context.Background()
	st := mem.New()
	cipher.AllowWeakKDFForTests(t)
	v, _, err := vault.Init(ctx, st, vault.InitOptions{Secret: cipher.Passphrase([]byte("pw")), KDF: cipher.TestKDF})
	if err != nil {
		t.Fatal(err)
	}
	keys := v.Keys()
	bs := keys.Layout().BlockSize
	rnd := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{0, 1, bs - 1, bs, bs + 1, 5*bs + 3, 300 * bs} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rnd.Uint32())
		}
		for _, k := range []*cipher.Keys{keys, nil} {
			key := fmt.Sprintf("f%d-%v", n, k != nil)
			if k == nil {
				st.Put(ctx, key, bytes.NewReader(data), int64(n), nil)
			} else {
				put(t, st, k, key, data, nil)
			}
			info, _ := st.Stat(ctx, key)
			var out bytes.Buffer
			if err := Stream(ctx, &out, st, k, info, 1<<20); err != nil || !bytes.Equal(out.Bytes(), data) {
				t.Fatalf("%s: %d bytes of %d, %v", key, out.Len(), n, err)
			}
		}
	}

	data := make([]byte, 20*bs)
	put(t, st, keys, "bad", data, nil)
	rc, _ := st.Get(ctx, "bad", 0, -1, backend.GetOptions{})
	obj, _ := io.ReadAll(rc)
	rc.Close()
	obj[keys.Layout().BlockIndexToCipherOff(7)+100] ^= 1
	st.Put(ctx, "bad", bytes.NewReader(obj), int64(len(obj)), nil)
	info, _ := st.Stat(ctx, "bad")
	var out bytes.Buffer
	err = Stream(ctx, &out, st, keys, info, 0)
	if !errors.Is(err, cipher.ErrCorrupt) || !strings.Contains(err.Error(), `"bad" block 7`) {
		t.Fatalf("corrupt block 7: %v", err)
	}
	if out.Len() > 7*bs {
		t.Fatalf("corrupt block 7: %d bytes written, more than the %d before it", out.Len(), 7*bs)
	}
}
