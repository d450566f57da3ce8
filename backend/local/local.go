// Package local is a backend.Store on a local directory: the same semantics
// as the S3 store (atomic replace, user metadata, ETags, If-Match, delimited
// listing in lexical key order), so a filesystem can live on a disk, a NAS or
// a folder that a sync tool carries elsewhere.
//
// # On-disk layout
//
// Every key is split at '/'. All segments but the last name directories, the
// last names the object file; each gets a fixed suffix so that an object and
// a prefix with the same name never collide:
//
//	key "a/b"    ->  a.dir/b.obj
//	key "a/b/"   ->  a.dir/b.dir/.obj     (directory marker: empty last segment)
//	key "a/b/c"  ->  a.dir/b.dir/c.obj
//
// The mapping is injective without any escaping: a name ending in ".obj" is
// an object whose last segment is the name minus the suffix, a name ending in
// ".dir" is a prefix, and nothing else belongs to the store. Other names —
// temporary files of a Put in progress or interrupted by a crash
// (".s3cf-tmp-*"), files a sync tool drops — are ignored by every method.
// Empty directories (left by a crash between an unlink and the pruning
// rmdir) are ignored too: a prefix is listed only if an object lies below it.
//
// An object file is self-contained so that a sync tool can carry it (no
// absolute paths, no state elsewhere, nothing in xattrs):
//
//	s3cryptfs-local-object 1\n                              magic line
//	{"etag":"…","mtime":"…","meta":{"mode":"100644"}}\n     JSON header, one line
//	<object bytes>                                          the rest of the file
//
// The ETag is 128 random bits drawn at each Put or Copy, so it changes on
// every write even when the bytes do not, and survives a copy of the file by
// any tool. LastModified is the time the write started, as with an S3
// multipart upload. Object size is the file size minus the header.
//
// # Keys this store refuses
//
// Keys map to paths, so some S3 keys have no file: the empty key, keys over
// 1024 bytes, keys containing NUL, keys with an empty segment other than the
// last ("a//b", "/a"), keys with a "." or ".." segment, and keys with a
// segment longer than 251 bytes (255, the Linux limit on a file name, minus
// the 4-byte suffix). Every method but Delete refuses them with an error that
// wraps ErrInvalidKey and backend.ErrPermanent; Delete treats them as the
// missing keys they are. The filesystem never produces such keys except for
// over-long names.
//
// # Durability
//
// A write goes to a temporary file in the object's own directory, is
// fsynced, renamed over the object file and the directory is fsynced, so
// after a crash a key holds the old object or the new one. Directories the
// write had to create are fsynced into their parents (one gap: a Put that
// finds its directory just created by a concurrent Put does not wait for
// that Put's fsync of the parent). A delete fsyncs the directory it removed
// the file from, then removes directories that became empty (best effort;
// an empty directory is harmless). The directory must be on a
// case-sensitive filesystem.
package local

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

const (
	objSuffix  = ".obj"
	dirSuffix  = ".dir"
	tmpPattern = ".s3cf-tmp-*" // never ends in objSuffix or dirSuffix

	maxKeyLen     = 1024
	maxSegmentLen = 255 - len(objSuffix)

	magic = "s3cryptfs-local-object 1\n"
	// maxHeader bounds the header line; S3 itself allows only 2 KiB of user
	// metadata.
	maxHeader = 64 << 10

	// copyChunk is how much Copy moves between context checks.
	copyChunk = 16 << 20
)

// ErrInvalidKey is wrapped (with backend.ErrPermanent) by errors about keys
// that have no file in this store; see the package comment.
var ErrInvalidKey = errors.New("invalid key for the local store")

// Store is a backend.Store on a directory.
type Store struct {
	root string
}

var _ backend.Store = (*Store)(nil)

// New returns a store on dir, which must exist.
func New(dir string) (*Store, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("local: %w", err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("local: store directory %s does not exist (create it first): %w", abs, backend.ErrPermanent)
		}
		return nil, fmt.Errorf("local: %w", classify(err))
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("local: %s is not a directory: %w", abs, backend.ErrPermanent)
	}
	return &Store{root: abs}, nil
}

