package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/local"
)

// rawKeys lists every key of the store, as another S3 tool (the bare SDK)
// or ls -R of the local store directory would show them.
func (st *store) rawKeys(t *testing.T) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var keys []string
	if st.kind == "minio" {
		p := s3.NewListObjectsV2Paginator(st.srv.SDKClient(t), &s3.ListObjectsV2Input{Bucket: aws.String(st.bucket)})
		for p.HasMorePages() {
			out, err := p.NextPage(ctx)
			if err != nil {
				t.Fatalf("raw list: %v", err)
			}
			for _, o := range out.Contents {
				keys = append(keys, aws.ToString(o.Key))
			}
		}
		return keys
	}
	// The local store's own file names, not its keys: what a person
	// browsing the directory sees.
	err := filepath.Walk(st.dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		keys = append(keys, strings.TrimPrefix(p, st.dir))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// newKeys returns the keys of after that before lacks.
func newKeys(before, after []string) []string {
	had := map[string]bool{}
	for _, k := range before {
		had[k] = true
	}
	var out []string
	for _, k := range after {
		if !had[k] {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

func localKeys(t *testing.T, dir string) []string {
	t.Helper()
	ls, err := local.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	if err := ls.List(context.Background(), "", "", func(o *backend.ObjectInfo, _ string) error {
		keys = append(keys, o.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return keys
}

// TestEncryptedNames: through a real mount over MinIO and over the local
// store, a tree of marker names (unicode, spaces, 255-byte names, names
// that differ only in case, a name that looks like an encrypted one) is
// created, listed, renamed, partly removed and read back after a remount;
// then no raw key of the bucket (bare SDK) or file name of the local store
// shows any marker.
func TestEncryptedNames(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		long := "LongMarker" + strings.Repeat("é", 120) + "Zq" // 254 bytes
		if len(long) < 250 || len(long) > 255 {
			t.Fatalf("BUG: long name of %d bytes", len(long))
		}
		markers := []string{"TaxReturnMarker", "ÜberweisungMärker✓", "space marker name", long, "CaseMarker", "casemarker", "DirMarkerOne", "DirMarkerTwo", "SubdirMarker", "RenamedMarker", "SymlinkMarker", "GoneMarker"}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		write := func(rel, data string) {
			t.Helper()
			must(os.WriteFile(m.path(rel), []byte(data), 0o644))
		}
		must(os.MkdirAll(m.path("DirMarkerOne/SubdirMarker"), 0o755))
		must(os.Mkdir(m.path("DirMarkerTwo"), 0o755))
		write("DirMarkerOne/TaxReturnMarker", "tax")
		write("DirMarkerOne/ÜberweisungMärker✓", "unicode")
		write("DirMarkerOne/space marker name", "spaces")
		write("DirMarkerOne/SubdirMarker/"+long, "long")
		must(os.Mkdir(m.path("DirMarkerTwo/"+long), 0o755))
		write("DirMarkerTwo/"+long+"/CaseMarker", "upper")
		write("DirMarkerTwo/"+long+"/casemarker", "lower")
		write("DirMarkerTwo/GoneMarker", "gone")
		must(os.Symlink("TaxReturnMarker", m.path("DirMarkerOne/SymlinkMarker")))

		// A name equal to what a listing of the bucket shows.
		var lookalike string
		for _, k := range localOrS3Keys(t, st) {
			if strings.HasPrefix(k, "d/") {
				seg := filepath.Base(strings.TrimSuffix(k, "/"))
				if len(seg) > 20 && !strings.Contains(seg, ".") {
					lookalike = seg
					break
				}
			}
		}
		if lookalike == "" {
			t.Fatalf("no encrypted-looking key in %v", st.rawKeys(t))
		}
		write("DirMarkerTwo/"+lookalike, "lookalike")

		must(os.Rename(m.path("DirMarkerOne/space marker name"), m.path("DirMarkerTwo/RenamedMarker")))
		must(os.Rename(m.path("DirMarkerOne/SubdirMarker"), m.path("DirMarkerTwo/SubdirMarker")))
		must(os.Remove(m.path("DirMarkerTwo/GoneMarker")))

		want := map[string]string{
			"DirMarkerOne/TaxReturnMarker":         "tax",
			"DirMarkerOne/ÜberweisungMärker✓":      "unicode",
			"DirMarkerTwo/RenamedMarker":           "spaces",
			"DirMarkerTwo/SubdirMarker/" + long:    "long",
			"DirMarkerTwo/" + long + "/CaseMarker": "upper",
			"DirMarkerTwo/" + long + "/casemarker": "lower",
			"DirMarkerTwo/" + lookalike:            "lookalike",
		}
		check := func(m *mount) {
			t.Helper()
			for rel, data := range want {
				b, err := os.ReadFile(m.path(rel))
				if err != nil || string(b) != data {
					t.Errorf("%s: %q, %v; want %q", rel, b, err, data)
				}
			}
			if target, err := os.Readlink(m.path("DirMarkerOne/SymlinkMarker")); err != nil || target != "TaxReturnMarker" {
				t.Errorf("symlink: %q, %v", target, err)
			}
			for _, gone := range []string{"DirMarkerOne/space marker name", "DirMarkerOne/SubdirMarker", "DirMarkerTwo/GoneMarker"} {
				if _, err := os.Lstat(m.path(gone)); !os.IsNotExist(err) {
					t.Errorf("%s: %v, want ENOENT", gone, err)
				}
			}
			ents, err := os.ReadDir(m.path("DirMarkerTwo"))
			must(err)
			var got []string
			for _, e := range ents {
				got = append(got, e.Name())
			}
			wantNames := []string{long, "RenamedMarker", "SubdirMarker", lookalike}
			sort.Strings(wantNames)
			if strings.Join(got, "\n") != strings.Join(wantNames, "\n") {
				t.Errorf("DirMarkerTwo lists %q, want %q", got, wantNames)
			}
		}
		check(m)
		m = m.remount()
		check(m)
		m.unmount()

		raw := strings.Join(st.rawKeys(t), "\n")
		for _, mk := range markers {
			for _, probe := range []string{mk, strings.ToLower(mk), mk[:8]} {
				if strings.Contains(raw, probe) {
					t.Errorf("the store shows %q (of marker %q):\n%s", probe, mk, raw)
				}
			}
		}
	})
}

// TestEqualNamesDifferentKeys: the same name in two directories is stored
// under two different keys, and an entry's object copied (by another S3
// tool) into another directory is not listed there, with a log line naming
// the object.
func TestEqualNamesDifferentKeys(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		for _, d := range []string{"a", "b"} {
			if err := os.Mkdir(m.path(d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		keysOf := func() []string { return localOrS3Keys(t, st) }
		k0 := keysOf()
		if err := os.WriteFile(m.path("a/same"), []byte("in a"), 0o644); err != nil {
			t.Fatal(err)
		}
		k1 := keysOf()
		if err := os.WriteFile(m.path("b/same"), []byte("in b"), 0o644); err != nil {
			t.Fatal(err)
		}
		k2 := keysOf()
		ka, kb := newObjects(k0, k1), newObjects(k1, k2)
		if len(ka) != 1 || len(kb) != 1 {
			t.Fatalf("new objects: %v then %v", ka, kb)
		}
		segA, segB := filepath.Base(ka[0]), filepath.Base(kb[0])
		if segA == segB || filepath.Dir(ka[0]) == filepath.Dir(kb[0]) {
			t.Fatalf("equal names stored as %q and %q", ka[0], kb[0])
		}
		// Copy a's object into b's prefix under another segment-looking
		// name: b must not list it, and the log names it.
		planted := filepath.Dir(kb[0]) + "/" + segA
		st.copyRaw(t, ka[0], planted)
		m = m.remount()
		ents, err := os.ReadDir(m.path("b"))
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 1 || ents[0].Name() != "same" {
			t.Fatalf("b lists %v after a foreign object was planted", ents)
		}
		if b, err := os.ReadFile(m.path("b/same")); err != nil || string(b) != "in b" {
			t.Fatalf("b/same: %q %v", b, err)
		}
		time.Sleep(300 * time.Millisecond)
		if _, err := os.ReadDir(m.path("b")); err != nil { // listed again: logged once only
			t.Fatal(err)
		}
		m.unmount()
		log := readLog(m.log)
		if !strings.Contains(log, planted) || !strings.Contains(log, "does not decrypt") {
			t.Errorf("the log does not name the planted object %s:\n%s", planted, log)
		}
		if n := strings.Count(log, planted); n != 1 {
			t.Errorf("the planted object is logged %d times, want once:\n%s", n, log)
		}
	})
}

// localOrS3Keys lists the store's keys (the local store through its own
// List, so the names are keys, not file names).
func localOrS3Keys(t *testing.T, st *store) []string {
	if st.kind == "local" {
		return localKeys(t, st.dir)
	}
	return st.rawKeys(t)
}

// newObjects returns the keys of after, not in before, that are entries
// (not attribute indexes or markers).
func newObjects(before, after []string) []string {
	var out []string
	for _, k := range newKeys(before, after) {
		if strings.HasPrefix(k, "d/") && !strings.HasSuffix(k, "/") {
			out = append(out, k)
		}
	}
	return out
}

// TestDeepAndLongNames: a 255-byte name and a 4,000-byte path (200 nested
// directories of 19-byte names) work on both stores, after a remount too.
func TestDeepAndLongNames(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		seg := strings.Repeat("n", 19)
		var parts []string
		for i := 0; i < 200; i++ {
			parts = append(parts, seg)
		}
		deep := strings.Join(parts, "/")
		if len(deep) < 3990 {
			t.Fatalf("BUG: path of %d bytes", len(deep))
		}
		if err := os.MkdirAll(m.path(deep), 0o755); err != nil {
			t.Fatal(err)
		}
		name255 := strings.Repeat("x", 255)
		// The full path exceeds PATH_MAX with the mount point: write
		// relative to a descriptor of the deepest directory.
		write := func(m *mount, rel, data string) error {
			d, err := os.OpenRoot(m.path(strings.Join(parts[:100], "/")))
			if err != nil {
				return err
			}
			defer d.Close()
			return d.WriteFile(strings.Join(parts[100:], "/")+"/"+rel, []byte(data), 0o644)
		}
		read := func(m *mount, rel string) (string, error) {
			d, err := os.OpenRoot(m.path(strings.Join(parts[:100], "/")))
			if err != nil {
				return "", err
			}
			defer d.Close()
			b, err := d.ReadFile(strings.Join(parts[100:], "/") + "/" + rel)
			return string(b), err
		}
		if err := write(m, name255, "bottom"); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(m.path(name255), []byte("top"), 0o644); err != nil {
			t.Fatal(err)
		}
		m = m.remount()
		if got, err := read(m, name255); err != nil || got != "bottom" {
			t.Fatalf("deep file after remount: %q %v", got, err)
		}
		if b, err := os.ReadFile(m.path(name255)); err != nil || string(b) != "top" {
			t.Fatalf("255-byte name after remount: %q %v", b, err)
		}
		if err := os.WriteFile(m.path(name255+"x"), nil, 0o644); err == nil {
			t.Fatal("a 256-byte name was accepted")
		}
		// Renames between long (hashed) and short names carry the full
		// name in the metadata correctly.
		other := strings.Repeat("y", 240)
		for _, mv := range [][2]string{{name255, "short"}, {"short", "sub/" + other}, {"sub/" + other, "sub/" + name255}} {
			if err := os.MkdirAll(m.path("sub"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(m.path(mv[0]), m.path(mv[1])); err != nil {
				t.Fatalf("rename %.20s... -> %.20s...: %v", mv[0], mv[1], err)
			}
		}
		if err := os.Chmod(m.path("sub/"+name255), 0o600); err != nil { // a metadata copy keeps the name
			t.Fatal(err)
		}
		m = m.remount()
		if b, err := os.ReadFile(m.path("sub/" + name255)); err != nil || string(b) != "top" {
			t.Fatalf("after renames through long and short names: %q %v", b, err)
		}
		ents, err := os.ReadDir(m.path("sub"))
		if err != nil || len(ents) != 1 || ents[0].Name() != name255 {
			t.Fatalf("sub lists %v %v", ents, err)
		}
	})
}

// requests sums the store requests of every operation in a metrics scrape.
func requests(s map[string]float64) (n float64) {
	for k, v := range s {
		if strings.HasPrefix(k, "s3cryptfs_store_requests_total{") {
			n += v
		}
	}
	return n
}

// requestsByOp lists the store requests between two scrapes, per operation.
func requestsByOp(s0, s1 map[string]float64) string {
	var out []string
	for k, v := range s1 {
		if strings.HasPrefix(k, "s3cryptfs_store_requests_total{") && v != s0[k] {
			out = append(out, fmt.Sprintf("%s %v", strings.TrimPrefix(k, "s3cryptfs_store_requests_total"), v-s0[k]))
		}
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}

// TestDirRenameConstant: in an encrypted-name vault, renaming a directory of
// 500 files and one of 5,000 files in 50 subdirectories costs the same
// small number of store requests (counted through the mount's metrics), and
// both trees read back identical after a remount. (7 requests here: the
// kernel's and the rename's lookups of both names, then the directory
// object's HEAD, Put at its new key and Delete.)
func TestDirRenameConstant(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	addr := freePort(t)
	m := st.mount(t, "--metrics-addr", addr)
	fill := func(dir string, subdirs, perDir int) {
		t.Helper()
		for s := 0; s < subdirs; s++ {
			d := dir
			if subdirs > 1 {
				d = fmt.Sprintf("%s/sub%02d", dir, s)
			}
			if err := os.MkdirAll(m.path(d), 0o755); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < perDir; i++ {
				if err := os.WriteFile(m.path(fmt.Sprintf("%s/f%04d", d, i)), []byte(d+fmt.Sprint(i)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	fill("small", 1, 500)
	fill("big", 50, 100)
	cost := func(from, to string) float64 {
		t.Helper()
		s0 := requests(scrape(t, addr))
		if err := os.Rename(m.path(from), m.path(to)); err != nil {
			t.Fatal(err)
		}
		return requests(scrape(t, addr)) - s0
	}
	small, big := cost("small", "small2"), cost("big", "big2")
	t.Logf("directory rename: %v requests for 500 files, %v for 5,000 files in 50 directories", small, big)
	if small != big || small > 8 {
		t.Errorf("rename cost %v requests (500 files) and %v (5,000 files); want the same small number", small, big)
	}
	m = m.remount()
	for _, c := range []struct {
		dir          string
		subdirs, per int
	}{{"small2", 1, 500}, {"big2", 50, 100}} {
		n := 0
		err := filepath.Walk(m.path(c.dir), func(p string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel := strings.TrimPrefix(filepath.Dir(p), m.dir+"/")
			rel = strings.Replace(rel, c.dir, strings.TrimSuffix(c.dir, "2"), 1)
			if want := rel + strings.TrimLeft(filepath.Base(p), "f0"); !bytes.Equal(b, []byte(want)) && !(filepath.Base(p) == "f0000" && string(b) == rel+"0") {
				return fmt.Errorf("%s holds %q, want %q", p, b, want)
			}
			n++
			return nil
		})
		if err != nil || n != c.subdirs*c.per {
			t.Errorf("%s after remount: %d files, %v", c.dir, n, err)
		}
	}
}

// TestDirRenameCrash: a rename of a directory is a new object for it (its
// id sealed for the new place) then a delete of the old one. The state a crash (kill -9 of the mount) between
// the two leaves, both markers present, is built here exactly: every file
// is reachable under the old and the new name, none is lost.
func TestDirRenameCrash(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		k0 := localOrS3Keys(t, st)
		if err := os.Mkdir(m.path("old"), 0o755); err != nil {
			t.Fatal(err)
		}
		var oldMarker string // the directory's object
		for _, k := range newKeys(k0, localOrS3Keys(t, st)) {
			if strings.HasPrefix(k, "d/") {
				oldMarker = k
			}
		}
		if oldMarker == "" {
			t.Fatal("mkdir stored no marker")
		}
		if err := os.MkdirAll(m.path("old/inner"), 0o755); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"old/a", "old/inner/b"} {
			if err := os.WriteFile(m.path(f), []byte(f), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		// The old marker as it is before the rename's Delete.
		st.copyRaw(t, oldMarker, "saved-marker")
		if err := os.Rename(m.path("old"), m.path("new")); err != nil {
			t.Fatal(err)
		}
		if st.rawMaybe(t, oldMarker) != nil {
			t.Fatalf("the rename left the old marker %s", oldMarker)
		}
		st.copyRaw(t, "saved-marker", oldMarker)
		m = m.remount()
		for _, top := range []string{"old", "new"} {
			for _, f := range []string{"a", "inner/b"} {
				if b, err := os.ReadFile(m.path(top + "/" + f)); err != nil || string(b) != "old/"+f {
					t.Errorf("%s/%s after the simulated crash: %q %v", top, f, b, err)
				}
			}
		}
	})
}

// TestVerifyEncryptedNames: verify of an encrypted-name vault walks the
// tree as a mount lists it: an intact vault passes; an entry's object
// copied into another directory, and a directory marker copied under
// another directory, are each reported as bad-name with their keys (exit
// 1); verify of a path checks only what lies below it.
func TestVerifyEncryptedNames(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t)
		keys := func() []string { return localOrS3Keys(t, st) }
		for _, d := range []string{"a", "b", "b/deep"} {
			if err := os.Mkdir(m.path(d), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		k0 := keys()
		putFile(t, m.path("a/file"), []byte("in a"), 0o644)
		fileKey := newObjects(k0, keys())
		putFile(t, m.path("b/deep/other"), []byte("in b/deep"), 0o644)
		k1 := keys()
		otherKey := newObjects(k0, k1)
		if len(fileKey) != 1 || len(otherKey) != 2 {
			t.Fatalf("new objects %v, %v", fileKey, otherKey)
		}
		m.unmount()
		if rep, r := st.verifyJSON(t); r.code != 0 || len(rep.Problems) != 0 {
			t.Fatalf("intact vault: exit %d, %+v\n%s", r.code, rep.Problems, r.stderr)
		}
		var deepPrefix string
		for _, k := range otherKey {
			if k != fileKey[0] {
				deepPrefix = filepath.Dir(k) + "/"
			}
		}
		planted := deepPrefix + filepath.Base(fileKey[0])
		st.copyRaw(t, fileKey[0], planted)
		rep, r := st.verifyJSON(t)
		if r.code != 1 {
			t.Errorf("planted object: exit %d, want 1", r.code)
		}
		found := false
		for _, p := range rep.Problems {
			if p.Key == planted && p.Kind == "bad-name" {
				found = true
			}
		}
		if !found || len(rep.Problems) != 1 {
			t.Errorf("problems %+v, want bad-name of %s", rep.Problems, planted)
		}
		// Verify of a: a lies elsewhere, so all is well there.
		if r := st.reader(t, "verify", nil, "a"); r.code != 0 {
			t.Errorf("verify a: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		if r := st.reader(t, "verify", nil, "b"); r.code != 1 || !strings.Contains(r.stdout, planted) {
			t.Errorf("verify b: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		// ls and cat read through the same layer.
		if r := st.reader(t, "cat", nil, "b/deep/other"); r.code != 0 || r.stdout != "in b/deep" {
			t.Errorf("cat: exit %d %q %s", r.code, r.stdout, r.stderr)
		}
		if r := st.reader(t, "ls", []string{"-R"}); r.code != 0 || !strings.Contains(r.stdout, "other") || !strings.Contains(r.stdout, "file") {
			t.Errorf("ls -R: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
	})
}

// TestPlaintextNamesVault: init --plaintext-names makes a vault whose keys
// mirror paths (browsable by other S3 tools), recorded in the config and
// shown by key list; a default vault says encrypted.
func TestPlaintextNamesVault(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t, "--plaintext-names")
		if r := st.mustRun(t, "key", "list"); !strings.Contains(r.stdout, "plaintext names") {
			t.Errorf("key list of a --plaintext-names vault: %q", r.stdout)
		}
		m := st.mount(t)
		if err := os.MkdirAll(m.path("Visible Dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		writeFile(t, m.path("Visible Dir/readable name.txt"), "content")
		m.unmount()
		if st.rawMaybe(t, "Visible Dir/readable name.txt") == nil {
			t.Errorf("a --plaintext-names vault does not store the path as the key: %v", localOrS3Keys(t, st))
		}
	})
}

// TestLongNamesListFromIndex: a directory of 1,000 files whose names are
// too long for a key segment (stored under a hash, the full name in
// metadata and in the directory's attribute index) lists on a fresh mount
// with no request per entry: the listing, the index, and the lookups of
// the path (counted through the metrics).
func TestLongNamesListFromIndex(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	addr := freePort(t)
	m := st.mount(t, "--metrics-addr", addr)
	if err := os.Mkdir(m.path("long"), 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 1000
	name := func(i int) string { return fmt.Sprintf("%04d-%s", i, strings.Repeat("long name ", 20)) } // 205 bytes
	for i := 0; i < n; i++ {
		writeFile(t, m.path("long/"+name(i)), fmt.Sprint(i))
	}
	m = m.remount("--metrics-addr", addr) // unmount writes the index
	before := scrape(t, addr)
	s0 := requests(before)
	ents, err := os.ReadDir(m.path("long"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if _, err := e.Info(); err != nil { // ls -l: a stat per entry
			t.Fatal(err)
		}
	}
	after := scrape(t, addr)
	got := requests(after) - s0
	t.Logf("ls -l of %d long names on a fresh mount: %v requests (%s)", len(ents), got, requestsByOp(before, after))
	if len(ents) != n {
		t.Fatalf("listed %d entries, want %d", len(ents), n)
	}
	for i, e := range ents {
		if e.Name() != name(i) {
			t.Fatalf("entry %d: %q, want %q", i, e.Name(), name(i))
		}
	}
	// The directory's lookup is two HEADs, repeated when the tests' 200 ms
	// attribute timeout expires during the walk: a handful, against 1,000
	// HEADs if an entry needed one.
	if got > 10 {
		t.Errorf("ls -l of %d long names cost %v requests; want the listing, the index and the path's lookups only", n, got)
	}
	if b, err := os.ReadFile(m.path("long/" + name(7))); err != nil || string(b) != "7" {
		t.Errorf("read a long name: %q %v", b, err)
	}
}

// TestVaultV2PlainFixture: a vault made before names were encrypted
// (tests/testdata/vault-v2-plain, written by the binary of commit 74f173e:
// config version 2 without the names flag, plaintext keys, attribute
// indexes) mounts and works unchanged: the same contents, attributes,
// symlink and xattr; key list says plaintext names; new files keep the
// plaintext layout.
func TestVaultV2PlainFixture(t *testing.T) {
	requireFUSE(t)
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS("testdata/vault-v2-plain")); err != nil {
		t.Fatal(err)
	}
	st := &store{kind: "local", spec: dir, dir: dir}
	const pass = "fixture passphrase v2"
	pf := passFile(t, pass)
	if r := st.run(t, nil, "key", "list", st.spec); r.code != 0 || !strings.Contains(r.stdout, "plaintext names") {
		t.Fatalf("key list: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	m, r := st.tryMount(t, "--passphrase-file", pf)
	if r.code != 0 {
		t.Fatalf("mount of the fixture: exit %d: %s\n%s", r.code, r.stderr, readLog(m.log))
	}
	want := map[string]string{
		"hello.txt":              "b76093d3fc110ef4bf2432e4c98380c08c10f5f4c36d7351155d89b7575cd76c",
		"dir/sub dir/nested.txt": "370a8c04b8a65bb4494275eec227f1b694db04c76da6b0b8ae88ed1ab19790a3",
		"big.bin":                "feb50a36b80e78b8becc439b5bfbb73363e3180ade76adc2f98ed460a420543a",
		"empty":                  "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
	}
	check := func(m *mount) {
		t.Helper()
		for name, sum := range want {
			b, err := os.ReadFile(m.path(name))
			if err != nil || hexSum(b) != sum {
				t.Fatalf("%s: %v, content differs from what the old version stored", name, err)
			}
		}
		if target, err := os.Readlink(m.path("link")); err != nil || target != "hello.txt" {
			t.Fatalf("symlink: %q %v", target, err)
		}
		if fi, err := os.Stat(m.path("big.bin")); err != nil || fi.ModTime().Unix() != 1735787045 {
			t.Fatalf("big.bin mtime: %v %v", fi, err)
		}
		if fi, err := os.Stat(m.path("hello.txt")); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("hello.txt mode: %v %v", fi, err)
		}
		buf := make([]byte, 64)
		if n, err := unix.Getxattr(m.path("hello.txt"), "user.note", buf); err != nil || string(buf[:n]) != "kept" {
			t.Fatalf("xattr: %q %v", buf[:n], err)
		}
	}
	check(m)
	writeFile(t, m.path("dir/new file.txt"), "written after the change")
	if err := os.Rename(m.path("dir/sub dir"), m.path("dir/renamed dir")); err != nil {
		t.Fatal(err)
	}
	delete(want, "dir/sub dir/nested.txt")
	want["dir/renamed dir/nested.txt"] = "370a8c04b8a65bb4494275eec227f1b694db04c76da6b0b8ae88ed1ab19790a3"
	m = m.remount("--passphrase-file", pf)
	check(m)
	if st.rawMaybe(t, "dir/new file.txt") == nil || st.rawMaybe(t, "dir/renamed dir/nested.txt") == nil {
		t.Fatalf("new and renamed files not under their paths: %v", localKeys(t, dir))
	}
}
