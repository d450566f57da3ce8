package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// fuseConf is fuse3's configuration; a variable so tests can point it
// elsewhere.
var fuseConf = "/etc/fuse.conf"

// checkUnprivilegedMount catches, before anything is opened, what makes a
// mount by a user other than root fail inside go-fuse with a less helpful
// message: no fusermount3 (the set-uid helper that mounts for
// them), and --allow-other without user_allow_other in /etc/fuse.conf.
func checkUnprivilegedMount(allowOther bool) error {
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return errors.New("fusermount3 not found in PATH: users other than root mount FUSE filesystems with it; install fuse3 (apt-get install fuse3)")
	}
	if allowOther && !userAllowOther() {
		return fmt.Errorf("--allow-other for a user other than root needs a line user_allow_other in %s (as root: echo user_allow_other >> %s), or leave out --allow-other", fuseConf, fuseConf)
	}
	return nil
}

// checkDevFuse explains a missing /dev/fuse, or one this user may not
// open: fusermount3, though set-uid, opens it with the user's rights.
func checkDevFuse() error {
	if _, err := os.Stat("/dev/fuse"); errors.Is(err, os.ErrNotExist) {
		return errors.New("/dev/fuse does not exist: load the kernel module (modprobe fuse), or in a container pass the device (docker run --device /dev/fuse --cap-add SYS_ADMIN)")
	}
	if err := unix.Access("/dev/fuse", unix.R_OK|unix.W_OK); err != nil {
		return fmt.Errorf("/dev/fuse is not readable and writable by this user (%v): it is normally mode 0666; as root: chmod 666 /dev/fuse", err)
	}
	return nil
}

// userAllowOther reports whether fuse.conf has a user_allow_other line.
func userAllowOther() bool {
	f, err := os.Open(fuseConf)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if strings.TrimSpace(sc.Text()) == "user_allow_other" {
			return true
		}
	}
	return false
}

// explainMountError adds the likely cause to go-fuse's mount errors.
func explainMountError(err error, allowOther bool) error {
	switch {
	case errors.Is(err, syscall.ENODEV), errors.Is(err, os.ErrNotExist) && strings.Contains(err.Error(), "/dev/fuse"):
		return fmt.Errorf("%w (no FUSE in this kernel or container: modprobe fuse, or pass /dev/fuse to the container)", err)
	case errors.Is(err, syscall.EPERM) && os.Geteuid() == 0:
		return fmt.Errorf("%w (mounting needs CAP_SYS_ADMIN; in a container add --cap-add SYS_ADMIN)", err)
	case allowOther && strings.Contains(err.Error(), "allow_other"):
		return fmt.Errorf("%w (add user_allow_other to %s)", err, fuseConf)
	}
	return err
}
