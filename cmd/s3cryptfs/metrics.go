package main

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cache/disk"
	"github.com/s3cryptfs/s3cryptfs/fs"
)

// checkMetricsAddr refuses a --metrics-addr that is not HOST:PORT, or whose
// host is not a loopback address unless allowRemote: the endpoint has no
// authentication, and its figures (file sizes, activity) are the user's.
// A name is resolved, and every address it has must be loopback.
func checkMetricsAddr(addr string, allowRemote bool) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		return usagef("--metrics-addr %q: want HOST:PORT, e.g. 127.0.0.1:9100", addr)
	}
	if allowRemote {
		return nil
	}
	if host == "" {
		return usagef("--metrics-addr %q listens on every address; give a loopback one (127.0.0.1:%s), or add --metrics-allow-remote", addr, port)
	}
	ips := []net.IP{net.ParseIP(host)}
	if ips[0] == nil {
		if ips, err = net.LookupIP(host); err != nil {
			return fmt.Errorf("--metrics-addr %q: %w", addr, err)
		}
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return usagef("--metrics-addr %q is not a loopback address; the metrics endpoint has no authentication: use 127.0.0.1:%s, or add --metrics-allow-remote", addr, port)
		}
	}
	return nil
}

// mountMetrics are the metrics of one mount, on their own registry.
type mountMetrics struct {
	reg       *prometheus.Registry
	readBytes prometheus.Counter
	written   prometheus.Counter
	openFiles prometheus.Gauge
}

func newMountMetrics() *mountMetrics {
	m := &mountMetrics{
		reg: prometheus.NewRegistry(),
		readBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "s3cryptfs_fuse_read_bytes_total", Help: "Plaintext bytes returned to reads of files on the mount.",
		}),
		written: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "s3cryptfs_fuse_written_bytes_total", Help: "Plaintext bytes accepted from writes to files on the mount.",
		}),
		openFiles: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "s3cryptfs_open_files", Help: "Files open on the mount (kernel file handles).",
		}),
	}
	m.reg.MustRegister(m.readBytes, m.written, m.openFiles,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// registerCache exposes the block cache's counters, read when scraped.
func (m *mountMetrics) registerCache(bc *cache.Cache) {
	stat := func(f func(cache.Stats) float64) func() float64 {
		return func() float64 { return f(bc.Stats()) }
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "s3cryptfs_cache_hits_total", Help: "Block cache lookups that found the decrypted block."},
			stat(func(s cache.Stats) float64 { return float64(s.Hits) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "s3cryptfs_cache_misses_total", Help: "Block cache lookups that did not (the block was fetched and decrypted)."},
			stat(func(s cache.Stats) float64 { return float64(s.Misses) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "s3cryptfs_cache_evictions_total", Help: "Blocks evicted to stay within --cache-size."},
			stat(func(s cache.Stats) float64 { return float64(s.Evictions) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "s3cryptfs_cache_bytes", Help: "Bytes of decrypted blocks held in the cache."},
			stat(func(s cache.Stats) float64 { return float64(s.Bytes) })),
	)
}

// registerDiskCache exposes the --disk-cache counters.
func (m *mountMetrics) registerDiskCache(dc *disk.Cache) {
	stat := func(f func(disk.Stats) float64) func() float64 {
		return func() float64 { return f(dc.Stats()) }
	}
	m.reg.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "s3cryptfs_disk_cache_hits_total", Help: "Sealed blocks read from the disk cache."},
			stat(func(s disk.Stats) float64 { return float64(s.Hits) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "s3cryptfs_disk_cache_writes_total", Help: "Sealed blocks written to the disk cache."},
			stat(func(s disk.Stats) float64 { return float64(s.Writes) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "s3cryptfs_disk_cache_dropped_total", Help: "Blocks not cached: write queue full, disk full or a write error."},
			stat(func(s disk.Stats) float64 { return float64(s.Dropped) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "s3cryptfs_disk_cache_evictions_total", Help: "Entries evicted to stay within --disk-cache-size."},
			stat(func(s disk.Stats) float64 { return float64(s.Evictions) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "s3cryptfs_disk_cache_corrupt_total", Help: "Entries that failed authentication (removed and fetched again)."},
			stat(func(s disk.Stats) float64 { return float64(s.Removed) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "s3cryptfs_disk_cache_bytes", Help: "Disk space the cached blocks take."},
			stat(func(s disk.Stats) float64 { return float64(s.Bytes) })),
	)
}

// registerWriteBack exposes the background uploads of --write-back (all
// zero without it).
func (m *mountMetrics) registerWriteBack(fsys *fs.FS) {
	stat := func(f func(fs.WriteBackStats) float64) func() float64 {
		return func() float64 { return f(fsys.WriteBackStats()) }
	}
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "s3cryptfs_writeback_pending_files", Help: "Closed files waiting for or in their background upload (--write-back)."},
			stat(func(s fs.WriteBackStats) float64 { return float64(s.Pending) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "s3cryptfs_writeback_pending_bytes", Help: "Their sizes."},
			stat(func(s fs.WriteBackStats) float64 { return float64(s.PendingBytes) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "s3cryptfs_writeback_uploads_total", Help: "Background uploads completed."},
			stat(func(s fs.WriteBackStats) float64 { return float64(s.Uploaded) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "s3cryptfs_writeback_failures_total", Help: "Files whose background upload gave up after its retries (the data stays in the mount)."},
			stat(func(s fs.WriteBackStats) float64 { return float64(s.Failed) })),
	)
}

// listen opens the metrics listener before the mount, so that a taken or
// refused address fails the mount instead of a mount without its metrics.
func (m *mountMetrics) listen(addr string, log *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--metrics-addr: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server ended", "err", err)
		}
	}()
	log.Info("metrics listening", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

// countingFS counts the bytes read and written through the mount and the
// open file handles. It wraps the FUSE server's file system, so it sees
// exactly what the kernel asks of the mount, whatever fs/ does with it.
type countingFS struct {
	fuse.RawFileSystem
	m *mountMetrics
}

func (c *countingFS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	r, st := c.RawFileSystem.Read(cancel, in, buf)
	if st == fuse.OK && r != nil {
		c.m.readBytes.Add(float64(r.Size()))
	}
	return r, st
}

func (c *countingFS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	n, st := c.RawFileSystem.Write(cancel, in, data)
	if st == fuse.OK {
		c.m.written.Add(float64(n))
	}
	return n, st
}

// Writev is what go-fuse calls for WRITE (Write only if it returns ENOSYS).
func (c *countingFS) Writev(cancel <-chan struct{}, in *fuse.WriteIn, data [][]byte) (uint32, fuse.Status) {
	n, st := c.RawFileSystem.Writev(cancel, in, data)
	if st == fuse.OK {
		c.m.written.Add(float64(n))
	}
	return n, st
}

func (c *countingFS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	st := c.RawFileSystem.Open(cancel, in, out)
	if st == fuse.OK {
		c.m.openFiles.Inc()
	}
	return st
}

func (c *countingFS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	st := c.RawFileSystem.Create(cancel, in, name, out)
	if st == fuse.OK {
		c.m.openFiles.Inc()
	}
	return st
}

func (c *countingFS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	c.RawFileSystem.Release(cancel, in)
	c.m.openFiles.Dec()
}
