package vaultread

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"maps"
	"sort"
	"strings"
	"sync"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
)

// Rewriter re-encrypts, under the current master key, every object still
// sealed under an older key of the ring, content or extended attributes
// (sealed in the metadata of files and directory markers): the second
// half of a key rotation (issue #10, rotate --rewrite), after which the
// old key can be dropped from the ring without losing anything. Each object is streamed
// (decrypt, re-encrypt, upload: bounded memory) and replaced with a write
// conditional on the ETag it was read at, so a file a mount changes
// meanwhile is never overwritten with its older content.
type Rewriter struct {
	Store backend.Store
	Keys  *cipher.Keys
	// Parallel is how many objects are rewritten at once (4 if 0); each
	// reads with DefaultParallel ranged GETs.
	Parallel int
	// Done is called (concurrently) after each object, rewritten telling
	// whether it was (false: it already was current, or it was left as it
	// is with a problem).
	Done func(key string, rewritten bool)
}

// RewriteReport is the outcome of Rewrite.
type RewriteReport struct {
	Rewritten int `json:"rewritten"`
	Current   int `json:"current"` // already under the current key
	// Problems are the objects left as they were: not encrypted, under a
	// key not in the ring, corrupt, or changed meanwhile (rerun to finish).
	Problems []Problem `json:"problems"`
}

