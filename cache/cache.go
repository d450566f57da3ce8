// Package cache holds decrypted file blocks in memory, bounded in bytes.
//
// It is a thin layer over ristretto (a concurrent TinyLFU cache): ristretto
// decides what to keep, this package decides what a key is and guarantees
// that a Get never returns the block of another key, even if two keys hash
// to the same value. The cache knows nothing about files, ciphers or stores;
// callers choose the three parts of a Key.
package cache

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/dgraph-io/ristretto/v2"
	"github.com/dgraph-io/ristretto/v2/z"
)

// Key names one block of one version of one file.
type Key struct {
	File    string // file identity (e.g. the file id in hex, or the object key)
	Version string // object version (ETag): a new version never sees old blocks
	Block   uint64 // block index within the file
}

// String encodes k unambiguously: File and Version are length-prefixed, so
// no two distinct keys share an encoding.
func (k Key) String() string {
	b := make([]byte, 0, 3*binary.MaxVarintLen64+len(k.File)+len(k.Version))
	b = binary.AppendUvarint(b, uint64(len(k.File)))
	b = append(b, k.File...)
	b = binary.AppendUvarint(b, uint64(len(k.Version)))
	b = append(b, k.Version...)
	b = binary.AppendUvarint(b, k.Block)
	return string(b)
}

// entry is what ristretto stores: the full key beside the block, because
// ristretto only keeps hashes of keys and a hash collision would otherwise
// hand out the wrong block.
type entry struct {
	key   Key
	block []byte
}

// Stats are counters since New. Hits and Misses count Get calls; Collisions
// counts Gets that found another key's block under the same hash (reported
// as misses too).
type Stats struct {
	Hits, Misses, Collisions uint64
	Sets, Evictions          uint64
	// Bytes is the size of the blocks held (or about to be: Sets not yet
	// applied count).
	Bytes int64
}

// Cache is a byte-bounded cache of blocks, safe for concurrent use. A nil
// *Cache is valid and caches nothing.
type Cache struct {
	rc *ristretto.Cache[string, *entry]

	hits, misses, collisions, sets, evictions atomic.Uint64
	bytes                                     atomic.Int64
}

// New returns a cache that holds at most maxBytes bytes of blocks.
func New(maxBytes int64) (*Cache, error) {
	return newWithHash(maxBytes, nil)
}

// newWithHash lets tests force hash collisions.
func newWithHash(maxBytes int64, hash func(string) (uint64, uint64)) (*Cache, error) {
	if maxBytes <= 0 {
		return nil, errors.New("cache: size must be positive")
	}
	if hash == nil {
		hash = z.KeyToHash[string]
	}
	c := &Cache{}
	// ristretto advises ~10 counters per item it will hold; blocks are
	// 4 KiB..1 MiB, so assume 4 KiB items for the upper bound.
	counters := maxBytes / 4096 * 10
	counters = max(counters, 1000)
	counters = min(counters, 10_000_000)
	rc, err := ristretto.NewCache(&ristretto.Config[string, *entry]{
		NumCounters: counters,
		MaxCost:     maxBytes,
		BufferItems: 64,
		KeyToHash:   hash,
		// Cost is exactly the block bytes, so MaxCost is a byte budget.
		IgnoreInternalCost: true,
		OnEvict: func(*ristretto.Item[*entry]) {
			c.evictions.Add(1)
		},
		// Called for every block that leaves, or never entered, the
		// cache (evicted, rejected, deleted, replaced): what Set added.
		// (nil when ristretto found nothing under the key).
		OnExit: func(e *entry) {
			if e != nil {
				c.bytes.Add(-int64(len(e.block)))
			}
		},
	})
	if err != nil {
		return nil, fmt.Errorf("cache: %w", err)
	}
	c.rc = rc
	return c, nil
}

// Get returns the block stored under k. The returned slice is shared: callers
// must not modify it.
func (c *Cache) Get(k Key) ([]byte, bool) {
	if c == nil {
		return nil, false
	}
	e, ok := c.rc.Get(k.String())
	if ok && e.key != k {
		c.collisions.Add(1)
		ok = false
	}
	if !ok {
		c.misses.Add(1)
		return nil, false
	}
	c.hits.Add(1)
	return e.block, true
}

// Set stores block under k and takes ownership of it (the caller must not
// modify it afterwards). The cache may decline to keep it; Set is
// asynchronous, see Wait.
func (c *Cache) Set(k Key, block []byte) {
	if c == nil {
		return
	}
	c.sets.Add(1)
	// A zero cost would make ristretto call the (absent) cost function; an
	// empty block still costs one byte.
	if c.rc.Set(k.String(), &entry{key: k, block: block}, max(int64(len(block)), 1)) {
		// false: dropped at once, and OnExit is not called for it.
		c.bytes.Add(int64(len(block)))
	}
}

// Del removes k's block, if cached.
func (c *Cache) Del(k Key) {
	if c == nil {
		return
	}
	c.rc.Del(k.String())
}

// Wait blocks until every earlier Set is visible to Get (ristretto applies
// Sets asynchronously). Useful in tests and after bulk population.
func (c *Cache) Wait() {
	if c == nil {
		return
	}
	c.rc.Wait()
}

// Stats returns the counters since New.
func (c *Cache) Stats() Stats {
	if c == nil {
		return Stats{}
	}
	return Stats{
		Hits:       c.hits.Load(),
		Misses:     c.misses.Load(),
		Collisions: c.collisions.Load(),
		Sets:       c.sets.Load(),
		Evictions:  c.evictions.Load(),
		Bytes:      c.bytes.Load(),
	}
}

// Close releases the cache's goroutine and memory. Gets after Close miss.
func (c *Cache) Close() {
	if c == nil {
		return
	}
	c.rc.Close()
}
