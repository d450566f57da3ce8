package fs

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// Negative lookups. Creating a file starts with the kernel's lookup of its
// name, which without help costs two HEADs (the name as a directory marker
// and as a file) that both say "not found": two round trips before the one
// PUT that stores the file. A directory therefore remembers the key
// segments its last complete listing showed (or, for a directory this
// mount made, that it was empty), kept up to date by this mount's own
// creates, removals and renames; for one attribute timeout after the
// listing, a lookup of a segment not in the set is answered ENOENT with no
// request. When the set has expired, the next lookup that would miss
// renews it with one listing (directories of up to revalMaxEntries
// entries) instead of paying two HEADs per name. A name another client
// creates is therefore found by lookups here up to one attribute timeout
// later, as a change to an existing name is (docs/SEMANTICS.md).

// knownSegs is a directory's set of known key segments.
type knownSegs struct {
	segs     map[string]struct{} // nil: unknown
	at       time.Time           // when the listing that filled it started
	renewing bool                // a renewal listing is running
	// own is this mount's recent changes, by segment, so that a listing
	// that was under way when one happened (and may not show it: a created
	// file is stored only at its close) does not undo it.
	own map[string]ownChange
}

type ownChange struct {
	present bool
	at      time.Time
}

// ownKeep is how long a mount's own change is replayed onto listings that
// started before it; a listing older than that is not trusted at all.
const ownKeep = time.Minute

// setKnown replaces the set with the segments a complete listing that
// started at t showed, with this mount's changes since t applied.
func (d *Dir) setKnown(segs map[string]struct{}, t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.known.at.After(t) || time.Since(t) > ownKeep {
		return // a newer listing or mkdir already set it, or too old
	}
	for seg, c := range d.known.own {
		switch {
		case time.Since(c.at) > ownKeep:
			delete(d.known.own, seg)
		case !c.at.Before(t) && c.present:
			segs[seg] = struct{}{}
		case !c.at.Before(t):
			delete(segs, seg)
		}
	}
	d.known.segs, d.known.at = segs, t
}

// noteSeg records this mount's own change of a segment: present after a
// create, mkdir, symlink, mknod or a rename to it; absent after an unlink,
// rmdir or a rename from it.
func (d *Dir) noteSeg(seg string, present bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.known.own) > 10000 {
		d.known.own = nil
		d.known.segs = nil // cannot replay what was dropped: start over
	}
	if d.known.own == nil {
		d.known.own = map[string]ownChange{}
	}
	d.known.own[seg] = ownChange{present: present, at: time.Now()}
	if d.known.segs == nil {
		return
	}
	if present {
		d.known.segs[seg] = struct{}{}
	} else {
		delete(d.known.segs, seg)
	}
}

// forgetKnown drops the set (an operation whose outcome in the store is
// unknown).
func (d *Dir) forgetKnown() {
	d.mu.Lock()
	d.known.segs = nil
	d.mu.Unlock()
}

// knownAbsent reports whether seg is certainly not in the directory: the
// set is fresh and lacks it. With an expired set it first renews it with one
// listing, if no other lookup is doing so.
func (d *Dir) knownAbsent(ctx context.Context, seg string) bool {
	f := d.fsys
	if f.ttl <= 0 {
		return false
	}
	d.mu.Lock()
	segs, at, renewing := d.known.segs, d.known.at, d.known.renewing
	if segs != nil && time.Since(at) < f.ttl {
		_, ok := segs[seg]
		d.mu.Unlock()
		return !ok
	}
	if segs == nil || renewing {
		d.mu.Unlock()
		return false
	}
	d.known.renewing = true
	d.mu.Unlock()
	fresh, ok := d.listSegs(detach(ctx))
	d.mu.Lock()
	d.known.renewing = false
	d.mu.Unlock()
	if !ok {
		d.forgetKnown()
		return false
	}
	_, present := fresh[seg]
	return !present
}

// listSegs lists the directory's key segments with one delimited listing
// and makes them the known set; false if the listing failed or the
// directory is larger than one page (revalMaxEntries).
func (d *Dir) listSegs(ctx context.Context) (map[string]struct{}, bool) {
	f := d.fsys
	pfx := d.location().Prefix
	start := time.Now()
	segs := map[string]struct{}{}
	err := f.store.List(ctx, pfx, "/", func(obj *backend.ObjectInfo, p string) error {
		if len(segs) >= revalMaxEntries {
			return errStop
		}
		if obj != nil {
			if obj.Key != pfx {
				segs[strings.TrimPrefix(obj.Key, pfx)] = struct{}{}
			}
			return nil
		}
		segs[strings.TrimSuffix(strings.TrimPrefix(p, pfx), "/")] = struct{}{}
		return nil
	})
	if err != nil {
		if !errors.Is(err, errStop) {
			f.log.Debug("listing to renew negative lookups failed", "dir", pfx, "err", err)
		}
		return nil, false
	}
	f.reval.noteListing(pfx, len(segs))
	d.setKnown(segs, start)
	return segs, true
}
