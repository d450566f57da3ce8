package names

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func testLayout(t testing.TB) *Layout {
	l, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// listedSeg is the key segment a listing of d shows for e.
func listedSeg(d Dir, e Entry) string { return strings.TrimPrefix(e.Key, d.Prefix) }

func TestRoundTrip(t *testing.T) {
	l := testLayout(t)
	root := l.Root()
	sub, meta, err := l.NewDir(root, "sub")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"a", "A", "2026-tax-return.pdf", "ünïcødé ✓", "with space", strings.Repeat("x", 255),
		strings.Repeat("é", 127), "AAAAAAAAAAAAAAAAAAAAAAAAAAAAA", ".s3cryptfs.conf", "d"} {
		for _, d := range []Dir{root, sub} {
			e, err := l.Entry(d, name)
			if err != nil {
				t.Fatal(err)
			}
			seg := listedSeg(d, e)
			if strings.Contains(seg, "/") || len(seg) > MaxSegment || !strings.HasPrefix(e.Key, DirRoot) {
				t.Fatalf("%q: key %q", name, e.Key)
			}
			if strings.Contains(e.Key, name) && len(name) > 1 {
				t.Fatalf("%q: the key %q shows the name", name, e.Key)
			}
			if IsLong(seg) != (e.Long != "") {
				t.Fatalf("%q: long %q for segment %q", name, e.Long, seg)
			}
			got, err := l.Name(d, seg, e.Long)
			if err != nil || got != name {
				t.Fatalf("%q: Name = %q, %v", name, got, err)
			}
			if e.Long != "" {
				if _, err := l.Name(d, seg, ""); !errors.Is(err, ErrNeedMeta) {
					t.Fatalf("long name without metadata: %v", err)
				}
				if _, err := l.Name(d, seg, e.Long+"A"); !errors.Is(err, ErrNotName) {
					t.Fatalf("long name with other metadata: %v", err)
				}
			}
		}
	}
	back, err := l.Child(root, "sub", meta)
	if err != nil || !back.Equal(sub) {
		t.Fatalf("Child = %+v, %v; want %+v", back, err, sub)
	}
}

// TestBoundToDirectory: equal names in two directories are stored under
// different segments, and a segment or a marker copied into another
// directory does not decode there.
func TestBoundToDirectory(t *testing.T) {
	l := testLayout(t)
	root := l.Root()
	a, ma, _ := l.NewDir(root, "a")
	b, _, _ := l.NewDir(root, "b")
	if a.Prefix == b.Prefix || a.Prefix == root.Prefix {
		t.Fatalf("prefixes %q %q %q", root.Prefix, a.Prefix, b.Prefix)
	}
	ea, _ := l.Entry(a, "same")
	eb, _ := l.Entry(b, "same")
	if listedSeg(a, ea) == listedSeg(b, eb) {
		t.Fatal("equal names in two directories have equal segments")
	}
	if _, err := l.Name(b, listedSeg(a, ea), ""); !errors.Is(err, ErrNotName) {
		t.Fatalf("segment of a listed in b: %v", err)
	}
	// The marker of "a" copied to "b/x" or renamed to "c" by hand.
	if _, err := l.Child(b, "a", ma); !errors.Is(err, ErrBadDirID) {
		t.Fatalf("marker moved to another parent: %v", err)
	}
	if _, err := l.Child(root, "c", ma); !errors.Is(err, ErrBadDirID) {
		t.Fatalf("marker under another name: %v", err)
	}
	if _, err := l.Child(root, "a", nil); !errors.Is(err, ErrBadDirID) {
		t.Fatalf("marker without id: %v", err)
	}
	// A rename reseals: the id (and so every entry below) stays.
	mc, err := l.MoveDir(a, b, "c")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := l.Child(b, "c", mc); err != nil || !got.Equal(a) {
		t.Fatalf("after a move: %+v, %v", got, err)
	}
	// Another vault's layout decodes nothing of this one.
	other, _ := New(bytes.Repeat([]byte{8}, 32))
	if _, err := other.Name(root, listedSeg(root, ea), ""); err == nil {
		t.Fatal("another vault's key decodes the name")
	}
}

func TestPlain(t *testing.T) {
	l := Plain()
	d := l.Root()
	sub, meta, err := l.NewDir(d, "a")
	if err != nil || meta != nil || sub.Prefix != "a/" {
		t.Fatalf("%+v %v %v", sub, meta, err)
	}
	e, err := l.Entry(sub, "b c")
	if err != nil || e.Key != "a/b c" || e.Long != "" {
		t.Fatalf("%+v %v", e, err)
	}
	if n, _ := l.Name(sub, "b c", ""); n != "b c" {
		t.Fatal(n)
	}
	if _, err := l.Entry(Dir{Prefix: strings.Repeat("x/", 400)}, strings.Repeat("y", 230)); !errors.Is(err, ErrTooLong) {
		t.Fatalf("long plaintext key: %v", err)
	}
}

// TestDeepPath: depth does not lengthen keys.
func TestDeepPath(t *testing.T) {
	l := testLayout(t)
	d := l.Root()
	for i := 0; i < 200; i++ {
		nd, _, err := l.NewDir(d, strings.Repeat("n", 19))
		if err != nil {
			t.Fatal(err)
		}
		d = nd
	}
	e, err := l.Entry(d, strings.Repeat("z", 255))
	if err != nil || len(e.Key) > 100 {
		t.Fatalf("key %d bytes at depth 200: %v", len(e.Key), err)
	}
}

func FuzzName(f *testing.F) {
	l := testLayout(f)
	root := l.Root()
	sub, _, _ := l.NewDir(root, "s")
	for _, n := range []string{"a", strings.Repeat("q", 255)} {
		e, _ := l.Entry(sub, n)
		f.Add(listedSeg(sub, e), e.Long, true)
	}
	f.Add("x.lng", "", false)
	f.Add("", "", false)
	f.Fuzz(func(t *testing.T, seg, long string, inSub bool) {
		d := root
		if inSub {
			d = sub
		}
		name, err := l.Name(d, seg, long)
		if err != nil {
			if !errors.Is(err, ErrNotName) && !errors.Is(err, ErrNeedMeta) {
				t.Fatalf("error of no known class: %v", err)
			}
			return
		}
		// Whatever decodes is a valid name that maps back to seg.
		e, err := l.Entry(d, name)
		if err != nil || listedSeg(d, e) != seg {
			t.Fatalf("%q decodes to %q which maps to %q (%v)", seg, name, e.Key, err)
		}
	})
}

func FuzzChild(f *testing.F) {
	l := testLayout(f)
	root := l.Root()
	_, m, _ := l.NewDir(root, "s")
	f.Add(m[MetaDirID], "s")
	f.Add("", "")
	f.Fuzz(func(t *testing.T, v, name string) {
		d, err := l.Child(root, name, map[string]string{MetaDirID: v})
		if err != nil {
			if !errors.Is(err, ErrBadDirID) {
				t.Fatalf("error of no known class: %v", err)
			}
			return
		}
		if len(d.ID) != IDSize || !strings.HasPrefix(d.Prefix, DirRoot) {
			t.Fatalf("accepted %+v", d)
		}
	})
}
