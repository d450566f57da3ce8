package perf

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/s3cryptfs/s3cryptfs/internal/miniotest"
)

// env is what every benchmark of the run shares: one MinIO, one bare SDK
// client, one bucket per system (created on first use), a work directory for
// mountpoints, configs and logs, and the test data.
type env struct {
	srv *miniotest.Server
	// s3 is the observer: the harness's own client, directly to MinIO,
	// for fixtures and for checking what the systems stored. What it sends
	// is counted (obsReqs) and left out of the systems' request counts.
	s3      *s3.Client
	obsReqs atomic.Int64
	metrics *http.Client // reads MinIO's request counts
	work    string

	mu       sync.Mutex
	buckets  map[string]string // system -> bucket
	fixtures map[string]bool   // "system/name" -> written during this run
	systems  map[string]system // mount-based systems, created once per setting
	paths    map[time.Duration]*netPath
}

var (
	envMu     sync.Mutex
	sharedEnv *env
	workDir   string
)

// getEnv returns the run's environment, starting MinIO on first use. It skips
// b under -short (miniotest.Get does) and fails it if MinIO cannot start.
func getEnv(b *testing.B) *env {
	b.Helper()
	if testing.Short() {
		b.Skip("perf benchmarks need MinIO and FUSE: skipped under -short")
	}
	srv := miniotest.Get(b)
	envMu.Lock()
	defer envMu.Unlock()
	if sharedEnv != nil {
		return sharedEnv
	}
	dir, err := os.MkdirTemp("", "s3cryptfs-perf-")
	if err != nil {
		b.Fatalf("perf: %v", err)
	}
	workDir = dir
	e := &env{
		srv:      srv,
		work:     dir,
		buckets:  map[string]string{},
		fixtures: map[string]bool{},
		systems:  map[string]system{},
		paths:    map[time.Duration]*netPath{},
	}
	if e.s3, err = newS3Client(srv, srv.Endpoint, &e.obsReqs); err != nil {
		b.Fatal(err)
	}
	tr, err := newTLSTransport(srv.CAFile)
	if err != nil {
		b.Fatal(err)
	}
	e.metrics = &http.Client{Transport: tr}
	sharedEnv = e
	sharedEnv.warmUp(b)
	return sharedEnv
}

// warmUp uploads and downloads the sequential file once through the SDK,
// untimed, in a bucket of its own (see the package doc).
func (e *env) warmUp(b *testing.B) {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	bucket := e.bucket(b, "warmup")
	data := randomData()
	if err := sdkUpload(ctx, e.s3, bucket, seqName, data, sdkPartSize, sdkConcurrency); err != nil {
		b.Fatalf("perf: warm-up: %v", err)
	}
	if err := sdkDownload(ctx, e.s3, bucket, seqName, readBuf(), data, sdkPartSize, sdkConcurrency); err != nil {
		b.Fatalf("perf: warm-up: %v", err)
	}
}

func removeWorkDir() {
	if workDir != "" {
		// Mountpoints were unmounted by unmountAll; RemoveAll does not
		// cross into a mount that is somehow still there (it would fail
		// with EBUSY on the directory), so this cannot delete bucket data.
		if err := os.RemoveAll(workDir); err != nil {
			fmt.Fprintf(os.Stderr, "perf: removing %s: %v\n", workDir, err)
		}
	}
}

// bucket returns the bucket of system sys, creating it on first use. Every
// system gets its own so listings and object counts never mix.
func (e *env) bucket(b *testing.B, sys string) string {
	b.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if name, ok := e.buckets[sys]; ok {
		return name
	}
	name := fmt.Sprintf("perf-%s-%d", strings.ReplaceAll(sys, "_", "-"), os.Getpid())
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := e.s3.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)}); err != nil {
		b.Fatalf("perf: create bucket %s: %v", name, err)
	}
	e.buckets[sys] = name
	return name
}

// haveFixture and setFixture remember which test files exist already, so a
// benchmark run alone (-bench SeqReadCold) writes what it needs first and a
// full run writes each file once.
func (e *env) haveFixture(sys, name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.fixtures[sys+"/"+name]
}

func (e *env) setFixture(sys, name string, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.fixtures[sys+"/"+name] = ok
}

// randomData returns n bytes of incompressible data, the same bytes on every
// call of a run (seeded), so every system stores exactly what the SDK does.
var randomData = sync.OnceValue(func() []byte {
	buf := make([]byte, cfg().seqSize)
	fillRandom(buf, 1)
	return buf
})

func fillRandom(buf []byte, seed uint64) {
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 's', '3', 'c'})
	_, _ = r.Read(buf) // ChaCha8.Read never fails
}

