package tests

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestDependencyDirection keeps the layering of DESIGN.md honest:
// cmd -> fs -> {cipher, cache, backend}, and cmd -> vault -> {cipher, backend}. cipher, cache and backend (with its
// stores) import neither each other nor go-fuse, and fs/content (the data
// path) does not import go-fuse, so each stays testable on its own.
func TestDependencyDirection(t *testing.T) {
	const mod = "github.com/s3cryptfs/s3cryptfs/"
	const fuse = "github.com/hanwen/go-fuse"
	rules := []struct {
		pkgs      string // a go list pattern
		forbidden []string
	}{
		{"cipher/...", []string{mod + "cache", mod + "backend", mod + "fs", fuse, "github.com/aws/"}},
		{"cache/...", []string{mod + "cipher", mod + "backend", mod + "fs", fuse}},
		{"backend/...", []string{mod + "cipher", mod + "cache", mod + "fs", fuse}},
		{"fs/content/...", []string{fuse, mod + "cmd"}},
		// fs/names maps paths to keys for the mount and for the commands
		// that read a vault without one: no FUSE, no store, no I/O.
		{"fs/names", []string{fuse, mod + "backend", mod + "cmd", mod + "fs/content", "github.com/aws/"}},
		{"fs/...", []string{mod + "cmd"}},
		// internal/vault opens and administers a vault through cipher and
		// backend only: no FUSE, no filesystem, and no AWS SDK (KMS is an
		// interface; internal/vault/awskms implements it).
		{"internal/vault", []string{mod + "fs", mod + "cache", mod + "cmd", mod + "internal/vault/", fuse, "github.com/aws/"}},
		{"internal/vault/...", []string{mod + "fs", mod + "cache", mod + "cmd", fuse}},
	}
	for _, r := range rules {
		// -deps lists every package the non-test code pulls in, transitively.
		out, err := exec.Command("go", "list", "-deps", "./../"+r.pkgs).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", r.pkgs, err, out)
		}
		deps := strings.Fields(string(out))
		if len(deps) < 2 {
			t.Fatalf("go list -deps %s listed nothing: %q", r.pkgs, out)
		}
		for _, d := range deps {
			for _, f := range r.forbidden {
				if d == f || strings.HasPrefix(d, f+"/") || (strings.HasSuffix(f, "/") && strings.HasPrefix(d, f)) {
					t.Errorf("%s depends on %s (forbidden: %s)", r.pkgs, d, f)
				}
			}
		}
	}
}

// TestFSBuildsNoKeys: the FUSE node code (package fs) builds no object key:
// every key, marker, listing segment and index key comes from fs/names, the
// one layer that maps paths to keys and back. A key built by hand (joining
// with "/", appending to a prefix) would bypass the encrypted layout.
func TestFSBuildsNoKeys(t *testing.T) {
	files, err := filepath.Glob("../fs/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no fs sources: %v", err)
	}
	build := regexp.MustCompile(`\+ *"/"|"/" *\+|(?i:prefix|pfx) *\+|\.Path\(nil\) *\+`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			code, _, _ := strings.Cut(line, "//")
			if build.MatchString(code) {
				t.Errorf("%s:%d builds a key by hand (use fs/names): %s", f, i+1, strings.TrimSpace(line))
			}
		}
	}
}
