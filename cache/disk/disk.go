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
//	DIR/lock            flock(2)ed by the process that has the cache open; holds its pid
//	DIR/seg/XX/NAME     one segment: SegmentBlocks consecutive blocks of one object
//
// A segment file starts with a 4 KiB header page (magic "S3CFDC01", the
// slot stride and, per slot, the length of the block held there, 0 for
// none), then the slots, each at a multiple of the stride (the largest
// entry rounded up to 4 KiB), written in place with pwrite: the file is
// sparse, and its allocated size is exactly the header page plus each
// present block rounded up to 4 KiB. NAME is the hex of
// HMAC-SHA256(Options.NameKey, identity || segment index) cut to 16 bytes,
// XX its first byte: the directory lists neither object identities nor
// which segments belong to one object. A segment's mtime is when it was
// last written or read (reads update it at most once a minute), which
// orders segments for eviction after a restart.
//
// One file per block would be simpler, but creating a file costs about
// 1 ms on the reference machine (ext4), against 40 us for writing 64 KiB
// into an open one: the cache could not keep up with a cold read.
//
// Memory: the index holds one entry per segment (about 200 bytes, never
// block bytes); writes are queued up to Options.QueueBytes, and dropped
// beyond that after a short wait. Nothing here ever makes a read fail: an
// entry that cannot be read is a miss, one that cannot be written is
// skipped (and logged).
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

// Defaults for the zero Options fields.
const (
	DefaultQueueBytes    = 64 << 20
	DefaultSegmentBlocks = 16
)

const (
	page       = 4096
	magic      = "S3CFDC01"
	maxSlots   = (page - 16) / 4 // lengths that fit the header page
	nameSize   = 16              // bytes of HMAC kept in a file name
	touchEvery = time.Minute     // a hit updates the segment's mtime at most this often
	maxOpen    = 64              // segment files the writer keeps open
	maxRead    = 256             // segment files kept open for reads
	queueWait  = 100 * time.Millisecond
)

// ErrLocked: another process has the cache directory open.
var ErrLocked = errors.New("disk cache directory in use")

// Options configure a Cache.
type Options struct {
	Dir      string
	MaxBytes int64  // bytes on disk (allocated, as du counts them) the segments may take
	NameKey  []byte // HMAC key of the file names (at least 16 bytes)
	// MaxEntry is the largest block Put is given (a sealed block); larger
	// ones are not cached. It sets the slot stride, so it must stay the
	// same for a directory (segments of another stride are discarded).
	MaxEntry int
	// SegmentBlocks is the number of consecutive blocks per segment file
	// (at most 1020); 0 = DefaultSegmentBlocks.
	SegmentBlocks int
	// QueueBytes bounds Puts not yet written; 0 = DefaultQueueBytes.
	QueueBytes int64
	// LockWait is how long Open waits for another process to release the
	// directory (a mount that is still ending) before ErrLocked.
	LockWait time.Duration
	Logger   *slog.Logger // nil: slog.Default()
}

// Key names one cached block.
type Key struct {
	Object string // the object's identity, as the caller defines it
	Block  uint64
}

type name [nameSize]byte

// segment is one segment file in the index (a doubly linked LRU list, most
// recent at head). lens is guarded by Cache.mu.
type segment struct {
	name       name
	lens       []uint32 // per slot; 0 = empty
	size       int64    // bytes on disk
	touched    int64    // unix seconds of the mtime on disk
	hdrDirty   bool     // lens changed since the header page was written
	prev, next *segment
}

// Stats are counters since Open.
type Stats struct {
	Hits, Misses       uint64
	Writes, Dropped    uint64 // blocks written; Puts dropped (queue full, disk full, error)
	Evictions, Removed uint64 // segments evicted for the cap; blocks removed by the caller (bad entries)
	Errors             uint64 // write or read errors other than a missing entry
	Segments           int64
	Bytes              int64 // bytes on disk of the segments
}

