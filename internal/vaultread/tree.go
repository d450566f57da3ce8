package vaultread

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
	"github.com/s3cryptfs/s3cryptfs/fs/names"
)

// Tree reads the names of a vault as a mount shows them, through the same
// names layer (fs/names): keys that mirror paths, or encrypted names under
// per-directory ids.
type Tree struct {
	Store backend.Store
	Keys  *cipher.Keys // nil: plaintext vault
	// Parallel bounds the HEAD requests in flight (DefaultParallel if 0).
	Parallel int
	// BadName, if set, is told of every listed key that is not a name of
	// the directory it is listed in (encrypted names that do not
	// authenticate there, a directory marker without a valid id); such
	// entries are left out of listings either way.
	BadName func(key string, err error)

	once   sync.Once
	layout *names.Layout
	err    error
}

// Names is the vault's names layer: encrypted when its keys hold a name
// key.
func (t *Tree) Names() (*names.Layout, error) {
	t.once.Do(func() {
		t.layout = names.Plain()
		if t.Keys != nil && t.Keys.NameKey() != nil {
			t.layout, t.err = names.New(t.Keys.NameKey())
		}
	})
	return t.layout, t.err
}

func (t *Tree) par() int {
	if t.Parallel > 0 {
		return t.Parallel
	}
	return DefaultParallel
}

func (t *Tree) badName(key string, err error) {
	if t.BadName != nil {
		t.BadName(key, err)
	}
}

// entry builds the Entry of a stored object (Metadata filled by Stat).
func (t *Tree) entry(path string, info backend.ObjectInfo, isDir bool) Entry {
	e := Entry{Path: path, Attr: fs.ObjectAttrOf(info, isDir), Info: info}
	if isDir || e.Attr.Special != "" {
		return e // no content
	}
	e.Size = info.Size
	if t.Keys != nil {
		e.Size, e.SizeErr = t.Keys.Layout().CipherSizeToPlainSize(info.Size)
	}
	return e
}

func implicitDir(path string) Entry {
	return Entry{Path: path, Attr: fs.ObjectAttr{Dir: true, Mode: 0o755}}
}

// splitPath splits "a/b/c" into "a/b" and "c" ("" and "a" for "a").
func splitPath(p string) (string, string) {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i], p[i+1:]
	}
	return "", p
}

// dirLoc is where the entries of directory dir are stored, found by
// walking from the root (one marker HEAD per level with encrypted names).
func (t *Tree) dirLoc(ctx context.Context, dir string) (names.Dir, error) {
	l, err := t.Names()
	if err != nil {
		return names.Dir{}, err
	}
	if !l.Encrypted() {
		if dir == "" {
			return names.Dir{}, nil
		}
		return names.Dir{Prefix: dir + "/"}, nil
	}
	loc := l.Root()
	if dir == "" {
		return loc, nil
	}
	done := ""
	for _, comp := range strings.Split(dir, "/") {
		done = strings.TrimPrefix(done+"/"+comp, "/")
		e, err := l.Entry(loc, comp)
		if err != nil {
			return names.Dir{}, fmt.Errorf("%s: %w", done, err)
		}
		info, err := t.Store.Stat(ctx, l.Marker(e.Key))
		if errors.Is(err, backend.ErrNotFound) {
			return names.Dir{}, fmt.Errorf("%s: %w", done, ErrNotFound)
		}
		if err != nil {
			return names.Dir{}, err
		}
		if l.Encrypted() && !fs.ObjectAttrOf(info, false).Dir {
			return names.Dir{}, fmt.Errorf("%s: not a directory: %w", done, ErrNotFound)
		}
		if loc, err = l.Child(loc, comp, info.Metadata); err != nil {
			return names.Dir{}, fmt.Errorf("%s (%s): %w", done, l.Marker(e.Key), err)
		}
	}
	return loc, nil
}

