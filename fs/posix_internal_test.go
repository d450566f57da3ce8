package fs

import (
	"bytes"
	"errors"
	"maps"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs/content"
)

func TestInoRange(t *testing.T) {
	for i := 0; i < 1000; i++ {
		for _, v := range []uint64{newIno(), keyIno(strconv.Itoa(i)), clampIno(uint64(i)), clampIno(^uint64(i))} {
			if v < 2 || v >= 1<<63 {
				t.Fatalf("inode number %d out of [2, 2^63)", v)
			}
		}
	}
	if keyIno("a/b") == keyIno("a/b/") {
		t.Fatal("a file and a directory of the same name share a key-hash number")
	}
	for _, bad := range []string{"", "0", "1", "x", "-5", "9223372036854775808", "18446744073709551615"} {
		if got := storedIno(bad, "k"); got != keyIno("k") {
			t.Fatalf("stored %q: %d, want the key hash", bad, got)
		}
	}
	if got := storedIno("9223372036854775807", "k"); got != 1<<63-1 {
		t.Fatalf("largest valid stored number: %d", got)
	}
}

func TestInoTableCollision(t *testing.T) {
	var tab inoTable
	const x = 123456789
	if got := tab.claim(x, "a"); got != x {
		t.Fatalf("free number: %d", got)
	}
	if got := tab.claim(x, "a"); got != x {
		t.Fatalf("same object again: %d", got)
	}
	y := tab.claim(x, "b")
	if y == x || y < 2 || y >= 1<<63 {
		t.Fatalf("second claimant of %d got %d", x, y)
	}
	var tab2 inoTable
	tab2.claim(x, "a")
	if again := tab2.claim(x, "b"); again != y {
		t.Fatalf("replacement not deterministic: %d then %d", y, again)
	}
	// A third claimant of x skips y too.
	tab.claim(y, "b")
	if z := tab.claim(x, "c"); z == x || z == y {
		t.Fatalf("third claimant got a taken number %d", z)
	}
}

func testFS(t *testing.T, encrypt bool) *FS {
	t.Helper()
	cipher.AllowWeakKDFForTests(t)
	var keys *cipher.Keys
	if encrypt {
		var err error
		if _, keys, err = cipher.NewConfig([]byte("p"), cipher.ConfigOptions{BlockSize: 4096, KDF: cipher.TestKDF}); err != nil {
			t.Fatal(err)
		}
	}
	bc, err := cache.New(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	st := mem.New()
	eng, err := content.New(content.Options{Store: st, Keys: keys, Cache: bc})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { eng.Close(); bc.Close() })
	_, f, err := NewRoot(Options{Store: st, Engine: eng, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestXattrSeal(t *testing.T) {
	for _, encrypt := range []bool{true, false} {
		f := testFS(t, encrypt)
		x := xattrSet{"user.a": []byte("secret value"), "user.empty": {}, "user.bin": {0, 0xff}}
		s, err := f.sealXattrs(42, x)
		if err != nil {
			t.Fatal(err)
		}
		if encrypt && bytes.Contains([]byte(s), []byte("secret")) {
			t.Fatal("sealed value shows the plaintext")
		}
		got, err := f.openXattrs(attr{ino: 42, xattr: s})
		if err != nil || len(got) != 3 || string(got["user.a"]) != "secret value" || len(got["user.empty"]) != 0 || !bytes.Equal(got["user.bin"], []byte{0, 0xff}) {
			t.Fatalf("round trip: %q %v", got, err)
		}
		// Moved onto another object: refused.
		if _, err := f.openXattrs(attr{ino: 43, xattr: s}); !errors.Is(err, cipher.ErrCorrupt) {
			t.Fatalf("set of another inode: %v", err)
		}
		if encrypt {
			b := []byte(s)
			b[len(b)/2] ^= 1
			if b[len(b)/2] == '+' || b[len(b)/2] == '/' {
				b[len(b)/2] = 'A'
			}
			if _, err := f.openXattrs(attr{ino: 42, xattr: string(b)}); err == nil {
				t.Fatal("tampered set accepted")
			}
		}
		if s, _ := f.sealXattrs(42, nil); s != "" {
			t.Fatalf("empty set stored as %q", s)
		}
	}
}

func TestDecodeXattrsTruncated(t *testing.T) {
	b := encodeXattrs(7, xattrSet{"user.name": bytes.Repeat([]byte("v"), 300)})
	for i := 0; i < len(b); i++ {
		if _, _, err := decodeXattrs(b[:i]); err == nil && i < len(b) {
			// Only a cut exactly between entries may decode, and there is
			// one entry: nothing shorter is valid beyond the header.
			if i != 9 {
				t.Fatalf("truncated to %d bytes decoded", i)
			}
		}
	}
}

// TestIndexEntryRoundTrip: an index entry yields exactly the metadata a
// HEAD gives, for every kind and the optional values.
func TestIndexEntryRoundTrip(t *testing.T) {
	base := map[string]string{metaMode: "640", metaUID: "1", metaGID: "2", metaMtime: "3"}
	for _, extra := range []map[string]string{
		{},
		{metaType: typeSymlink, metaIno: "99"},
		{metaType: typeFifo, metaIno: "1234", metaAtime: "55"},
		{metaType: typeSocket},
		{metaType: typeChar, metaDev: "34823", metaIno: "9223372036854775807"},
		{metaType: typeBlock, metaDev: "0"},
		{metaXattr: "c2VhbGVk", metaAtime: "-5"},
	} {
		meta := maps.Clone(base)
		maps.Copy(meta, extra)
		e, ok := entryFromStored(backend.ObjectInfo{ETag: "e", Size: 1}, meta, timeZero)
		if !ok {
			t.Fatalf("%v not indexed", meta)
		}
		if got := e.meta(); !maps.Equal(got, meta) {
			t.Fatalf("index entry gives %v, the object has %v", got, meta)
		}
	}
	for _, bad := range []map[string]string{{metaIno: "1"}, {metaIno: "x"}, {metaDev: "x", metaType: typeChar}, {metaType: "door"}, {metaAtime: "y"}} {
		meta := maps.Clone(base)
		maps.Copy(meta, bad)
		if _, ok := entryFromStored(backend.ObjectInfo{ETag: "e", Size: 1}, meta, timeZero); ok {
			t.Fatalf("%v indexed: a HEAD would read it differently", bad)
		}
	}
}

// TestInoTableConcurrent runs claims and forgets together for the race
// detector.
func TestInoTableConcurrent(t *testing.T) {
	var tab inoTable
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 500; i++ {
				n := tab.claim(uint64(i%17+2), strconv.Itoa(g))
				tab.forget(n, nil)
			}
		}(g)
	}
	wg.Wait()
}

var timeZero time.Time