// Cache is an open disk cache; safe for concurrent use.
type Cache struct {
	dir, segs   string
	max         int64
	stride      int64
	slots       int
	maxEntry    int
	log         *slog.Logger
	lock        *os.File
	hpool       sync.Pool // hash.Hash (HMAC under the name key)
	bufs        sync.Pool // *[]byte of cap maxEntry: Buffer, recycled after writes
	queueBytes  int64
	writerFiles map[name]*os.File // open segments; the writer goroutine's only

	rmu    sync.Mutex
	rfiles map[name]*os.File // segments open for reading (pread is safe to share)

	mu         sync.Mutex
	index      map[name]*segment
	head, tail *segment
	bytes      int64
	limit      int64 // max, lowered after the disk filled up

	qmu       sync.RWMutex // closed and sends on queue vs. its close
	closed    bool
	queue     chan op
	queued    atomic.Int64
	smu       sync.Mutex
	space     chan struct{} // closed (and replaced) whenever the writer took a block off the queue
	done      chan struct{}
	closeOnce sync.Once

	fullLogged, errLogged atomic.Bool

	hits, misses, writes, dropped, evictions, removed, errs atomic.Uint64
}

type opKind int

const (
	opWrite opKind = iota
	opTouch
	opClear // punch a removed slot
	opFlush
)

type op struct {
	kind  opKind
	name  name
	slot  int
	data  []byte
	flush chan struct{}
}

// Open opens (creating it, mode 0700) the cache directory, locks it against
// other processes (ErrLocked, naming the holder's pid) and indexes the
// segments already there, evicting the oldest beyond MaxBytes.
func Open(opts Options) (*Cache, error) {
	switch {
	case opts.Dir == "":
		return nil, errors.New("disk cache: no directory")
	case opts.MaxBytes <= 0:
		return nil, errors.New("disk cache: size must be positive")
	case len(opts.NameKey) < 16:
		return nil, errors.New("disk cache: name key too short")
	case opts.MaxEntry <= 0:
		return nil, errors.New("disk cache: no entry size")
	case opts.SegmentBlocks > maxSlots:
		return nil, fmt.Errorf("disk cache: at most %d blocks per segment", maxSlots)
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
		dir: dir, segs: filepath.Join(dir, "seg"),
		max: opts.MaxBytes, limit: opts.MaxBytes, log: opts.Logger,
		maxEntry: opts.MaxEntry, stride: roundPage(int64(opts.MaxEntry)), slots: opts.SegmentBlocks,
		index: make(map[name]*segment), queueBytes: opts.QueueBytes,
		writerFiles: make(map[name]*os.File),
		rfiles:      make(map[name]*os.File),
		space:       make(chan struct{}),
		done:        make(chan struct{}),
	}
	if c.log == nil {
		c.log = slog.Default()
	}
	if c.slots <= 0 {
		c.slots = DefaultSegmentBlocks
	}
	if c.queueBytes <= 0 {
		c.queueBytes = DefaultQueueBytes
	}
	key := append([]byte(nil), opts.NameKey...)
	c.hpool.New = func() any { return hmac.New(sha256.New, key) }
	if err := c.lockDir(opts.LockWait); err != nil {
		return nil, err
	}
	if err := c.scan(); err != nil {
		c.lock.Close()
		return nil, err
	}
	// Enough slots that the byte bound, not the channel, limits the queue.
	c.queue = make(chan op, 8192)
	go c.writer()
	return c, nil
}

func roundPage(n int64) int64 { return (n + page - 1) &^ (page - 1) }

