package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/s3cryptfs/s3cryptfs/internal/vaultread"
)

func newCatCommand() *cobra.Command {
	var f readFlags
	groups := f.groups("readahead, in 4MiB units: how far the ranged GETs (up to 8MiB each, 4 in flight) run ahead of the output (memory: about twice this)")
	cmd := &cobra.Command{
		Use:   "cat [options] STORE PATH",
		Short: "write a file of the vault to stdout without mounting it",
		Long: `Decrypt the file PATH of the vault in STORE to stdout, streaming through the
mount's own read path (its readahead: ranged GETs in parallel ahead of the
output, bounded memory); every block is authenticated before it is
written. A block that does not authenticate stops the output with exit
status 1 and a message naming the block.`,
		Args: exactArgs(2, "STORE and PATH"),
		RunE: func(c *cobra.Command, args []string) error {
			path, err := pathArg(args[1])
			if err != nil {
				return err
			}
			return runCat(&f, args[0], path, c.OutOrStdout())
		},
	}
	addGroups(cmd, groups...)
	registerCompletions(cmd)
	return cmd
}

// catReadaheadUnit is what one unit of cat's --parallel adds to the
// readahead window: the default (vaultread.DefaultParallel, 8) gives the
// engine's default window, 32 MiB.
const catReadaheadUnit = 4 << 20

func runCat(f *readFlags, spec, path string, stdout io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if path == "" {
		return usagef("PATH is the root directory; cat takes a file")
	}
	st, keys, err := f.openVault(ctx, spec)
	if err != nil {
		return err
	}
	t := &vaultread.Tree{Store: st, Keys: keys}
	e, err := t.Stat(ctx, path)
	if err != nil {
		return err
	}
	switch {
	case e.Attr.Dir:
		return fmt.Errorf("%s is a directory", path)
	case e.Attr.Symlink:
		target, err := t.Readlink(ctx, e)
		if err != nil {
			return err
		}
		return fmt.Errorf("%s is a symlink to %s; cat the target", path, target)
	case e.Attr.Special != "":
		return fmt.Errorf("%s is a %s: it has no content", path, e.Attr.Special)
	case e.SizeErr != nil:
		return fmt.Errorf("%s: %w", path, e.SizeErr)
	}
	err = vaultread.Stream(ctx, stdout, st, keys, e.Info, int64(f.parallel)*catReadaheadUnit)
	if errors.Is(err, syscall.EPIPE) {
		return nil // the reader went away (cat | head): not an error
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
