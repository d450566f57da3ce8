package s3

import (
	"slices"
	"strings"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

func listKeys(t *testing.T, s *Store, prefix, delim string) []string {
	t.Helper()
	var out []string
	err := s.List(testCtx(t), prefix, delim, func(obj *backend.ObjectInfo, p string) error {
		if obj != nil {
			out = append(out, "obj:"+obj.Key)
		} else {
			out = append(out, "pfx:"+p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q, %q): %v", prefix, delim, err)
	}
	return out
}

// TestMinIOKeyLayout pins down the key layouts the filesystem uses and
// MinIO supports: a directory marker "d/" beside objects under "d/", and a
// file "f" beside a marker "f/" with nothing under it. (What MinIO does not
// support is an object "a/b" with other objects under "a/b/": those vanish
// from listings. A POSIX tree never needs that, since a name is a file or a
// directory, but a tool writing such keys into the bucket would confuse a
// mount on MinIO; see the conformance skips.)
func TestMinIOKeyLayout(t *testing.T) {
	srv := server(t)
	s := newStoreT(t, baseConfig(srv, srv.NewBucket(t)))
	for _, k := range []string{"d/", "d/x", "d/y/", "d/y/z", "d/y/w/v", "f", "f/", "g"} {
		if _, err := s.Put(testCtx(t), k, strings.NewReader(k), int64(len(k)), nil); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		prefix, delim string
		want          []string
	}{
		{"", "/", []string{"pfx:d/", "obj:f", "pfx:f/", "obj:g"}},
		{"d/", "/", []string{"obj:d/", "obj:d/x", "pfx:d/y/"}},
		{"d/y/", "/", []string{"obj:d/y/", "pfx:d/y/w/", "obj:d/y/z"}},
		{"d/", "", []string{"obj:d/", "obj:d/x", "obj:d/y/", "obj:d/y/w/v", "obj:d/y/z"}},
		{"f", "/", []string{"obj:f", "pfx:f/"}},
		{"f/", "/", []string{"obj:f/"}},
	}
	for _, tc := range cases {
		if got := listKeys(t, s, tc.prefix, tc.delim); !slices.Equal(got, tc.want) {
			t.Errorf("List(%q, %q) = %q, want %q", tc.prefix, tc.delim, got, tc.want)
		}
	}
}