// Stat finds path ("" the root): a directory (a marker, or with plaintext
// names any key below it: a directory wins over a file of the same name,
// as in a mount), a file or a symlink.
func (t *Tree) Stat(ctx context.Context, path string) (Entry, error) {
	if path == "" {
		return implicitDir(""), nil
	}
	l, err := t.Names()
	if err != nil {
		return Entry{}, err
	}
	parent, name := splitPath(path)
	loc, err := t.dirLoc(ctx, parent)
	if err != nil {
		return Entry{}, err
	}
	ent, err := l.Entry(loc, name)
	if err != nil {
		return Entry{}, fmt.Errorf("%s: %w", path, err)
	}
	if !l.SeparateMarkers() {
		// Encrypted names: the entry is one object, whatever its kind.
		info, err := t.Store.Stat(ctx, ent.Key)
		if errors.Is(err, backend.ErrNotFound) {
			return Entry{}, fmt.Errorf("%s: %w", path, ErrNotFound)
		}
		if err != nil {
			return Entry{}, err
		}
		isDir := fs.ObjectAttrOf(info, false).Dir
		if isDir {
			if _, err := l.Child(loc, name, info.Metadata); err != nil {
				return Entry{}, fmt.Errorf("%s (%s): %w", path, ent.Key, err)
			}
		}
		return t.entry(path, info, isDir), nil
	}
	if info, err := t.Store.Stat(ctx, l.Marker(ent.Key)); err == nil {
		return t.entry(path, info, true), nil
	} else if !errors.Is(err, backend.ErrNotFound) {
		return Entry{}, err
	}
	if !l.Encrypted() {
		found := false
		errFound := errors.New("found")
		err := t.Store.List(ctx, ent.Key+"/", "/", func(*backend.ObjectInfo, string) error {
			found = true
			return errFound
		})
		if err != nil && !errors.Is(err, errFound) {
			return Entry{}, err
		}
		if found {
			return implicitDir(path), nil
		}
	}
	info, err := t.Store.Stat(ctx, ent.Key)
	if errors.Is(err, backend.ErrNotFound) {
		return Entry{}, fmt.Errorf("%s: %w", path, ErrNotFound)
	}
	if err != nil {
		return Entry{}, err
	}
	return t.entry(path, info, false), nil
}

// List returns the entries of directory dir ("" the root), sorted by
// name, with their attributes (one HEAD per file, symlink and directory
// marker, Parallel at a time).
func (t *Tree) List(ctx context.Context, dir string) ([]Entry, error) {
	loc, err := t.dirLoc(ctx, dir)
	if err != nil {
		return nil, err
	}
	return t.list(ctx, loc, dir)
}

