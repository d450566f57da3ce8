package fs

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

// Write-back (Options.WriteBack): close(2) returns once the data is held by
// the mount (memory, or the encrypted spool), and the upload runs in the
// background, several at once. fsync(2) still waits for the file's upload;
// unmount, SIGTERM and fsync of the mount's root wait for all of them. An
// upload that fails is retried with backoff; after the last attempt the data
// stays in the mount (a later fsync, close or the unmount tries again and
// reports the error) and the failure is logged with the object's key and
// counted. What is pending is bounded by WriteBackMaxBytes: a close waits
// while more than that is waiting to be uploaded.
//
// Without write-back (the default) close(2) returns only once the object is
// stored, and reports a failed upload.

// Defaults for write-back.
const (
	DefaultWriteBackParallel = 16
	DefaultWriteBackMaxBytes = 1 << 30
	writeBackAttempts        = 5
)

// writeBackRetryBase is the first retry delay (doubling each attempt: 1 s,
// 2 s, 4 s, 8 s); tests shorten it before they mount.
var writeBackRetryBase = time.Second

type writeBack struct {
	fsys      *FS
	par       int
	maxBytes  int64
	retryBase time.Duration

	mu      sync.Mutex
	cond    *sync.Cond
	pending map[*File]*wbEntry // scheduled or uploading
	queue   []*File
	running int
	bytes   int64 // sum of the pending files' sizes when scheduled

	uploads  atomic.Int64 // background uploads completed
	failures atomic.Int64 // files whose background upload gave up
}

type wbEntry struct {
	size  int64
	again bool // closed again while uploading: upload once more
}

func newWriteBack(f *FS, par int, maxBytes int64) *writeBack {
	if par <= 0 {
		par = DefaultWriteBackParallel
	}
	if maxBytes <= 0 {
		maxBytes = DefaultWriteBackMaxBytes
	}
	w := &writeBack{fsys: f, par: par, maxBytes: maxBytes, retryBase: writeBackRetryBase, pending: map[*File]*wbEntry{}}
	w.cond = sync.NewCond(&w.mu)
	return w
}

// schedule queues fl's upload, first waiting while the pending bytes are
// over the bound (unless nothing else is pending: one file larger than the
// bound still goes).
func (w *writeBack) schedule(fl *File, size int64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if e, ok := w.pending[fl]; ok {
		e.again = true
		return
	}
	for len(w.pending) > 0 && w.bytes+size > w.maxBytes {
		w.cond.Wait()
		if e, ok := w.pending[fl]; ok {
			e.again = true
			return
		}
	}
	w.pending[fl] = &wbEntry{size: size}
	w.bytes += size
	w.queue = append(w.queue, fl)
	w.startLocked()
}

func (w *writeBack) startLocked() {
	for w.running < w.par && len(w.queue) > 0 {
		fl := w.queue[0]
		w.queue = w.queue[1:]
		w.running++
		go w.upload(fl)
	}
}

// upload syncs fl, retrying with backoff, then schedules it again if it was
// closed again meanwhile, or lets its content go if nothing holds it.
func (w *writeBack) upload(fl *File) {
	ctx := context.Background()
	for attempt := 1; ; attempt++ {
		err := fl.sync(ctx)
		if err == nil {
			w.uploads.Add(1)
			break
		}
		if attempt == writeBackAttempts {
			w.failures.Add(1)
			w.fsys.log.Error("write-back upload failed; the data stays in the mount until fsync or unmount succeeds",
				"object", fl.key(), "attempts", attempt, "err", err)
			break
		}
		w.fsys.log.Warn("write-back upload failed; retrying", "object", fl.key(), "attempt", attempt, "err", err)
		time.Sleep(w.retryBase << (attempt - 1))
	}
	w.mu.Lock()
	e := w.pending[fl]
	again := e.again
	if again {
		e.again = false
		w.queue = append(w.queue, fl)
	} else {
		delete(w.pending, fl)
		w.bytes -= e.size
	}
	w.running--
	w.startLocked()
	w.cond.Broadcast()
	w.mu.Unlock()
	if !again {
		fl.dropIfIdle()
	}
}

// has reports whether fl's upload is pending.
func (w *writeBack) has(fl *File) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	_, ok := w.pending[fl]
	return ok
}

// wait returns once no upload is pending or ctx ends.
func (w *writeBack) wait(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() {
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	})
	defer stop()
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.pending) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		w.cond.Wait()
	}
	return nil
}

// WriteBackStats are the counters of the background uploads.
type WriteBackStats struct {
	Pending      int   // files waiting or uploading
	PendingBytes int64 // their sizes
	Uploaded     int64 // background uploads completed
	Failed       int64 // files whose background upload gave up (data kept)
}

// WriteBackStats returns the write-back counters (zero without write-back).
func (f *FS) WriteBackStats() WriteBackStats {
	w := f.wb
	if w == nil {
		return WriteBackStats{}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return WriteBackStats{Pending: len(w.pending), PendingBytes: w.bytes,
		Uploaded: w.uploads.Load(), Failed: w.failures.Load()}
}
