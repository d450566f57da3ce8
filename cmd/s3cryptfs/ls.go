package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/internal/vaultread"
)

type lsFlags struct {
	readFlags
	recursive bool
}

func newLsCommand() *cobra.Command {
	var f lsFlags
	groups := f.groups("HEAD requests in flight (one per entry: the listing carries no attributes)")
	out := newGroup("Output")
	out.fs.BoolVarP(&f.recursive, "recursive", "R", false, "list subdirectories too")
	cmd := &cobra.Command{
		Use:   "ls [options] STORE [PATH]",
		Short: "list a directory of the vault without mounting it",
		Long: `List PATH (default: the root) of the vault in STORE, as a mount would show
it, in long format: mode, size, mtime and name (symlinks with their
target).`,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) < 1 || len(args) > 2 {
				return usagef("want STORE [PATH], got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(c *cobra.Command, args []string) error {
			path := ""
			if len(args) == 2 {
				var err error
				if path, err = pathArg(args[1]); err != nil {
					return err
				}
			}
			return runLs(&f, args[0], path, c.OutOrStdout())
		},
	}
	addGroups(cmd, append(groups, out)...)
	registerCompletions(cmd)
	return cmd
}

func runLs(f *lsFlags, spec, path string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st, keys, err := f.openVault(ctx, spec)
	if err != nil {
		return err
	}
	t := &vaultread.Tree{Store: st, Keys: keys, Parallel: f.parallel}
	top, err := t.Stat(ctx, path)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 1, ' ', tabwriter.AlignRight)
	defer tw.Flush()
	if !top.Attr.Dir {
		return lsLine(ctx, t, tw, top, top.Path)
	}
	first := true
	var list func(dir vaultread.Entry) error
	list = func(dir vaultread.Entry) error {
		children, err := t.List(ctx, dir.Path)
		if err != nil {
			return err
		}
		if f.recursive {
			if !first {
				fmt.Fprintln(tw)
			}
			first = false
			name := dir.Path
			if name == "" {
				name = "/"
			}
			fmt.Fprintf(tw, "%s:\n", name)
		}
		for _, c := range children {
			if err := lsLine(ctx, t, tw, c, baseName(c.Path)); err != nil {
				return err
			}
		}
		if f.recursive {
			for _, c := range children {
				if c.Attr.Dir {
					if err := list(c); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}
	return list(top)
}

// lsLine prints one entry: mode, size, mtime, name (and a symlink's
// target). The name column comes last and unpadded, so names with spaces
// stay readable.
func lsLine(ctx context.Context, t *vaultread.Tree, w io.Writer, e vaultread.Entry, name string) error {
	size := fmt.Sprint(e.Size)
	switch {
	case e.Attr.Dir:
		size = "-"
	case e.Attr.Special == "chardev" || e.Attr.Special == "blockdev":
		size = fmt.Sprintf("%d, %d", unix.Major(e.Attr.Dev), unix.Minor(e.Attr.Dev))
	case e.SizeErr != nil:
		size = "?" // corrupt: s3cryptfs verify says more
	}
	mt := "-"
	if !e.Attr.Mtime.IsZero() {
		mt = e.Attr.Mtime.Local().Format(time.DateTime)
	}
	if e.Attr.Symlink {
		target, err := t.Readlink(ctx, e)
		if err != nil {
			target = fmt.Sprintf("? (%v)", err)
		}
		name += " -> " + target
	}
	_, err := fmt.Fprintf(w, "%s\t %s\t %s\t %s\n", modeString(e), size, mt, name)
	return err
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// modeString is the mode as ls -l prints it ("lrwxrwxrwx", "drwxr-sr-t"),
// which differs from Go's FileMode.String for links and special bits.
func modeString(e vaultread.Entry) string {
	b := []byte("-rwxrwxrwx")
	switch {
	case e.Attr.Dir:
		b[0] = 'd'
	case e.Attr.Symlink:
		b[0] = 'l'
	case e.Attr.Special != "":
		b[0] = map[string]byte{"fifo": 'p', "socket": 's', "chardev": 'c', "blockdev": 'b'}[e.Attr.Special]
	}
	m := e.Attr.Mode
	for i := 0; i < 9; i++ {
		if m&(1<<(8-i)) == 0 {
			b[1+i] = '-'
		}
	}
	special := func(bit uint32, pos int, c byte) {
		if m&bit != 0 {
			if b[pos] == '-' {
				c -= 'a' - 'A' // set without execute: capital, as ls does
			}
			b[pos] = c
		}
	}
	special(0o4000, 3, 's')
	special(0o2000, 6, 's')
	special(0o1000, 9, 't')
	return string(b)
}
