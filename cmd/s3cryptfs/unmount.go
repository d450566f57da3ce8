package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"
)

// cmdUnmount unmounts MOUNTPOINT. Data is already durable: every close()
// synced its file (the kernel sends FLUSH), so unmounting only detaches.
// It fails with "busy" while files are open, unless --lazy. Before
// detaching it fsyncs the root directory, which makes the mount write its
// pending attribute indexes (a cache, see fs.IndexRoot), so that the mount
// writes nothing to the store after the unmount returns.
func newUnmountCommand() *cobra.Command {
	var lazy bool
	cmd := &cobra.Command{
		Use:     "unmount [--lazy] MOUNTPOINT",
		Aliases: []string{"umount"},
		Short:   "flush and unmount",
		Long: `Unmount MOUNTPOINT (as root with umount(2), otherwise with fusermount3 -u).
Every closed file is already stored; open files make it fail unless --lazy.`,
		Args: exactArgs(1, "exactly one MOUNTPOINT"),
		RunE: func(_ *cobra.Command, args []string) error { return cmdUnmount(args[0], lazy) },
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
	}
	g := newGroup("Options")
	g.fs.BoolVarP(&lazy, "lazy", "l", false, "detach now, finish when the last open file is closed (umount -l)")
	addGroups(cmd, g)
	return cmd
}

func cmdUnmount(mountpoint string, lazy bool) error {
	mnt, err := filepath.Abs(mountpoint)
	if err != nil {
		return err
	}
	if !mounted(mnt) {
		return fmt.Errorf("%s is not mounted", mnt)
	}
	if !lazy {
		syncRoot(mnt)
	}
	if os.Geteuid() == 0 {
		flags := 0
		if lazy {
			flags = syscall.MNT_DETACH
		}
		if err := syscall.Unmount(mnt, flags); err != nil {
			return fmt.Errorf("unmount %s: %w", mnt, err)
		}
	} else {
		fa := []string{"-u"}
		if lazy {
			fa = append(fa, "-z")
		}
		if _, err := exec.LookPath("fusermount3"); err != nil {
			return errors.New("fusermount3 not found in PATH: users other than root unmount with it; install fuse3 (apt-get install fuse3)")
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
