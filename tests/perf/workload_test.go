package perf

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ---- reporting ----

// report hands one figure to the benchmark output (b.ReportMetric, unit
// without spaces) and to the summary table.
func report(b *testing.B, r result, benchUnit string) {
	b.Helper()
	ru := "ratio"
	if u, ok := strings.CutSuffix(benchUnit, "-s"); ok {
		ru = u + "-ratio"
	}
	qu := "requests" // cp-s -> cp-requests, cold-IOPS -> cold-requests
	if i := strings.LastIndexByte(benchUnit, '-'); i >= 0 {
		qu = benchUnit[:i+1] + qu
	}
	reportAs(b, r, benchUnit, ru, qu)
}

// reportAs is report with the benchmark units of the ratio and of the
// request count given.
func reportAs(b *testing.B, r result, valueUnit, ratioUnit, reqUnit string) {
	b.Helper()
	b.ReportMetric(r.value, valueUnit)
	if !math.IsNaN(r.ratio) {
		b.ReportMetric(r.ratio, ratioUnit)
	}
	if !math.IsNaN(r.reqs) {
		b.ReportMetric(r.reqs, reqUnit)
	}
	record(r)
}

// reportRSS reports the mount process's peak RSS so far, and the CPU time
// it used since it was mounted (on 2 cores, CPU spent by the mount is CPU
// MinIO does not get); call it just before unmounting.
func reportRSS(b *testing.B, m *mount) {
	b.Helper()
	if cpu, err := cpuSeconds(m.pid); err == nil && m.pid != 0 {
		b.ReportMetric(cpu-m.cpu0, "mount-CPU-s")
	}
	rss, err := m.rss()
	if err != nil {
		b.Logf("perf: no RSS figure for %s: %v", m.sys, err)
		return
	}
	rssByBench.Lock()
	if rss < rssByBench.m[b] {
		rss = rssByBench.m[b] // a benchmark with two mounts reports the larger
	}
	rssByBench.m[b] = rss
	rssByBench.Unlock()
	b.ReportMetric(float64(rss)/(1<<20), "peak-RSS-MiB")
	notePeakRSS(m.sys, m.lat, rss)
}

var rssByBench = struct {
	sync.Mutex
	m map[*testing.B]int64
}{m: map[*testing.B]int64{}}

// selfCPU returns the CPU seconds (user+system) this process has used: the
// SDK baselines' client cost, to set beside a mount's mount-CPU-s.
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// baselines holds the bare-SDK figures of this run, seconds per operation
// by phase, per latency setting and workload, so every mount's figure can
// be put in ratio to the SDK's at the same setting.
var baselines struct {
	sync.Mutex
	m map[string]map[string]float64
}

func setBaseline(p *netPath, workload string, secs map[string]float64) {
	baselines.Lock()
	defer baselines.Unlock()
	if baselines.m == nil {
		baselines.m = map[string]map[string]float64{}
	}
	baselines.m[p.name+" "+workload] = secs
}

// baseline returns the SDK's seconds per phase for workload to divide a
// mount's figure by. This machine is shared (2 cores, other builds and tests
// come and go), so a baseline measured a minute earlier can be off by 2x;
// the SDK job is therefore run again right after the mount's measurement
// (timer stopped) and the ratio uses the mean of the sdk sub-benchmark's
// figure and this fresh one. S3CRYPTFS_BENCH_PAIRED=0 skips the re-run
// (faster, noisier ratios). If the sdk sub-benchmark did not run (-bench
// 'SeqWrite/s3cryptfs'), the fresh figure alone is used.
func baseline(b *testing.B, p *netPath, workload string, measure func() map[string]float64) map[string]float64 {
	b.Helper()
	baselines.Lock()
	prev, ok := baselines.m[p.name+" "+workload]
	baselines.Unlock()
	if ok && os.Getenv("S3CRYPTFS_BENCH_PAIRED") == "0" {
		return prev
	}
	b.StopTimer()
	fresh := measure()
	if !ok {
		setBaseline(p, workload, fresh)
		return fresh
	}
	mean := map[string]float64{}
	for phase, v := range fresh {
		mean[phase] = (v + prev[phase]) / 2
		if v > 0 && prev[phase] > 0 && (v/prev[phase] > 1.5 || prev[phase]/v > 1.5) {
			b.Logf("sdk baseline %q: %.3gs earlier, %.3gs now (load changed); the ratio uses the mean",
				strings.TrimSpace(workload+" "+phase), prev[phase], v)
		}
	}
	return mean
}

// ratio is sdkSecs/secs: the mount's speed as a fraction of the SDK's.
func ratio(sdkSecs, secs float64) float64 {
	if sdkSecs <= 0 || secs <= 0 {
		return nan
	}
	return sdkSecs / secs
}

// ---- file helpers ----

