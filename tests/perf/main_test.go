package perf

import (
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/internal/miniotest"
)

func TestMain(m *testing.M) {
	// Every benchmark unmounts what it mounted (b.Cleanup) while MinIO is
	// still up; unmountAll is the safety net for a benchmark that died
	// half-way, and runs after miniotest has stopped the server, so it
	// detaches lazily instead of waiting for a daemon that talks to it.
	useTmpfs()
	code := miniotest.Main(m)
	unmountAll()
	if t := summaryTable(); t != "" {
		fmt.Print("\n" + t)
		if path := os.Getenv("S3CRYPTFS_BENCH_TABLE"); path != "" {
			if err := os.WriteFile(path, []byte(t), 0o644); err != nil {
				fmt.Fprintf(os.Stderr, "perf: writing %s: %v\n", path, err)
			}
		}
	}
	removeWorkDir()
	if tmpfsDir != "" {
		os.RemoveAll(tmpfsDir)
	}
	os.Exit(code)
}

// useTmpfs puts MinIO's data (and the work directory) in /dev/shm unless
// S3CRYPTFS_BENCH_DISK=1 or TMPDIR is set: the benchmarks measure clients
// against the same server, and on disk the kernel's writeback of the
// previous workload's gigabyte (MinIO's system time rose from 2.8 to 4.2
// CPU-s per GiB written as dirty pages piled up) made whichever client ran
// second pay for the first.
func useTmpfs() {
	if v := os.Getenv("S3CRYPTFS_BENCH_DISK"); (v != "" && v != "0") || os.Getenv("TMPDIR") != "" {
		return
	}
	if st, err := os.Stat("/dev/shm"); err != nil || !st.IsDir() {
		return
	}
	dir, err := os.MkdirTemp("/dev/shm", "s3cryptfs-bench-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "perf: tmpfs: %v; MinIO stays on disk\n", err)
		return
	}
	tmpfsDir = dir
	os.Setenv("TMPDIR", dir)
}

// tmpfsDir is the /dev/shm directory useTmpfs made (removed at exit).
var tmpfsDir string

// sizes are the workload dimensions. full is what the issue asks for and
// what `make bench` runs; quick keeps a run to a couple of minutes while
// iterating on the harness or the filesystem.
type sizes struct {
	name        string
	seqSize     int64  // sequential write/read file
	warmRegion  int64  // part of the sequential file the warm random-read test reads
	fioRuntime  int    // seconds per fio run
	treeDir     string // tree under $GOROOT/src copied into the mount
	randwSize   int64  // file receiving random writes
	randwCount  int    // number of random 4 KiB writes
	renameFiles int    // files in the renamed directory
	cacheSize   string // default --cache-size of the s3cryptfs mount
}

var fullSizes = sizes{
	name:        "full",
	seqSize:     1 << 30,
	warmRegion:  256 << 20,
	fioRuntime:  10,
	treeDir:     "cmd/go", // 1,502 files, 81 directories, 9 MiB in Go 1.26
	randwSize:   64 << 20,
	randwCount:  2000,
	renameFiles: 500,
	// Half the sequential file: the peak-RSS target (cache + 200 MiB) is
	// only a test of boundedness when the file does not fit in the cache.
	cacheSize: "512MiB",
}

var quickSizes = sizes{
	name:        "quick",
	seqSize:     128 << 20,
	warmRegion:  32 << 20,
	fioRuntime:  3,
	treeDir:     "cmd/go/internal", // 287 files
	randwSize:   8 << 20,
	randwCount:  200,
	renameFiles: 50,
	cacheSize:   "64MiB",
}

// cfg returns the sizes chosen by S3CRYPTFS_BENCH_SIZE (quick|full).
var cfg = sync.OnceValue(func() sizes {
	s := fullSizes
	switch v := os.Getenv("S3CRYPTFS_BENCH_SIZE"); v {
	case "", "full":
	case "quick":
		s = quickSizes
	default:
		fmt.Fprintf(os.Stderr, "perf: S3CRYPTFS_BENCH_SIZE=%q: want quick or full; using full\n", v)
	}
	if c := os.Getenv("S3CRYPTFS_BENCH_CACHE"); c != "" {
		s.cacheSize = c
	}
	return s
})

