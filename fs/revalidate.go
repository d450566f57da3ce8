package fs

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// Bulk revalidation. Attributes are trusted for one TTL; after that a
// lookup used to HEAD the name twice (as a directory marker and as a
// file), so reading every file of a tree a second after listing it cost two
// HEADs per file. A file's attributes live in its object's metadata, which
// cannot change without a new ETag or LastModified; so one listing of the
// directory revalidates every expired entry of it whose object still has
// the ETag, size and LastModified (to the second) we hold. Entries the listing does not confirm (changed, gone,
// or a directory of the same name appeared) take the HEAD path as before.
// A directory is revalidated at most once per TTL, and only if its last
// listing fitted one page (revalMaxEntries), so a lookup in a huge
// directory never pays for a long listing.

// revalMaxEntries: directories up to this many entries are revalidated
// with one listing (one ListObjectsV2 page on S3).
const revalMaxEntries = 1000

// revalidator remembers, per directory prefix, the size of its last
// listing, when it was last revalidated and the revalidation running now.
type revalidator struct {
	mu   sync.Mutex
	dirs map[string]*revalDir
}

type revalDir struct {
	size    int           // entries in the last listing
	at      time.Time     // last revalidation started
	running chan struct{} // closed when the running revalidation ends; nil if none
}

// noteListing records that a listing of prefix had n entries.
func (r *revalidator) noteListing(prefix string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.dirs == nil || len(r.dirs) > 100000 {
		r.dirs = map[string]*revalDir{} // a bound; forgetting only costs HEADs
	}
	if d := r.dirs[prefix]; d != nil {
		d.size = n
	} else {
		r.dirs[prefix] = &revalDir{size: n}
	}
}

// revalidated returns key's attributes if its expired cache entry is
// confirmed by a listing of its directory (run now, or by a concurrent
// lookup in the same directory).
func (f *FS) revalidated(ctx context.Context, key string) (attr, bool) {
	old, ok := f.cache.stale(key)
	if !ok || old.kind == kindDir || old.info.ETag == "" {
		return attr{}, false
	}
	pfx, _ := splitKey(key)
	r := &f.reval
	r.mu.Lock()
	d := r.dirs[pfx]
	if d == nil || d.size > revalMaxEntries ||
		(d.running == nil && time.Since(d.at) < f.ttl) { // listed a moment ago without confirming key
		r.mu.Unlock()
		return attr{}, false
	}
	wait, mine := d.running, d.running == nil
	if mine {
		wait = make(chan struct{})
		d.running, d.at = wait, time.Now()
	}
	r.mu.Unlock()
	if mine {
		f.revalidateDir(ctx, pfx)
		r.mu.Lock()
		d.running = nil
		r.mu.Unlock()
		close(wait)
	} else {
		select {
		case <-wait:
		case <-ctx.Done():
			return attr{}, false
		}
	}
	return f.cache.get(key)
}

// revalidateDir lists prefix once and renews the cache entries of the
// files and symlinks it confirms. A failed listing confirms nothing.
func (f *FS) revalidateDir(ctx context.Context, pfx string) {
	var objs []backend.ObjectInfo
	dirs := map[string]bool{}
	n := 0
	listed := time.Now()
	err := f.store.List(ctx, pfx, "/", func(obj *backend.ObjectInfo, p string) error {
		n++
		if n > revalMaxEntries {
			return errStop
		}
		if obj != nil {
			objs = append(objs, *obj)
		} else {
			dirs[strings.TrimSuffix(p, "/")] = true
		}
		return nil
	})
	if err != nil && err != errStop {
		f.log.Debug("revalidation listing failed", "dir", pfx, "err", err)
		return
	}
	f.reval.noteListing(pfx, n)
	renewed := 0
	for _, o := range objs {
		if dirs[o.Key] {
			continue // a directory of the same name now: let a HEAD decide
		}
		if f.cache.renew(o.Key, &o, listed, f.ttl) {
			renewed++
		}
	}
	f.log.Debug("revalidated", "dir", pfx, "listed", n, "renewed", renewed)
}
