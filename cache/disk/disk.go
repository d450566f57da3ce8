// Package disk keeps opaque blocks (the sealed blocks of objects, exactly as
// the store holds them) in a local directory that outlives the process,
// bounded in bytes, evicted least recently used.
//
// It knows nothing about ciphers, files or stores: a block is named by an
// object identity the caller chooses and a block index, and it is returned
// exactly as it was handed in, or as a crash, a full disk or anyone who can
// write the directory left it. Callers must authenticate what Get returns
// (the content engine opens it with the object's data key, as it would a
// block fetched from the store) and Remove an entry that fails.
//
// On disk (docs/CONFIGURATION.md, "Disk cache"):
//
//	DIR/lock                 flock(2)ed by the process that has the cache open; holds its pid
//	DIR/blocks/XX/NAME       one block: the bytes Put was given, nothing else
//	DIR/tmp/                 entries being written (emptied at Open)
//
// NAME is the hex of HMAC-SHA256(Options.NameKey, identity || block index)
// cut to 16 bytes, XX its first byte: the directory lists neither object
// identities nor which blocks belong to one object. Each file's mtime is
// when it was written or last read (updated at most every touchEvery), which
// orders the entries for eviction after a restart.
//
// Memory: the index holds one small entry per cached block (about 100 bytes),
// never block bytes; writes are queued up to Options.QueueBytes and dropped
// beyond that. Nothing here ever makes a read fail: an entry that cannot be
// read is a miss, one that cannot be written is skipped (and logged).
package disk

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultQueueBytes bounds the bytes of Puts waiting to be written.
const DefaultQueueBytes = 64 << 20

// touchEvery: a hit updates the entry's mtime on disk (its place in the
// eviction order after a restart) only if the last update is older.
const touchEvery = time.Minute

// nameSize is the bytes of HMAC kept in a file name.
const nameSize = 16

// ErrLocked: another process has the cache directory open.
var ErrLocked = errors.New("disk cache directory in use")

// Options configure a Cache.
type Options struct {
	Dir      string
	MaxBytes int64  // bytes on disk (allocated, as du counts them) the entries may take
	NameKey  []byte // HMAC key of the file names (at least 16 bytes)
	// QueueBytes bounds Puts not yet written; 0 = DefaultQueueBytes.
	QueueBytes int64
	Logger     *slog.Logger // nil: slog.Default()
}

// Key names one cached block.
type Key struct {
	Object string // the object's identity, as the caller defines it
	Block  uint64
}

type name [nameSize]byte

// entry is one cached block in the index (a doubly linked LRU list, most
// recent at head).
type entry struct {
	name       name
	size       int64 // bytes on disk
	touched    int64 // unix seconds of the mtime on disk
	prev, next *entry
}

// Stats are counters since Open.
type Stats struct {
	Hits, Misses       uint64
	Writes, Dropped    uint64 // entries written; Puts dropped (queue full, disk full, error)
	Evictions, Removed uint64 // evicted for the cap; removed by the caller (bad entries)
	Errors             uint64 // write or read errors other than a missing entry
	Entries            int64
	Bytes              int64 // bytes on disk of the entries
}

// Cache is an open disk cache; safe for concurrent use.
type Cache struct {
	dir, blocks, tmp string
	max              int64
	log              *slog.Logger
	lock             *os.File

	hpool sync.Pool // hash.Hash (HMAC under the name key)

	mu         sync.Mutex
	index      map[name]*entry
	head, tail *entry
	bytes      int64
	limit      int64 // max, lowered after the disk filled up

	qmu        sync.RWMutex // closed and sends on queue vs. its close
	queue      chan op
	queued     atomic.Int64
	maxQueue   int64
	done       chan struct{}
	closeOnce  sync.Once
	fullLogged atomic.Bool
	errLogged  atomic.Bool
	closed     bool // guarded by qmu

	hits, misses, writes, dropped, evictions, removed, errs atomic.Uint64
}

type op struct {
	name  name
	data  []byte // nil: touch
	flush chan struct{}
}

