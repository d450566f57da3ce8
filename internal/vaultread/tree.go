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
)

// Tree reads the names of a vault as a mount shows them.
type Tree struct {
	Store backend.Store
	Keys  *cipher.Keys // nil: plaintext vault
	// Parallel bounds the HEAD requests in flight (DefaultParallel if 0).
	Parallel int
}

func (t *Tree) par() int {
	if t.Parallel > 0 {
		return t.Parallel
	}
	return DefaultParallel
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

// Stat finds path ("" the root): a directory (a marker, or any key below
// it: a directory wins over a file of the same name, as in a mount), a
// file or a symlink.
func (t *Tree) Stat(ctx context.Context, path string) (Entry, error) {
	if path == "" {
		return implicitDir(""), nil
	}
	if info, err := t.Store.Stat(ctx, path+"/"); err == nil {
		return t.entry(path, info, true), nil
	} else if !errors.Is(err, backend.ErrNotFound) {
		return Entry{}, err
	}
	found := false
	errFound := errors.New("found")
	err := t.Store.List(ctx, path+"/", "/", func(*backend.ObjectInfo, string) error {
		found = true
		return errFound
	})
	if err != nil && !errors.Is(err, errFound) {
		return Entry{}, err
	}
	if found {
		return implicitDir(path), nil
	}
	info, err := t.Store.Stat(ctx, path)
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
	prefix := ""
	if dir != "" {
		prefix = dir + "/"
	}
	type item struct {
		name  string
		isDir bool
	}
	var items []item
	dirs := map[string]bool{}
	err := t.Store.List(ctx, prefix, "/", func(obj *backend.ObjectInfo, p string) error {
		if obj != nil {
			name := strings.TrimPrefix(obj.Key, prefix)
			if name != "" && validName(name) && !reservedRoot(prefix, name) {
				items = append(items, item{name: name})
			}
			return nil
		}
		name := strings.TrimSuffix(strings.TrimPrefix(p, prefix), "/")
		if validName(name) && !reservedRoot(prefix, name) {
			dirs[name] = true
			items = append(items, item{name: name, isDir: true})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	var keep []item
	for _, it := range items {
		if !it.isDir && dirs[it.name] {
			continue // a directory wins over a file of the same name
		}
		keep = append(keep, it)
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
			path := prefix + it.name
			if !it.isDir {
				info, err := t.Store.Stat(ctx, path)
				if err != nil {
					errs[i] = err
					return
				}
				out[i] = t.entry(path, info, false)
				return
			}
			info, err := t.Store.Stat(ctx, path+"/")
			switch {
			case err == nil:
				out[i] = t.entry(path, info, true)
			case errors.Is(err, backend.ErrNotFound):
				out[i] = implicitDir(path)
			default:
				errs[i] = err
			}
		}()
	}
	wg.Wait()
	// An object deleted between the listing and its HEAD is simply gone.
	var res []Entry
	for i := range out {
		if errors.Is(errs[i], backend.ErrNotFound) {
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
	children, err := t.List(ctx, top.Path)
	if err != nil {
		return err
	}
	for _, c := range children {
		if err := t.Walk(ctx, c, fn); err != nil {
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