// compareEnabled reports whether s3fs and rclone run too (make bench-compare).
func compareEnabled() bool {
	v := os.Getenv("S3CRYPTFS_BENCH_COMPARE")
	return v != "" && v != "0" && v != "false"
}

// parseSize reads sizes such as "512MiB", "1GiB", "64M" or "1048576".
func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{
		{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1},
	} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseFloat(t, 64)
	if err != nil || n < 0 || math.IsInf(n, 0) {
		return 0, fmt.Errorf("perf: bad size %q", s)
	}
	return int64(n * float64(mult)), nil
}

// Systems, in table column order.
const (
	sysSDK       = "sdk"
	sysS3cryptfs = "s3cryptfs"
	sysS3fs      = "s3fs"
	sysRclone    = "rclone-crypt"
)

var columns = []string{sysSDK, sysS3cryptfs, sysS3fs, sysRclone}

// result is one measured figure of one system on one workload.
type result struct {
	workload string  // e.g. "seq write 1 GiB"
	system   string  // a sys* constant
	value    float64 // in unit
	unit     string  // "MB/s", "s", "IOPS", "MiB"
	ratio    float64 // vs the bare SDK (higher is better), NaN if none
	target   string  // the goal, shown in its own column
}

var results struct {
	sync.Mutex
	list []result
}

// record keeps r for the summary table, replacing an earlier figure of the
// same workload and system (a benchmark the framework ran again with a
// larger b.N reports its final average).
func record(r result) {
	results.Lock()
	defer results.Unlock()
	for i := range results.list {
		if results.list[i].workload == r.workload && results.list[i].system == r.system {
			results.list[i] = r
			return
		}
	}
	results.list = append(results.list, r)
}

// summaryTable renders every recorded result as a Markdown table: one row
// per workload, one column per system, the ratio to the bare SDK in
// parentheses. Empty when nothing was measured.
func summaryTable() string {
	results.Lock()
	defer results.Unlock()
	if len(results.list) == 0 {
		return ""
	}
	var order []string
	rows := map[string]map[string]result{}
	targets := map[string]string{}
	for _, r := range results.list {
		key := r.workload + " [" + r.unit + "]"
		if rows[key] == nil {
			rows[key] = map[string]result{}
			order = append(order, key)
		}
		rows[key][r.system] = r
		if r.target != "" {
			targets[key] = r.target
		}
	}
	// Peak RSS is a property of the whole run: last row.
	sort.SliceStable(order, func(i, j int) bool {
		return !strings.HasPrefix(order[i], "peak RSS") && strings.HasPrefix(order[j], "peak RSS")
	})
	used := map[string]bool{}
	for _, r := range results.list {
		used[r.system] = true
	}
	var cols []string
	for _, c := range columns {
		if used[c] {
			cols = append(cols, c)
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, "perf summary (%s sizes, s3cryptfs --cache-size %s, %s)\n\n", cfg().name, cfg().cacheSize,
		time.Now().UTC().Format("2006-01-02 15:04 MST"))
	sb.WriteString("| workload | " + strings.Join(cols, " | ") + " | target (s3cryptfs) |\n")
	sb.WriteString("|---" + strings.Repeat("|---:", len(cols)) + "|---|\n")
	for _, key := range order {
		sb.WriteString("| " + key)
		for _, c := range cols {
			r, ok := rows[key][c]
			switch {
			case !ok:
				sb.WriteString(" | –")
			case math.IsNaN(r.ratio):
				sb.WriteString(" | " + fmtValue(r.value))
			default:
				fmt.Fprintf(&sb, " | %s (%.2fx)", fmtValue(r.value), r.ratio)
			}
		}
		sb.WriteString(" | " + targets[key] + " |\n")
	}
	sb.WriteString("\n(x) = speed relative to the bare SDK doing the same job in the same run; higher is better.\n")
	return sb.String()
}

// fmtValue prints a figure with about three significant digits.
func fmtValue(v float64) string {
	switch a := math.Abs(v); {
	case a >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 100:
		return strconv.FormatFloat(v, 'f', 0, 64)
	case a >= 10:
		return strconv.FormatFloat(v, 'f', 1, 64)
	case a >= 1:
		return strconv.FormatFloat(v, 'f', 2, 64)
	default:
		return strconv.FormatFloat(v, 'f', 3, 64)
	}
}