// Open opens (creating it, mode 0700) the cache directory, locks it against
// other processes (ErrLocked, naming the holder's pid) and indexes the
// entries already there, evicting the oldest beyond MaxBytes.
func Open(opts Options) (*Cache, error) {
	if opts.Dir == "" {
		return nil, errors.New("disk cache: no directory")
	}
	if opts.MaxBytes <= 0 {
		return nil, errors.New("disk cache: size must be positive")
	}
	if len(opts.NameKey) < 16 {
		return nil, errors.New("disk cache: name key too short")
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("disk cache: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("disk cache: %s is not a directory", dir)
	}
	if uid := st.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
		return nil, fmt.Errorf("disk cache: %s belongs to uid %d, not to this user; give a directory of your own", dir, uid)
	}
	c := &Cache{
		dir: dir, blocks: filepath.Join(dir, "blocks"), tmp: filepath.Join(dir, "tmp"),
		max: opts.MaxBytes, limit: opts.MaxBytes, log: opts.Logger,
		index: make(map[name]*entry), maxQueue: opts.QueueBytes,
		done: make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.maxQueue <= 0 {
		c.maxQueue = DefaultQueueBytes
	}
	key := append([]byte(nil), opts.NameKey...)
	c.hpool.New = func() any { return hmac.New(sha256.New, key) }
	if err := c.lockDir(); err != nil {
		return nil, err
	}
	if err := c.scan(); err != nil {
		c.lock.Close()
		return nil, err
	}
	// Enough slots that the byte bound, not the channel, limits the queue.
	c.queue = make(chan op, 4096)
	go c.writer()
	return c, nil
}

// lockDir takes an exclusive flock on DIR/lock, held until Close (or the
// process's end: a crashed mount leaves no stale lock).
func (c *Cache) lockDir() error {
	p := filepath.Join(c.dir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("disk cache: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		b, _ := io.ReadAll(io.LimitReader(f, 32))
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			holder := strings.TrimSpace(string(b))
			if holder == "" {
				holder = "unknown"
			}
			return fmt.Errorf("disk cache directory %s is in use by another s3cryptfs mount (pid %s); each mount needs a --disk-cache directory of its own: %w", c.dir, holder, ErrLocked)
		}
		return fmt.Errorf("disk cache: lock %s: %w", p, err)
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	c.lock = f
	return nil
}

// scan empties tmp/, creates blocks/XX/ and indexes every entry, ordered by
// mtime (oldest evicted first).
func (c *Cache) scan() error {
	os.RemoveAll(c.tmp)
	if err := os.MkdirAll(c.tmp, 0o700); err != nil {
		return fmt.Errorf("disk cache: %w", err)
	}
	var found []*entry
	for i := 0; i < 256; i++ {
		sub := filepath.Join(c.blocks, fmt.Sprintf("%02x", i))
		if err := os.MkdirAll(sub, 0o700); err != nil {
			return fmt.Errorf("disk cache: %w", err)
		}
		des, err := os.ReadDir(sub)
		if err != nil {
			return fmt.Errorf("disk cache: %w", err)
		}
		for _, de := range des {
			var n name
			if b, err := hex.DecodeString(de.Name()); err != nil || len(b) != nameSize || b[0] != byte(i) || !de.Type().IsRegular() {
				continue // not ours: left alone
			} else {
				copy(n[:], b)
			}
			info, err := de.Info()
			if err != nil {
				continue
			}
			found = append(found, &entry{name: n, size: diskSize(info), touched: info.ModTime().Unix()})
		}
	}
	sort.Slice(found, func(a, b int) bool { return found[a].touched < found[b].touched })
	for _, e := range found { // oldest first: each goes to the head
		c.index[e.name] = e
		c.pushFront(e)
		c.bytes += e.size
	}
	c.evictLocked()
	return nil
}

// diskSize is what an entry takes on disk (st_blocks, as du counts),
// at least its length rounded up to 4 KiB.
func diskSize(info fs.FileInfo) int64 {
	n := (info.Size() + 4095) &^ 4095
	if st, ok := info.Sys().(*syscall.Stat_t); ok {
		n = max(n, st.Blocks*512)
	}
	return n
}

func (c *Cache) nameOf(k Key) name {
	h := c.hpool.Get().(hash.Hash)
	h.Reset()
	var b [binary.MaxVarintLen64]byte
	h.Write(b[:binary.PutUvarint(b[:], uint64(len(k.Object)))])
	h.Write([]byte(k.Object))
	var blk [8]byte
	binary.BigEndian.PutUint64(blk[:], k.Block)
	h.Write(blk[:])
	var sum [sha256.Size]byte
	var n name
	copy(n[:], h.Sum(sum[:0]))
	c.hpool.Put(h)
	return n
}

func (c *Cache) path(n name) string {
	s := hex.EncodeToString(n[:])
	return filepath.Join(c.blocks, s[:2], s)
}

// Has reports whether k is indexed (without reading it or counting a hit).
func (c *Cache) Has(k Key) bool {
	if c == nil {
		return false
	}
	n := c.nameOf(k)
	c.mu.Lock()
	_, ok := c.index[n]
	c.mu.Unlock()
	return ok
}

// Get returns the bytes stored under k (appended to dst[:0]), as they are on
// disk: the caller authenticates them. A missing or unreadable entry is a
// miss.
func (c *Cache) Get(k Key, dst []byte) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	n := c.nameOf(k)
	c.mu.Lock()
	e, ok := c.index[n]
	touch := false
	if ok {
		c.moveFront(e)
		if now := time.Now().Unix(); now-e.touched >= int64(touchEvery/time.Second) {
			e.touched, touch = now, true
		}
	}
	c.mu.Unlock()
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	b, err := readFile(c.path(n), dst[:0])
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			// Deleted behind our back: forget it.
			c.mu.Lock()
			if c.index[n] == e {
				c.unlinkLocked(e)
			}
			c.mu.Unlock()
		} else {
			c.errs.Add(1)
			c.log.Warn("disk cache: read failed; fetching from the store", "err", err)
		}
		c.misses.Add(1)
		return nil, false
	}
	if touch {
		c.enqueue(op{name: n}, 0)
	}
	c.hits.Add(1)
	return b, true
}

