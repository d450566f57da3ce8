package cache

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
)

func block(n int, fill byte) []byte { return bytes.Repeat([]byte{fill}, n) }

func TestSetGet(t *testing.T) {
	c, err := New(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k := Key{File: "f", Version: "v1", Block: 3}
	if _, ok := c.Get(k); ok {
		t.Fatal("hit on empty cache")
	}
	c.Set(k, block(100, 7))
	c.Wait()
	got, ok := c.Get(k)
	if !ok || !bytes.Equal(got, block(100, 7)) {
		t.Fatalf("Get = %v, %v", len(got), ok)
	}
	// Another version or block of the same file is a different key.
	for _, other := range []Key{{"f", "v2", 3}, {"f", "v1", 4}, {"g", "v1", 3}} {
		if _, ok := c.Get(other); ok {
			t.Errorf("Get(%v) hit", other)
		}
	}
	st := c.Stats()
	if st.Hits != 1 || st.Misses != 4 || st.Sets != 1 {
		t.Errorf("stats = %+v, want 1 hit, 4 misses, 1 set", st)
	}
	c.Del(k)
	c.Wait()
	if _, ok := c.Get(k); ok {
		t.Error("hit after Del")
	}
}

func TestKeyEncodingUnambiguous(t *testing.T) {
	// Without length prefixes these two would concatenate the same way.
	a := Key{File: "ab", Version: "c", Block: 1}
	b := Key{File: "a", Version: "bc", Block: 1}
	if a.String() == b.String() {
		t.Fatal("distinct keys share an encoding")
	}
}

// TestCollisionSafety forces every key onto one hash: ristretto then holds at
// most one of them, and a Get must never return another key's block.
func TestCollisionSafety(t *testing.T) {
	c, err := newWithHash(1<<20, func(string) (uint64, uint64) { return 42, 42 })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	ka := Key{File: "a", Version: "1", Block: 0}
	kb := Key{File: "b", Version: "1", Block: 0}
	c.Set(ka, block(10, 'a'))
	c.Wait()
	c.Set(kb, block(10, 'b'))
	c.Wait()
	for _, k := range []Key{ka, kb} {
		got, ok := c.Get(k)
		if ok && got[0] != k.File[0] {
			t.Fatalf("Get(%v) returned the block of another key (%q)", k, got[0])
		}
	}
	if c.Stats().Collisions == 0 {
		t.Error("no collision counted although both keys share a hash")
	}
}

// TestEvictionBound fills the cache with ten times its size and checks that
// what it still returns never exceeds the byte budget.
func TestEvictionBound(t *testing.T) {
	const maxBytes = 256 << 10
	const size = 4 << 10
	c, err := New(maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	const n = 10 * maxBytes / size
	for i := range n {
		c.Set(Key{File: "f", Version: "v", Block: uint64(i)}, block(size, byte(i)))
	}
	c.Wait()
	held := 0
	for i := range n {
		if got, ok := c.Get(Key{File: "f", Version: "v", Block: uint64(i)}); ok {
			if got[0] != byte(i) || len(got) != size {
				t.Fatalf("block %d has wrong content", i)
			}
			held += len(got)
		}
	}
	if held > maxBytes {
		t.Fatalf("cache holds %d bytes, budget %d", held, maxBytes)
	}
	if held == 0 {
		t.Fatal("cache holds nothing")
	}
	if c.Stats().Evictions == 0 {
		t.Error("no evictions counted")
	}
}

func TestConcurrent(t *testing.T) {
	c, err := New(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 500 {
				k := Key{File: fmt.Sprint(g), Version: "v", Block: uint64(i % 50)}
				if got, ok := c.Get(k); ok && (got[0] != byte(g) || got[1] != byte(i%50)) {
					t.Errorf("wrong block for %v", k)
					return
				}
				c.Set(k, []byte{byte(g), byte(i % 50)})
			}
		})
	}
	wg.Wait()
}

func TestNilCache(t *testing.T) {
	var c *Cache
	c.Set(Key{}, []byte{1})
	if _, ok := c.Get(Key{}); ok {
		t.Fatal("nil cache hit")
	}
	c.Del(Key{})
	c.Wait()
	c.Close()
	if (c.Stats() != Stats{}) {
		t.Fatal("nil cache has stats")
	}
}

func TestNewRejectsBadSize(t *testing.T) {
	if _, err := New(0); err == nil {
		t.Fatal("New(0) succeeded")
	}
}

func BenchmarkGetHit(b *testing.B) {
	c, err := New(64 << 20)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	for i := range 256 {
		c.Set(Key{File: "f", Version: "v", Block: uint64(i)}, make([]byte, 4096))
	}
	c.Wait()
	b.SetBytes(4096)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		c.Get(Key{File: "f", Version: "v", Block: uint64(i % 256)})
	}
}

// TestStatsBytes: Bytes follows what the cache holds through sets,
// replacements, deletions and evictions, and never exceeds the budget.
func TestStatsBytes(t *testing.T) {
	c, err := New(64 << 10)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	k := Key{File: "f", Version: "v", Block: 0}
	c.Set(k, block(1000, 1))
	c.Wait()
	if b := c.Stats().Bytes; b != 1000 {
		t.Fatalf("after one 1000-byte block: %d bytes", b)
	}
	c.Set(k, block(300, 2)) // replaces
	c.Wait()
	if b := c.Stats().Bytes; b != 300 {
		t.Fatalf("after replacing it with 300 bytes: %d bytes", b)
	}
	c.Del(k)
	c.Wait()
	if b := c.Stats().Bytes; b != 0 {
		t.Fatalf("after deleting it: %d bytes", b)
	}
	for i := range 200 {
		c.Set(Key{File: "g", Version: "v", Block: uint64(i)}, block(4096, byte(i)))
		c.Wait()
	}
	st := c.Stats()
	if st.Bytes <= 0 || st.Bytes > 64<<10 || st.Bytes%4096 != 0 {
		t.Fatalf("after 200 x 4 KiB into 64 KiB: %d bytes (%d evictions)", st.Bytes, st.Evictions)
	}
}
