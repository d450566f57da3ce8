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
	groups := f.groups("ranged GETs in flight (memory: about this many times 64 blocks, 4MiB at the default block size)")
	cmd := &cobra.Command{
		Use:   "cat [options] STORE PATH",
		Short: "write a file of the vault to stdout without mounting it",
		Long: `Decrypt the file PATH of the vault in STORE to stdout, streaming: ranged GETs
run in parallel and every block is authenticated before it is written. A
block that does not authenticate stops the output with exit status 1.`,
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
	r, size, err := vaultread.Open(ctx, st, keys, e.Info)
	if err != nil {
		return err
	}
	err = vaultread.Copy(ctx, stdout, r, size, vaultread.ChunkSize(keys), f.parallel)
	if errors.Is(err, syscall.EPIPE) {
		return nil // the reader went away (cat | head): not an error
	}
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}
