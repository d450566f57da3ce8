package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"text/tabwriter"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/s3cryptfs/s3cryptfs/internal/vaultread"
)

type verifyFlags struct {
	readFlags
	json bool
}

func newVerifyCommand() *cobra.Command {
	var f verifyFlags
	groups := f.groups("ranged GETs in flight (memory: about two blocks each)")
	out := newGroup("Output")
	out.fs.BoolVar(&f.json, "json", false, "print the report as one JSON object (objects, bytes, problems) for scripts")
	cmd := &cobra.Command{
		Use:   "verify [options] STORE [PATH]",
		Short: "authenticate every object of the vault (or under PATH)",
		Long: `Read every object of the vault in STORE (or under PATH, with the attribute
indexes of the directories there) and authenticate its header and every
block, without a mount. Reports each object that is corrupt (with the first
bad block), sealed under a key this vault does not hold (another vault's),
not encrypted at all (no s3cryptfs header), or of a size no file can have
(truncated or appended to). Directory markers and the vault config are not
checked; symlinks are (their target is encrypted like a file).

Exit status: 0 when every object verifies, 1 when any does not (or the run
failed), 2 for a usage error. A progress bar is shown on a terminal only.`,
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
			return runVerify(&f, args[0], path, c.OutOrStdout(), c.ErrOrStderr())
		},
	}
	addGroups(cmd, append(groups, out)...)
	registerCompletions(cmd)
	return cmd
}

func runVerify(f *verifyFlags, spec, path string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	st, keys, err := f.openVault(ctx, spec)
	if err != nil {
		return err
	}
	if keys == nil {
		return fmt.Errorf("verify needs an encrypted vault: with --client-encryption=false there is nothing to authenticate")
	}
	v := &vaultread.Verifier{Store: st, Keys: keys, Parallel: f.parallel}
	var bar *progressbar.ProgressBar
	var objects int
	if isTerminal(stdout) && !f.json {
		// Bytes on the bar, objects in its description.
		v.Listed = func(n int, b int64) {
			objects = n
			bar = progressbar.NewOptions64(b,
				progressbar.OptionSetWriter(stderr),
				progressbar.OptionShowBytes(true),
				progressbar.OptionShowCount(),
				progressbar.OptionSetDescription(fmt.Sprintf("0/%d objects", n)),
				progressbar.OptionThrottle(100_000_000),
				progressbar.OptionClearOnFinish(),
				progressbar.OptionSetWidth(30))
		}
		var mu sync.Mutex // Done is called from many goroutines
		var done int
		v.Done = func(o int, b int64) {
			mu.Lock()
			defer mu.Unlock()
			if b > 0 {
				bar.Add64(b)
			}
			if o > 0 {
				done += o
				bar.Describe(fmt.Sprintf("%d/%d objects", done, objects))
			}
		}
	}
	objs, err := v.Objects(ctx, path)
	if err != nil {
		return fmt.Errorf("list the objects: %w", err)
	}
	rep, err := v.Verify(ctx, objs)
	if bar != nil {
		bar.Finish()
	}
	if err != nil {
		return err
	}
	bad, err := v.Names(ctx, path)
	if err != nil {
		return fmt.Errorf("check the names: %w", err)
	}
	rep.Problems = append(rep.Problems, bad...)
	if rep.Problems == nil {
		rep.Problems = []vaultread.Problem{}
	}
	if f.json {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else {
		tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
		for _, p := range rep.Problems {
			where := p.Detail
			if p.Block != nil {
				where = fmt.Sprintf("block %d: %s", *p.Block, p.Detail)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\n", p.Kind, p.Key, where)
		}
		tw.Flush()
		fmt.Fprintf(stdout, "%d objects, %d bytes verified: %d problem(s)\n", rep.Objects, rep.Bytes, len(rep.Problems))
	}
	if len(rep.Problems) > 0 {
		return fmt.Errorf("%d of %d objects failed verification", len(rep.Problems), rep.Objects)
	}
	return nil
}
