// Package metrics wraps a backend.Store to count its operations for
// Prometheus: operations by kind and outcome, their latency, bytes moved,
// and uploads in flight and failed. It knows nothing of files or keys, like
// every store.
package metrics

import (
	"context"
	"errors"
	"io"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// Store is a backend.Store that records every call's outcome and latency.
type Store struct {
	next backend.Store

	requests      *prometheus.CounterVec   // op, outcome
	latency       *prometheus.HistogramVec // op
	received      prometheus.Counter
	sent          prometheus.Counter
	uploads       prometheus.Gauge
	uploadsFailed prometheus.Counter
}

// The operations, as label values.
const (
	opStat       = "stat"
	opGet        = "get"
	opPut        = "put"
	opCopy       = "copy"
	opDelete     = "delete"
	opDeleteMany = "delete_many"
	opList       = "list"
)

// New wraps next and registers its metrics with reg.
func New(next backend.Store, reg prometheus.Registerer) (*Store, error) {
	s := &Store{
		next: next,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "s3cryptfs_store_requests_total",
			Help: "Store operations by operation (stat, get, put, copy, delete, delete_many, list) and outcome (ok, not_found, precondition_failed, access_denied, canceled, error). A put of a large object or a long listing may be several S3 requests.",
		}, []string{"op", "outcome"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "s3cryptfs_store_request_duration_seconds",
			Help: "Latency of store operations, by operation: until the call returns (for get: until the first byte can be read; for put: until the object is stored).",
			// 1 ms .. 65 s: local stores answer in microseconds to
			// milliseconds, S3 in tens of ms, a large upload in seconds.
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 17),
		}, []string{"op"}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "s3cryptfs_store_received_bytes_total",
			Help: "Bytes read from the store by gets (ciphertext with headers and tags).",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "s3cryptfs_store_sent_bytes_total",
			Help: "Bytes handed to the store by puts (ciphertext with headers and tags), counted as the store reads them, so a failed put counts what it read.",
		}),
		uploads: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "s3cryptfs_store_uploads_in_flight",
			Help: "Puts in progress.",
		}),
		uploadsFailed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "s3cryptfs_store_uploads_failed_total",
			Help: "Puts that failed (nothing was stored; the file's close or fsync reported the error).",
		}),
	}
	for _, c := range []prometheus.Collector{s.requests, s.latency, s.received, s.sent, s.uploads, s.uploadsFailed} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	// Every series exists from the start at 0, so that rate() and
	// increase() see the first operation.
	for _, op := range []string{opStat, opGet, opPut, opCopy, opDelete, opDeleteMany, opList} {
		s.requests.WithLabelValues(op, "ok")
		s.requests.WithLabelValues(op, "error")
		s.latency.WithLabelValues(op)
	}
	return s, nil
}

// outcome classifies an error with the store's error classes.
func outcome(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, backend.ErrNotFound):
		return "not_found"
	case errors.Is(err, backend.ErrPreconditionFailed):
		return "precondition_failed"
	case errors.Is(err, backend.ErrAccessDenied):
		return "access_denied"
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return "canceled"
	}
	return "error"
}

func (s *Store) observe(op string, start time.Time, err error) {
	s.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	s.requests.WithLabelValues(op, outcome(err)).Inc()
}

func (s *Store) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	start := time.Now()
	oi, err := s.next.Stat(ctx, key)
	s.observe(opStat, start, err)
	return oi, err
}

func (s *Store) Get(ctx context.Context, key string, off, length int64, opts backend.GetOptions) (io.ReadCloser, error) {
	start := time.Now()
	rc, err := s.next.Get(ctx, key, off, length, opts)
	s.observe(opGet, start, err)
	if err != nil {
		return nil, err
	}
	return &countingReadCloser{ReadCloser: rc, c: s.received}, nil
}

func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (backend.ObjectInfo, error) {
	s.uploads.Inc()
	defer s.uploads.Dec()
	start := time.Now()
	oi, err := s.next.Put(ctx, key, &countingReader{r: r, c: s.sent}, size, meta)
	s.observe(opPut, start, err)
	if err != nil {
		s.uploadsFailed.Inc()
	}
	return oi, err
}

// PutWith is Put with conditions (the vault config's writes).
func (s *Store) PutWith(ctx context.Context, key string, r io.Reader, size int64, opts backend.PutOptions) (backend.ObjectInfo, error) {
	s.uploads.Inc()
	defer s.uploads.Dec()
	start := time.Now()
	oi, err := s.next.PutWith(ctx, key, &countingReader{r: r, c: s.sent}, size, opts)
	s.observe(opPut, start, err)
	if err != nil {
		s.uploadsFailed.Inc()
	}
	return oi, err
}

func (s *Store) Copy(ctx context.Context, src, dst string, opts backend.CopyOptions) (backend.ObjectInfo, error) {
	start := time.Now()
	oi, err := s.next.Copy(ctx, src, dst, opts)
	s.observe(opCopy, start, err)
	return oi, err
}

func (s *Store) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := s.next.Delete(ctx, key)
	s.observe(opDelete, start, err)
	return err
}

func (s *Store) DeleteMany(ctx context.Context, keys []string) error {
	start := time.Now()
	err := s.next.DeleteMany(ctx, keys)
	s.observe(opDeleteMany, start, err)
	return err
}

func (s *Store) List(ctx context.Context, prefix, delimiter string, fn backend.ListFunc) error {
	start := time.Now()
	err := s.next.List(ctx, prefix, delimiter, fn)
	s.observe(opList, start, err)
	return err
}

// countingReader counts what a put reads from its source. It keeps no
// other method of r: stores that look for io.Seeker or io.WriterTo on the
// reader then take the generic path, which is correct, only not
// specialised.
type countingReader struct {
	r io.Reader
	c prometheus.Counter
}

func (r *countingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.c.Add(float64(n))
	return n, err
}

type countingReadCloser struct {
	io.ReadCloser
	c prometheus.Counter
}

func (r *countingReadCloser) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	r.c.Add(float64(n))
	return n, err
}
