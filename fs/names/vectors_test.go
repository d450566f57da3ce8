package names

import (
	"bufio"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"regexp"
	"strings"
	"testing"
)

var vectorLine = regexp.MustCompile(`^([a-z0-9][a-z0-9 .]*[a-z0-9]) += ([0-9a-f]*)$`)

// readVectors reads the "name = hex" lines of FORMAT.md's test vectors
// (the same grammar as cipher's TestVectors and crosscheck.py).
func readVectors(t *testing.T) map[string][]byte {
	t.Helper()
	f, err := os.Open("../../docs/FORMAT.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	var in, fence bool
	var last string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.HasPrefix(line, "## Test vectors")
			continue
		case strings.HasPrefix(line, "```"):
			fence, last = !fence, ""
			continue
		}
		if !in || !fence {
			continue
		}
		if m := vectorLine.FindStringSubmatch(line); m != nil {
			last = m[1]
			out[last] = m[2]
		} else if strings.HasPrefix(line, " ") && last != "" {
			out[last] += strings.TrimSpace(line)
		} else {
			last = ""
		}
	}
	res := map[string][]byte{}
	for k, v := range out {
		b, err := hex.DecodeString(v)
		if err != nil {
			t.Fatalf("vector %q: %v", k, err)
		}
		res[k] = b
	}
	return res
}

type fixedRand []byte

func (r fixedRand) Read(p []byte) (int, error) { return copy(p, r), nil }

// TestNameVectors computes FORMAT.md's name vectors from its inputs and
// requires them to match (cipher/testdata/crosscheck.py reproduces them
// independently).
func TestNameVectors(t *testing.T) {
	in := readVectors(t)
	get := func(k string) []byte {
		v, ok := in[k]
		if !ok {
			t.Fatalf("FORMAT.md lacks input vector %q", k)
		}
		return v
	}
	nk := get("name key")
	l, err := New(nk)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string][]byte{}
	for label, name := range map[string]string{labelNameKey: "names siv key", labelDirIDKey: "names dir id siv key"} {
		k, _ := hkdf.Key(sha256.New, nk, nil, label, 64)
		out[name] = k
	}
	out["names hash key"], _ = hkdf.Key(sha256.New, nk, nil, labelHashKey, 32)
	root := l.Root()
	sub, meta, err := l.newDir(fixedRand(get("names dir id")), root, "sub")
	if err != nil {
		t.Fatal(err)
	}
	sealed, _ := b64.DecodeString(meta[MetaDirID])
	out["names sealed dir id"] = sealed
	out["names root prefix"] = []byte(root.Prefix)
	out["names dir prefix"] = []byte(sub.Prefix)
	e1, _ := l.Entry(root, "hello")
	e2, _ := l.Entry(sub, "hello")
	e3, _ := l.Entry(sub, strings.Repeat("x", 255))
	out["names key hello in root"] = []byte(e1.Key)
	out["names key hello in sub"] = []byte(e2.Key)
	out["names key long in sub"] = []byte(e3.Key)
	out["names long full"] = []byte(e3.Long)
	if os.Getenv("S3CRYPTFS_PRINT_VECTORS") != "" {
		for k, v := range out {
			t.Logf("%s = %x", k, v)
		}
	}
	for k, want := range out {
		got, ok := in[k]
		if !ok {
			t.Errorf("FORMAT.md lacks output vector %q = %x", k, want)
			continue
		}
		if string(got) != string(want) {
			t.Errorf("vector %q:\n FORMAT.md %x\n computed  %x", k, got, want)
		}
	}
}
