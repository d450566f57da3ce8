package perf

import (
	"bytes"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
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
	record(result{lat: "lat=0", workload: "seq write", system: sysSDK, value: 400, unit: "MB/s", ratio: nan, reqs: 10})
	record(result{lat: "lat=0", workload: "seq write", system: sysS3cryptfs, value: 300, unit: "MB/s", ratio: 0.75, target: ">= 0.75x SDK", reqs: 20})
	record(result{lat: "lat=0", workload: "seq write", system: sysS3cryptfs, value: 320, unit: "MB/s", ratio: 0.8, target: ">= 0.75x SDK", reqs: 22})
	record(result{lat: "lat=10ms", workload: "seq write", system: sysS3cryptfs, value: 100, unit: "MB/s", ratio: 0.5, target: ">= 0.75x SDK", reqs: 22.4})
	record(result{lat: "lat=10ms", workload: "peak RSS", system: sysS3cryptfs, value: 150, unit: "MiB", ratio: nan, reqs: nan})
	tbl := summaryTable()
	if !strings.Contains(tbl, "| workload | sdk | s3cryptfs | target (s3cryptfs) |") {
		t.Errorf("header missing or wrong columns:\n%s", tbl)
	}
	if !strings.Contains(tbl, "| seq write [MB/s] | 400, 10 req | 320 (0.80x), 22 req | >= 0.75x SDK |") {
		t.Errorf("row missing or not replaced by the later figure:\n%s", tbl)
	}
	// Each setting has a table of its own, with only the systems it ran.
	i0, i10 := strings.Index(tbl, "lat=0: "), strings.Index(tbl, "lat=10ms: ")
	if i0 < 0 || i10 < i0 {
		t.Fatalf("want a lat=0 section, then a lat=10ms one:\n%s", tbl)
	}
	if !strings.Contains(tbl[i10:], "| workload | s3cryptfs | target (s3cryptfs) |") ||
		!strings.Contains(tbl[i10:], "| seq write [MB/s] | 100 (0.50x), 22 req | >= 0.75x SDK |") ||
		!strings.Contains(tbl[i10:], "| peak RSS [MiB] | 150 |  |") {
		t.Errorf("lat=10ms section wrong:\n%s", tbl)
	}
}

