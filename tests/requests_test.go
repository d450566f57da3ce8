package tests

import (
	"fmt"
	"os"
	"testing"
)

// opCount is the number of store requests of one operation kind (put,
// get, stat, list, delete, copy) between two scrapes of the metrics.
func opCount(s0, s1 map[string]float64, op string) float64 {
	var n float64
	for _, outcome := range []string{"ok", "not_found", "error", "precondition_failed", "denied"} {
		k := fmt.Sprintf(`s3cryptfs_store_requests_total{op=%q,outcome=%q}`, op, outcome)
		n += s1[k] - s0[k]
	}
	return n
}

// TestRequestCounts pins the store requests of the common operations, so
// that round trips cannot creep back (at 20 ms a request, each one is a
// user-visible cost): creating a file in a directory this mount made or
// listed is one PUT (no negative lookup reaches the store); removing it is
// one DELETE; reading a small listed file is one GET.
func TestRequestCounts(t *testing.T) {
	eachLayout(t, func(t *testing.T, st *store) {
		addr := freePort(t)
		// A long attribute timeout, so that nothing expires during the test.
		m := st.mount(t, "--metrics-addr", addr, "--attr-timeout", "30s")
		if err := os.Mkdir(m.path("d"), 0o755); err != nil {
			t.Fatal(err)
		}
		const n = 20
		s0 := scrape(t, addr)
		for i := 0; i < n; i++ {
			writeFile(t, m.path(fmt.Sprintf("d/f%02d", i)), "small file")
		}
		s1 := scrape(t, addr)
		t.Logf("create %d files: %s", n, requestsByOp(s0, s1))
		if p, others := opCount(s0, s1, "put"), requests(s1)-requests(s0)-opCount(s0, s1, "put"); p != n || others > 0 {
			t.Errorf("creating %d files in a new directory: %v PUTs and %v other requests (%s); want %d PUTs only", n, p, others, requestsByOp(s0, s1), n)
		}

		// A fresh mount lists the directory, then reads every file.
		m = m.remount("--metrics-addr", addr, "--attr-timeout", "30s")
		if _, err := os.ReadDir(m.path("d")); err != nil {
			t.Fatal(err)
		}
		s2 := scrape(t, addr)
		for i := 0; i < n; i++ {
			if b, err := os.ReadFile(m.path(fmt.Sprintf("d/f%02d", i))); err != nil || string(b) != "small file" {
				t.Fatalf("read: %q %v", b, err)
			}
		}
		s3 := scrape(t, addr)
		t.Logf("read %d listed files: %s", n, requestsByOp(s2, s3))
		if g, all := opCount(s2, s3, "get"), requests(s3)-requests(s2); g != n || all != n {
			t.Errorf("reading %d listed small files: %v GETs, %v requests in all (%s); want one GET each", n, g, all, requestsByOp(s2, s3))
		}

		// Creating in a listed directory: no lookup request either.
		writeFile(t, m.path("d/new"), "x")
		s4 := scrape(t, addr)
		if all := requests(s4) - requests(s3); all != 1 {
			t.Errorf("creating a file in a listed directory: %v requests (%s); want one PUT", all, requestsByOp(s3, s4))
		}

		// Removing: one DELETE per file.
		for i := 0; i < n; i++ {
			if err := os.Remove(m.path(fmt.Sprintf("d/f%02d", i))); err != nil {
				t.Fatal(err)
			}
		}
		s5 := scrape(t, addr)
		t.Logf("remove %d files: %s", n, requestsByOp(s4, s5))
		if d, all := opCount(s4, s5, "delete"), requests(s5)-requests(s4); d != n || all != n {
			t.Errorf("removing %d files: %v DELETEs, %v requests in all (%s); want one DELETE each", n, d, all, requestsByOp(s4, s5))
		}
	})
}

// TestDeepLookupRequests: with encrypted names every entry is one object,
// so resolving a path on a fresh mount costs one HEAD per component (a
// directory's object holds its id), and nothing once cached.
func TestDeepLookupRequests(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	addr := freePort(t)
	m := st.mount(t, "--metrics-addr", addr, "--attr-timeout", "30s")
	if err := os.MkdirAll(m.path("a/b/c/d/e"), 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.path("a/b/c/d/e/file"), "deep")
	m = m.remount("--metrics-addr", addr, "--attr-timeout", "30s")
	s0 := scrape(t, addr)
	if _, err := os.Stat(m.path("a/b/c/d/e/file")); err != nil {
		t.Fatal(err)
	}
	s1 := scrape(t, addr)
	t.Logf("stat of a 6-component path on a fresh mount: %s", requestsByOp(s0, s1))
	if got := requests(s1) - requests(s0); got != 6 {
		t.Errorf("stat of a/b/c/d/e/file on a fresh mount: %v requests (%s); want one per component, 6", got, requestsByOp(s0, s1))
	}
	if _, err := os.Stat(m.path("a/b/c/d/e/file")); err != nil {
		t.Fatal(err)
	}
	if got := requests(scrape(t, addr)) - requests(s1); got != 0 {
		t.Errorf("the same stat again: %v requests, want 0 (cached)", got)
	}
}
