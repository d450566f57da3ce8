package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/s3cryptfs/s3cryptfs/internal/vaultread"
)

type getFlags struct {
	readFlags
	force   bool
	verbose bool
}

func newGetCommand() *cobra.Command {
	var f getFlags
	groups := f.groups("ranged GETs in flight per file (4 files at once)")
	out := newGroup("Output")
	out.fs.BoolVar(&f.force, "force", false, "replace files and symlinks that exist at DEST, and fill existing directories")
	out.fs.BoolVarP(&f.verbose, "verbose", "v", false, "name each entry as it is done")
	cmd := &cobra.Command{
		Use:   "get [options] STORE PATH DEST",
		Short: "copy a file or a tree out of the vault without mounting it",
		Long: `Copy PATH of the vault in STORE (a file, a symlink, or a directory with
everything below it; "/" is the whole vault) to DEST, which names the copy
(as cp -r does). Modes, mtimes and symlinks are restored; owners are not
(the copy belongs to whoever runs get). Refuses to overwrite anything unless
--force. Each file is written under a temporary name and renamed when
complete and authenticated.`,
		Args: exactArgs(3, "STORE, PATH and DEST"),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := pathArg(args[1])
			if err != nil {
				return err
			}
			return runGet(&f, args[0], path, args[2], c.OutOrStdout())
		},
	}
	addGroups(cmd, append(groups, out)...)
	registerCompletions(cmd)
	return cmd
}

func runGet(f *getFlags, spec, path, dest string, stdout io.Writer) error {
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
	g := &vaultread.Getter{Tree: t, Force: f.force, Parallel: f.parallel}
	if f.verbose {
		g.Copied = func(e vaultread.Entry) { fmt.Fprintln(stdout, "/"+e.Path) }
	}
	return g.Get(ctx, top, dest)
}
