package vaultread

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
)

// Kinds of problem Verify reports.
const (
	ProblemCorrupt      = "corrupt"       // header or a block does not authenticate
	ProblemForeign      = "foreign-key"   // sealed under a key id not in this vault's keyring
	ProblemNotEncrypted = "not-encrypted" // no s3cryptfs header (bad magic): plaintext or another tool's
	ProblemBadSize      = "bad-size"      // size fits no layout: truncated or appended to
	ProblemUnreadable   = "unreadable"    // the store refused or failed the read
	// ProblemChanged: the object was replaced while it was read (twice,
	// for verify) or rewritten; for a rewrite, the newer version (a
	// mount's write, under the current key) was kept.
	ProblemChanged = "changed"
	// ProblemBadName: an encrypted name that does not authenticate in the
	// directory it is listed in (copied from another directory or vault,
	// or tampered with), or a directory marker without a valid id.
	ProblemBadName = "bad-name"
)

// headerMagic is the first 4 bytes of every object header (FORMAT.md,
// "Header"): what tells an s3cryptfs object from anything else.
const headerMagic = "S3CF"

// Problem is one object that does not verify.
type Problem struct {
	Key  string `json:"key"`
	Kind string `json:"problem"`
	// Block is the index of the first block that failed (corrupt blocks).
	Block *uint64 `json:"block,omitempty"`
	// KeyID is the master key id the header names (foreign-key).
	KeyID  string `json:"key_id,omitempty"`
	Detail string `json:"detail"`
}

// Report is the outcome of Verify.
type Report struct {
	Objects  int       `json:"objects"`
	Bytes    int64     `json:"bytes"`
	Problems []Problem `json:"problems"`
}

// Verifier authenticates every header and block of the objects of a vault.
type Verifier struct {
	Store backend.Store
	Keys  *cipher.Keys
	// Parallel bounds the ranged GETs in flight (DefaultParallel if 0);
	// memory is about two blocks per GET.
	Parallel int
	// ChunkBlocks is how many blocks one ranged GET covers (128 if 0).
	ChunkBlocks int
	// Listed, if set, is told the totals once the listing is done; Done
	// is called as objects and bytes are verified (concurrently).
	Listed func(objects int, bytes int64)
	Done   func(objects int, bytes int64)
}

// Objects lists what Verify checks under path ("" the whole vault): every
// object but directory markers and the vault config, with the attribute
// index objects of the directories under path (they are encrypted files
// too).
func (v *Verifier) Objects(ctx context.Context, path string) ([]backend.ObjectInfo, error) {
	var objs []backend.ObjectInfo
	add := func(obj *backend.ObjectInfo, _ string) error {
		if obj == nil || strings.HasSuffix(obj.Key, "/") || obj.Key == fs.ConfigKey {
			return nil
		}
		objs = append(objs, *obj)
		return nil
	}
	if path == "" {
		if err := v.Store.List(ctx, "", "", add); err != nil {
			return nil, err
		}
		return objs, nil
	}
	t := &Tree{Store: v.Store, Keys: v.Keys, Parallel: v.Parallel}
	l, err := t.Names()
	if err != nil {
		return nil, err
	}
	if l.Encrypted() {
		// Entries of a directory are not below its path: walk the tree.
		top, err := t.Stat(ctx, path)
		if err != nil {
			return nil, err
		}
		err = t.Walk(ctx, top, func(e Entry) error {
			if !e.Attr.Dir {
				return add(&e.Info, "")
			}
			loc, err := t.DirLoc(ctx, e.Path)
			if err != nil {
				return err
			}
			return v.Store.List(ctx, fs.IndexRoot+"/"+loc.Prefix, "/", add)
		})
		return objs, err
	}
	if info, err := v.Store.Stat(ctx, path); err == nil {
		add(&info, "")
	} else if !errors.Is(err, backend.ErrNotFound) {
		return nil, err
	}
	for _, p := range []string{path + "/", fs.IndexRoot + "/" + path + "/"} {
		if err := v.Store.List(ctx, p, "", add); err != nil {
			return nil, err
		}
	}
	return objs, nil
}

// Names walks the tree under path ("" the whole vault) as a mount lists it
// and reports every key that is not a name of the directory it is listed
// in (ProblemBadName). Plaintext names cannot be wrong: it reports nothing
// and lists nothing.
func (v *Verifier) Names(ctx context.Context, path string) ([]Problem, error) {
	t := &Tree{Store: v.Store, Keys: v.Keys, Parallel: v.Parallel}
	l, err := t.Names()
	if err != nil || !l.Encrypted() {
		return nil, err
	}
	var mu sync.Mutex
	var probs []Problem
	t.BadName = func(key string, err error) {
		mu.Lock()
		defer mu.Unlock()
		probs = append(probs, Problem{Key: key, Kind: ProblemBadName, Detail: err.Error()})
	}
	top, err := t.Stat(ctx, path)
	if err != nil {
		return nil, err
	}
	if err := t.Walk(ctx, top, func(Entry) error { return nil }); err != nil {
		return nil, err
	}
	sort.Slice(probs, func(i, j int) bool { return probs[i].Key < probs[j].Key })
	return probs, nil
}