// head returns the object's info, or ok=false when it does not exist.
func (e *env) head(ctx context.Context, bucket, key string) (out *s3.HeadObjectOutput, ok bool, err error) {
	out, err = e.s3.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		var nf *types.NotFound
		if errors.As(err, &nf) || strings.Contains(err.Error(), "StatusCode: 404") {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("perf: head %s/%s: %w", bucket, key, err)
	}
	return out, true, nil
}

// deleteKey removes key from bucket through the observer (untimed set-up)
// and waits until a HEAD no longer finds it.
func (e *env) deleteKey(ctx context.Context, bucket, key string) error {
	if _, err := e.s3.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}); err != nil {
		return fmt.Errorf("perf: delete %s/%s: %w", bucket, key, err)
	}
	return waitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		_, ok, err := e.head(ctx, bucket, key)
		return !ok, err
	})
}

// waitFor polls cond until it reports true, for at most limit. It measures
// durability for mounts whose close() returns before the upload has ended
// (rclone's write-back cache): the benchmark timer keeps running.
func waitFor(ctx context.Context, limit time.Duration, cond func(ctx context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	delay := 5 * time.Millisecond
	for {
		ok, err := cond(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("perf: condition not met after %v: %w", limit, ctx.Err())
		case <-time.After(delay):
		}
		delay = min(delay*2, 100*time.Millisecond)
	}
}

// countObjects counts the objects under prefix that are not directory
// markers (keys ending in '/').
func (e *env) countObjects(ctx context.Context, bucket, prefix string) (int, error) {
	n := 0
	p := s3.NewListObjectsV2Paginator(e.s3, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return 0, fmt.Errorf("perf: list %s/%s: %w", bucket, prefix, err)
		}
		for _, o := range page.Contents {
			// Neither a directory marker ("d/") nor an encrypted-name
			// directory's object (zero-length under names.DirRoot: every
			// encrypted file has at least its header).
			k := aws.ToString(o.Key)
			if !strings.HasSuffix(k, "/") && !(strings.HasPrefix(k, "d/") && aws.ToInt64(o.Size) == 0) {
				n++
			}
		}
	}
	return n, nil
}

// ---- mounts ----

// system is a filesystem under test: s3cryptfs, s3fs or rclone's crypt.
type system interface {
	name() string
	// mount mounts a fresh instance (new process, empty caches) of the
	// system's bucket on a new directory.
	mount(b *testing.B) *mount
	// fileKey is the object key under which the file at rel (relative to
	// the mount root) is stored.
	fileKey(rel string) string
}

// mount is one mounted instance.
type mount struct {
	sys     string
	lat     string // latency setting (latName) of the mount's endpoint
	dir     string
	pid     int // the FUSE server process, 0 if not found
	log     string
	umount  func() error // system-specific unmount command
	mu      sync.Mutex
	done    bool
	peakRSS int64   // VmHWM in bytes, read at unmount
	cpu0    float64 // CPU seconds the process had used when the mount was ready
}

var liveMounts struct {
	sync.Mutex
	list []*mount
}

func registerMount(m *mount) {
	liveMounts.Lock()
	defer liveMounts.Unlock()
	liveMounts.list = append(liveMounts.list, m)
}

// unmountAll detaches whatever is still mounted at the end of the run.
func unmountAll() {
	liveMounts.Lock()
	list := liveMounts.list
	liveMounts.list = nil
	liveMounts.Unlock()
	for _, m := range list {
		m.mu.Lock()
		done := m.done
		m.mu.Unlock()
		if !done && isMounted(m.dir) {
			fmt.Fprintf(os.Stderr, "perf: %s still mounted at %s at exit; detaching\n", m.sys, m.dir)
			_ = runQuiet(context.Background(), nil, "umount", "-l", m.dir)
		}
	}
}

// path returns the absolute path of rel inside the mount.
func (m *mount) path(rel string) string { return filepath.Join(m.dir, rel) }

// rss returns the mount process's peak resident set (VmHWM) so far.
func (m *mount) rss() (int64, error) {
	if m.pid == 0 {
		return 0, fmt.Errorf("perf: %s: mount process not found", m.sys)
	}
	return vmHWM(m.pid)
}

// unmount reads the process's peak RSS, unmounts and waits for the process
// to exit, so the next fresh mount never overlaps it. It is idempotent and
// reports errors through b.
func (m *mount) unmount(b testing.TB) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done {
		return
	}
	m.done = true
	if rss, err := m.rss(); err == nil {
		m.peakRSS = rss
		notePeakRSS(m.sys, m.lat, rss)
	}
	if err := m.umount(); err != nil {
		b.Errorf("perf: unmount %s at %s: %v (log %s:\n%s)", m.sys, m.dir, err, m.log, tailFile(m.log))
		_ = runQuiet(context.Background(), nil, "umount", "-l", m.dir)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err := waitFor(ctx, time.Minute, func(context.Context) (bool, error) {
		return !isMounted(m.dir) && (m.pid == 0 || !processAlive(m.pid)), nil
	})
	if err != nil {
		b.Errorf("perf: %s at %s: still mounted or process %d alive a minute after unmount", m.sys, m.dir, m.pid)
	}
}