// lockDir takes an exclusive flock on DIR/lock, held until Close (or the
// process's end: a crashed mount leaves no stale lock).
func (c *Cache) lockDir(wait time.Duration) error {
	p := filepath.Join(c.dir, "lock")
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("disk cache: %w", err)
	}
	deadline := time.Now().Add(wait)
	for {
		err = unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if !errors.Is(err, unix.EWOULDBLOCK) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
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

// scan creates seg/XX/ and indexes every segment, ordered by mtime (oldest
// evicted first). Segments that do not parse (another stride or slot count,
// a torn header) are deleted.
func (c *Cache) scan() error {
	var found []*segment
	for i := range 256 {
		sub := filepath.Join(c.segs, fmt.Sprintf("%02x", i))
		if err := os.MkdirAll(sub, 0o700); err != nil {
			return fmt.Errorf("disk cache: %w", err)
		}
		des, err := os.ReadDir(sub)
		if err != nil {
			return fmt.Errorf("disk cache: %w", err)
		}
		for _, de := range des {
			p := filepath.Join(sub, de.Name())
			b, err := hex.DecodeString(de.Name())
			if err != nil || len(b) != nameSize || b[0] != byte(i) || !de.Type().IsRegular() {
				continue // not ours: left alone
			}
			s := &segment{lens: make([]uint32, c.slots)}
			copy(s.name[:], b)
			info, err := de.Info()
			if err != nil || !c.readHeader(p, s) || s.size == page {
				os.Remove(p) // unreadable, another layout, or empty (a crash before its header was written)
				continue
			}
			s.touched = info.ModTime().Unix()
			found = append(found, s)
		}
	}
	sort.Slice(found, func(a, b int) bool { return found[a].touched < found[b].touched })
	for _, s := range found { // oldest first: each goes to the head
		c.index[s.name] = s
		c.pushFront(s)
		c.bytes += s.size
	}
	c.evictLocked()
	return nil
}

// readHeader fills s.lens and s.size from the segment's header page.
func (c *Cache) readHeader(p string, s *segment) bool {
	f, err := os.Open(p)
	if err != nil {
		return false
	}
	defer f.Close()
	h := make([]byte, page)
	if _, err := io.ReadFull(f, h); err != nil {
		return false
	}
	if string(h[:8]) != magic || int64(binary.BigEndian.Uint32(h[8:])) != c.stride || int(binary.BigEndian.Uint32(h[12:])) != c.slots {
		return false
	}
	s.size = page
	for k := range c.slots {
		n := binary.BigEndian.Uint32(h[16+4*k:])
		if int(n) > c.maxEntry {
			n = 0
		}
		s.lens[k] = n
		s.size += roundPage(int64(n))
	}
	return true
}

func (c *Cache) header() []byte {
	h := make([]byte, page)
	copy(h, magic)
	binary.BigEndian.PutUint32(h[8:], uint32(c.stride))
	binary.BigEndian.PutUint32(h[12:], uint32(c.slots))
	return h
}

// nameOf names k's segment and returns k's slot in it.
func (c *Cache) nameOf(k Key) (name, int) {
	seg := k.Block / uint64(c.slots)
	h := c.hpool.Get().(hash.Hash)
	h.Reset()
	var b [binary.MaxVarintLen64]byte
	h.Write(b[:binary.PutUvarint(b[:], uint64(len(k.Object)))])
	h.Write([]byte(k.Object))
	var sb [8]byte
	binary.BigEndian.PutUint64(sb[:], seg)
	h.Write(sb[:])
	var sum [sha256.Size]byte
	var n name
	copy(n[:], h.Sum(sum[:0]))
	c.hpool.Put(h)
	return n, int(k.Block % uint64(c.slots))
}

func (c *Cache) path(n name) string {
	s := hex.EncodeToString(n[:])
	return filepath.Join(c.segs, s[:2], s)
}

func (c *Cache) slotOff(slot int) int64 { return page + int64(slot)*c.stride }

// Has reports whether k is cached (without reading it or counting a hit).
func (c *Cache) Has(k Key) bool {
	if c == nil {
		return false
	}
	n, slot := c.nameOf(k)
	c.mu.Lock()
	defer c.mu.Unlock()
	s, ok := c.index[n]
	return ok && s.lens[slot] > 0
}

// Get returns the bytes stored under k (appended to dst[:0]), as they are on
// disk: the caller authenticates them. A missing or unreadable entry is a
// miss.
func (c *Cache) Get(k Key, dst []byte) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	n, slot := c.nameOf(k)
	c.mu.Lock()
	s, ok := c.index[n]
	var size int
	touch := false
	if ok {
		size = int(s.lens[slot])
	}
	if size > 0 {
		c.moveFront(s)
		if now := time.Now().Unix(); now-s.touched >= int64(touchEvery/time.Second) {
			s.touched, touch = now, true
		}
	}
	c.mu.Unlock()
	if size == 0 {
		c.misses.Add(1)
		return nil, false
	}
	b, err := c.readSlot(n, slot, size, dst[:0])
	if err != nil {
		if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrClosed) {
			// Deleted (by eviction, or behind our back): forget it.
			c.dropReadFile(n)
			c.mu.Lock()
			if c.index[n] == s {
				c.unlinkLocked(s)
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
		c.enqueue(op{kind: opTouch, name: n}, 0)
	}
	c.hits.Add(1)
	return b, true
}

func (c *Cache) readSlot(n name, slot, size int, dst []byte) ([]byte, error) {
	if cap(dst) < size {
		dst = make([]byte, size)
	}
	dst = dst[:size]
	for attempt := 0; ; attempt++ {
		f, err := c.readFile(n)
		if err != nil {
			return nil, err
		}
		_, err = f.ReadAt(dst, c.slotOff(slot))
		if errors.Is(err, os.ErrClosed) && attempt == 0 {
			continue // evicted and closed under us, or recycled: once more
		}
		if err != nil {
			return nil, err
		}
		return dst, nil
	}
}

// readFile returns segment n open for reading, from the readers' set of
// open files.
func (c *Cache) readFile(n name) (*os.File, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if f := c.rfiles[n]; f != nil {
		return f, nil
	}
	f, err := os.Open(c.path(n))
	if err != nil {
		return nil, err
	}
	if len(c.rfiles) >= maxRead {
		for k, g := range c.rfiles { // any one
			g.Close()
			delete(c.rfiles, k)
			break
		}
	}
	c.rfiles[n] = f
	return f, nil
}

// dropReadFile closes segment n's file for readers (it is being deleted).
func (c *Cache) dropReadFile(n name) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if f := c.rfiles[n]; f != nil {
		f.Close()
		delete(c.rfiles, n)
	}
}

