// Package mem is an in-memory backend.Store for unit tests of the layers above
// the store (filesystem, cache, upload). It implements the whole contract of
// backend.Store — ETags that change on every write, user metadata, If-Match,
// clipped ranged reads, copy with kept or replaced metadata, delimited listing
// in lexical order, streaming Put, context cancellation — so a test that passes
// against it exercises the same behaviour the S3 and local stores provide
// (backend/storetest checks all three against one suite).
//
// Objects are immutable byte slices: a Put or Copy installs a new slice under
// the lock, so a reader returned by Get keeps seeing the object as it was when
// Get was called, as with a real store.
package mem

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// Store is an in-memory backend.Store. The zero value is not usable; call New.
type Store struct {
	mu      sync.RWMutex
	objects map[string]*object
	// etagBase makes ETags unique across Store instances; seq makes them
	// unique across writes within one.
	etagBase string
	seq      uint64
}

type object struct {
	data []byte // never modified after the object is installed
	etag string
	mod  time.Time
	meta map[string]string
}

var _ backend.Store = (*Store)(nil)

// New returns an empty store.
func New() *Store {
	var b [6]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	return &Store{objects: make(map[string]*object), etagBase: hex.EncodeToString(b[:])}
}

// nextETag returns a fresh ETag; the caller holds s.mu for writing.
func (s *Store) nextETag() string {
	s.seq++
	return fmt.Sprintf("%s-%d", s.etagBase, s.seq)
}

func (o *object) info(key string, withMeta bool) backend.ObjectInfo {
	oi := backend.ObjectInfo{Key: key, Size: int64(len(o.data)), ETag: o.etag, LastModified: o.mod}
	if withMeta {
		oi.Metadata = maps.Clone(o.meta)
		if oi.Metadata == nil {
			oi.Metadata = map[string]string{}
		}
	}
	return oi
}

// normMeta copies meta with lower-cased keys, as S3 stores x-amz-meta-* names.
func normMeta(meta map[string]string) map[string]string {
	out := make(map[string]string, len(meta))
	for k, v := range meta {
		out[strings.ToLower(k)] = v
	}
	return out
}

func checkKey(op, key string) error {
	if key == "" {
		return fmt.Errorf("mem: %s: empty key: %w", op, backend.ErrPermanent)
	}
	return nil
}

func ctxErr(ctx context.Context, op, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("mem: %s %q: %w", op, key, err)
	}
	return nil
}

// Stat implements backend.Store.
func (s *Store) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	if err := ctxErr(ctx, "stat", key); err != nil {
		return backend.ObjectInfo{}, err
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	o, ok := s.objects[key]
	if !ok {
		return backend.ObjectInfo{}, fmt.Errorf("mem: stat %q: %w", key, backend.ErrNotFound)
	}
	return o.info(key, true), nil
}

// Get implements backend.Store. The returned reader also stops with ctx's
// error once ctx is cancelled.
func (s *Store) Get(ctx context.Context, key string, off, length int64, opts backend.GetOptions) (io.ReadCloser, error) {
	if err := ctxErr(ctx, "get", key); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("mem: get %q: negative offset %d: %w", key, off, backend.ErrPermanent)
	}
	s.mu.RLock()
	o, ok := s.objects[key]
	s.mu.RUnlock()
	if !ok {
		return nil, fmt.Errorf("mem: get %q: %w", key, backend.ErrNotFound)
	}
	if opts.IfMatch != "" && opts.IfMatch != o.etag {
		return nil, fmt.Errorf("mem: get %q: etag %q, want %q: %w", key, o.etag, opts.IfMatch, backend.ErrPreconditionFailed)
	}
	size := int64(len(o.data))
	start := min(off, size)
	end := size
	if length >= 0 && length < size-start {
		end = start + length
	}
	return io.NopCloser(&ctxReader{ctx: ctx, r: bytes.NewReader(o.data[start:end])}), nil
}

// Put implements backend.Store. With size >= 0 exactly size bytes are read
// from r (fewer is an error); with size < 0, r is read to EOF.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (backend.ObjectInfo, error) {
	return s.PutWith(ctx, key, r, size, backend.PutOptions{Metadata: meta})
}

