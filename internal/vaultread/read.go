// Package vaultread reads a vault straight from its store, without a mount:
// what s3cryptfs ls, cat, get and verify do. Every read is bounded in
// memory (a few blocks per request in flight, never a whole object) and
// parallel across ranged GETs, so one large object still streams at the
// store's aggregate speed.
package vaultread

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
	"github.com/s3cryptfs/s3cryptfs/fs/content"
)

// DefaultParallel is how many ranged GETs run at once by default: enough
// to hide S3's per-request latency, few enough to stay friendly to a small
// machine (memory is about this many times ChunkBlocks blocks).
const DefaultParallel = 8

// chunkBlocks is how many sealed blocks one ranged GET of cat and get
// fetches (4 MiB at the default block size): large enough that TLS and
// request overhead is small against the transfer, small enough that
// DefaultParallel of them in memory stay a few tens of MiB.
const chunkBlocks = 64

// objectReaderAt reads one stored object with ranged GETs, each
// conditional on the ETag seen when it was opened: an object replaced
// while it is read fails (ErrPreconditionFailed) instead of mixing blocks
// of two versions, which the per-version keys would reject anyway, but
// with a less helpful message.
type objectReaderAt struct {
	ctx  context.Context
	st   backend.Store
	key  string
	etag string
}

func (r *objectReaderAt) ReadAt(p []byte, off int64) (int, error) {
	rc, err := r.st.Get(r.ctx, r.key, off, int64(len(p)), backend.GetOptions{IfMatch: r.etag})
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	n, err := io.ReadFull(rc, p)
	if err == io.ErrUnexpectedEOF {
		err = io.EOF
	}
	return n, err
}

// Open authenticates the header and final block of the object info
// describes (a file or symlink of the vault; Stat or List fills info) and
// returns a reader of its plaintext. keys nil means the vault stores
// plaintext (--client-encryption=false).
func Open(ctx context.Context, st backend.Store, keys *cipher.Keys, info backend.ObjectInfo) (io.ReaderAt, int64, error) {
	ra := &objectReaderAt{ctx: ctx, st: st, key: info.Key, etag: info.ETag}
	if keys == nil {
		return ra, info.Size, nil
	}
	r, err := cipher.NewReader(ra, info.Size, keys)
	if err != nil {
		return nil, 0, fmt.Errorf("%s: %w", info.Key, err)
	}
	return &blockReader{ra: ra, r: r}, r.Size(), nil
}

// blockReader serves block-aligned reads (every read of Copy) with one
// ranged GET each, decrypting block by block straight from the response
// into p; cipher.Reader, which fetches 16 blocks per request, serves the
// others.
type blockReader struct {
	ra *objectReaderAt
	r  *cipher.Reader
}

func (b *blockReader) ReadAt(p []byte, off int64) (int, error) {
	fk, size := b.r.FileKey(), b.r.Size()
	l := fk.Layout()
	bs := int64(l.BlockSize)
	if off < 0 || off%bs != 0 || off >= size || (int64(len(p))%bs != 0 && off+int64(len(p)) < size) {
		return b.r.ReadAt(p, off)
	}
	n := min(int64(len(p)), size-off)
	cOff, cLen, first, last := l.CipherRange(off, n, size)
	rc, err := b.ra.st.Get(b.ra.ctx, b.ra.key, cOff, cLen, backend.GetOptions{IfMatch: b.ra.etag})
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	final := l.BlockCount(size) - 1
	sealed := make([]byte, l.BlockSize+cipher.BlockOverhead)
	done := 0
	for i := first; i <= last; i++ {
		blk := min(bs, size-l.BlockIndexToPlainOff(i))
		s := sealed[:blk+cipher.BlockOverhead]
		if _, err := io.ReadFull(rc, s); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return done, fmt.Errorf("%s: block %d: %w", b.ra.key, i, err)
		}
		if _, err := fk.Open(p[done:done], s, i, i == final); err != nil {
			return done, err
		}
		done += int(blk)
	}
	if int64(done) < int64(len(p)) {
		return done, io.EOF
	}
	return done, nil
}