// Buffer returns a buffer of n bytes (at most MaxEntry) for a block to be
// handed to Put, recycled once it is written: reading a block into one
// saves copying it.
func (c *Cache) Buffer(n int) []byte {
	if p, ok := c.bufs.Get().(*[]byte); ok && cap(*p) >= n {
		return (*p)[:n]
	}
	return make([]byte, n, max(n, c.maxEntry))
}

func (c *Cache) recycle(b []byte) {
	if cap(b) == c.maxEntry {
		c.bufs.Put(&b)
	}
}

// Put stores data under k in the background and takes ownership of it.
// When the queue holds QueueBytes already, it waits up to 100 ms for the
// writer to make room (a reader faster than the disk is slowed to the
// disk's speed), then gives up: the block is not cached. A block already
// cached is left as it is.
func (c *Cache) Put(k Key, data []byte) {
	if c == nil || len(data) == 0 || len(data) > c.maxEntry {
		return
	}
	n, slot := c.nameOf(k)
	if !c.enqueue(op{kind: opWrite, name: n, slot: slot, data: data}, int64(len(data))) {
		c.recycle(data)
	}
}

func (c *Cache) enqueue(o op, n int64) bool {
	c.qmu.RLock()
	defer c.qmu.RUnlock()
	if c.closed {
		return false
	}
	var deadline *time.Timer
	for n > 0 {
		// The channel before the check: a write completing in between
		// closes it, so the wait below cannot miss it.
		c.smu.Lock()
		room := c.space
		c.smu.Unlock()
		if c.queued.Add(n) <= c.queueBytes {
			break
		}
		c.queued.Add(-n)
		// Full: wait (up to queueWait in all) for the writer to make
		// room, so that a read faster than the disk is slowed to the
		// disk's speed rather than leaving blocks uncached; a disk that
		// stalls longer costs the block, never the read.
		if deadline == nil {
			deadline = time.NewTimer(queueWait)
			defer deadline.Stop()
		}
		select {
		case <-room:
		case <-deadline.C:
			c.dropped.Add(1)
			return false
		}
	}
	select {
	case c.queue <- o:
		return true
	default:
		c.queued.Add(-n)
		if n > 0 {
			c.dropped.Add(1)
		}
		return false
	}
}

// Remove forgets k's entry (one that failed authentication) at once; its
// bytes are cleared in the background.
func (c *Cache) Remove(k Key) {
	if c == nil {
		return
	}
	n, slot := c.nameOf(k)
	c.mu.Lock()
	s, ok := c.index[n]
	ok = ok && s.lens[slot] > 0
	if ok {
		c.bytes -= roundPage(int64(s.lens[slot]))
		s.size -= roundPage(int64(s.lens[slot]))
		s.lens[slot] = 0
	}
	c.mu.Unlock()
	if ok {
		c.removed.Add(1)
		c.enqueue(op{kind: opClear, name: n, slot: slot}, 0)
	}
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
	c.queue <- op{kind: opFlush, flush: ch}
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
		c.rmu.Lock()
		for n, f := range c.rfiles {
			f.Close()
			delete(c.rfiles, n)
		}
		c.rmu.Unlock()
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
	segs, bytes := int64(len(c.index)), c.bytes
	c.mu.Unlock()
	return Stats{
		Hits: c.hits.Load(), Misses: c.misses.Load(),
		Writes: c.writes.Load(), Dropped: c.dropped.Load(),
		Evictions: c.evictions.Load(), Removed: c.removed.Load(),
		Errors: c.errs.Load(), Segments: segs, Bytes: bytes,
	}
}

