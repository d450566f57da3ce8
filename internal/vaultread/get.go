package vaultread

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"golang.org/x/sys/unix"
)

// Getter copies files and trees out of a vault into the local filesystem,
// with their modes, mtimes and symlinks (not their owners: a restore is
// owned by whoever runs it, as with cp without -p).
type Getter struct {
	Tree *Tree
	// Force replaces files and symlinks that exist at the destination;
	// without it anything in the way is an error and nothing is replaced.
	Force bool
	// Parallel bounds the ranged GETs of one file (DefaultParallel if 0);
	// Files is how many files are copied at once (4 if 0).
	Parallel, Files int
	// Copied is called after each file, symlink or directory is done.
	Copied func(e Entry)
}

// Get copies top to dest (dest is top's own new name, as with cp -r).
func (g *Getter) Get(ctx context.Context, top Entry, dest string) error {
	if _, err := os.Lstat(dest); err == nil {
		if !g.Force {
			return fmt.Errorf("%s exists; refusing to overwrite it (--force replaces files and merges into directories)", dest)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	files := g.Files
	if files <= 0 {
		files = 4
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		dirs     []Entry // in walk order: parents first
		dirDest  []string
		wg       sync.WaitGroup
		sem      = make(chan struct{}, files)
		mu       sync.Mutex
		firstErr error
	)
	fail := func(err error) {
		mu.Lock()
		if firstErr == nil {
			firstErr = err
			cancel()
		}
		mu.Unlock()
	}
	werr := g.Tree.Walk(ctx, top, func(e Entry) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(filepath.FromSlash(top.Path), filepath.FromSlash(e.Path))
		if top.Path == "" {
			rel = filepath.FromSlash(e.Path)
		}
		d := filepath.Join(dest, rel)
		if e.Attr.Dir {
			// Made writable for now; its own mode is set once its contents
			// are in (a read-only directory could not be filled).
			if err := os.Mkdir(d, 0o700); err != nil && !(g.Force && isDir(d)) {
				return err
			}
			dirs, dirDest = append(dirs, e), append(dirDest, d)
			return nil
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			var err error
			switch {
			case e.Attr.Symlink:
				err = g.symlink(ctx, e, d)
			case e.Attr.Special != "":
				err = g.special(e, d)
			default:
				err = g.file(ctx, e, d)
			}
			if err != nil {
				fail(err)
			} else if g.Copied != nil {
				g.Copied(e)
			}
		}()
		return nil
	})
	wg.Wait()
	if werr != nil && firstErr == nil {
		firstErr = werr
	}
	if firstErr != nil {
		return firstErr
	}
	// Deepest first, so setting a directory's mtime is not undone by
	// filling one below it.
	for i := len(dirs) - 1; i >= 0; i-- {
		if err := os.Chmod(dirDest[i], dirs[i].Attr.FileMode()&^os.ModeType); err != nil {
			return err
		}
		if err := setTimes(dirDest[i], dirs[i], false); err != nil {
			return err
		}
		if g.Copied != nil {
			g.Copied(dirs[i])
		}
	}
	return nil
}

func isDir(p string) bool {
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// replaceable clears d for a new file or symlink under Force.
func (g *Getter) replaceable(d string) error {
	fi, err := os.Lstat(d)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil
	case err != nil:
		return err
	case !g.Force:
		return fmt.Errorf("%s exists; refusing to overwrite it (use --force)", d)
	case fi.IsDir():
		return fmt.Errorf("%s is a directory; refusing to replace it with a file", d)
	}
	return os.Remove(d)
}

// file copies one file: written to a temporary name in the same directory
// and renamed, so that a failed copy leaves no partial file under its
// name.
func (g *Getter) file(ctx context.Context, e Entry, d string) error {
	if e.SizeErr != nil {
		return fmt.Errorf("%s: %w", e.Path, e.SizeErr)
	}
	if err := g.replaceable(d); err != nil {
		return err
	}
	r, size, err := Open(ctx, g.Tree.Store, g.Tree.Keys, e.Info)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(d), "."+filepath.Base(d)+".s3cryptfs-get-*")
	if err != nil {
		return err
	}
	ok := false
	defer func() {
		if !ok {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	par := g.Parallel
	if par <= 0 {
		par = DefaultParallel
	}
	if err := Copy(ctx, f, r, size, ChunkSize(g.Tree.Keys), par); err != nil {
		return fmt.Errorf("%s: %w", e.Path, err)
	}
	if err := f.Chmod(e.Attr.FileMode() &^ os.ModeType); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := setTimes(f.Name(), e, false); err != nil {
		return err
	}
	if !g.Force {
		// Link fails if something appeared at d meanwhile: never replaced.
		if err := os.Link(f.Name(), d); err != nil {
			return err
		}
		ok = true
		return os.Remove(f.Name())
	}
	if err := os.Rename(f.Name(), d); err != nil {
		return err
	}
	ok = true
	return nil
}

// special makes a FIFO or device node (devices need CAP_MKNOD, as for
// tar); a socket is skipped, as tar and cp do: no process listens on it.
func (g *Getter) special(e Entry, d string) error {
	var typ uint32
	switch e.Attr.Special {
	case "fifo":
		typ = unix.S_IFIFO
	case "chardev":
		typ = unix.S_IFCHR
	case "blockdev":
		typ = unix.S_IFBLK
	default:
		return nil
	}
	if err := g.replaceable(d); err != nil {
		return err
	}
	if err := unix.Mknod(d, typ|(e.Attr.Mode&0o7777), int(e.Attr.Dev)); err != nil {
		return fmt.Errorf("make %s %s: %w", e.Attr.Special, d, err)
	}
	if err := os.Chmod(d, e.Attr.FileMode()&^os.ModeType); err != nil { // past the umask
		return err
	}
	return setTimes(d, e, false)
}

func (g *Getter) symlink(ctx context.Context, e Entry, d string) error {
	target, err := g.Tree.Readlink(ctx, e)
	if err != nil {
		return err
	}
	if err := g.replaceable(d); err != nil {
		return err
	}
	if err := os.Symlink(target, d); err != nil {
		return err
	}
	return setTimes(d, e, true)
}

// setTimes sets mtime, and atime to the stored atime or (never set
// explicitly, as on most entries) the mtime; of the link itself for a
// symlink.
func setTimes(p string, e Entry, link bool) error {
	if e.Attr.Mtime.IsZero() {
		return nil // an implicit directory has no time of its own
	}
	ts := unix.NsecToTimespec(e.Attr.Mtime.UnixNano())
	as := ts
	if !e.Attr.Atime.IsZero() {
		as = unix.NsecToTimespec(e.Attr.Atime.UnixNano())
	}
	flags := 0
	if link {
		flags = unix.AT_SYMLINK_NOFOLLOW
	}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{as, ts}, flags); err != nil {
		return fmt.Errorf("set times of %s: %w", p, err)
	}
	return nil
}
