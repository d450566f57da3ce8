package mem

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// TestSmoke is a quick check kept until the conformance suite runs here.
func TestSmoke(t *testing.T) {
	ctx := context.Background()
	s := New()
	oi, err := s.Put(ctx, "a/b", strings.NewReader("hello world"), -1, map[string]string{"Mode": "644"})
	if err != nil {
		t.Fatal(err)
	}
	if oi.Size != 11 || oi.Metadata["mode"] != "644" {
		t.Fatalf("put info %+v", oi)
	}
	rc, err := s.Get(ctx, "a/b", 6, 100, backend.GetOptions{IfMatch: oi.ETag})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "world" {
		t.Fatalf("got %q", b)
	}
	oi2, err := s.Put(ctx, "a/b", strings.NewReader("x"), 1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if oi2.ETag == oi.ETag {
		t.Fatal("etag did not change")
	}
	if _, err := s.Get(ctx, "a/b", 0, -1, backend.GetOptions{IfMatch: oi.ETag}); !errors.Is(err, backend.ErrPreconditionFailed) {
		t.Fatalf("stale if-match: %v", err)
	}
	if _, err := s.Stat(ctx, "nope"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatalf("stat missing: %v", err)
	}
	var got []string
	for _, k := range []string{"a/", "a/c/d", "a-b"} {
		if _, err := s.Put(ctx, k, strings.NewReader(""), 0, nil); err != nil {
			t.Fatal(err)
		}
	}
	err = s.List(ctx, "a", "/", func(o *backend.ObjectInfo, p string) error {
		if o != nil {
			got = append(got, o.Key)
		} else {
			got = append(got, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "a-b,a/" {
		t.Fatalf("list: %v", got)
	}
}
