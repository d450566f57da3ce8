package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestWriteBackMount: with --write-back, files closed before an unmount are
// all stored by the time `s3cryptfs unmount` returns (it fsyncs the root,
// which waits for the background uploads), and read back after a remount.
func TestWriteBackMount(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		m := st.mount(t, "--write-back", "--write-back-parallel", "4")
		if err := os.Mkdir(m.path("d"), 0o755); err != nil {
			t.Fatal(err)
		}
		want := map[string]string{}
		for i := range 60 {
			name := fmt.Sprintf("d/f%02d", i)
			content := strings.Repeat(fmt.Sprintf("file %d ", i), 50*(i+1)) // up to 2 blocks
			writeFile(t, m.path(name), content)
			want[name] = content
		}
		m.unmount()
		for name := range want {
			if st.rawMaybe(t, name) == nil {
				t.Fatalf("%s not stored when unmount returned", name)
			}
		}
		m, r := st.tryMountAt(t, m.dir, "--passphrase-file", passFile(t, passphrase))
		if r.code != 0 {
			t.Fatalf("remount: %s", r.stderr)
		}
		for name, content := range want {
			wantContent(t, m.path(name), content)
		}
		entries, err := os.ReadDir(filepath.Join(m.dir, "d"))
		if err != nil || len(entries) != len(want) {
			t.Fatalf("%d entries after remount (%v), want %d", len(entries), err, len(want))
		}
	})
}
