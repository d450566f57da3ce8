package perf

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// ---- 7. the vault without a mount: cat and verify ----

const (
	vfyDir = "vfy" // the directory of the verify workload's files
	// keyFileName is a key-file slot added to the benchmark vault, so that
	// cat and verify start without Argon2 (what a script would use): the
	// timings compare reading, not key stretching.
	keyFileName = "vault.key"
)

// vfyFiles is how many files the verify workload spreads the sequential
// file's size over (1,000 at full size, as the issue asks).
func vfyFiles() int {
	if cfg().name == "quick" {
		return 200
	}
	return 1000
}

// BenchmarkVaultReaders measures the commands that read a vault without a
// mount against the mount's cold sequential read of the same bytes in the
// same run (fresh mount, empty cache, 1 MiB reads checked against what was
// written):
//
//   - cat: `s3cryptfs cat STORE seq.bin` of the 1 GiB file, its stdout
//     read and checked by the harness (a pipe, as `cat > file` or `| tar`).
//   - verify: `s3cryptfs verify STORE vfy` over 1 GiB in 1,000 files,
//     against the mount reading those files one after another (cat *).
//
// Each figure is the whole command, start-up included (a key file: no
// KDF). Reported per latency setting: MB/s (for cat with the ratio to the
// SDK's cold read of the same file, the table's usual ratio), and the
// ratio to the mount's cold read of the same bytes (mount-ratio, also in
// the table's target column), which is what the targets are about
// (cat >= 1x, verify >= 0.7x).
func BenchmarkVaultReaders(b *testing.B) {
	lats, err := latencies()
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range lats {
		b.Run(latName(d), func(b *testing.B) {
			b.Run("cat", func(b *testing.B) { benchCat(b, d) })
			b.Run("verify", func(b *testing.B) { benchVerify(b, d) })
		})
	}
}

// readersSetup returns the s3cryptfs system at lat, with the key-file slot.
func readersSetup(b *testing.B, lat time.Duration) (*env, *netPath, *s3cryptfsSys, string) {
	b.Helper()
	e := getEnv(b)
	p := e.path(b, lat)
	s, ok := getSystem(b, e, sysS3cryptfs, p).(*s3cryptfsSys)
	if !ok {
		b.Fatal("BUG: the s3cryptfs system is not an *s3cryptfsSys")
	}
	key := filepath.Join(e.work, keyFileName)
	if !e.haveFixture(sysS3cryptfs, keyFileName) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		os.Remove(key)
		if err := runQuiet(ctx, s.extraEnv, s.bin, "key", "add", "--path-style", "--passphrase-file", s.passFile,
			"--new-key-file", key, s.store); err != nil {
			b.Fatalf("perf: s3cryptfs key add: %v", err)
		}
		e.setFixture(sysS3cryptfs, keyFileName, true)
	}
	return e, p, s, key
}

// runReader runs an s3cryptfs reading command with the key file, its
// stdout into w; it returns the wall time and the command's peak RSS in
// MiB, polled from /proc while it runs (VmHWM only grows; the rusage of a
// child counts the parent's pages, shared until exec, so it would show
// this test process's gigabytes).
func (s *s3cryptfsSys) runReader(ctx context.Context, key string, w *checkWriter, args ...string) (time.Duration, float64, error) {
	argv := append([]string{args[0], "--path-style", "--key-file", key}, args[1:]...)
	cmd := exec.CommandContext(ctx, s.bin, argv...)
	cmd.Env = append(os.Environ(), s.extraEnv...)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = w, &stderr
	var peak atomic.Int64
	d, err := timed(func() error {
		if err := cmd.Start(); err != nil {
			return err
		}
		stop, done := make(chan struct{}), make(chan struct{})
		go func() {
			defer close(done)
			for {
				select {
				case <-stop: // reaped: the pid may be another process's now
					return
				case <-time.After(20 * time.Millisecond):
				}
				if hwm, err := vmHWM(cmd.Process.Pid); err == nil {
					peak.Store(max(peak.Load(), hwm))
				}
			}
		}()
		err := cmd.Wait()
		close(stop)
		<-done
		return err
	})
	if err != nil {
		return d, 0, fmt.Errorf("s3cryptfs %v: %w: %s", args, err, stderr.String())
	}
	return d, float64(peak.Load()) / (1 << 20), nil
}

// checkWriter compares what it is written with want (nil: only counts).
type checkWriter struct {
	want []byte
	n    int
	bad  bool
}

func (c *checkWriter) Write(p []byte) (int, error) {
	if c.want != nil && (c.n+len(p) > len(c.want) || !bytes.Equal(p, c.want[c.n:c.n+len(p)])) {
		c.bad = true
	}
	c.n += len(p)
	return len(p), nil
}

// seqReadBaseline is the SDK's cold read of the sequential file at p
// (measured by BenchmarkSeqReadCold, or now).
func seqReadBaseline(b *testing.B, e *env, p *netPath, ctx context.Context) float64 {
	workload := "cold seq read " + mib(cfg().seqSize)
	return baseline(b, p, workload, func() map[string]float64 {
		ensureSeqFile(b, e, sysSDK)
		secs, _ := sdkSeqRead(b, e, p, ctx, once)
		return map[string]float64{"": secs}
	})[""]
}

