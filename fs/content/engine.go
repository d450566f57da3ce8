// Package content is the engine of file contents: it maps plaintext reads and
// writes of one file onto the one object that stores it, through the cipher
// (fixed-size sealed blocks), the block cache and the object store.
//
// The filesystem tree (package fs) owns names, inodes and handles; this
// package owns bytes. An Engine serves a mount; a File is the content state
// of one inode, shared by all its open handles; a Handle adds per-handle
// sequential detection and readahead.
//
// Plaintext never reaches local disk: dirty blocks stay in memory up to
// Options.MaxDirty and beyond that go to a spool file sealed with an
// ephemeral key that exists only in this process; Options.DiskCache keeps
// blocks read from the store sealed, exactly as stored, and every block
// taken from it is authenticated like one from the store (a bad one is
// logged, removed and fetched again).
package content

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cache/disk"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// Defaults for the zero Options fields.
const (
	DefaultMaxDirty  = 256 << 20
	DefaultReadahead = 32 << 20

	// plainBlockSize is the caching unit when client-side encryption is off.
	plainBlockSize = cipher.DefaultBlockSize

	minReadahead      = 256 << 10 // first readahead window of a sequential reader
	minReadaheadChunk = 1 << 20   // bytes per readahead GET, at least ...
	maxReadaheadChunk = 8 << 20   // ... and at most (window/4 in between)
	readaheadPar      = 4         // readahead GETs in flight per handle
	maxResealRange    = 64 << 20  // bytes per GET when a rewrite re-encrypts untouched blocks

	// streamReplay is how much of a streaming upload stays in dirty (memory,
	// or the spool under memory pressure) so that a failed upload can be
	// redone by a later Sync. Past it, blocks handed to the upload are
	// dropped: a sequential write of any size holds at most this much plus
	// the store's part buffers, and seals every block once (it used to seal
	// each block a second time into the spool, which grew to the file size).
	// A failure beyond it loses the file (Sync: EIO); backend/s3 retries
	// every part before it fails an upload.
	streamReplay = 16 << 20
)

// Options configure an Engine.
type Options struct {
	Store backend.Store
	Keys  *cipher.Keys // nil: no client-side encryption (object bytes are the plaintext)
	Cache *cache.Cache // nil: no block cache
	// DiskCache keeps sealed blocks, as the store holds them, on local disk
	// across mounts (nil: none). Needs Keys: blocks read from it are
	// authenticated like those from the store, and a block that fails is
	// removed and fetched again. The engine does not close it.
	DiskCache *disk.Cache
	MaxDirty  int64        // plaintext bytes of dirty data held in memory per mount before spilling; 0 = DefaultMaxDirty
	SpoolDir  string       // where encrypted spool files go; "" = os.TempDir()
	Readahead int64        // max readahead window per handle; 0 = DefaultReadahead, < 0 = off
	Logger    *slog.Logger // nil: slog.Default()
	// StreamKeepsMeta names user metadata keys that a finished streamed
	// upload does not update. A streamed upload fixes its metadata when it
	// starts; if, at Sync, the metadata asked for differs from that only
	// in these keys, the stored values are kept (and returned in the
	// ObjectInfo) instead of paying a server-side copy of the whole object.
	// The filesystem names mtime here: a file written in one sequential
	// pass keeps the mtime of when its upload began.
	StreamKeepsMeta []string
}

// Engine maps file contents to objects for one mount. Safe for concurrent use.
type Engine struct {
	store     backend.Store
	keys      *cipher.Keys
	cache     *cache.Cache
	disk      *disk.Cache
	log       *slog.Logger
	maxDirty  int64
	readahead int64
	keepMeta  []string // Options.StreamKeepsMeta

	// Object layout: header bytes, then blocks of bs plaintext bytes, each
	// overhead bytes longer once sealed. Plaintext mode: 0, bs, 0.
	hdr, bs, overhead int64

	streamReplay int64 // the streamReplay constant; tests lower it

	spool    *spool
	memDirty atomic.Int64 // bytes of dirty blocks held in memory, all files

	// raMem counts the plaintext bytes readahead holds, all handles: blocks
	// claimed by a readahead GET (in flight) or parked in a File's ready
	// set, one block size each. It never exceeds raMax (see readaheadMem).
	raMem atomic.Int64
	raMax int64

	ctx    context.Context // background work (streaming uploads); cancelled by Close
	cancel context.CancelFunc

	corruptLogged sync.Map // "key\x00etag\x00block" -> struct{}: log each corruption once

	blockBufs sync.Pool // *[]byte of cap bs: dirty block buffers, reused after spill or drop
	// sealedBufs: *[]byte, what a block read from the disk cache is read
	// into before it is opened.
	sealedBufs sync.Pool
}

