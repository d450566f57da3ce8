package main

import (
	"context"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/s3cryptfs/s3cryptfs/internal/vaultread"
)

// rotateRewrite is rotate --rewrite: every object under an older master key
// is re-encrypted under the current one (internal/vaultread.Rewriter), and
// once none is left (no problem reported) the older keys leave the keyring.
// Objects already current are skipped, so a second run resumes.
func rotateRewrite(o *vaultOpener, spec string, parallel int) error {
	if parallel < 1 || parallel > 64 {
		return usagef("--parallel must be from 1 to 64, not %d", parallel)
	}
	ctx := context.Background()
	v, _, err := o.open(ctx, spec)
	if err != nil {
		return err
	}
	keys := v.Keys()
	var done atomic.Int64
	// On a terminal, a bar per pass: objects looked at, of those listed,
	// with the number rewritten so far in its description.
	var bar *progressbar.ProgressBar
	var barMu sync.Mutex
	tty := isTerminal(os.Stderr)
	rw := &vaultread.Rewriter{Store: o.st, Keys: keys, Parallel: parallel, Done: func(_ string, rewritten bool) {
		n := done.Load()
		if rewritten {
			n = done.Add(1)
		}
		if bar != nil {
			barMu.Lock()
			bar.Describe(fmt.Sprintf("%d rewritten", n))
			bar.Add(1)
			barMu.Unlock()
		}
	}}
	// Two passes over fresh listings: the second catches objects written
	// during the first by a mount that still had an older key current
	// (mounts take a rotation at their next mount). Keys are dropped only
	// when a whole pass found nothing left to rewrite.
	var rep vaultread.RewriteReport
	for pass := 1; ; pass++ {
		objs, err := rw.Objects(ctx)
		if err != nil {
			return fmt.Errorf("list the vault: %w", err)
		}
		if tty {
			bar = progressbar.NewOptions(len(objs),
				progressbar.OptionSetWriter(os.Stderr),
				progressbar.OptionSetDescription(fmt.Sprintf("%d rewritten", done.Load())),
				progressbar.OptionShowCount(),
				progressbar.OptionSetItsString("objects"),
				progressbar.OptionShowIts(),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
				progressbar.OptionSetWidth(30))
		}
		rep, err = rw.Rewrite(ctx, objs)
		if bar != nil {
			bar.Finish()
		}
		if err != nil {
			return fmt.Errorf("rewrite (%d objects done; run it again to resume): %w", done.Load(), err)
		}
		if rep.Rewritten == 0 || len(rep.Problems) > 0 || pass == 3 {
			break
		}
	}
	fmt.Printf("%d objects rewritten under the current key %s, %d already were\n", done.Load(), keys.CurrentKeyID(), rep.Current)
	// Problems first: a pass that both rewrote and left objects stopped
	// because of them.
	if len(rep.Problems) > 0 {
		for _, p := range rep.Problems {
			fmt.Printf("left as is: %s: %s: %s\n", p.Key, p.Kind, p.Detail)
		}
		return fmt.Errorf("%d objects were left as they were; the older keys stay in the keyring (fix or delete those objects, then run rotate --rewrite again)", len(rep.Problems))
	}
	if rep.Rewritten > 0 {
		return fmt.Errorf("objects under older keys keep appearing (a mount started before the rotation is writing?): remount every mount, then run rotate --rewrite again; the older keys stay in the keyring")
	}
	dropped := 0
	for _, id := range keys.KeyIDs() {
		if id == keys.CurrentKeyID() {
			continue
		}
		if err := v.DropKey(ctx, id); err != nil {
			return conflictHint(err)
		}
		dropped++
	}
	fmt.Printf("%d older keys dropped from the keyring\n", dropped)
	return nil
}