func benchCat(b *testing.B, lat time.Duration) {
	b.StopTimer()
	e, p, s, key := readersSetup(b, lat)
	ctx := benchCtx(b)
	data := randomData()
	ensureSeqFile(b, e, sysS3cryptfs)
	b.SetBytes(int64(len(data)))
	var mountT, catT time.Duration
	var peakRSS float64
	for range b.N {
		m := s.mount(b)
		d, err := timed(func() error { return readCompare(m.path(seqName), data, readBuf()) })
		m.unmount(b)
		if err != nil {
			b.Fatal(err)
		}
		mountT += d
		w := &checkWriter{want: data}
		b.StartTimer()
		d, rss, err := s.runReader(ctx, key, w, "cat", s.store, seqName)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		peakRSS = max(peakRSS, rss)
		if w.bad || w.n != len(data) {
			b.Fatalf("cat %s: %d bytes, differing: %v", seqName, w.n, w.bad)
		}
		catT += d
	}
	secs := catT.Seconds() / float64(b.N)
	vsMount := mountT.Seconds() / catT.Seconds()
	b.ReportMetric(vsMount, "mount-ratio")
	b.ReportMetric(peakRSS, "cat-peak-RSS-MiB")
	workload := "cat " + mib(int64(len(data)))
	report(b, result{lat: p.name, workload: workload, system: sysS3cryptfs, value: float64(len(data)) / secs / 1e6, unit: "MB/s",
		ratio: ratio(seqReadBaseline(b, e, p, ctx), secs), target: fmt.Sprintf(">= 1x mount cold read: %.2fx", vsMount), reqs: nan}, "MB/s")
	b.Logf("%s: cat %.1f MB/s, mount cold read %.1f MB/s: %.2fx; cat's peak RSS %.0f MiB", p.name,
		float64(len(data))/secs/1e6, float64(len(data))*float64(b.N)/mountT.Seconds()/1e6, vsMount, peakRSS)
}

// ensureVfyFiles writes the verify workload's files (untimed, once).
func ensureVfyFiles(b *testing.B, e *env, s *s3cryptfsSys) [][]byte {
	b.Helper()
	data := randomData()
	n := vfyFiles()
	per := len(data) / n
	files := make([][]byte, n)
	for i := range files {
		files[i] = data[i*per : (i+1)*per]
	}
	if e.haveFixture(sysS3cryptfs, vfyDir) {
		return files
	}
	m := s.mount(b)
	if err := os.MkdirAll(m.path(vfyDir), 0o755); err != nil {
		b.Fatal(err)
	}
	for i, f := range files {
		if err := writeFile(m.path(vfyName(i)), f); err != nil {
			b.Fatal(err)
		}
	}
	// Durable: close returns once the object is stored (with encrypted
	// names the keys are not under vfy/ to be counted).
	m.unmount(b)
	e.setFixture(sysS3cryptfs, vfyDir, true)
	return files
}

func vfyName(i int) string { return fmt.Sprintf("%s/f%04d", vfyDir, i) }

func benchVerify(b *testing.B, lat time.Duration) {
	b.StopTimer()
	e, p, s, key := readersSetup(b, lat)
	ctx := benchCtx(b)
	files := ensureVfyFiles(b, e, s)
	var total int64
	for _, f := range files {
		total += int64(len(f))
	}
	b.SetBytes(total)
	var mountT, verifyT time.Duration
	for range b.N {
		m := s.mount(b)
		d, err := timed(func() error {
			for i, f := range files {
				if err := readCompare(m.path(vfyName(i)), f, readBuf()); err != nil {
					return err
				}
			}
			return nil
		})
		m.unmount(b)
		if err != nil {
			b.Fatal(err)
		}
		mountT += d
		w := &checkWriter{}
		b.StartTimer()
		d, _, err = s.runReader(ctx, key, w, "verify", s.store, vfyDir)
		b.StopTimer()
		if err != nil {
			b.Fatal(err)
		}
		verifyT += d
	}
	secs := verifyT.Seconds() / float64(b.N)
	vsMount := mountT.Seconds() / verifyT.Seconds()
	b.ReportMetric(vsMount, "mount-ratio")
	workload := fmt.Sprintf("verify %s in %d files", mib(total), len(files))
	report(b, result{lat: p.name, workload: workload, system: sysS3cryptfs, value: float64(total) / secs / 1e6, unit: "MB/s",
		ratio: nan, target: fmt.Sprintf(">= 0.7x mount cold read: %.2fx", vsMount), reqs: nan}, "MB/s")
	b.Logf("%s: verify %.1f MB/s, mount cold read of the %d files %.1f MB/s: %.2fx", p.name,
		float64(total)/secs/1e6, len(files), float64(total)*float64(b.N)/mountT.Seconds()/1e6, vsMount)
}