// writer applies queued operations, one at a time: it is the only
// goroutine that writes segment files.
func (c *Cache) writer() {
	defer close(c.done)
	defer func() {
		for n, f := range c.writerFiles {
			delete(c.writerFiles, n)
			c.closeWriter(n, f)
		}
	}()
	for o := range c.queue {
		switch o.kind {
		case opFlush:
			close(o.flush)
		case opTouch:
			now := time.Now()
			os.Chtimes(c.path(o.name), now, now)
		case opClear:
			if f := c.writerFiles[o.name]; f != nil {
				c.clearSlot(f, o.slot)
			} else if f, err := os.OpenFile(c.path(o.name), os.O_RDWR, 0); err == nil {
				c.clearSlot(f, o.slot)
				f.Close()
			}
		case opWrite:
			c.write(o.name, o.slot, o.data)
			c.queued.Add(-int64(len(o.data)))
			c.recycle(o.data)
			c.smu.Lock()
			close(c.space)
			c.space = make(chan struct{})
			c.smu.Unlock()
		}
	}
}

// clearSlot zeroes a removed slot's length in the header and frees its
// bytes (unless it was written again meanwhile).
func (c *Cache) clearSlot(f *os.File, slot int) {
	c.mu.Lock()
	s := c.index[c.nameFromFile(f)]
	again := s != nil && s.lens[slot] > 0
	c.mu.Unlock()
	if again {
		return
	}
	var z [4]byte
	f.WriteAt(z[:], int64(16+4*slot))
	unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, c.slotOff(slot), c.stride)
}

func (c *Cache) nameFromFile(f *os.File) name {
	var n name
	hex.Decode(n[:], []byte(filepath.Base(f.Name())))
	return n
}

// write stores one block in its segment's slot, creating the segment if
// need be. Not synced: a crash may leave a torn block, which fails
// authentication and is fetched again.
func (c *Cache) write(n name, slot int, data []byte) {
	c.mu.Lock()
	s := c.index[n]
	if s != nil && s.lens[slot] > 0 {
		c.mu.Unlock()
		return // cached meanwhile (two reads of one block)
	}
	c.mu.Unlock()
	created := s == nil
	f, err := c.segmentFile(n, created)
	if err == nil {
		// The slot's length reaches the header page when the segment is
		// full or its file is closed (closeWriter): one write per block,
		// not two. A crash before that forgets the block: only a miss.
		_, err = f.WriteAt(data, c.slotOff(slot))
	}
	if err != nil {
		c.writeFailed(n, f, slot, created, err)
		return
	}
	c.writes.Add(1)
	add := roundPage(int64(len(data)))
	c.mu.Lock()
	defer c.mu.Unlock()
	if cur := c.index[n]; cur != s {
		return // evicted meanwhile (only this goroutine creates segments)
	}
	if s == nil {
		s = &segment{name: n, lens: make([]uint32, c.slots), size: page, touched: time.Now().Unix()}
		c.index[n] = s
		c.pushFront(s)
		c.bytes += page
	} else {
		c.moveFront(s)
	}
	s.lens[slot] = uint32(len(data))
	s.hdrDirty = true
	s.size += add
	c.bytes += add
	c.evictLocked()
	if c.index[n] != s || !s.full() {
		return
	}
	h := c.headerOf(s)
	c.mu.Unlock()
	if _, err := f.WriteAt(h, 0); err != nil {
		c.errs.Add(1)
	}
	c.mu.Lock()
}

func (s *segment) full() bool {
	for _, l := range s.lens {
		if l == 0 {
			return false
		}
	}
	return true
}

// headerOf returns s's header page and marks it written. c.mu held.
func (c *Cache) headerOf(s *segment) []byte {
	h := c.header()
	for k, l := range s.lens {
		binary.BigEndian.PutUint32(h[16+4*k:], l)
	}
	s.hdrDirty = false
	return h
}