// ---- keys and paths ----

// checkKey reports why key has no file in this store, or "".
func checkKey(key string) string {
	switch {
	case key == "":
		return "empty key"
	case len(key) > maxKeyLen:
		return fmt.Sprintf("key is %d bytes, more than %d", len(key), maxKeyLen)
	case strings.IndexByte(key, 0) >= 0:
		return "key contains a NUL byte"
	}
	segs := strings.Split(key, "/")
	for i, seg := range segs {
		switch {
		case seg == "" && i < len(segs)-1:
			return "empty path segment"
		case seg == "." || seg == "..":
			return fmt.Sprintf("path segment %q", seg)
		case len(seg) > maxSegmentLen:
			return fmt.Sprintf("path segment of %d bytes, more than %d", len(seg), maxSegmentLen)
		}
	}
	return ""
}

func invalidKey(op, key, why string) error {
	return fmt.Errorf("local: %s %q: %w (%s): %w", op, key, ErrInvalidKey, why, backend.ErrPermanent)
}

// dirPath returns the directory holding the keys that start with the full
// segments segs.
func (s *Store) dirPath(segs []string) string {
	parts := make([]string, 0, len(segs)+1)
	parts = append(parts, s.root)
	for _, seg := range segs {
		parts = append(parts, seg+dirSuffix)
	}
	return filepath.Join(parts...)
}

// objPath returns the directory and file name of a valid key.
func (s *Store) objPath(key string) (dir, name string) {
	segs := strings.Split(key, "/")
	return s.dirPath(segs[:len(segs)-1]), segs[len(segs)-1] + objSuffix
}

// ---- errors ----

// classify wraps an OS error in the matching backend error class.
func classify(err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
		return fmt.Errorf("%w: %w", err, backend.ErrNotFound)
	case errors.Is(err, fs.ErrPermission):
		return fmt.Errorf("%w: %w", err, backend.ErrAccessDenied)
	case errors.Is(err, syscall.ENAMETOOLONG):
		return fmt.Errorf("%w: %w", err, backend.ErrPermanent)
	}
	return err
}

func ctxErr(ctx context.Context, op, key string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("local: %s %q: %w", op, key, err)
	}
	return nil
}

// ---- object files ----

type header struct {
	ETag  string            `json:"etag"`
	MTime time.Time         `json:"mtime"`
	Meta  map[string]string `json:"meta,omitempty"`
}

func newHeader(meta map[string]string) header {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails (Go 1.24+)
	h := header{ETag: hex.EncodeToString(b[:]), MTime: time.Now().UTC()}
	if len(meta) > 0 {
		h.Meta = make(map[string]string, len(meta))
		for k, v := range meta {
			h.Meta[strings.ToLower(k)] = v
		}
	}
	return h
}

func (h header) encode() ([]byte, error) {
	j, err := json.Marshal(h)
	if err != nil {
		return nil, err
	}
	b := make([]byte, 0, len(magic)+len(j)+1)
	b = append(append(append(b, magic...), j...), '\n')
	if len(b) > maxHeader {
		return nil, fmt.Errorf("metadata too large: header of %d bytes, limit %d: %w", len(b), maxHeader, backend.ErrPermanent)
	}
	return b, nil
}

func (h header) info(key string, size int64, withMeta bool) backend.ObjectInfo {
	oi := backend.ObjectInfo{Key: key, Size: size, ETag: h.ETag, LastModified: h.MTime}
	if withMeta {
		oi.Metadata = make(map[string]string, len(h.Meta))
		for k, v := range h.Meta {
			oi.Metadata[k] = v
		}
	}
	return oi
}

var errCorrupt = fmt.Errorf("not an object file of the local store: %w", backend.ErrPermanent)

