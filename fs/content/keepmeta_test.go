package content

import (
	"bytes"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend/mem"
)

// TestStreamKeepsMeta: a streamed upload fixes its metadata when it starts.
// If the Sync that finishes it asks for metadata that differs only in a
// StreamKeepsMeta key (the filesystem's mtime), no server-side copy of the
// whole object follows and the stored value is reported back; any other
// difference still costs one copy. Without the option every difference is
// copied, as before.
func TestStreamKeepsMeta(t *testing.T) {
	data := pattern(5*4096+123, 7)
	cases := []struct {
		name       string
		keep       []string
		atSync     map[string]string
		wantCopies int64
		wantMeta   map[string]string
	}{
		{"only mtime differs", []string{"mtime"},
			map[string]string{"mode": "644", "mtime": "2"}, 0,
			map[string]string{"mode": "644", "mtime": "1"}},
		{"mode differs too", []string{"mtime"},
			map[string]string{"mode": "600", "mtime": "2"}, 1,
			map[string]string{"mode": "600", "mtime": "1"}},
		{"option off", nil,
			map[string]string{"mode": "644", "mtime": "2"}, 1,
			map[string]string{"mode": "644", "mtime": "2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			v := newEnv(t, mem.New(), testKeys(t, 4096), func(o *Options) { o.StreamKeepsMeta = tc.keep })
			ctx := testCtx(t)
			f := v.eng.Create("f", map[string]string{"mode": "644", "mtime": "1"})
			for off := 0; off < len(data); off += 1000 {
				end := min(off+1000, len(data))
				if _, err := f.WriteAt(ctx, data[off:end], int64(off)); err != nil {
					t.Fatal(err)
				}
			}
			if v.store.puts.Load() != 1 {
				t.Fatalf("want the upload streaming before Sync (1 Put), got %d", v.store.puts.Load())
			}
			info, err := f.Sync(ctx, tc.atSync)
			if err != nil {
				t.Fatal(err)
			}
			if got := v.store.copies.Load(); got != tc.wantCopies {
				t.Errorf("copies: got %d, want %d", got, tc.wantCopies)
			}
			st, err := v.store.Stat(ctx, "f")
			if err != nil {
				t.Fatal(err)
			}
			for k, want := range tc.wantMeta {
				if st.Metadata[k] != want || info.Metadata[k] != want {
					t.Errorf("metadata %s: stored %q, reported %q, want %q", k, st.Metadata[k], info.Metadata[k], want)
				}
			}
			if got := readAll(t, ctx, v.reopen(ctx, "f")); !bytes.Equal(got, data) {
				t.Fatal("content differs after sync")
			}
		})
	}
}