func readFile(p string, dst []byte) ([]byte, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := int(st.Size())
	if cap(dst) < size {
		dst = make([]byte, size)
	}
	dst = dst[:size]
	if _, err := io.ReadFull(f, dst); err != nil {
		return nil, err
	}
	return dst, nil
}

// Put stores data under k in the background and takes ownership of it. It
// never blocks: when the queue holds QueueBytes already, the block is not
// cached.
func (c *Cache) Put(k Key, data []byte) {
	if c == nil {
		return
	}
	if data == nil {
		data = []byte{}
	}
	c.enqueue(op{name: c.nameOf(k), data: data}, int64(len(data)))
}

func (c *Cache) enqueue(o op, n int64) {
	c.qmu.RLock()
	defer c.qmu.RUnlock()
	if c.closed {
		return
	}
	if c.queued.Add(n) > c.maxQueue && n > 0 {
		c.queued.Add(-n)
		c.dropped.Add(1)
		return
	}
	select {
	case c.queue <- o:
	default:
		c.queued.Add(-n)
		if n > 0 {
			c.dropped.Add(1)
		}
	}
}

// Remove deletes k's entry (one that failed authentication), at once.
func (c *Cache) Remove(k Key) {
	if c == nil {
		return
	}
	n := c.nameOf(k)
	c.mu.Lock()
	e, ok := c.index[n]
	if ok {
		c.unlinkLocked(e)
	}
	c.mu.Unlock()
	if ok {
		c.removed.Add(1)
	}
	os.Remove(c.path(n))
}

// Flush waits until every Put made before it is written (or dropped).
func (c *Cache) Flush() {
	if c == nil {
		return
	}
	c.qmu.RLock()
	if c.closed {
		c.qmu.RUnlock()
		return
	}
	ch := make(chan struct{})
	c.queue <- op{flush: ch}
	c.qmu.RUnlock()
	<-ch
}

