package tests

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/cipher"
)

// TestSigterm: a foreground mount that gets SIGTERM syncs the files still
// open (their data reaches the store), refuses to unmount while they are
// open, and unmounts and exits 0 on the next SIGTERM once they are closed.
func TestSigterm(t *testing.T) {
	eachStore(t, func(t *testing.T, st *store) {
		st.init(t)
		mnt := t.TempDir()
		logf := filepath.Join(t.TempDir(), "log")
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		args := append([]string{"mount", "--foreground", "--log-file", logf, "--passphrase-file", passFile(t, passphrase)}, st.args...)
		cmd := exec.CommandContext(ctx, binary, append(args, st.spec, mnt)...)
		cmd.Env = append(os.Environ(), st.env...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan error, 1)
		go func() { exited <- cmd.Wait() }()
		t.Cleanup(func() {
			if isMounted(mnt) {
				syscall.Unmount(mnt, unix.MNT_DETACH)
			}
			cmd.Process.Kill()
		})
		for !isMounted(mnt) {
			select {
			case err := <-exited:
				t.Fatalf("foreground mount exited: %v\n%s", err, readLog(logf))
			case <-time.After(50 * time.Millisecond):
			}
		}
		data := bytes.Repeat([]byte("unsynced "), 20000)
		f, err := os.Create(filepath.Join(mnt, "open.dat"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		want := cipher.NewLayout(cipher.DefaultBlockSize).PlainSizeToCipherSize(int64(len(data)))
		deadline := time.Now().Add(time.Minute)
		for {
			if raw := st.rawMaybe(t, "open.dat"); int64(len(raw)) == want {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("SIGTERM did not sync the open file\n%s", readLog(logf))
			}
			time.Sleep(100 * time.Millisecond)
		}
		time.Sleep(200 * time.Millisecond)
		if !isMounted(mnt) {
			t.Fatal("unmounted while a file was open")
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		// The kernel releases the file asynchronously; retry the signal
		// until the unmount goes through.
		for isMounted(mnt) {
			cmd.Process.Signal(syscall.SIGTERM)
			select {
			case err := <-exited:
				if err != nil {
					t.Fatalf("exit after SIGTERM: %v\n%s", err, readLog(logf))
				}
				if isMounted(mnt) {
					t.Fatal("process exited but the mount is still there")
				}
				return
			case <-time.After(500 * time.Millisecond):
			case <-ctx.Done():
				t.Fatalf("still mounted after SIGTERM\n%s", readLog(logf))
			}
		}
		if err := <-exited; err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, readLog(logf))
		}
	})
}