// peak RSS per system and latency setting over the whole run.
var peakRSS struct {
	sync.Mutex
	bySys map[string]int64 // "lat sys" -> bytes
}

func notePeakRSS(sys, lat string, v int64) {
	peakRSS.Lock()
	defer peakRSS.Unlock()
	if peakRSS.bySys == nil {
		peakRSS.bySys = map[string]int64{}
	}
	k := lat + " " + sys
	if v > peakRSS.bySys[k] {
		peakRSS.bySys[k] = v
	}
	rssTarget := ""
	if sys == sysS3cryptfs {
		if c, err := parseSize(cfg().cacheSize); err == nil {
			rssTarget = fmt.Sprintf("< %d MiB (cache %s + 200 MiB)", (c>>20)+200, cfg().cacheSize)
		}
	}
	record(result{lat: lat, workload: "peak RSS of the mount process (max over the run)", system: sys,
		value: float64(peakRSS.bySys[k]) / (1 << 20), unit: "MiB", ratio: nan, reqs: nan, target: rssTarget})
}

// isMounted reports whether dir is a mountpoint in this mount namespace.
func isMounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == dir {
			return true
		}
	}
	return false
}

// unescapeMountinfo undoes the octal escapes (\040 for space) of mountinfo.
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var out []byte
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				out = append(out, byte(v))
				i += 3
				continue
			}
		}
		out = append(out, s[i])
	}
	return string(out)
}

// findMountPID finds the process serving the mount at dir: a process whose
// command line has dir as an argument, preferring one whose executable's
// name contains exe. Daemonizing mounts re-exec or fork with their
// arguments, so this finds them without the mount's cooperation.
func findMountPID(dir, exe string) int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	self := os.Getpid()
	best := 0
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		raw, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || len(raw) == 0 {
			continue
		}
		args := strings.Split(strings.TrimRight(string(raw), "\x00"), "\x00")
		hit := false
		for _, a := range args[1:] {
			if a == dir || a == dir+"/" {
				hit = true
				break
			}
		}
		if !hit {
			continue
		}
		if strings.Contains(filepath.Base(args[0]), exe) {
			if best == 0 || pid > best { // the daemon child is the newest
				best = pid
			}
		}
	}
	return best
}

// vmHWM reads the peak resident set size of pid from /proc/PID/status.
func vmHWM(pid int) (int64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("perf: %w", err)
	}
	return parseVmHWM(raw)
}

func parseVmHWM(status []byte) (int64, error) {
	for _, line := range bytes.Split(status, []byte("\n")) {
		rest, ok := bytes.CutPrefix(line, []byte("VmHWM:"))
		if !ok {
			continue
		}
		f := strings.Fields(string(rest))
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("perf: unexpected VmHWM line %q", line)
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("perf: VmHWM: %w", err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("perf: no VmHWM in status")
}

// cpuSeconds returns the user+system CPU time pid has used, from
// /proc/PID/stat (fields 14 and 15, in clock ticks of 1/100 s on Linux).
// minioCPU is the CPU time MinIO has used so far, in seconds (0 if
// unknown): with MinIO on the same cores, what it spends per byte bounds
// every client.
func (e *env) minioCPU() float64 {
	s, err := cpuSeconds(e.srv.PID())
	if err != nil {
		return 0
	}
	return s
}

func cpuSeconds(pid int) (float64, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("perf: %w", err)
	}
	return parseStatCPU(raw)
}

func parseStatCPU(stat []byte) (float64, error) {
	// The command name (field 2) is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("perf: malformed /proc/PID/stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, errors.New("perf: short /proc/PID/stat")
	}
	ut, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("perf: /proc/PID/stat times %q %q", f[11], f[12])
	}
	return float64(ut+st) / 100, nil
}

func processAlive(pid int) bool {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// A zombie has exited; its parent just has not reaped it yet.
	if i := bytes.LastIndexByte(raw, ')'); i >= 0 && i+2 < len(raw) && raw[i+2] == 'Z' {
		return false
	}
	return true
}

// tailFile returns the last few lines of a log for error messages.
func tailFile(path string) string {
	raw, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(raw), "\n"), "\n")
	if len(lines) > 25 {
		lines = lines[len(lines)-25:]
	}
	return strings.Join(lines, "\n")
}
