package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// cmdUnmount unmounts MOUNTPOINT. Data is already durable: every close()
// synced its file (the kernel sends FLUSH), so unmounting only detaches.
// It fails with "busy" while files are open, unless --lazy. Before
// detaching it fsyncs the root directory, which makes the mount write its
// pending attribute indexes (a cache, see fs.IndexRoot), so that the mount
// writes nothing to the store after the unmount returns.
func cmdUnmount(args []string) error {
	fset := newFlagSet("unmount", "unmount [--lazy] MOUNTPOINT")
	lazy := fset.Bool("lazy", false, "detach now, finish when the last open file is closed (umount -l)")
	pos, err := parseInterspersed(fset, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("want exactly one MOUNTPOINT, got %d arguments", len(pos))
	}
	mnt, err := filepath.Abs(pos[0])
	if err != nil {
		return err
	}
	if !mounted(mnt) {
		return fmt.Errorf("%s is not mounted", mnt)
	}
	if !*lazy {
		syncRoot(mnt)
	}
	if os.Geteuid() == 0 {
		flags := 0
		if *lazy {
			flags = syscall.MNT_DETACH
		}
		if err := syscall.Unmount(mnt, flags); err != nil {
			return fmt.Errorf("unmount %s: %w", mnt, err)
		}
	} else {
		fa := []string{"-u"}
		if *lazy {
			fa = append(fa, "-z")
		}
		out, err := exec.Command("fusermount3", append(fa, mnt)...).CombinedOutput()
		if err != nil {
			return fmt.Errorf("fusermount3 -u %s: %v: %s", mnt, err, out)
		}
	}
	// The kernel drops the mount at once; give mountinfo a moment so a
	// script that remounts right away sees a clean mountpoint.
	for i := 0; i < 50 && mounted(mnt); i++ {
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// syncRoot fsyncs the mountpoint's root directory, best effort: a mount that
// does not answer within a minute is unmounted (or reported busy) anyway.
func syncRoot(mnt string) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if f, err := os.Open(mnt); err == nil {
			_ = f.Sync()
			_ = f.Close()
		}
	}()
	select {
	case <-done:
	case <-time.After(time.Minute):
	}
}
