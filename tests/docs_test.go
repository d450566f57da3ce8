package tests

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestThreatModelNamesRealTests: every claim in docs/THREAT_MODEL.md names
// the tests that show it, in brackets. A renamed or deleted test must not
// leave the document promising what nothing checks any more.
func TestThreatModelNamesRealTests(t *testing.T) {
	doc, err := os.ReadFile("../docs/THREAT_MODEL.md")
	if err != nil {
		t.Fatal(err)
	}
	defined := map[string]bool{}
	funcRE := regexp.MustCompile(`(?m)^func ((?:Test|Fuzz)\w+)\(`)
	err = filepath.WalkDir("..", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == ".tools" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range funcRE.FindAllSubmatch(b, -1) {
			defined[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// Bracketed references may span lines: [pkg TestA, TestB/sub; tests TestC*].
	brackets := regexp.MustCompile(`\[([^\]]*)\]`).FindAllSubmatch(doc, -1)
	nameRE := regexp.MustCompile(`\b(Test[A-Za-z0-9_]+)`)
	n := 0
	for _, b := range brackets {
		for _, m := range nameRE.FindAllSubmatch(b[1], -1) {
			n++
			if !defined[string(m[1])] {
				t.Errorf("THREAT_MODEL.md names %s, which no test defines", m[1])
			}
		}
	}
	if n < 20 {
		t.Fatalf("found only %d test names in THREAT_MODEL.md's brackets; the parser is broken", n)
	}
}
