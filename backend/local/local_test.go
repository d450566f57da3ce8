package local

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/storetest"
)

func newStore(t *testing.T) *Store {
	t.Helper()
	s, err := New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) backend.Store { return newStore(t) })
}

// tree returns every file and directory below root, relative, sorted;
// directories end in '/'.
func tree(t *testing.T, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if rel == "." {
			return nil
		}
		if d.IsDir() {
			rel += "/"
		}
		out = append(out, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

func listKeys(t *testing.T, s backend.Store, prefix, delim string) []string {
	t.Helper()
	var out []string
	err := s.List(t.Context(), prefix, delim, func(obj *backend.ObjectInfo, p string) error {
		if obj != nil {
			out = append(out, obj.Key)
		} else {
			out = append(out, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q, %q): %v", prefix, delim, err)
	}
	return out
}

func TestLayoutSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	want := map[string]backend.ObjectInfo{}
	for _, k := range []string{"a/b", "a/b/", "a/b/c", "x.obj/y.dir", ".dir"} {
		oi, err := s.Put(ctx, k, strings.NewReader("data of "+k), -1, map[string]string{"Key": k})
		if err != nil {
			t.Fatal(err)
		}
		want[k] = oi
	}
	wantTree := []string{
		".dir.obj",
		"a.dir/", "a.dir/b.dir/", "a.dir/b.dir/.obj", "a.dir/b.dir/c.obj", "a.dir/b.obj",
		"x.obj.dir/", "x.obj.dir/y.dir.obj",
	}
	if got := tree(t, dir); !slices.Equal(got, wantTree) {
		t.Errorf("layout = %q\nwant %q", got, wantTree)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "a.dir", "b.obj"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(raw, []byte(magic)) || !bytes.HasSuffix(raw, []byte("\ndata of a/b")) ||
		!bytes.Contains(raw, []byte(`"meta":{"key":"a/b"}`)) || !bytes.Contains(raw, []byte(want["a/b"].ETag)) {
		t.Errorf("object file = %q", raw)
	}

	// A second store on the same directory (a restart, or a synced copy)
	// sees the same objects, ETags, times and metadata.
	copyDir := t.TempDir()
	if err := os.CopyFS(copyDir, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{dir, copyDir} {
		s2, err := New(d)
		if err != nil {
			t.Fatal(err)
		}
		for k, w := range want {
			st, err := s2.Stat(ctx, k)
			if err != nil {
				t.Fatalf("%s: Stat(%q): %v", d, k, err)
			}
			if st.ETag != w.ETag || st.Size != w.Size || !st.LastModified.Equal(w.LastModified) || st.Metadata["key"] != k {
				t.Errorf("%s: Stat(%q) = %+v, want %+v", d, k, st, w)
			}
		}
		if got := listKeys(t, s2, "", ""); !slices.Equal(got, []string{".dir", "a/b", "a/b/", "a/b/c", "x.obj/y.dir"}) {
			t.Errorf("%s: List = %q", d, got)
		}
	}

	// Deleting every key leaves no directories behind.
	if err := s.DeleteMany(ctx, slices.Collect(maps.Keys(want))); err != nil {
		t.Fatal(err)
	}
	if got := tree(t, dir); len(got) != 0 {
		t.Errorf("after deleting every key: %q", got)
	}
}

func TestInvalidKeys(t *testing.T) {
	s := newStore(t)
	ctx := t.Context()
	ok := []string{strings.Repeat("x", 251), "a/" + strings.Repeat("y", 251) + "/", "...", ".a/..b/c.", strings.Repeat("k/", 511) + "zz"}
	for _, k := range ok {
		if _, err := s.Put(ctx, k, strings.NewReader("v"), 1, nil); err != nil {
			t.Errorf("Put(valid %.20q... len %d): %v", k, len(k), err)
		}
	}
	bad := []string{
		"", "/", "/a", "a//b", "a/b//", ".", "..", "./a", "a/./b", "a/../b", "a/..", "a/.",
		strings.Repeat("x", 252), "a/" + strings.Repeat("y", 252) + "/b",
		strings.Repeat("k/", 512) + "z", "nul\x00byte",
	}
	for _, k := range bad {
		check := func(op string, err error) {
			t.Helper()
			if !errors.Is(err, ErrInvalidKey) || !errors.Is(err, backend.ErrPermanent) {
				t.Errorf("%s(%.30q): err = %v, want ErrInvalidKey and ErrPermanent", op, k, err)
			}
		}
		_, err := s.Put(ctx, k, strings.NewReader("v"), 1, nil)
		check("Put", err)
		_, err = s.Stat(ctx, k)
		check("Stat", err)
		_, err = s.Get(ctx, k, 0, -1, backend.GetOptions{})
		check("Get", err)
		_, err = s.Copy(ctx, "...", k, backend.CopyOptions{})
		check("Copy to", err)
		_, err = s.Copy(ctx, k, "dst", backend.CopyOptions{})
		check("Copy from", err)
		if err := s.Delete(ctx, k); err != nil {
			t.Errorf("Delete(%.30q) = %v, want nil (it cannot exist)", k, err)
		}
	}
	// Prefixes through a path that cannot exist list nothing.
	for _, p := range []string{"/", "a//", "./", "../", "a/../", strings.Repeat("y", 252) + "/"} {
		if got := listKeys(t, s, p, "/"); len(got) != 0 {
			t.Errorf("List(%.30q) = %q", p, got)
		}
	}
	slices.Sort(ok)
	if got := listKeys(t, s, "", ""); !slices.Equal(got, ok) {
		t.Errorf("List after refused Puts = %q, want only the valid keys", got)
	}
}

type failReader struct{ n int }

var errFail = errors.New("fail")

func (f *failReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errFail
	}
	n := min(len(p), f.n)
	f.n -= n
	return n, nil
}

func TestNoTempLitterAfterFailure(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := s.Put(ctx, "keep/old", strings.NewReader("old"), 3, nil); err != nil {
		t.Fatal(err)
	}
	before := tree(t, dir)
	for _, k := range []string{"keep/old", "keep/new", "fresh/deep/dir/key"} {
		if _, err := s.Put(ctx, k, &failReader{n: 1 << 20}, -1, nil); !errors.Is(err, errFail) {
			t.Errorf("Put(%q) with a failing reader: %v", k, err)
		}
		if _, err := s.Put(ctx, k, strings.NewReader("short"), 10, nil); err == nil {
			t.Errorf("Put(%q) with a short body succeeded", k)
		}
	}
	if _, err := s.Copy(ctx, "missing", "fresh/x", backend.CopyOptions{}); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Copy(missing): %v", err)
	}
	// Directories a failed Put created are pruned again.
	if after := tree(t, dir); !slices.Equal(after, before) {
		t.Errorf("directory after failed writes = %q\nwant %q", after, before)
	}
}

func TestCrashLeftoversIgnored(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	for _, k := range []string{"a/b", "c"} {
		if _, err := s.Put(ctx, k, strings.NewReader(k), -1, nil); err != nil {
			t.Fatal(err)
		}
	}
	// What a crash (or a sync tool) can leave: temporary files, empty
	// directories, directories holding only temporary files, foreign files.
	for _, p := range []string{".s3cf-tmp-12345", "a.dir/.s3cf-tmp-99", "ghost.dir/.s3cf-tmp-1", "notes.txt", "a.dir/.DS_Store"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte("partial garbage"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"empty.dir", "nested.dir/empty.dir", "a.dir/hollow.dir"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		prefix, delim string
		want          []string
	}{
		{"", "", []string{"a/b", "c"}},
		{"", "/", []string{"a/", "c"}},
		{"a/", "/", []string{"a/b"}},
		{"ghost/", "", nil},
		{"nested/", "/", nil},
	}
	for _, tc := range tests {
		if got := listKeys(t, s, tc.prefix, tc.delim); !slices.Equal(got, tc.want) {
			t.Errorf("List(%q, %q) = %q, want %q", tc.prefix, tc.delim, got, tc.want)
		}
	}
	if _, err := s.Stat(ctx, "ghost/"); !errors.Is(err, backend.ErrNotFound) {
		t.Errorf("Stat(ghost/): %v", err)
	}
}

func TestCorruptObjectFile(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"empty.obj":   "",
		"nomagic.obj": "hello\nworld\n",
		"badjson.obj": magic + "{not json\n",
		"noeol.obj":   magic + `{"etag":"x"}`,
		"noetag.obj":  magic + "{}\n",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		key := strings.TrimSuffix(name, objSuffix)
		_, err := s.Stat(t.Context(), key)
		if !errors.Is(err, backend.ErrPermanent) || errors.Is(err, backend.ErrNotFound) {
			t.Errorf("Stat(%q) of a corrupt file: err = %v, want a permanent error other than not-found", key, err)
		}
	}
	// A well-formed file written by hand is read: bytes after the header are data.
	if err := os.WriteFile(filepath.Join(dir, "ok.obj"), []byte(magic+`{"etag":"e1"}`+"\nDATA"), 0o600); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Get(t.Context(), "ok", 0, -1, backend.GetOptions{IfMatch: "e1"})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "DATA" {
		t.Errorf("Get(ok) = %q", b)
	}
}

func TestLargeMetadataHeader(t *testing.T) {
	s := newStore(t)
	meta := map[string]string{"big": strings.Repeat("m", 20_000)}
	if _, err := s.Put(t.Context(), "k", strings.NewReader("body"), 4, meta); err != nil {
		t.Fatal(err)
	}
	st, err := s.Stat(t.Context(), "k")
	if err != nil || st.Size != 4 || st.Metadata["big"] != meta["big"] {
		t.Errorf("Stat with a 20 kB header: size %d, err %v", st.Size, err)
	}
	meta["big"] = strings.Repeat("m", maxHeader)
	if _, err := s.Put(t.Context(), "k", strings.NewReader("body"), 4, meta); !errors.Is(err, backend.ErrPermanent) {
		t.Errorf("Put with metadata over the limit: %v", err)
	}
}

func TestNew(t *testing.T) {
	dir := t.TempDir()
	if _, err := New(filepath.Join(dir, "missing")); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("New(missing dir) = %v", err)
	}
	f := filepath.Join(dir, "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := New(f); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("New(file) = %v", err)
	}
}

// TestConcurrentPutDeletePrune races Puts that create directories with
// Deletes that prune them: no write may fail or vanish, and nothing is left
// at the end.
func TestConcurrentPutDeletePrune(t *testing.T) {
	dir := t.TempDir()
	s, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 40 {
				k := fmt.Sprintf("x/y/z/g%d-%d", g, i)
				if _, err := s.Put(ctx, k, strings.NewReader(k), -1, nil); err != nil {
					t.Errorf("Put(%q): %v", k, err)
					return
				}
				if st, err := s.Stat(ctx, k); err != nil || st.Size != int64(len(k)) {
					t.Errorf("Stat(%q) right after Put: %+v, %v", k, st, err)
					return
				}
				if err := s.Delete(ctx, k); err != nil {
					t.Errorf("Delete(%q): %v", k, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if got := tree(t, dir); len(got) != 0 {
		t.Errorf("left behind: %q", got)
	}
}
