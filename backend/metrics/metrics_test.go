package metrics

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/mem"
	"github.com/s3cryptfs/s3cryptfs/backend/storetest"
)

// TestContract: the wrapper is still a Store.
func TestContract(t *testing.T) {
	storetest.Run(t, func(t *testing.T) backend.Store {
		s, err := New(mem.New(), prometheus.NewRegistry())
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

// TestCounts: operations by outcome, bytes each way, failed uploads.
func TestCounts(t *testing.T) {
	ctx := context.Background()
	reg := prometheus.NewRegistry()
	s, err := New(mem.New(), reg)
	if err != nil {
		t.Fatal(err)
	}
	data := bytes.Repeat([]byte("x"), 1000)
	if _, err := s.Put(ctx, "a", bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	rc, err := s.Get(ctx, "a", 10, 100, backend.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, rc)
	rc.Close()
	if _, err := s.Stat(ctx, "missing"); !errors.Is(err, backend.ErrNotFound) {
		t.Fatal(err)
	}
	failing := io.MultiReader(bytes.NewReader(data[:10]), errReader{})
	if _, err := s.Put(ctx, "b", failing, -1, nil); err == nil {
		t.Fatal("put from a failing reader succeeded")
	}
	for name, want := range map[string]float64{
		`put/ok`: 1, `put/error`: 1, `get/ok`: 1, `stat/not_found`: 1, `list/ok`: 0,
	} {
		op, outcome, _ := strings.Cut(name, "/")
		if got := testutil.ToFloat64(s.requests.WithLabelValues(op, outcome)); got != want {
			t.Errorf("requests{%s,%s} = %v, want %v", op, outcome, got, want)
		}
	}
	if got := testutil.ToFloat64(s.received); got != 100 {
		t.Errorf("received %v, want 100", got)
	}
	if got := testutil.ToFloat64(s.sent); got != 1010 {
		t.Errorf("sent %v, want 1010", got)
	}
	if got := testutil.ToFloat64(s.uploadsFailed); got != 1 {
		t.Errorf("failed uploads %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.uploads); got != 0 {
		t.Errorf("uploads in flight %v, want 0", got)
	}
	if n, err := testutil.GatherAndCount(reg, "s3cryptfs_store_request_duration_seconds"); err != nil || n != 7 {
		t.Errorf("latency histograms: %d %v, want one per operation", n, err)
	}
}

type errReader struct{}

func (errReader) Read([]byte) (int, error) { return 0, errors.New("source failed") }