// Rewrite rewrites the objects of objs (as Objects lists them) whose
// content or sealed extended attributes are under a key other than the
// current one. It is safe to interrupt at any point (even by a crash):
// every object is then either its old version, readable with the old key,
// or its new one, and a later run skips what is already current.
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
			}
			if w.Done != nil {
				w.Done(o.Key, p == nil && !current)
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

// metaXattr is the user metadata key under which a mount keeps a node's
// extended attributes, sealed with the vault's keys like a small object of
// their own (fs/xattr.go; fs's metaXattr, unexported there). A rewrite
// must reseal them too: once the old key is dropped, attributes sealed
// under it would be lost. TestRotateRewriteKilled (tests/) checks the name
// against what a real mount stores.
const metaXattr = "xattr"

// Objects lists what Rewrite looks at: every object of the vault but its
// config, directory markers included (their metadata may hold sealed
// extended attributes).
func (w *Rewriter) Objects(ctx context.Context) ([]backend.ObjectInfo, error) {
	var objs []backend.ObjectInfo
	err := w.Store.List(ctx, "", "", func(obj *backend.ObjectInfo, _ string) error {
		if obj != nil && obj.Key != fs.ConfigKey {
			objs = append(objs, *obj)
		}
		return nil
	})
	return objs, err
}

// object rewrites o if its content or its sealed extended attributes are
// under an old key; current reports that both already were under the
// current one (or that o is gone). The object is judged as it is now (a
// Stat), not as listed, so a pass resumed after an interruption, or one
// racing a mount, acts on the newest version.
func (w *Rewriter) object(ctx context.Context, ids map[cipher.KeyID]bool, curr cipher.KeyID, o backend.ObjectInfo) (current bool, p *Problem) {
	prob := func(kind, format string, args ...any) *Problem {
		return &Problem{Key: o.Key, Kind: kind, Detail: fmt.Sprintf(format, args...)}
	}
	// The metadata (mode, owner, mtime, type) is kept as it is: a rewrite
	// changes no attribute. Stat supplies it (List does not).
	info, err := w.Store.Stat(ctx, o.Key)
	if errors.Is(err, backend.ErrNotFound) {
		return true, nil // removed since the listing: nothing left to rewrite
	}
	if err != nil {
		return false, prob(ProblemUnreadable, "stat: %v", err)
	}
	meta := info.Metadata
	xattrOld := false
	if x := meta[metaXattr]; x != "" {
		id, ok := sealedKeyID(x)
		switch {
		case !ok:
			return false, prob(ProblemCorrupt, "sealed extended attributes: no s3cryptfs header")
		case !ids[id]:
			p := prob(ProblemForeign, "extended attributes sealed under master key %s, which the ring does not hold: cannot be rewritten", id)
			p.KeyID = id.String()
			return false, p
		case id != curr:
			resealed, err := w.reseal(x)
			if err != nil {
				return false, prob(ProblemCorrupt, "sealed extended attributes: %v", err)
			}
			meta = maps.Clone(meta)
			meta[metaXattr] = resealed
			xattrOld = true
		}
	}
	if info.Size == 0 {
		// A directory (a marker "d/", or with encrypted names an object
		// of type dir), or a FIFO, socket or device node: no content,
		// only metadata. Any other empty object is damage.
		if a := fs.ObjectAttrOf(info, strings.HasSuffix(o.Key, "/")); !a.Dir && a.Special == "" {
			return false, prob(ProblemNotEncrypted, "empty object: no s3cryptfs header (not a directory, FIFO, socket or device node either)")
		}
		if !xattrOld {
			return true, nil
		}
		return false, w.replace(ctx, o.Key, info.ETag, bytes.NewReader(nil), 0, meta, prob)
	}
	h := make([]byte, cipher.HeaderSize)
	if info.Size >= cipher.HeaderSize {
		r := &objectReaderAt{ctx: ctx, st: w.Store, key: o.Key, etag: info.ETag}
		if _, err := r.ReadAt(h, 0); err != nil {
			if errors.Is(err, backend.ErrPreconditionFailed) || errors.Is(err, backend.ErrNotFound) {
				return false, prob(ProblemChanged, "changed or removed while it was read: %v", err)
			}
			return false, prob(ProblemUnreadable, "read header: %v", err)
		}
	}
	id, ok := cipher.HeaderKeyID(h)
	switch {
	case !ok:
		return false, prob(ProblemNotEncrypted, "no s3cryptfs header: left as it is")
	case id == curr && !xattrOld:
		return true, nil
	case !ids[id]:
		p := prob(ProblemForeign, "sealed under master key %s, which the ring does not hold: cannot be rewritten", id)
		p.KeyID = id.String()
		return false, p
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
	p = w.replace(ctx, o.Key, info.ETag, pr, w.Keys.Layout().PlainSizeToCipherSize(size), meta, prob)
	pr.Close() // ends the writer if the upload stopped early
	return false, p
}

// replace uploads the new version of key, conditional on etag: an object
// replaced meanwhile (a mount's write, under the current key) is kept. An
// upload that is interrupted (a crash, a kill) stores nothing, so the old
// version, still readable with the old key, stays until a later run.
func (w *Rewriter) replace(ctx context.Context, key, etag string, r io.Reader, size int64, meta map[string]string,
	prob func(kind, format string, args ...any) *Problem) *Problem {
	_, err := w.Store.PutWith(ctx, key, r, size, backend.PutOptions{Metadata: meta, IfMatch: etag})
	switch {
	case err == nil:
		return nil
	case errors.Is(err, backend.ErrPreconditionFailed) || errors.Is(err, backend.ErrNotFound):
		return prob(ProblemChanged, "replaced while it was rewritten; the newer version was kept")
	case errors.Is(err, cipher.ErrCorrupt):
		return prob(ProblemCorrupt, "%v", err)
	}
	return prob(ProblemUnreadable, "rewrite: %v", err)
}

// sealedKeyID is the master key id in the header of a sealed metadata
// value (base64 of an s3cryptfs object).
func sealedKeyID(v string) (cipher.KeyID, bool) {
	b, err := base64.RawStdEncoding.DecodeString(v)
	if err != nil {
		return cipher.KeyID{}, false
	}
	return cipher.HeaderKeyID(b)
}

// reseal opens a sealed metadata value and seals its plaintext again under
// the current key (a new header, salt and nonces, as a mount would).
func (w *Rewriter) reseal(v string) (string, error) {
	b, err := base64.RawStdEncoding.DecodeString(v)
	if err != nil {
		return "", fmt.Errorf("not base64: %w", cipher.ErrCorrupt)
	}
	r, err := cipher.NewReader(bytes.NewReader(b), int64(len(b)), w.Keys)
	if err != nil {
		return "", err
	}
	plain := make([]byte, r.Size())
	if n, err := r.ReadAt(plain, 0); n != len(plain) {
		return "", err
	}
	var buf bytes.Buffer
	cw, err := cipher.NewWriter(&buf, w.Keys)
	if err != nil {
		return "", err
	}
	if _, err := cw.Write(plain); err != nil {
		return "", err
	}
	if err := cw.Close(); err != nil {
		return "", err
	}
	return base64.RawStdEncoding.EncodeToString(buf.Bytes()), nil
}