// getBlockBuf returns an empty buffer of capacity bs. Its bytes past len are
// garbage: dirty blocks never expose bytes past their length.
func (e *Engine) getBlockBuf() []byte {
	if p, ok := e.blockBufs.Get().(*[]byte); ok {
		return (*p)[:0]
	}
	return make([]byte, 0, e.bs)
}

// putBlockBuf recycles a dirty block buffer nobody references any more.
func (e *Engine) putBlockBuf(b []byte) {
	if int64(cap(b)) == e.bs {
		e.blockBufs.Put(&b)
	}
}

// New returns an engine over opts.Store.
func New(opts Options) (*Engine, error) {
	if opts.Store == nil {
		return nil, errors.New("content: no store")
	}
	if opts.DiskCache != nil && opts.Keys == nil {
		// Without client-side encryption a cached block would be plaintext
		// on disk, and nothing could tell a tampered one.
		return nil, errors.New("content: a disk cache needs client-side encryption")
	}
	e := &Engine{
		store:     opts.Store,
		keys:      opts.Keys,
		cache:     opts.Cache,
		disk:      opts.DiskCache,
		log:       opts.Logger,
		maxDirty:  opts.MaxDirty,
		readahead: opts.Readahead,
		keepMeta:  slices.Clone(opts.StreamKeepsMeta),
		bs:        plainBlockSize,
	}
	if e.log == nil {
		e.log = slog.Default()
	}
	if e.maxDirty <= 0 {
		e.maxDirty = DefaultMaxDirty
	}
	if e.readahead == 0 {
		e.readahead = DefaultReadahead
	}
	if e.keys != nil {
		l := e.keys.Layout()
		e.hdr, e.bs, e.overhead = int64(l.HeaderSize), int64(l.BlockSize), cipher.BlockOverhead
	}
	e.raMax = e.readaheadMem()
	e.streamReplay = streamReplay
	e.spool = newSpool(opts.SpoolDir, int(e.bs))
	e.ctx, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// readaheadChunk is the size of one readahead GET for a window of w bytes:
// a quarter of it, within [1 MiB, 8 MiB]. Small windows (a reader that just
// started) get their first bytes soon; a full window gets few requests,
// each long enough that its latency (a few ms on MinIO, tens on S3) is
// amortised, like the SDK's ranged-GET downloads (8-16 MiB parts). The
// size matters on the store's side too: MinIO spends 1.3 CPU-s per GiB
// served in 8 MiB ranges, 1.9 in 4 MiB ones at our block offsets (1.5
// aligned) and 3.0 in 1 MiB ones (measured next to the mount on 2 cores;
// see docs/PERFORMANCE.md).
func readaheadChunk(w int64) int64 {
	return min(max(w/4, minReadaheadChunk), maxReadaheadChunk)
}

// readaheadMem is the engine-wide bound on what readahead holds (raMax):
// one full window plus readaheadPar GETs in flight (64 MiB with the default
// 32 MiB window), whatever the number of handles and files. Handles share
// it: when it is used up, readahead waits and readers fetch on demand.
// Counted in block sizes of plaintext; each GET in flight also holds one
// sealed block of transient buffer.
func (e *Engine) readaheadMem() int64 {
	if e.readahead <= 0 {
		return 0
	}
	return e.readahead + readaheadPar*readaheadChunk(e.readahead)
}

// raAcquire reserves up to n blocks of readahead memory and returns how
// many it got.
func (e *Engine) raAcquire(n int) int {
	for {
		cur := e.raMem.Load()
		k := min(int64(n), (e.raMax-cur)/e.bs)
		if k <= 0 {
			return 0
		}
		if e.raMem.CompareAndSwap(cur, cur+k*e.bs) {
			return int(k)
		}
	}
}

// raRelease returns n blocks of readahead memory.
func (e *Engine) raRelease(n int) {
	if n > 0 {
		e.raMem.Add(-int64(n) * e.bs)
	}
}

// Close stops background uploads (an unsynced streaming upload is aborted:
// the filesystem syncs every file before unmounting) and releases the spool.
func (e *Engine) Close() error {
	e.cancel()
	return e.spool.close()
}

// PlainSize returns the plaintext size of a file stored in an object of
// objectSize bytes, for listings. An impossible size wraps cipher.ErrCorrupt,
// one over maxObjectSize ErrFileTooBig.
func (e *Engine) PlainSize(objectSize int64) (int64, error) {
	if objectSize > maxObjectSize {
		return 0, fmt.Errorf("content: object of %d bytes is larger than the %d this filesystem can address: %w",
			objectSize, int64(maxObjectSize), ErrFileTooBig)
	}
	if e.keys == nil {
		if objectSize < 0 {
			return 0, fmt.Errorf("content: negative object size %d: %w", objectSize, cipher.ErrCorrupt)
		}
		return objectSize, nil
	}
	n, err := e.keys.Layout().CipherSizeToPlainSize(objectSize)
	if err != nil {
		return 0, fmt.Errorf("content: %w", err)
	}
	return n, nil
}

// ObjectSize returns the size of the object that stores plainSize bytes.
func (e *Engine) ObjectSize(plainSize int64) int64 {
	return e.hdr + plainSize + int64(e.blockCount(plainSize))*e.overhead
}

// blockCount is the number of blocks of a file of size bytes: at least one,
// since an empty encrypted file still has one empty final block.
func (e *Engine) blockCount(size int64) uint64 {
	if size <= 0 {
		return 1
	}
	return uint64((size + e.bs - 1) / e.bs)
}

// blockLen is the plaintext length of block i in a file of size bytes.
func (e *Engine) blockLen(i uint64, size int64) int {
	return int(max(0, min(e.bs, size-int64(i)*e.bs)))
}

// blockOff is where sealed block i starts in the object.
func (e *Engine) blockOff(i uint64) int64 {
	return e.hdr + int64(i)*(e.bs+e.overhead)
}

// codec is the one place where encrypted and plaintext objects differ: how a
// file is identified in the cache, what precedes block 0, and how a block is
// sealed and opened. Everything else (offsets, dirty blocks, uploads) is
// shared code.
type codec interface {
	cacheID() string
	header() []byte
	seal(dst, plain []byte, i uint64, final bool) []byte
	open(dst, sealed []byte, i uint64, final bool) ([]byte, error)
}

type cryptCodec struct {
	fk *cipher.FileKey
	id string
	// diskID names the version in the disk cache: its header, which has a
	// random salt (and file id) per stored version from header version 2
	// on. Version-1 headers stayed the same across a file's rewrites, so
	// diskObject adds the ETag for them.
	diskID string
}

func (c *cryptCodec) cacheID() string { return c.id }
func (c *cryptCodec) header() []byte  { return c.fk.Header() }
func (c *cryptCodec) seal(dst, plain []byte, i uint64, final bool) []byte {
	return c.fk.Seal(dst, plain, i, final)
}
func (c *cryptCodec) open(dst, sealed []byte, i uint64, final bool) ([]byte, error) {
	return c.fk.Open(dst, sealed, i, final)
}

// plainCodec: the object bytes are the plaintext. Files are identified by
// their object key at open; the ETag in the cache key keeps versions apart.
type plainCodec struct{ id string }

func (c plainCodec) cacheID() string { return c.id }
func (c plainCodec) header() []byte  { return nil }
func (c plainCodec) seal(dst, plain []byte, _ uint64, _ bool) []byte {
	return append(dst, plain...)
}
func (c plainCodec) open(dst, sealed []byte, _ uint64, _ bool) ([]byte, error) {
	return append(dst, sealed...), nil
}

func (e *Engine) newCodec(key string) (codec, error) {
	if e.keys == nil {
		return plainCodec{id: "p:" + key}, nil
	}
	fk, err := e.keys.NewFile()
	if err != nil {
		return nil, fmt.Errorf("content: new file key: %w", err)
	}
	return newCryptCodec(fk), nil
}

func newCryptCodec(fk *cipher.FileKey) *cryptCodec {
	id := fk.ID()
	return &cryptCodec{fk: fk, id: "c:" + hex.EncodeToString(id[:]), diskID: string(fk.Header())}
}

// diskObject is the identity of version v in the disk cache ("" without a
// disk cache or a header).
func (e *Engine) diskObject(v version) string {
	c, ok := v.codec.(*cryptCodec)
	if e.disk == nil || !ok {
		return ""
	}
	if c.fk.Version() == 1 {
		return c.diskID + "\x00" + v.content
	}
	return c.diskID
}

// logCorrupt logs a corruption once per object version and block.
func (e *Engine) logCorrupt(key, etag string, block int64, err error) {
	if _, dup := e.corruptLogged.LoadOrStore(fmt.Sprintf("%s\x00%s\x00%d", key, etag, block), struct{}{}); dup {
		return
	}
	if block < 0 {
		e.log.Error("corrupt header", "key", key, "etag", etag, "err", err)
		return
	}
	e.log.Error("corrupt block", "key", key, "block", block, "etag", etag, "err", err)
}
