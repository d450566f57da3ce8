package perf

import (
	"math"
	"os"
	"strings"
	"testing"
)

// The helpers below decide what the benchmarks report; these tests pin their
// parsing on real outputs of the tools on this machine.

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
	}{
		{"512MiB", 512 << 20}, {"1GiB", 1 << 30}, {"64M", 64 << 20}, {"1048576", 1 << 20},
		{"1.5GiB", 3 << 29}, {"10MB", 10e6},
	} {
		got, err := parseSize(c.in)
		if err != nil || got != c.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"", "MiB", "-1M", "x1G", "1 parsec"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q): no error", bad)
		}
	}
}

// fioJSON is trimmed from `fio --output-format=json` 3.33 with
// --group_reporting, preceded by a warning line as fio sometimes prints.
const fioJSON = `fio: note: both iodepth >= 1 and synchronous I/O engine are selected, queue depth will be capped at 1
{
  "fio version" : "fio-3.33",
  "jobs" : [
    {
      "jobname" : "r",
      "groupid" : 0,
      "error" : 0,
      "read" : {
        "io_bytes" : 2061381632,
        "bw" : 201306,
        "iops" : 50326.712315,
        "total_ios" : 503267
      },
      "write" : {
        "iops" : 0.000000,
        "total_ios" : 0
      }
    }
  ]
}`

func TestParseFioIOPS(t *testing.T) {
	got, err := parseFioIOPS([]byte(fioJSON))
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(got-50326.712315) > 1e-6 {
		t.Errorf("iops = %v, want 50326.712315", got)
	}
	noReads := strings.Replace(fioJSON, `"total_ios" : 503267`, `"total_ios" : 0`, 1)
	if _, err := parseFioIOPS([]byte(noReads)); err == nil {
		t.Error("a run without reads gave no error")
	}
	failed := strings.Replace(fioJSON, `"error" : 0`, `"error" : 5`, 1)
	if _, err := parseFioIOPS([]byte(failed)); err == nil {
		t.Error("a failed job gave no error")
	}
	if _, err := parseFioIOPS([]byte("fio: file not found")); err == nil {
		t.Error("output without JSON gave no error")
	}
}

func TestParseVmHWM(t *testing.T) {
	status := "Name:\ts3cryptfs\nVmPeak:\t 2000000 kB\nVmHWM:\t  123456 kB\nVmRSS:\t  100000 kB\n"
	got, err := parseVmHWM([]byte(status))
	if err != nil || got != 123456<<10 {
		t.Errorf("parseVmHWM = %d, %v; want %d", got, err, 123456<<10)
	}
	if _, err := parseVmHWM([]byte("Name:\tx\n")); err == nil {
		t.Error("status without VmHWM gave no error")
	}
	// This process has one.
	if n, err := vmHWM(os.Getpid()); err != nil || n <= 0 {
		t.Errorf("vmHWM(self) = %d, %v", n, err)
	}
}

func TestUnescapeMountinfo(t *testing.T) {
	if got := unescapeMountinfo(`/tmp/a\040b\134c`); got != `/tmp/a b\c` {
		t.Errorf("got %q", got)
	}
	if !isMounted("/proc") {
		t.Error("/proc is not reported as mounted")
	}
	if isMounted(t.TempDir()) {
		t.Error("a fresh temp dir is reported as mounted")
	}
}

func TestCountLsFiles(t *testing.T) {
	out := "/m/tree:\ntotal 8\n-rw-r--r-- 1 root root 10 Nov 26 23:00 a.go\ndrwxr-xr-x 2 root root 0 Nov 26 23:00 sub\n\n/m/tree/sub:\ntotal 4\n-rw-r--r-- 1 root root 3 Nov 26 23:00 b.go\nlrwxrwxrwx 1 root root 3 Nov 26 23:00 l -> b.go\n"
	if n := countLsFiles([]byte(out)); n != 2 {
		t.Errorf("countLsFiles = %d, want 2", n)
	}
}

func TestSummaryTable(t *testing.T) {
	results.Lock()
	saved := results.list
	results.list = nil
	results.Unlock()
	t.Cleanup(func() {
		results.Lock()
		results.list = saved
		results.Unlock()
	})
	record(result{workload: "seq write", system: sysSDK, value: 400, unit: "MB/s", ratio: nan})
	record(result{workload: "seq write", system: sysS3cryptfs, value: 300, unit: "MB/s", ratio: 0.75, target: ">= 0.75x SDK"})
	record(result{workload: "seq write", system: sysS3cryptfs, value: 320, unit: "MB/s", ratio: 0.8, target: ">= 0.75x SDK"})
	tbl := summaryTable()
	if !strings.Contains(tbl, "| workload | sdk | s3cryptfs | target (s3cryptfs) |") {
		t.Errorf("header missing or wrong columns:\n%s", tbl)
	}
	if !strings.Contains(tbl, "| seq write [MB/s] | 400 | 320 (0.80x) | >= 0.75x SDK |") {
		t.Errorf("row missing or not replaced by the later figure:\n%s", tbl)
	}
}

func TestRatio(t *testing.T) {
	if r := ratio(2, 4); r != 0.5 {
		t.Errorf("ratio(2,4) = %v", r)
	}
	if r := ratio(0, 4); !math.IsNaN(r) {
		t.Errorf("ratio(0,4) = %v, want NaN", r)
	}
}

func TestParseStatCPU(t *testing.T) {
	// A command name with spaces and parentheses, utime 250, stime 50 ticks.
	stat := "4242 (s3 (crypt) fs) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 0 0"
	got, err := parseStatCPU([]byte(stat))
	if err != nil || got != 3.0 {
		t.Errorf("parseStatCPU = %v, %v; want 3", got, err)
	}
	if _, err := parseStatCPU([]byte("4242 (x) S 1")); err == nil {
		t.Error("short stat gave no error")
	}
	if _, err := cpuSeconds(os.Getpid()); err != nil {
		t.Errorf("cpuSeconds(self): %v", err)
	}
}