// Verify checks every object of objs and reports those that fail. Its
// error is for failures of the run itself (a cancelled context); what the
// store fails to return for one object is that object's problem.
func (v *Verifier) Verify(ctx context.Context, objs []backend.ObjectInfo) (Report, error) {
	if v.Keys == nil {
		return Report{}, errors.New("verify needs an encrypted vault (this one stores plaintext)")
	}
	par := v.Parallel
	if par <= 0 {
		par = DefaultParallel
	}
	var rep Report
	for _, o := range objs {
		rep.Objects++
		rep.Bytes += o.Size
	}
	if v.Listed != nil {
		v.Listed(rep.Objects, rep.Bytes)
	}
	ids := map[cipher.KeyID]bool{}
	for _, id := range v.Keys.KeyIDs() {
		ids[id] = true
	}
	// One semaphore bounds every GET, whether it reads a small object
	// whole or one chunk of a large one; par workers take objects, and
	// never hold a slot while waiting for another (see object).
	sem := make(chan struct{}, par)
	work := make(chan backend.ObjectInfo)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for o := range work {
				p := v.object(ctx, sem, ids, o)
				if p != nil && p.Kind == ProblemChanged {
					// Replaced or removed since the listing (a mount at
					// work): a removed object is no problem, a replaced
					// one is verified as it is now, once.
					info, err := v.Store.Stat(ctx, o.Key)
					switch {
					case errors.Is(err, backend.ErrNotFound):
						p = nil
					case err == nil:
						p = v.object(ctx, sem, ids, info)
					}
				}
				if p != nil {
					mu.Lock()
					rep.Problems = append(rep.Problems, *p)
					mu.Unlock()
				}
				if v.Done != nil {
					v.Done(1, 0)
				}
			}
		}()
	}
	for _, o := range objs {
		if ctx.Err() != nil {
			break
		}
		work <- o
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	sort.Slice(rep.Problems, func(i, j int) bool { return rep.Problems[i].Key < rep.Problems[j].Key })
	return rep, nil
}