func TestFmtRatio(t *testing.T) {
	for r, want := range map[float64]string{0.8: "0.80x", 2.345: "2.35x", 0.1: "0.10x", 0.0042: "0.004x", 0.05: "0.050x"} {
		if got := fmtRatio(r); got != want {
			t.Errorf("fmtRatio(%v) = %q, want %q", r, got, want)
		}
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

func TestParseLatencies(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []time.Duration
	}{
		{"", []time.Duration{0, 10 * time.Millisecond}},
		{"0", []time.Duration{0}},
		{"10ms", []time.Duration{10 * time.Millisecond}},
		{" 0 , 10ms,25ms ,10ms", []time.Duration{0, 10 * time.Millisecond, 25 * time.Millisecond}},
	} {
		got, err := parseLatencies(c.in)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("parseLatencies(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, bad := range []string{"10", "-5ms", "x", "0,,10ms"} {
		if _, err := parseLatencies(bad); err == nil {
			t.Errorf("parseLatencies(%q): no error", bad)
		}
	}
	if latName(0) != "lat=0" || latName(10*time.Millisecond) != "lat=10ms" {
		t.Errorf("latName: %q, %q", latName(0), latName(10*time.Millisecond))
	}
}

// metricsText is trimmed from MinIO's /minio/metrics/v3/bucket/api/<bucket>
// (the pinned version) after one HeadObject (a 404) and one ListObjectsV2.
const metricsText = `# HELP minio_bucket_api_total Total number of requests for a bucket
# TYPE minio_bucket_api_total counter
minio_bucket_api_4xx_errors_total{bucket="perf-zz-28930",name="HeadObject",server="127.0.0.1:35555",type="s3"} 1
minio_bucket_api_total{bucket="perf-zz-28930",name="HeadObject",server="127.0.0.1:35555",type="s3"} 1
minio_bucket_api_total{bucket="perf-zz-28930",name="ListObjectsV2",server="127.0.0.1:35555",type="s3"} 1
minio_bucket_api_total{bucket="perf-other",name="PutObject",server="127.0.0.1:35555",type="s3"} 7
minio_bucket_api_total{bucket="perf-zz-28930",name="PutObject",server="127.0.0.1:35555",type="s3"} 1.5e+06
minio_bucket_api_traffic_received_bytes{bucket="perf-zz-28930",server="127.0.0.1:35555",type="s3"} 244
minio_bucket_api_ttfb_seconds_distribution{bucket="perf-zz-28930",le="+Inf",name="HeadObject",server="127.0.0.1:35555",type="s3"} 1
`

func TestParseBucketAPITotal(t *testing.T) {
	got, err := parseBucketAPITotal([]byte(metricsText), "perf-zz-28930")
	if err != nil || got != 1_500_002 {
		t.Errorf("parseBucketAPITotal = %d, %v; want 1500002", got, err)
	}
	if got, err := parseBucketAPITotal([]byte("# no series yet\n"), "b"); err != nil || got != 0 {
		t.Errorf("no series: %d, %v; want 0", got, err)
	}
	if _, err := parseBucketAPITotal([]byte(`minio_bucket_api_total{bucket="b"} x`+"\n"), "b"); err == nil {
		t.Error("a malformed value gave no error")
	}
}

// ---- the latency proxy ----

// proxyPair returns both ends of a TCP connection through proxy p to a
// listener of the test's own: what a client and the server see.
func proxyPair(t *testing.T, delay time.Duration) (client, server net.Conn, p *latencyProxy) {
	client, server, p, _ = proxyPairAt(t, delay)
	return client, server, p
}

// proxyPairAt is proxyPair, also returning when the client dialled.
func proxyPairAt(t *testing.T, delay time.Duration) (client, server net.Conn, p *latencyProxy, dialled time.Time) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p, err = newLatencyProxy("127.0.0.1:0", ln.Addr().String(), delay)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	dialled = time.Now()
	client, err = net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	server, err = ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return client, server, p, dialled
}

// oneWay writes one byte on from and returns how long it took to arrive on
// to.
func oneWay(t *testing.T, from, to net.Conn) time.Duration {
	t.Helper()
	t0 := time.Now()
	if _, err := from.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}
	var b [1]byte
	if _, err := io.ReadFull(to, b[:]); err != nil {
		t.Fatal(err)
	}
	return time.Since(t0)
}

func TestLatencyProxyDelay(t *testing.T) {
	const delay = 40 * time.Millisecond
	// On a loaded 2-core machine a goroutine can be late; never early.
	const slack = 60 * time.Millisecond
	client, server, _, dialled := proxyPairAt(t, delay)
	// The first byte pays the connection's set-up round trip too.
	oneWay(t, client, server)
	if d := time.Since(dialled); d < 3*delay || d > 3*delay+slack {
		t.Errorf("first byte upstream %v after dialling, want ~%v (handshake round trip + delay)", d, 3*delay)
	}
	for i := range 3 {
		if d := oneWay(t, client, server); d < delay || d > delay+slack {
			t.Errorf("client->server #%d: %v, want ~%v", i, d, delay)
		}
		if d := oneWay(t, server, client); d < delay || d > delay+slack {
			t.Errorf("server->client #%d: %v, want ~%v", i, d, delay)
		}
	}
	// A request/response round trip costs two delays, not more: chunks
	// queued behind each other are not delayed again.
	t0 := time.Now()
	for range 5 {
		oneWay(t, client, server)
		oneWay(t, server, client)
	}
	if d := time.Since(t0) / 5; d < 2*delay || d > 2*delay+slack {
		t.Errorf("round trip %v, want ~%v", d, 2*delay)
	}
}

