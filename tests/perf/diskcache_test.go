package perf

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// ---- 7. reads after a remount, with and without --disk-cache ----

// BenchmarkDiskCacheRemount reads the sequential file (1 GiB) right after
// a remount (empty memory cache) three ways: without a disk cache (every
// block from the store), with an empty --disk-cache (the first read, which
// fills it), and with the filled disk cache after another remount (no GET
// but the open's header); then fio's 4-job random 4 KiB reads over the
// whole file on that mount. s3cryptfs only: s3fs (use_cache) and rclone
// (--vfs-cache-mode full) keep plaintext on disk; comparing them is left
// for later (see docs/PERFORMANCE.md).
func BenchmarkDiskCacheRemount(b *testing.B) {
	forEachSystem(b, benchDiskCacheRemount)
}

func benchDiskCacheRemount(b *testing.B, lat time.Duration, sys string) {
	if sys != sysS3cryptfs {
		b.Skip("s3cryptfs only")
	}
	b.StopTimer()
	e := getEnv(b)
	p := e.path(b, lat)
	ctx := benchCtx(b)
	c := cfg()
	data := randomData()
	size := int64(len(data))
	plain := getSystem(b, e, sys, p).(*s3cryptfsSys)
	ensureSeqFile(b, e, sys)
	bucket := e.bucket(b, sys)
	dc := filepath.Join(e.work, "diskcache-"+latName(lat))
	withDC := plain.withArgs("--disk-cache", dc, "--disk-cache-size", fmt.Sprint(2*size))
	seq := "seq read " + mib(size) + " after a remount"
	rnd := fmt.Sprintf("random 4 KiB read after a remount, from the disk cache (4 jobs, %d s over %s)", c.fioRuntime, mib(size))
	b.SetBytes(size)

	// read mounts s, reads the file once (timed) and unmounts unless keep.
	read := func(s *s3cryptfsSys, keep bool) (secs, reqs float64, m *mount) {
		m = s.mount(b)
		rc := e.countRequests(bucket, nil)
		b.StartTimer()
		d, err := timed(func() error { return readCompare(m.path(seqName), data, readBuf()) })
		b.StopTimer()
		reqs = rc.done(b)
		if err != nil {
			b.Fatalf("%s: %v", sys, err)
		}
		reportRSS(b, m)
		if !keep {
			m.unmount(b)
			waitUnlocked(b, dc)
		}
		return d.Seconds(), reqs, m
	}
	var sum [3]float64
	var reqs [3]float64
	var iops, iopsReqs float64
	for range b.N {
		os.RemoveAll(dc)
		for k, s := range []*s3cryptfsSys{plain, withDC} {
			secs, r, _ := read(s, false)
			sum[k] += secs
			reqs[k] += r
		}
		secs, r, m := read(withDC, true)
		sum[2] += secs
		reqs[2] += r
		// fio on the same mount: its memory cache now holds the last
		// --cache-size of the file, the disk cache all of it. Not
		// O_DIRECT: fio's own repeats hit the kernel's page cache, as in
		// BenchmarkRandRead4K.
		rc := e.countRequests(bucket, nil)
		b.StartTimer()
		v, err := fioRandRead(ctx, m.path(seqName), size, c.fioRuntime)
		b.StopTimer()
		iopsReqs += rc.done(b)
		if err != nil {
			b.Fatal(err)
		}
		iops += v
		m.unmount(b)
		waitUnlocked(b, dc)
	}
	n := float64(b.N)
	base := baseline(b, p, "cold seq read "+mib(size), func() map[string]float64 {
		ensureSeqFile(b, e, sysSDK)
		secs, _ := sdkSeqRead(b, e, p, ctx, once)
		return map[string]float64{"": secs}
	})
	for k, what := range []string{"no disk cache", "first read, filling the disk cache", "from the disk cache"} {
		secs := sum[k] / n
		reportAs(b, result{lat: p.name, workload: seq + ", " + what, system: sys, value: float64(size) / secs / 1e6, unit: "MB/s",
			ratio: ratio(base[""], secs), reqs: reqs[k] / n}, []string{"nodc", "fill", "dc"}[k]+"-MB/s",
			[]string{"nodc", "fill", "dc"}[k]+"-ratio", []string{"nodc", "fill", "dc"}[k]+"-requests")
	}
	reportAs(b, result{lat: p.name, workload: rnd, system: sys, value: iops / n, unit: "IOPS", ratio: nan,
		target: ">= 20000 IOPS", reqs: iopsReqs / n}, "dc-IOPS", "dc-IOPS-ratio", "dc-IOPS-requests")
}

// waitUnlocked waits for the mount that had the disk cache dir to end: it
// writes its queued blocks after the kernel's unmount, then releases the
// directory's lock.
func waitUnlocked(b *testing.B, dir string) {
	f, err := os.Open(filepath.Join(dir, "lock"))
	if err != nil {
		return // no disk cache
	}
	defer f.Close()
	for start := time.Now(); time.Since(start) < time.Minute; time.Sleep(20 * time.Millisecond) {
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
			return
		}
	}
	b.Fatalf("perf: disk cache %s still locked a minute after the unmount", dir)
}