// PutWith implements backend.Store. The condition is checked under the
// store's lock, in the same critical section that installs the object.
func (s *Store) PutWith(ctx context.Context, key string, r io.Reader, size int64, opts backend.PutOptions) (backend.ObjectInfo, error) {
	if err := checkKey("put", key); err != nil {
		return backend.ObjectInfo{}, err
	}
	if err := backend.CheckPutOptions(opts); err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("mem: put %q: %w", key, err)
	}
	meta := opts.Metadata
	if err := ctxErr(ctx, "put", key); err != nil {
		return backend.ObjectInfo{}, err
	}
	var buf bytes.Buffer
	cr := &ctxReader{ctx: ctx, r: r}
	if size >= 0 {
		buf.Grow(int(size))
		n, err := io.CopyN(&buf, cr, size)
		if err == io.EOF {
			err = fmt.Errorf("short body: %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
		}
		if err != nil {
			return backend.ObjectInfo{}, fmt.Errorf("mem: put %q: %w", key, err)
		}
	} else if _, err := io.Copy(&buf, cr); err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("mem: put %q: %w", key, err)
	}
	// A cancellation that raced with the last read still aborts the Put.
	if err := ctxErr(ctx, "put", key); err != nil {
		return backend.ObjectInfo{}, err
	}
	o := &object{data: buf.Bytes(), mod: time.Now(), meta: normMeta(meta)}
	s.mu.Lock()
	if err := checkCondition(key, s.objects[key], opts); err != nil {
		s.mu.Unlock()
		return backend.ObjectInfo{}, err
	}
	o.etag = s.nextETag()
	s.objects[key] = o
	s.mu.Unlock()
	return o.info(key, true), nil
}

// checkCondition checks a Put's condition against the current object cur
// (nil if absent).
func checkCondition(key string, cur *object, opts backend.PutOptions) error {
	switch {
	case opts.IfNoneMatch != "" && cur != nil:
		return fmt.Errorf("mem: put %q: the key exists (If-None-Match *): %w", key, backend.ErrPreconditionFailed)
	case opts.IfMatch != "" && cur == nil:
		return fmt.Errorf("mem: put %q: the key does not exist (If-Match %q): %w: %w", key, opts.IfMatch,
			backend.ErrPreconditionFailed, backend.ErrNotFound)
	case opts.IfMatch != "" && cur.etag != opts.IfMatch:
		return fmt.Errorf("mem: put %q: etag %q, want %q: %w", key, cur.etag, opts.IfMatch, backend.ErrPreconditionFailed)
	}
	return nil
}

// Copy implements backend.Store.
func (s *Store) Copy(ctx context.Context, src, dst string, opts backend.CopyOptions) (backend.ObjectInfo, error) {
	if err := checkKey("copy", dst); err != nil {
		return backend.ObjectInfo{}, err
	}
	if err := ctxErr(ctx, "copy", src); err != nil {
		return backend.ObjectInfo{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.objects[src]
	if !ok {
		return backend.ObjectInfo{}, fmt.Errorf("mem: copy %q to %q: %w", src, dst, backend.ErrNotFound)
	}
	if opts.IfMatch != "" && opts.IfMatch != o.etag {
		return backend.ObjectInfo{}, fmt.Errorf("mem: copy %q to %q: etag %q, want %q: %w",
			src, dst, o.etag, opts.IfMatch, backend.ErrPreconditionFailed)
	}
	meta := o.meta
	if opts.ReplaceMetadata {
		meta = normMeta(opts.Metadata)
	}
	n := &object{data: o.data, etag: s.nextETag(), mod: time.Now(), meta: maps.Clone(meta)}
	s.objects[dst] = n
	return n.info(dst, true), nil
}

// Delete implements backend.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := ctxErr(ctx, "delete", key); err != nil {
		return err
	}
	s.mu.Lock()
	delete(s.objects, key)
	s.mu.Unlock()
	return nil
}

// DeleteMany implements backend.Store.
func (s *Store) DeleteMany(ctx context.Context, keys []string) error {
	if err := ctxErr(ctx, "delete", fmt.Sprintf("%d keys", len(keys))); err != nil {
		return err
	}
	s.mu.Lock()
	for _, k := range keys {
		delete(s.objects, k)
	}
	s.mu.Unlock()
	return nil
}

// List implements backend.Store. It works on a snapshot of the matching keys
// taken when it starts, so fn may call back into the store.
func (s *Store) List(ctx context.Context, prefix, delimiter string, fn backend.ListFunc) error {
	if err := ctxErr(ctx, "list", prefix); err != nil {
		return err
	}
	type entry struct {
		key string
		obj backend.ObjectInfo
	}
	s.mu.RLock()
	var entries []entry
	for k, o := range s.objects {
		if strings.HasPrefix(k, prefix) {
			entries = append(entries, entry{k, o.info(k, false)})
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.key, b.key) })

	lastPrefix := ""
	for i := range entries {
		if err := ctxErr(ctx, "list", prefix); err != nil {
			return err
		}
		e := &entries[i]
		if delimiter != "" {
			rest := e.key[len(prefix):]
			if j := strings.Index(rest, delimiter); j >= 0 {
				// Keys sharing a common prefix are adjacent in lexical
				// order, so one comparison with the last prefix dedups.
				cp := e.key[:len(prefix)+j+len(delimiter)]
				if cp == lastPrefix {
					continue
				}
				lastPrefix = cp
				if err := fn(nil, cp); err != nil {
					return err
				}
				continue
			}
		}
		if err := fn(&e.obj, ""); err != nil {
			return err
		}
	}
	return nil
}

// ctxReader ends a read with ctx's error once ctx is cancelled, so a
// streaming Put or a long read stops promptly.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