// closeWriter writes segment n's header page (its slots' lengths) if they
// changed, and closes f. Writer goroutine only.
func (c *Cache) closeWriter(n name, f *os.File) {
	c.mu.Lock()
	var h []byte
	if s := c.index[n]; s != nil && s.hdrDirty {
		h = c.headerOf(s)
	}
	c.mu.Unlock()
	if h != nil {
		if _, err := f.WriteAt(h, 0); err != nil {
			c.errs.Add(1)
			c.log.Debug("disk cache: segment header not written (its blocks are forgotten at the next mount)", "err", err)
		}
	}
	f.Close()
}

// segmentFile returns the writer's open file of segment n, creating it
// (with its header page) if create.
func (c *Cache) segmentFile(n name, create bool) (*os.File, error) {
	if f := c.writerFiles[n]; f != nil && !create {
		return f, nil
	}
	if f := c.writerFiles[n]; f != nil {
		f.Close()
		delete(c.writerFiles, n)
	}
	if len(c.writerFiles) >= maxOpen {
		for k, f := range c.writerFiles { // any one
			delete(c.writerFiles, k)
			c.closeWriter(k, f)
			break
		}
	}
	var f *os.File
	var err error
	if create {
		f, err = os.OpenFile(c.path(n), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
		if err == nil {
			if _, err = f.WriteAt(c.header(), 0); err != nil {
				f.Close()
			}
		}
	} else {
		f, err = os.OpenFile(c.path(n), os.O_RDWR, 0)
	}
	if err != nil {
		return nil, err
	}
	c.writerFiles[n] = f
	return f, nil
}

func (c *Cache) writeFailed(n name, f *os.File, slot int, created bool, err error) {
	c.dropped.Add(1)
	if f != nil {
		if created {
			f.Close()
			delete(c.writerFiles, n)
			c.dropReadFile(n)
			os.Remove(c.path(n))
		} else {
			unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, c.slotOff(slot), c.stride)
		}
	} else if created {
		os.Remove(c.path(n))
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		// Keep what fits: shrink the cap to what the disk holds now (less
		// a margin) until the next Open.
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
}

// evictLocked removes least recently used segments until the cache is
// within its limit. c.mu held; called by the writer goroutine and Open.
func (c *Cache) evictLocked() {
	for c.bytes > c.limit && c.tail != nil {
		s := c.tail
		c.unlinkLocked(s)
		if f := c.writerFiles[s.name]; f != nil {
			f.Close()
			delete(c.writerFiles, s.name)
		}
		c.dropReadFile(s.name)
		os.Remove(c.path(s.name))
		c.evictions.Add(1)
	}
}

func (c *Cache) unlinkLocked(s *segment) {
	delete(c.index, s.name)
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		c.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		c.tail = s.prev
	}
	s.prev, s.next = nil, nil
	c.bytes -= s.size
}

func (c *Cache) pushFront(s *segment) {
	s.prev, s.next = nil, c.head
	if c.head != nil {
		c.head.prev = s
	}
	c.head = s
	if c.tail == nil {
		c.tail = s
	}
}

func (c *Cache) moveFront(s *segment) {
	if c.head == s {
		return
	}
	s.prev.next = s.next
	if s.next != nil {
		s.next.prev = s.prev
	} else {
		c.tail = s.prev
	}
	c.pushFront(s)
}

// Entry is one cached block as Walk finds it on disk.
type Entry struct {
	File   string // the segment file
	Slot   int
	Offset int64 // of the block in File
	LenAt  int64 // offset of its length (4 bytes, big-endian) in File
	Data   []byte
}

// Walk calls fn for every block in the segment files under dir, without
// opening the cache (no lock, no key): for inspection and tests.
func Walk(dir string, fn func(Entry) error) error {
	return filepath.WalkDir(filepath.Join(dir, "seg"), func(p string, d os.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if len(b) < page || string(b[:8]) != magic {
			return nil
		}
		stride, slots := int64(binary.BigEndian.Uint32(b[8:])), int(binary.BigEndian.Uint32(b[12:]))
		for k := range min(slots, maxSlots) {
			n := int64(binary.BigEndian.Uint32(b[16+4*k:]))
			off := page + int64(k)*stride
			if n == 0 || off+n > int64(len(b)) {
				continue
			}
			if err := fn(Entry{File: p, Slot: k, Offset: off, LenAt: int64(16 + 4*k), Data: b[off : off+n]}); err != nil {
				return err
			}
		}
		return nil
	})
}