// list lists the directory stored at loc, whose path is dir.
func (t *Tree) list(ctx context.Context, loc names.Dir, dir string) ([]Entry, error) {
	l, err := t.Names()
	if err != nil {
		return nil, err
	}
	prefix := loc.Prefix
	type item struct {
		seg   string
		name  string // "" until a shortened segment's metadata is read
		isDir bool
	}
	var items []item
	dirs := map[string]bool{}
	decode := func(key, seg string) (string, bool) {
		n, err := l.Name(loc, seg, "")
		switch {
		case errors.Is(err, names.ErrNeedMeta):
			return "", true
		case err != nil:
			t.badName(key, err)
			return "", false
		}
		return n, validName(n) && !reservedRoot(prefix, n)
	}
	err = t.Store.List(ctx, prefix, "/", func(obj *backend.ObjectInfo, p string) error {
		if obj != nil {
			seg := strings.TrimPrefix(obj.Key, prefix)
			if seg == "" {
				return nil // the directory's own marker
			}
			if n, ok := decode(obj.Key, seg); ok {
				items = append(items, item{seg: seg, name: n})
			}
			return nil
		}
		seg := strings.TrimSuffix(strings.TrimPrefix(p, prefix), "/")
		if n, ok := decode(p, seg); ok {
			dirs[seg] = true
			items = append(items, item{seg: seg, name: n, isDir: true})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var keep []item
	for _, it := range items {
		if !it.isDir && dirs[it.seg] {
			continue // a directory wins over a file of the same name
		}
		keep = append(keep, it)
	}
	join := func(name string) string {
		if dir == "" {
			return name
		}
		return dir + "/" + name
	}
	out := make([]Entry, len(keep))
	errs := make([]error, len(keep))
	sem := make(chan struct{}, t.par())
	var wg sync.WaitGroup
	for i, it := range keep {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			key := loc.Key(it.seg)
			if it.isDir {
				key = l.Marker(key)
			}
			info, err := t.Store.Stat(ctx, key)
			switch {
			case err == nil:
			case errors.Is(err, backend.ErrNotFound) && it.isDir && !l.Encrypted():
				out[i] = implicitDir(join(it.name))
				return
			default:
				errs[i] = err
				return
			}
			name := it.name
			if name == "" {
				n, err := l.Name(loc, it.seg, info.Metadata[names.MetaLongName])
				if err != nil || !validName(n) {
					t.badName(key, fmt.Errorf("shortened name: %w", err))
					errs[i] = errSkip
					return
				}
				name = n
			}
			isDir := it.isDir || fs.ObjectAttrOf(info, false).Dir
			if isDir && l.Encrypted() {
				if _, err := l.Child(loc, name, info.Metadata); err != nil {
					t.badName(key, err)
					errs[i] = errSkip
					return
				}
			}
			out[i] = t.entry(join(name), info, isDir)
		}()
	}
	wg.Wait()
	// An object deleted between the listing and its HEAD is simply gone.
	var res []Entry
	for i := range out {
		if errors.Is(errs[i], backend.ErrNotFound) || errors.Is(errs[i], errSkip) {
			continue
		}
		if errs[i] != nil {
			return nil, errs[i]
		}
		res = append(res, out[i])
	}
	sort.Slice(res, func(a, b int) bool { return res[a].Path < res[b].Path })
	return res, nil
}

// errSkip marks an entry left out of a listing (reported to BadName).
var errSkip = errors.New("not a name of this directory")

// DirLoc is where the entries of directory dir are stored (its key
// prefix), for callers that list objects below it.
func (t *Tree) DirLoc(ctx context.Context, dir string) (names.Dir, error) {
	return t.dirLoc(ctx, dir)
}

// Walk calls fn for dir's entry and then for every entry below it, depth
// first, directories before their contents. fn returning an error stops
// the walk.
func (t *Tree) Walk(ctx context.Context, top Entry, fn func(Entry) error) error {
	if err := fn(top); err != nil {
		return err
	}
	if !top.Attr.Dir {
		return nil
	}
	loc, err := t.dirLoc(ctx, top.Path)
	if err != nil {
		return err
	}
	return t.walk(ctx, loc, top.Path, fn)
}

// walk calls fn for every entry below the directory dir stored at loc.
func (t *Tree) walk(ctx context.Context, loc names.Dir, dir string, fn func(Entry) error) error {
	l, err := t.Names()
	if err != nil {
		return err
	}
	children, err := t.list(ctx, loc, dir)
	if err != nil {
		return err
	}
	for _, c := range children {
		if err := fn(c); err != nil {
			return err
		}
		if !c.Attr.Dir {
			continue
		}
		_, name := splitPath(c.Path)
		cl, err := l.Child(loc, name, c.Info.Metadata)
		if err != nil {
			return fmt.Errorf("%s: %w", c.Path, err)
		}
		if err := t.walk(ctx, cl, c.Path, fn); err != nil {
			return err
		}
	}
	return nil
}

// Readlink returns a symlink's target (its content, encrypted like a
// file's).
func (t *Tree) Readlink(ctx context.Context, e Entry) (string, error) {
	if e.SizeErr != nil {
		return "", fmt.Errorf("%s: %w", e.Path, e.SizeErr)
	}
	if e.Size > fs.MaxSymlinkTarget {
		return "", fmt.Errorf("%s: symlink target of %d bytes, over %d: %w", e.Path, e.Size, fs.MaxSymlinkTarget, cipher.ErrCorrupt)
	}
	r, size, err := Open(ctx, t.Store, t.Keys, e.Info)
	if err != nil {
		return "", err
	}
	b := make([]byte, size)
	if n, err := r.ReadAt(b, 0); n != len(b) {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return "", fmt.Errorf("%s: %w", e.Path, err)
	}
	return string(b), nil
}

// validName: the names a directory entry can hold (see SEMANTICS.md).
func validName(n string) bool {
	return n != "" && n != "." && n != ".." && !strings.Contains(n, "/")
}