// writeFile writes data to path in 1 MiB writes (like dd bs=1M) and closes
// it; close is where a durable filesystem reports upload errors.
func writeFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	for off := 0; off < len(data); off += 1 << 20 {
		if _, err := f.Write(data[off:min(off+1<<20, len(data))]); err != nil {
			f.Close()
			return fmt.Errorf("write at %d: %w", off, err)
		}
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("close: %w", err)
	}
	return nil
}

// readCompare reads path sequentially in 1 MiB reads and checks it equals
// want; buf is scratch of at least 1 MiB.
func readCompare(path string, want, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf = buf[:1<<20]
	var off int
	for {
		n, err := io.ReadFull(f, buf)
		if n > 0 {
			if off+n > len(want) || !bytes.Equal(buf[:n], want[off:off+n]) {
				return fmt.Errorf("%s: bytes at %d differ from what was written", path, off)
			}
			off += n
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read at %d: %w", off, err)
		}
	}
	if off != len(want) {
		return fmt.Errorf("%s: read %d bytes, want %d", path, off, len(want))
	}
	return nil
}

// ---- fio ----

// fioRandRead runs the fio command on file (4 jobs of random 4 KiB
// reads over the first size bytes for runtime seconds) and returns the
// total IOPS.
func fioRandRead(ctx context.Context, file string, size int64, runtimeSecs int) (float64, error) {
	args := []string{"--name=r", "--filename=" + file, "--rw=randread", "--bs=4k", "--numjobs=4",
		fmt.Sprintf("--size=%d", size), "--time_based", fmt.Sprintf("--runtime=%d", runtimeSecs),
		"--group_reporting", "--output-format=json"}
	cmd := exec.CommandContext(ctx, "fio", args...)
	cmd.Dir = os.TempDir() // fio may leave state files in its working directory
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return 0, fmt.Errorf("perf: fio %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return parseFioIOPS(out)
}

// parseFioIOPS extracts the group's read IOPS from fio's JSON output, which
// fio may precede with warning lines.
func parseFioIOPS(out []byte) (float64, error) {
	i := bytes.IndexByte(out, '{')
	if i < 0 {
		return 0, fmt.Errorf("perf: no JSON in fio output: %.200q", out)
	}
	var rep struct {
		Jobs []struct {
			Error int `json:"error"`
			Read  struct {
				IOPS    float64 `json:"iops"`
				TotalIO int64   `json:"total_ios"`
			} `json:"read"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(out[i:], &rep); err != nil {
		return 0, fmt.Errorf("perf: fio JSON: %w", err)
	}
	if len(rep.Jobs) != 1 {
		return 0, fmt.Errorf("perf: fio JSON has %d job groups, want 1 (--group_reporting)", len(rep.Jobs))
	}
	j := rep.Jobs[0]
	if j.Error != 0 {
		return 0, fmt.Errorf("perf: fio job error %d", j.Error)
	}
	if j.Read.TotalIO == 0 {
		return 0, errors.New("perf: fio did no reads")
	}
	return j.Read.IOPS, nil
}

// ---- the small-file tree ----

// treeFile is one regular file of the source tree.
type treeFile struct {
	rel  string
	data []byte
}

type tree struct {
	root  string
	files []treeFile
	dirs  int
	bytes int64
}

// sourceTree loads $GOROOT/src/<cfg().treeDir> once: real source files of
// real sizes, about 1,500 of them in 81 directories for cmd/go.
var sourceTree = sync.OnceValues(func() (*tree, error) {
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return nil, fmt.Errorf("perf: go env GOROOT: %w", err)
	}
	root := filepath.Join(strings.TrimSpace(string(out)), "src", filepath.FromSlash(cfg().treeDir))
	t := &tree{root: root}
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			t.dirs++
		case d.Type().IsRegular():
			data, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			rel, _ := filepath.Rel(root, p)
			t.files = append(t.files, treeFile{rel: filepath.ToSlash(rel), data: data})
			t.bytes += int64(len(data))
		}
		return nil // symlinks and others are not copied by the SDK baseline either
	})
	if err != nil {
		return nil, fmt.Errorf("perf: loading %s: %w", root, err)
	}
	if len(t.files) == 0 {
		return nil, fmt.Errorf("perf: no files under %s", root)
	}
	return t, nil
})

// visibleFiles counts the files ls -lR lists: those without a component
// starting with '.' (cmd/go has two .h.go files in testdata).
func (t *tree) visibleFiles() int {
	n := 0
	for _, f := range t.files {
		if !strings.HasPrefix(f.rel, ".") && !strings.Contains(f.rel, "/.") {
			n++
		}
	}
	return n
}

// countLsFiles counts regular-file lines ("-rw-r--r-- ...") in ls -lR output.
func countLsFiles(out []byte) int {
	n := 0
	for _, line := range bytes.Split(out, []byte("\n")) {
		if len(line) > 0 && line[0] == '-' {
			n++
		}
	}
	return n
}

// timed runs fn and returns its duration.
func timed(fn func() error) (time.Duration, error) {
	t0 := time.Now()
	err := fn()
	return time.Since(t0), err
}