// object verifies one object: the header and the first chunk of blocks
// from one GET, the other chunks from ranged GETs in parallel.
func (v *Verifier) object(ctx context.Context, sem chan struct{}, ids map[cipher.KeyID]bool, o backend.ObjectInfo) *Problem {
	prob := func(kind, format string, args ...any) *Problem {
		return &Problem{Key: o.Key, Kind: kind, Detail: fmt.Sprintf(format, args...)}
	}
	l := v.Keys.Layout()
	cb := v.ChunkBlocks
	if cb <= 0 {
		cb = 128
	}
	plain, sizeErr := l.CipherSizeToPlainSize(o.Size)
	nblocks := uint64(1)
	if sizeErr == nil {
		nblocks = l.BlockCount(plain)
	}
	// The first GET covers the header and the first chunk (or, for a size
	// that fits no layout, just the header, to tell why).
	end := min(o.Size, int64(cipher.HeaderSize))
	if sizeErr == nil {
		end = chunkEnd(l, plain, 0, uint64(cb))
	}
	sem <- struct{}{}
	var rc io.ReadCloser
	var err error
	if end > 0 {
		rc, err = v.Store.Get(ctx, o.Key, 0, end, backend.GetOptions{IfMatch: o.ETag})
	} else {
		rc = io.NopCloser(strings.NewReader(""))
	}
	if err != nil {
		<-sem
		return readProblem(o.Key, err)
	}
	if o.Size == 0 {
		// A FIFO, socket or device node is a zero-length object by design
		// (its metadata says which); any other empty object is damage.
		rc.Close()
		info, err := v.Store.Stat(ctx, o.Key)
		<-sem
		if err != nil {
			return readProblem(o.Key, err)
		}
		if a := fs.ObjectAttrOf(info, false); a.Special != "" || a.Dir {
			return nil // a special file, or an encrypted-name directory's object
		}
		return prob(ProblemNotEncrypted, "empty object: no s3cryptfs header (not a FIFO, socket or device node either)")
	}
	h := make([]byte, min(o.Size, int64(cipher.HeaderSize)))
	n, err := io.ReadFull(rc, h)
	if v.Done != nil {
		v.Done(0, int64(n))
	}
	release := func() { rc.Close(); <-sem }
	if err != nil {
		release()
		return readProblem(o.Key, fmt.Errorf("read header: %w", err))
	}
	if len(h) < len(headerMagic) || string(h[:len(headerMagic)]) != headerMagic {
		release()
		return prob(ProblemNotEncrypted, "no s3cryptfs header (bad magic; %d bytes): not an object of any vault", o.Size)
	}
	if id, ok := cipher.HeaderKeyID(h); ok && !ids[id] {
		release()
		p := prob(ProblemForeign, "sealed under master key %s, which this vault's keyring does not hold: another vault's object, or a key dropped from the ring", id)
		p.KeyID = id.String()
		return p
	}
	if sizeErr != nil {
		release()
		return prob(ProblemBadSize, "%v", sizeErr)
	}
	fk, err := v.Keys.OpenHeader(h)
	if err != nil {
		release()
		return prob(ProblemCorrupt, "header: %v", err)
	}

	// Blocks: chunk 0 from the stream already open, the rest in parallel.
	var (
		mu       sync.Mutex
		bad      *uint64
		badErr   error
		readErr  error
		wg       sync.WaitGroup
		failedAt atomic.Bool
	)
	record := func(block uint64, err error, corrupt bool) {
		mu.Lock()
		defer mu.Unlock()
		if !corrupt {
			if readErr == nil {
				readErr = err
			}
			return
		}
		if bad == nil || block < *bad {
			b := block
			bad, badErr = &b, err
		}
		failedAt.Store(true)
	}
	chunk := func(rc io.ReadCloser, first, last uint64) {
		defer func() { rc.Close(); <-sem; wg.Done() }()
		blk, corrupt, err := v.blocks(rc, fk, plain, first, last)
		if err != nil {
			record(blk, err, corrupt)
		}
	}
	wg.Add(1)
	go chunk(rc, 0, min(uint64(cb), nblocks)-1)
	for first := uint64(cb); first < nblocks && !failedAt.Load(); first += uint64(cb) {
		last := min(first+uint64(cb), nblocks) - 1
		sem <- struct{}{}
		off := l.BlockIndexToCipherOff(first)
		rc, err := v.Store.Get(ctx, o.Key, off, chunkEnd(l, plain, first, uint64(cb))-off, backend.GetOptions{IfMatch: o.ETag})
		if err != nil {
			<-sem
			record(first, err, false)
			break
		}
		wg.Add(1)
		go chunk(rc, first, last)
	}
	wg.Wait()
	switch {
	case bad != nil:
		p := prob(ProblemCorrupt, "%v", badErr)
		p.Block = bad
		return p
	case readErr != nil:
		return readProblem(o.Key, readErr)
	}
	return nil
}

// readProblem classifies a failed read: the object changed since it was
// listed, or the store failed.
func readProblem(key string, err error) *Problem {
	kind := ProblemUnreadable
	if errors.Is(err, backend.ErrPreconditionFailed) || errors.Is(err, backend.ErrNotFound) {
		kind = ProblemChanged
	}
	return &Problem{Key: key, Kind: kind, Detail: err.Error()}
}

// chunkEnd is the object offset where the chunk of cb blocks starting at
// block first ends.
func chunkEnd(l cipher.Layout, plain int64, first, cb uint64) int64 {
	if first+cb >= l.BlockCount(plain) {
		return l.PlainSizeToCipherSize(plain)
	}
	return l.BlockIndexToCipherOff(first + cb)
}

// blocks authenticates sealed blocks first..last read in order from r,
// holding one block at a time. On failure it returns the block, and
// whether the block failed to authenticate (else reading it failed).
func (v *Verifier) blocks(r io.Reader, fk *cipher.FileKey, plain int64, first, last uint64) (uint64, bool, error) {
	l := fk.Layout()
	final := l.BlockCount(plain) - 1
	sealed := make([]byte, l.BlockSize+cipher.BlockOverhead)
	dst := make([]byte, 0, l.BlockSize)
	objEnd := l.PlainSizeToCipherSize(plain)
	for i := first; i <= last; i++ {
		n := min(int64(len(sealed)), objEnd-l.BlockIndexToCipherOff(i))
		if _, err := io.ReadFull(r, sealed[:n]); err != nil {
			return i, false, fmt.Errorf("block %d: %w", i, err)
		}
		if v.Done != nil {
			v.Done(0, n)
		}
		if _, err := fk.Open(dst[:0], sealed[:n], i, i == final); err != nil {
			return i, true, err
		}
	}
	return 0, false, nil
}