// readHeader decodes the header of an open object file and returns it with
// the offset and length of the object bytes.
func readHeader(f *os.File) (h header, off, size int64, err error) {
	fi, err := f.Stat()
	if err != nil {
		return h, 0, 0, err
	}
	var buf []byte
	end := -1
	for n := 4 << 10; end < 0; n *= 4 {
		n = min(n, maxHeader, int(fi.Size()))
		buf = make([]byte, n)
		if _, err := f.ReadAt(buf, 0); err != nil {
			return h, 0, 0, err
		}
		if !bytes.HasPrefix(buf, []byte(magic)) {
			return h, 0, 0, fmt.Errorf("%w: bad magic", errCorrupt)
		}
		end = bytes.IndexByte(buf[len(magic):], '\n')
		if end < 0 && n == min(maxHeader, int(fi.Size())) {
			return h, 0, 0, fmt.Errorf("%w: header not terminated", errCorrupt)
		}
	}
	if err := json.Unmarshal(buf[len(magic):len(magic)+end], &h); err != nil {
		return h, 0, 0, fmt.Errorf("%w: bad header: %v", errCorrupt, err)
	}
	if h.ETag == "" {
		return h, 0, 0, fmt.Errorf("%w: header without an etag", errCorrupt)
	}
	off = int64(len(magic) + end + 1)
	return h, off, fi.Size() - off, nil
}

// openObject opens the file of key and decodes its header.
func (s *Store) openObject(op, key string) (f *os.File, h header, off, size int64, err error) {
	if why := checkKey(key); why != "" {
		return nil, h, 0, 0, invalidKey(op, key, why)
	}
	dir, name := s.objPath(key)
	f, err = os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, h, 0, 0, fmt.Errorf("local: %s %q: %w", op, key, classify(err))
	}
	h, off, size, err = readHeader(f)
	if err != nil {
		f.Close()
		return nil, h, 0, 0, fmt.Errorf("local: %s %q: %w", op, key, err)
	}
	return f, h, off, size, nil
}

// ---- writing ----

var bufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// writeObject atomically replaces key with hdr followed by what fill writes,
// and returns the number of bytes fill wrote. With a condition in cond, the
// current object is checked and replaced under the directory's lock.
func (s *Store) writeObject(ctx context.Context, op, key string, hdr header, cond backend.PutOptions,
	fill func(w io.Writer) (int64, error),
) (int64, error) {
	hb, err := hdr.encode()
	if err != nil {
		return 0, fmt.Errorf("local: %s %q: %w", op, key, err)
	}
	dir, name := s.objPath(key)
	f, err := s.createTemp(dir)
	if err != nil {
		return 0, fmt.Errorf("local: %s %q: %w", op, key, classify(err))
	}
	committed := false
	defer func() {
		if !committed {
			f.Close()
			os.Remove(f.Name())
			s.prune(dir)
		}
	}()
	if _, err := f.Write(hb); err != nil {
		return 0, fmt.Errorf("local: %s %q: %w", op, key, classify(err))
	}
	n, err := fill(f)
	if err != nil {
		return 0, fmt.Errorf("local: %s %q: %w", op, key, err)
	}
	// A cancellation that raced with the last write still aborts.
	if err := ctxErr(ctx, op, key); err != nil {
		return 0, err
	}
	if err := f.Sync(); err != nil {
		return 0, fmt.Errorf("local: %s %q: fsync: %w", op, key, classify(err))
	}
	if err := f.Close(); err != nil {
		return 0, fmt.Errorf("local: %s %q: %w", op, key, classify(err))
	}
	d, err := lockDir(dir)
	if err != nil {
		return 0, fmt.Errorf("local: %s %q: lock directory: %w", op, key, classify(err))
	}
	defer d.Close() // releases the lock
	if err := checkCondition(op, key, filepath.Join(dir, name), cond); err != nil {
		return 0, err
	}
	if err := os.Rename(f.Name(), filepath.Join(dir, name)); err != nil {
		return 0, fmt.Errorf("local: %s %q: %w", op, key, classify(err))
	}
	committed = true
	if err := syncDirFile(d); err != nil {
		return 0, fmt.Errorf("local: %s %q: fsync directory: %w", op, key, classify(err))
	}
	return n, nil
}