// Copy writes size bytes of r to w in order, reading chunks of chunk
// bytes with up to par reads in flight (memory: about par+2 chunks).
func Copy(ctx context.Context, w io.Writer, r io.ReaderAt, size, chunk int64, par int) error {
	if par < 1 {
		par = 1
	}
	type result struct {
		buf []byte
		err error
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bufs := sync.Pool{New: func() any { b := make([]byte, chunk); return &b }}
	// pending holds the result channels in file order; its capacity bounds
	// the reads in flight and the chunks waiting to be written.
	pending := make(chan chan result, par)
	go func() {
		defer close(pending)
		for off := int64(0); off < size; off += chunk {
			ch := make(chan result, 1)
			select {
			case pending <- ch:
			case <-ctx.Done():
				return
			}
			go func(off int64) {
				bp := bufs.Get().(*[]byte)
				b := (*bp)[:min(chunk, size-off)]
				n, err := r.ReadAt(b, off)
				if n == len(b) && err == io.EOF {
					err = nil
				} else if err == nil && n < len(b) {
					err = io.ErrUnexpectedEOF
				}
				ch <- result{b, err}
			}(off)
		}
	}()
	var werr error
	for ch := range pending {
		res := <-ch
		if werr == nil && res.err != nil {
			werr = res.err
			cancel()
		}
		if werr == nil {
			if _, err := w.Write(res.buf); err != nil {
				werr = err
				cancel()
			}
		}
		b := res.buf[:cap(res.buf)]
		bufs.Put(&b)
	}
	return werr
}

// streamRead is the size of Stream's reads from the engine and writes to
// its writer: large enough that per-call costs vanish, small against the
// readahead window, so that writing overlaps fetching.
const streamRead = 1 << 20

// Stream writes the plaintext of the file info describes (a file or
// symlink of the vault, from Stat) to w, in order: what cat does. It reads
// through the mount's own content engine (package fs/content) with one
// handle reading sequentially, so its readahead does the fetching: ranged
// GETs of up to 8 MiB, 4 in flight, ahead of the writer by up to readahead
// bytes (0: the engine's default window, 32 MiB), every block
// authenticated before it is handed over. Memory is bounded by the
// engine's readahead budget (the window plus the GETs in flight), whatever
// the file's size. A block that does not authenticate ends the stream with
// an error wrapping cipher.ErrCorrupt, naming the object and the block;
// what came before it has been written. keys nil means a plaintext vault.
func Stream(ctx context.Context, w io.Writer, st backend.Store, keys *cipher.Keys, info backend.ObjectInfo, readahead int64) error {
	e, err := content.New(content.Options{Store: st, Keys: keys, Readahead: readahead,
		// Errors come back from ReadAt, naming the object and block;
		// the engine's own log lines are for a mount's log file.
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer e.Close()
	f, err := e.Open(ctx, info)
	if err != nil {
		return err
	}
	h := f.NewHandle()
	defer h.Close()
	size := f.Size()
	buf := make([]byte, min(streamRead, size))
	for off := int64(0); off < size; {
		n, err := h.ReadAt(ctx, buf[:min(int64(len(buf)), size-off)], off)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return werr
			}
			off += int64(n)
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return fmt.Errorf("%s: %w at %d of %d bytes", info.Key, io.ErrUnexpectedEOF, off, size)
		}
	}
	return nil
}

// ChunkSize is the plaintext bytes one ranged GET of Copy should cover for
// a vault of these keys (nil: plaintext).
func ChunkSize(keys *cipher.Keys) int64 {
	if keys == nil {
		return chunkBlocks * cipher.DefaultBlockSize
	}
	return chunkBlocks * int64(keys.Layout().BlockSize)
}

// Entry is one name of the tree.
type Entry struct {
	Path string // relative to the vault root, no trailing slash; "" is the root
	Attr fs.ObjectAttr
	Size int64 // plaintext size of files and symlinks
	// Info is the stored object: a file, a symlink or a directory marker;
	// Key is empty for a directory without a marker.
	Info backend.ObjectInfo
	// SizeErr is set when the object's size fits no layout of the vault.
	SizeErr error
}

// ErrNotFound: no file, symlink or directory at the path.
var ErrNotFound = errors.New("no such file or directory")

// reservedRoot reports whether name at the root is one of the vault's own
// objects, which a mount hides.
func reservedRoot(dirPrefix, name string) bool {
	return dirPrefix == "" && (name == fs.ConfigKey || name == fs.IndexRoot)
}

// CleanPath turns a user's PATH ("/a/b/", "a//b", ".") into the key form
// "a/b" ("" for the root), refusing ".." and the vault's reserved names.
func CleanPath(p string) (string, error) {
	var parts []string
	for _, s := range strings.Split(p, "/") {
		switch s {
		case "", ".":
			continue
		case "..":
			return "", fmt.Errorf("path %q: '..' is not allowed", p)
		}
		parts = append(parts, s)
	}
	if len(parts) > 0 && reservedRoot("", parts[0]) {
		return "", fmt.Errorf("path %q: %s is the vault's own and not part of the tree", p, parts[0])
	}
	return strings.Join(parts, "/"), nil
}