// Close writes what is queued, then releases the directory's lock.
func (c *Cache) Close() error {
	if c == nil {
		return nil
	}
	c.closeOnce.Do(func() {
		c.qmu.Lock()
		c.closed = true
		close(c.queue)
		c.qmu.Unlock()
		<-c.done
		c.lock.Close()
	})
	return nil
}

// Stats returns the counters since Open.
func (c *Cache) Stats() Stats {
	if c == nil {
		return Stats{}
	}
	c.mu.Lock()
	entries, bytes := int64(len(c.index)), c.bytes
	c.mu.Unlock()
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(),
		Writes: c.writes.Load(), Dropped: c.dropped.Load(),
		Evictions: c.evictions.Load(), Removed: c.removed.Load(),
		Errors: c.errs.Load(), Entries: entries, Bytes: bytes,
	}
}

// MaxBytes is the size cap.
func (c *Cache) MaxBytes() int64 { return c.max }

// writer applies queued operations, one at a time.
func (c *Cache) writer() {
	defer close(c.done)
	for o := range c.queue {
		switch {
		case o.flush != nil:
			close(o.flush)
		case o.data == nil:
			now := time.Now()
			os.Chtimes(c.path(o.name), now, now)
		default:
			c.write(o.name, o.data)
			c.queued.Add(-int64(len(o.data)))
		}
	}
}

// write stores one entry: a temporary file renamed into place, so a reader
// sees the old entry or the new one. Not synced: a crash may leave a torn
// entry, which fails authentication and is fetched again.
func (c *Cache) write(n name, data []byte) {
	size, err := c.writeFile(n, data)
	if err != nil {
		c.dropped.Add(1)
		if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			// Keep what fits: shrink the cap to what the disk holds now
			// (less a margin) until the next Open.
			c.mu.Lock()
			c.limit = max(min(c.limit, c.bytes-c.bytes/10), 0)
			c.evictLocked()
			limit := c.limit
			c.mu.Unlock()
			if !c.fullLogged.Swap(true) {
				c.log.Warn("disk cache: disk full; the cache shrinks to what fits (reads go to the store)", "dir", c.dir, "bytes", limit)
			}
			return
		}
		c.errs.Add(1)
		if !c.errLogged.Swap(true) {
			c.log.Warn("disk cache: write failed; blocks are not cached (reads are not affected)", "dir", c.dir, "err", err)
		}
		return
	}
	c.writes.Add(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.index[n]; ok {
		c.unlinkLocked(old)
	}
	e := &entry{name: n, size: size, touched: time.Now().Unix()}
	c.index[n] = e
	c.pushFront(e)
	c.bytes += size
	c.evictLocked()
}

func (c *Cache) writeFile(n name, data []byte) (int64, error) {
	f, err := os.CreateTemp(c.tmp, "w")
	if err != nil {
		return 0, err
	}
	_, err = f.Write(data)
	var info fs.FileInfo
	if err == nil {
		info, err = f.Stat()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), c.path(n))
	}
	if err != nil {
		os.Remove(f.Name())
		return 0, err
	}
	return diskSize(info), nil
}

// evictLocked removes least recently used entries until the cache is
// within its limit. c.mu held.
func (c *Cache) evictLocked() {
	for c.bytes > c.limit && c.tail != nil {
		e := c.tail
		c.unlinkLocked(e)
		os.Remove(c.path(e.name))
		c.evictions.Add(1)
	}
}

func (c *Cache) unlinkLocked(e *entry) {
	delete(c.index, e.name)
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		c.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	e.prev, e.next = nil, nil
	c.bytes -= e.size
}

func (c *Cache) pushFront(e *entry) {
	e.prev, e.next = nil, c.head
	if c.head != nil {
		c.head.prev = e
	}
	c.head = e
	if c.tail == nil {
		c.tail = e
	}
}

func (c *Cache) moveFront(e *entry) {
	if c.head == e {
		return
	}
	// unlink without touching the index or the byte count
	e.prev.next = e.next
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		c.tail = e.prev
	}
	c.pushFront(e)
}
