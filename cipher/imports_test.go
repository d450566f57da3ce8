package cipher

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestImports keeps the package free of I/O layers: only the standard
// library, golang.org/x/crypto and minio/sha256-simd; no go-fuse, AWS or
// project packages.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	checked := 0
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		checked++
		for _, imp := range f.Imports {
			path, _ := strconv.Unquote(imp.Path.Value)
			std := !strings.Contains(strings.Split(path, "/")[0], ".")
			if !std && !strings.HasPrefix(path, "golang.org/x/crypto/") && path != "github.com/minio/sha256-simd" {
				t.Errorf("%s imports %s: cipher may use only the standard library, x/crypto and sha256-simd", name, path)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no source files found")
	}
}
