package cipher

import "sync"

// adPool recycles the 28-byte associated-data buffers of Seal and Open.
// Passing a stack array to an interface method (cipher.AEAD) makes it escape
// to the heap, so without the pool every block would cost an allocation.
var adPool = adBufPool{p: sync.Pool{New: func() any { return new([blockADSize]byte) }}}

type adBufPool struct{ p sync.Pool }

func (a *adBufPool) get() *[blockADSize]byte  { return a.p.Get().(*[blockADSize]byte) }
func (a *adBufPool) put(b *[blockADSize]byte) { a.p.Put(b) }