// TestLatencyProxyBytes sends several MiB each way at once in writes of
// random sizes and checks every byte arrives, in order, and that a burst is
// not slowed to a chunk per delay (no bandwidth limit).
func TestLatencyProxyBytes(t *testing.T) {
	for _, delay := range []time.Duration{0, 100 * time.Millisecond} {
		t.Run(latName(delay), func(t *testing.T) {
			client, server, _ := proxyPair(t, delay)
			up := make([]byte, 8<<20)
			down := make([]byte, 8<<20)
			fillRandom(up, 1)
			fillRandom(down, 2)
			send := func(c net.Conn, data []byte, seed uint64) <-chan error {
				errc := make(chan error, 1)
				go func() {
					r := rand.New(rand.NewPCG(seed, 0))
					for off := 0; off < len(data); {
						n := min(1+r.IntN(256<<10), len(data)-off)
						if _, err := c.Write(data[off : off+n]); err != nil {
							errc <- err
							return
						}
						off += n
					}
					errc <- c.(*net.TCPConn).CloseWrite()
				}()
				return errc
			}
			t0 := time.Now()
			upErr, downErr := send(client, up, 1), send(server, down, 2)
			gotUp, err := io.ReadAll(server)
			if err != nil {
				t.Fatal(err)
			}
			gotDown, err := io.ReadAll(client)
			if err != nil {
				t.Fatal(err)
			}
			elapsed := time.Since(t0)
			if err := <-upErr; err != nil {
				t.Fatal(err)
			}
			if err := <-downErr; err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(gotUp, up) {
				t.Errorf("client->server: %d bytes arrived, differ from the %d sent", len(gotUp), len(up))
			}
			if !bytes.Equal(gotDown, down) {
				t.Errorf("server->client: %d bytes arrived, differ from the %d sent", len(gotDown), len(down))
			}
			// At least 128 chunks of at most 64 KiB each way: a delay per
			// chunk, one after the other, would take over 12.8 s; the
			// delays of chunks in flight together overlap.
			if delay > 0 && elapsed > 6*time.Second {
				t.Errorf("8 MiB each way took %v through the proxy (delay %v)", elapsed, delay)
			}
		})
	}
}

// TestLatencyProxyClose checks that an end of stream travels like data
// (after the delay, after what was sent before it) and that both
// connections are closed when both sides are done, or when the proxy is.
func TestLatencyProxyClose(t *testing.T) {
	const delay = 20 * time.Millisecond
	client, server, p := proxyPair(t, delay)
	if _, err := client.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	if err := client.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(server) // until the client's FIN
	if err != nil || string(got) != "last words" {
		t.Fatalf("server read %q, %v", got, err)
	}
	if d := time.Since(t0); d < delay {
		t.Errorf("EOF arrived after %v, before the delay %v", d, delay)
	}
	// The server answers and closes: the client gets the answer, then EOF.
	if _, err := server.Write([]byte("bye")); err != nil {
		t.Fatal(err)
	}
	server.Close()
	got, err = io.ReadAll(client)
	if err != nil || string(got) != "bye" {
		t.Fatalf("client read %q, %v", got, err)
	}
	waitNoConns(t, p)

	// Closing the proxy ends the connections it holds, promptly.
	client2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer client2.Close()
	if _, err := client2.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(10 * time.Millisecond) // accepted
	done := make(chan error, 1)
	go func() { done <- p.Close() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
	client2.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(client2); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("client after proxy Close: %v, want EOF or reset", err)
	}
	if _, err := net.Dial("tcp", p.Addr()); err == nil {
		t.Error("the proxy still accepts after Close")
	}
}

func waitNoConns(t *testing.T, p *latencyProxy) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		p.mu.Lock()
		n := len(p.conns)
		p.mu.Unlock()
		if n == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d connections still open in the proxy after both sides closed", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestProxyProcess runs the proxy the way the benchmarks do, as this test
// binary re-executed, and talks through it.
func TestProxyProcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(c, c) // echo
	}()
	pp, err := startProxyProc(ln.Addr().String(), 5*time.Millisecond, filepath.Join(t.TempDir(), "proxy.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer pp.stop()
	c, err := net.Dial("tcp", pp.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("echo through the proxy process: %q, %v", buf, err)
	}
	pp.stop()
	if pp.cmd.ProcessState == nil || !pp.cmd.ProcessState.Success() {
		t.Errorf("proxy process ended with %v", pp.cmd.ProcessState)
	}
}