// lockDir opens dir and takes an exclusive flock on it. Every change of an
// object file (the rename of a write, the unlink of a delete) happens under
// the lock of its directory, so a conditional write's check of the current
// object and its rename are one atomic step against every other writer, in
// this process (each call opens its own descriptor, and flock locks belong
// to the open file) and in others on the same machine; Linux NFS clients
// map flock to byte-range locks the server arbitrates. The lock is released
// when the returned file is closed. The directory cannot disappear under
// it: a write's temporary file, or a delete's object, is still in it, and
// pruning only removes empty directories.
func lockDir(dir string) (*os.File, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(d.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		d.Close()
		return nil, err
	}
	return d, nil
}

// checkCondition checks a write's condition against the object file at
// path; the caller holds the directory's lock.
func checkCondition(op, key, path string, cond backend.PutOptions) error {
	if !cond.Conditional() {
		return nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		if cond.IfMatch != "" {
			return fmt.Errorf("local: %s %q: the key does not exist (If-Match %q): %w: %w", op, key, cond.IfMatch,
				backend.ErrPreconditionFailed, backend.ErrNotFound)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("local: %s %q: %w", op, key, classify(err))
	}
	defer f.Close()
	if cond.IfNoneMatch != "" {
		return fmt.Errorf("local: %s %q: the key exists (If-None-Match *): %w", op, key, backend.ErrPreconditionFailed)
	}
	h, _, _, err := readHeader(f)
	if err != nil {
		return fmt.Errorf("local: %s %q: %w", op, key, err)
	}
	if h.ETag != cond.IfMatch {
		return fmt.Errorf("local: %s %q: etag %q, want %q: %w", op, key, h.ETag, cond.IfMatch, backend.ErrPreconditionFailed)
	}
	return nil
}

// createTemp creates a temporary file in dir, creating dir first. A
// concurrent Delete may prune a directory between its creation and the
// temporary file's; that is retried, and once the temporary file exists
// the directory is no longer empty and stays.
func (s *Store) createTemp(dir string) (*os.File, error) {
	var err error
	for range 100 {
		if err = s.mkdirs(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		var f *os.File
		if f, err = os.CreateTemp(dir, tmpPattern); err == nil {
			return f, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
	}
	return nil, err
}

// mkdirs creates dir and its missing parents below the root, fsyncing each
// parent that gained an entry.
func (s *Store) mkdirs(dir string) error {
	if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	rel, err := filepath.Rel(s.root, dir)
	if err != nil {
		return err
	}
	cur := s.root
	for _, c := range strings.Split(rel, string(filepath.Separator)) {
		parent := cur
		cur = filepath.Join(cur, c)
		err := os.Mkdir(cur, 0o700)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := syncDir(parent); err != nil {
			return err
		}
	}
	return nil
}

// prune removes dir and its parents below the root while they are empty.
func (s *Store) prune(dir string) {
	for dir != s.root && strings.HasPrefix(dir, s.root) {
		if os.Remove(dir) != nil {
			return
		}
		dir = filepath.Dir(dir)
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = syncDirFile(d)
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// syncDirFile fsyncs an open directory.
func syncDirFile(d *os.File) error {
	err := d.Sync()
	// Some filesystems (certain FUSE and network ones) cannot fsync a
	// directory; the rename is all they offer.
	if errors.Is(err, syscall.EINVAL) || errors.Is(err, syscall.ENOTSUP) {
		return nil
	}
	return err
}

// ---- Store methods ----

// Stat implements backend.Store.
func (s *Store) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	if err := ctxErr(ctx, "stat", key); err != nil {
		return backend.ObjectInfo{}, err
	}
	f, h, _, size, err := s.openObject("stat", key)
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	f.Close()
	return h.info(key, size, true), nil
}

// Get implements backend.Store. The reader reads the file it opened, so a
// concurrent replace does not affect it, and stops with ctx's error once
// ctx is cancelled.
func (s *Store) Get(ctx context.Context, key string, off, length int64, opts backend.GetOptions) (io.ReadCloser, error) {
	if err := ctxErr(ctx, "get", key); err != nil {
		return nil, err
	}
	if off < 0 {
		return nil, fmt.Errorf("local: get %q: negative offset %d: %w", key, off, backend.ErrPermanent)
	}
	f, h, dataOff, size, err := s.openObject("get", key)
	if err != nil {
		return nil, err
	}
	if opts.IfMatch != "" && opts.IfMatch != h.ETag {
		f.Close()
		return nil, fmt.Errorf("local: get %q: etag %q, want %q: %w", key, h.ETag, opts.IfMatch, backend.ErrPreconditionFailed)
	}
	start := min(off, size)
	n := size - start
	if length >= 0 && length < n {
		n = length
	}
	return &fileReader{ctx: ctx, f: f, r: io.NewSectionReader(f, dataOff+start, n)}, nil
}

type fileReader struct {
	ctx context.Context
	f   *os.File
	r   *io.SectionReader
}

func (r *fileReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func (r *fileReader) Close() error { return r.f.Close() }

// Put implements backend.Store. It streams r to a temporary file through a
// fixed buffer, whatever size is. With size >= 0 exactly size bytes are read
// (fewer is an error); with size < 0, r is read to EOF.
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (backend.ObjectInfo, error) {
	return s.PutWith(ctx, key, r, size, backend.PutOptions{Metadata: meta})
}

// PutWith implements backend.Store. A condition is checked under the lock
// of the object's directory, just before the rename that installs the new
// object (see lockDir), so the whole body is written and synced first.
func (s *Store) PutWith(ctx context.Context, key string, r io.Reader, size int64, opts backend.PutOptions) (backend.ObjectInfo, error) {
	if why := checkKey(key); why != "" {
		return backend.ObjectInfo{}, invalidKey("put", key, why)
	}
	if err := backend.CheckPutOptions(opts); err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("local: put %q: %w", key, err)
	}
	if err := ctxErr(ctx, "put", key); err != nil {
		return backend.ObjectInfo{}, err
	}
	hdr := newHeader(opts.Metadata)
	n, err := s.writeObject(ctx, "put", key, hdr, opts, func(w io.Writer) (int64, error) {
		src := io.Reader(&ctxReader{ctx: ctx, r: r})
		if size >= 0 {
			src = io.LimitReader(src, size)
		}
		bp := bufPool.Get().(*[]byte)
		defer bufPool.Put(bp)
		// Hide w's ReadFrom so the copy goes through the pooled buffer.
		n, err := io.CopyBuffer(struct{ io.Writer }{w}, src, *bp)
		if err == nil && size >= 0 && n < size {
			err = fmt.Errorf("short body: %d of %d bytes: %w", n, size, io.ErrUnexpectedEOF)
		}
		return n, err
	})
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	return hdr.info(key, n, true), nil
}

// Copy implements backend.Store. The bytes move with copy_file_range where
// the filesystem offers it (a reflink on XFS and btrfs).
func (s *Store) Copy(ctx context.Context, src, dst string, opts backend.CopyOptions) (backend.ObjectInfo, error) {
	if why := checkKey(dst); why != "" {
		return backend.ObjectInfo{}, invalidKey("copy", dst, why)
	}
	if err := ctxErr(ctx, "copy", src); err != nil {
		return backend.ObjectInfo{}, err
	}
	f, h, dataOff, size, err := s.openObject("copy", src)
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	defer f.Close()
	if opts.IfMatch != "" && opts.IfMatch != h.ETag {
		return backend.ObjectInfo{}, fmt.Errorf("local: copy %q to %q: etag %q, want %q: %w",
			src, dst, h.ETag, opts.IfMatch, backend.ErrPreconditionFailed)
	}
	meta := h.Meta
	if opts.ReplaceMetadata {
		meta = opts.Metadata
	}
	hdr := newHeader(meta)
	n, err := s.writeObject(ctx, "copy", dst, hdr, backend.PutOptions{}, func(w io.Writer) (int64, error) {
		if _, err := f.Seek(dataOff, io.SeekStart); err != nil {
			return 0, err
		}
		var n int64
		for n < size {
			if err := ctx.Err(); err != nil {
				return n, err
			}
			// io.Copy from a LimitedReader over an *os.File lets the
			// runtime use copy_file_range.
			m, err := io.Copy(w, io.LimitReader(f, min(copyChunk, size-n)))
			n += m
			if err != nil {
				return n, err
			}
			if m == 0 {
				return n, fmt.Errorf("source shrank to %d of %d bytes", n, size)
			}
		}
		return n, nil
	})
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	return hdr.info(dst, n, true), nil
}

// Delete implements backend.Store.
func (s *Store) Delete(ctx context.Context, key string) error {
	return s.DeleteMany(ctx, []string{key})
}

// DeleteMany implements backend.Store. It unlinks every file first and then
// fsyncs each directory it touched once.
func (s *Store) DeleteMany(ctx context.Context, keys []string) error {
	var dirs []string // touched directories, each once
	seen := map[string]bool{}
	finish := func() error {
		var first error
		for _, dir := range dirs {
			// A directory may be gone already, pruned by a concurrent
			// delete once empty: then there is nothing left to sync.
			if err := syncDir(dir); err != nil && !errors.Is(err, fs.ErrNotExist) && first == nil {
				first = fmt.Errorf("local: delete: fsync directory: %w", classify(err))
			}
		}
		// Prune only after every sync: pruning one directory can remove
		// another one of the list, its parent.
		for _, dir := range dirs {
			s.prune(dir)
		}
		return first
	}
	for _, key := range keys {
		if err := ctxErr(ctx, "delete", key); err != nil {
			return errors.Join(err, finish())
		}
		if checkKey(key) != "" {
			continue // no such file can exist
		}
		dir, name := s.objPath(key)
		err := removeLocked(dir, name)
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			continue
		}
		if err != nil {
			return errors.Join(fmt.Errorf("local: delete %q: %w", key, classify(err)), finish())
		}
		if !seen[dir] {
			seen[dir] = true
			dirs = append(dirs, dir)
		}
	}
	return finish()
}

// removeLocked unlinks dir/name under the directory's lock, so a delete is
// ordered with conditional writes (one that checked the ETag cannot then
// resurrect the key after the delete). Only one directory is locked at a
// time, so DeleteMany cannot deadlock with anything.
func removeLocked(dir, name string) error {
	d, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return os.Remove(filepath.Join(dir, name))
}

// List implements backend.Store. It walks only the directories that can
// hold keys with the prefix; with a delimiter, a directory that rolls up into
// a common prefix is searched only until its first object is found.
func (s *Store) List(ctx context.Context, prefix, delimiter string, fn backend.ListFunc) error {
	if err := ctxErr(ctx, "list", prefix); err != nil {
		return err
	}
	// Start in the directory of the prefix's complete segments.
	base := prefix[:strings.LastIndexByte(prefix, '/')+1]
	var segs []string
	if base != "" {
		segs = strings.Split(strings.TrimSuffix(base, "/"), "/")
		if checkKey(base) != "" {
			return nil // no key below an invalid path exists
		}
	}
	l := &lister{ctx: ctx, prefix: prefix, delim: delimiter, fn: fn}
	return l.walk(s.dirPath(segs), base)
}

type lister struct {
	ctx           context.Context
	prefix, delim string
	fn            backend.ListFunc
	lastPrefix    string // the last common prefix emitted
}

// dirEntry is a store entry of one directory: an object or a prefix.
type dirEntry struct {
	seg   string
	isDir bool
	sort  string // seg for an object, seg+"/" for a prefix: its keys' order
}

// readDir returns the store entries of dir in the lexical order of the keys
// they hold; a missing directory is empty.
func readDir(dir string) ([]dirEntry, error) {
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	out := make([]dirEntry, 0, len(des))
	for _, de := range des {
		name := de.Name()
		switch {
		case de.Type().IsRegular() && strings.HasSuffix(name, objSuffix):
			seg := strings.TrimSuffix(name, objSuffix)
			out = append(out, dirEntry{seg: seg, sort: seg})
		case de.IsDir() && strings.HasSuffix(name, dirSuffix):
			seg := strings.TrimSuffix(name, dirSuffix)
			out = append(out, dirEntry{seg: seg, isDir: true, sort: seg + "/"})
		}
	}
	slices.SortFunc(out, func(a, b dirEntry) int { return strings.Compare(a.sort, b.sort) })
	return out, nil
}

// walk lists directory dir, whose keys all start with keyPrefix.
func (l *lister) walk(dir, keyPrefix string) error {
	entries, err := readDir(dir)
	if err != nil {
		return fmt.Errorf("local: list %q: %w", l.prefix, classify(err))
	}
	for _, e := range entries {
		if err := ctxErr(l.ctx, "list", l.prefix); err != nil {
			return err
		}
		path := filepath.Join(dir, e.seg+objSuffix)
		key := keyPrefix + e.seg
		if e.isDir {
			path = filepath.Join(dir, e.seg+dirSuffix)
			key += "/"
		}
		below := strings.HasPrefix(key, l.prefix)
		if !below && !(e.isDir && strings.HasPrefix(l.prefix, key)) {
			continue
		}
		// Roll up into a common prefix. For a directory, every key below
		// it starts with key, so the prefix is the same for all of them
		// (the first delimiter after l.prefix lies within key).
		if below && l.delim != "" {
			if i := strings.Index(key[len(l.prefix):], l.delim); i >= 0 {
				cp := key[:len(l.prefix)+i+len(l.delim)]
				if cp == l.lastPrefix {
					continue
				}
				if e.isDir {
					has, err := hasObject(dir, e.seg+dirSuffix)
					if err != nil {
						return fmt.Errorf("local: list %q: %w", l.prefix, classify(err))
					}
					if !has {
						continue
					}
				}
				l.lastPrefix = cp
				if err := l.fn(nil, cp); err != nil {
					return err
				}
				continue
			}
		}
		if e.isDir {
			if err := l.walk(path, key); err != nil {
				return err
			}
			continue
		}
		oi, ok, err := readInfo(path, key)
		if err != nil {
			return fmt.Errorf("local: list %q: %w", l.prefix, err)
		}
		if !ok {
			continue // deleted since the directory was read
		}
		if err := l.fn(&oi, ""); err != nil {
			return err
		}
	}
	return nil
}

// readInfo returns the listing entry of an object file; ok is false if the
// file is gone.
func readInfo(path, key string) (oi backend.ObjectInfo, ok bool, err error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return oi, false, nil
	}
	if err != nil {
		return oi, false, fmt.Errorf("%q: %w", key, classify(err))
	}
	defer f.Close()
	h, _, size, err := readHeader(f)
	if err != nil {
		return oi, false, fmt.Errorf("%q: %w", key, err)
	}
	return h.info(key, size, false), true, nil
}

// hasObject reports whether directory parent/name holds an object at any
// depth; it stops at the first one.
func hasObject(parent, name string) (bool, error) {
	dir := filepath.Join(parent, name)
	d, err := os.Open(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer d.Close()
	var subdirs []string
	for {
		des, err := d.ReadDir(256)
		for _, de := range des {
			n := de.Name()
			if de.Type().IsRegular() && strings.HasSuffix(n, objSuffix) {
				return true, nil
			}
			if de.IsDir() && strings.HasSuffix(n, dirSuffix) {
				subdirs = append(subdirs, n)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return false, err
		}
	}
	for _, sd := range subdirs {
		if has, err := hasObject(dir, sd); has || err != nil {
			return has, err
		}
	}
	return false, nil
}

// ctxReader ends a read with ctx's error once ctx is cancelled.
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
