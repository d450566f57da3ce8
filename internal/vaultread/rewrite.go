package vaultread

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// Rewriter re-encrypts, under the current master key, every object still
// sealed under an older key of the ring: the second half of a key
// rotation (issue #10, rotate --rewrite), after which the old key can be
// dropped from the ring without losing anything. Each object is streamed
// (decrypt, re-encrypt, upload: bounded memory) and replaced with a write
// conditional on the ETag it was read at, so a file a mount changes
// meanwhile is never overwritten with its older content.
type Rewriter struct {
	Store backend.Store
	Keys  *cipher.Keys
	// Parallel is how many objects are rewritten at once (4 if 0); each
	// reads with DefaultParallel ranged GETs.
	Parallel int
	// Done is called (concurrently) after each object that was rewritten.
	Done func(key string)
}

// RewriteReport is the outcome of Rewrite.
type RewriteReport struct {
	Rewritten int `json:"rewritten"`
	Current   int `json:"current"` // already under the current key
	// Problems are the objects left as they were: not encrypted, under a
	// key not in the ring, corrupt, or changed meanwhile (rerun to finish).
	Problems []Problem `json:"problems"`
}

// Rewrite rewrites the objects of objs (as Verifier.Objects lists them)
// that are sealed under a key other than the current one.
func (w *Rewriter) Rewrite(ctx context.Context, objs []backend.ObjectInfo) (RewriteReport, error) {
	par := w.Parallel
	if par <= 0 {
		par = 4
	}
	var (
		rep  RewriteReport
		mu   sync.Mutex
		wg   sync.WaitGroup
		sem  = make(chan struct{}, par)
		ids  = map[cipher.KeyID]bool{}
		curr = w.Keys.CurrentKeyID()
	)
	for _, id := range w.Keys.KeyIDs() {
		ids[id] = true
	}
	for _, o := range objs {
		if ctx.Err() != nil {
			break
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			current, p := w.object(ctx, ids, curr, o)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case p != nil:
				rep.Problems = append(rep.Problems, *p)
			case current:
				rep.Current++
			default:
				rep.Rewritten++
				if w.Done != nil {
					w.Done(o.Key)
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	sort.Slice(rep.Problems, func(i, j int) bool { return rep.Problems[i].Key < rep.Problems[j].Key })
	return rep, nil
}

// object rewrites o if it is under an old key; current reports that it
// already was under the current one.
func (w *Rewriter) object(ctx context.Context, ids map[cipher.KeyID]bool, curr cipher.KeyID, o backend.ObjectInfo) (current bool, p *Problem) {
	prob := func(kind, format string, args ...any) *Problem {
		return &Problem{Key: o.Key, Kind: kind, Detail: fmt.Sprintf(format, args...)}
	}
	h := make([]byte, cipher.HeaderSize)
	if o.Size >= cipher.HeaderSize {
		r := &objectReaderAt{ctx: ctx, st: w.Store, key: o.Key, etag: o.ETag}
		if _, err := r.ReadAt(h, 0); err != nil {
			if errors.Is(err, backend.ErrPreconditionFailed) || errors.Is(err, backend.ErrNotFound) {
				return false, prob(ProblemChanged, "changed or removed since it was listed: %v", err)
			}
			return false, prob(ProblemUnreadable, "read header: %v", err)
		}
	}
	id, ok := cipher.HeaderKeyID(h)
	switch {
	case !ok:
		return false, prob(ProblemNotEncrypted, "no s3cryptfs header: left as it is")
	case id == curr:
		return true, nil
	case !ids[id]:
		p := prob(ProblemForeign, "sealed under master key %s, which the ring does not hold: cannot be rewritten", id)
		p.KeyID = id.String()
		return false, p
	}
	// The metadata (mode, owner, mtime, symlink type) is kept as it is:
	// a rewrite changes no attribute. Stat supplies it (List does not).
	info, err := w.Store.Stat(ctx, o.Key)
	if err != nil || info.ETag != o.ETag {
		return false, prob(ProblemChanged, "changed or removed since it was listed (%v)", err)
	}
	r, size, err := Open(ctx, w.Store, w.Keys, info)
	if err != nil {
		if errors.Is(err, cipher.ErrCorrupt) {
			return false, prob(ProblemCorrupt, "%v", err)
		}
		return false, prob(ProblemUnreadable, "%v", err)
	}
	// Decrypt -> re-encrypt -> upload through a pipe: a few blocks in
	// memory whatever the object's size.
	pr, pw := io.Pipe()
	go func() {
		cw, err := cipher.NewWriter(pw, w.Keys)
		if err == nil {
			err = Copy(ctx, cw, r, size, ChunkSize(w.Keys), DefaultParallel)
		}
		if err == nil {
			err = cw.Close()
		}
		pw.CloseWithError(err)
	}()
	newSize := w.Keys.Layout().PlainSizeToCipherSize(size)
	_, err = w.Store.PutWith(ctx, o.Key, pr, newSize, backend.PutOptions{Metadata: info.Metadata, IfMatch: info.ETag})
	pr.CloseWithError(err) // ends the writer if the upload stopped early
	switch {
	case errors.Is(err, backend.ErrPreconditionFailed) || errors.Is(err, backend.ErrNotFound):
		return false, prob(ProblemChanged, "replaced while it was rewritten; the newer version was kept")
	case errors.Is(err, cipher.ErrCorrupt):
		return false, prob(ProblemCorrupt, "%v", err)
	case err != nil:
		return false, prob(ProblemUnreadable, "rewrite: %v", err)
	}
	return false, nil
}
