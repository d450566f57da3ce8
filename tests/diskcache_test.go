package tests

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/cache/disk"
)

// diskCacheTestSize is the file the disk cache tests read: 96 MiB, or
// S3CRYPTFS_DISKCACHE_TEST_SIZE bytes (docs/PERFORMANCE.md has the 1 GiB
// figures, from the benchmark).
func diskCacheTestSize(t *testing.T) int {
	if s := os.Getenv("S3CRYPTFS_DISKCACHE_TEST_SIZE"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	return 96 << 20
}

// markerData is n bytes of a plaintext marker, repeated.
const diskCacheMarker = "PLAINTEXT-MARKER-d15kc4ch3-"

func markerData(n int) []byte {
	return bytes.Repeat([]byte(diskCacheMarker), n/len(diskCacheMarker)+1)[:n]
}

// readFileHash reads p whole (after dropping its pages from the kernel's
// cache) and returns its SHA-256 and how long it took.
func readFileHash(t *testing.T, p string) ([32]byte, time.Duration) {
	t.Helper()
	dropPageCache(t, p)
	start := time.Now()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 1<<20)); err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	var sum [32]byte
	h.Sum(sum[:0])
	return sum, time.Since(start)
}

// cacheUsage returns the blocks cached in a disk cache directory and the
// disk space its segment files take (as du counts it).
func cacheUsage(t *testing.T, dir string) (blocks []disk.Entry, used int64) {
	t.Helper()
	filepath.Walk(filepath.Join(dir, "seg"), func(p string, info os.FileInfo, err error) error {
		if err == nil && info.Mode().IsRegular() {
			used += info.Sys().(*syscall.Stat_t).Blocks * 512
		}
		return nil
	})
	if err := disk.Walk(dir, func(e disk.Entry) error {
		blocks = append(blocks, e)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return blocks, used
}

// waitCacheReleased waits until the mount that had the disk cache dir
// has ended (it writes its queued blocks after the kernel's unmount, then
// releases the directory's lock).
func waitCacheReleased(t *testing.T, dir string) {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
		if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err == nil {
			unix.Flock(int(f.Fd()), unix.LOCK_UN)
			return
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("the disk cache %s is still locked a minute after the unmount", dir)
		}
	}
}

// mountAgain mounts the store again on m's directory, which must be
// unmounted.
func mountAgain(m *mount, extra ...string) *mount {
	m.t.Helper()
	n, r := m.st.tryMountAt(m.t, m.dir, append([]string{"--passphrase-file", passFile(m.t, passphrase)}, extra...)...)
	if r.code != 0 {
		m.t.Fatalf("mount: exit %d: %s\nlog:\n%s", r.code, r.stderr, readLog(n.log))
	}
	return n
}

func getsAndBytes(s map[string]float64) (float64, float64) {
	return s[`s3cryptfs_store_requests_total{op="get",outcome="ok"}`], s["s3cryptfs_store_received_bytes_total"]
}

// TestDiskCacheRemount, through the real binary over MinIO: a file read
// once is read again after a remount from the disk cache alone (the
// store's metrics count one GET per open, of the 132-byte header, and no
// block), the cache holds the stored ciphertext and no plaintext, and a
// second mount may not share the directory.
func TestDiskCacheRemount(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	size := diskCacheTestSize(t)
	dc := filepath.Join(t.TempDir(), "dc")
	opts := []string{"--disk-cache", dc, "--cache-size", "32MiB"}

	m := st.mount(t, opts...)
	data := markerData(size)
	want := sha256.Sum256(data)
	if err := os.WriteFile(m.path("big"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	data = nil

	// A second mount of the same cache directory is refused, clearly.
	m2, r := st.tryMount(t, "--passphrase-file", passFile(t, passphrase), "--disk-cache", dc)
	if r.code != 1 || !strings.Contains(r.stderr, "in use by another s3cryptfs mount") || isMounted(m2.dir) {
		t.Errorf("second mount on the same --disk-cache: exit %d, %q, mounted %v; want exit 1 saying the directory is in use", r.code, r.stderr, isMounted(m2.dir))
	}

	// Cold: read from the store, written to the disk cache.
	addr := freePort(t)
	m = m.remount(append(opts, "--metrics-addr", addr)...)
	s0 := scrape(t, addr)
	sum, cold := readFileHash(t, m.path("big"))
	if sum != want {
		t.Fatal("cold read: wrong content")
	}
	s1 := scrape(t, addr)
	g0, b0 := getsAndBytes(s0)
	g1, b1 := getsAndBytes(s1)
	if b1-b0 < float64(size) {
		t.Fatalf("cold read received %v bytes from the store, want at least %d: the test proves nothing", b1-b0, size)
	}
	t.Logf("cold read: %.0f GETs, %.0f MiB in %v (%.0f MiB/s); disk cache: %.0f writes, %.0f dropped", g1-g0, (b1-b0)/(1<<20), cold, float64(size)/(1<<20)/cold.Seconds(),
		s1["s3cryptfs_disk_cache_writes_total"], s1["s3cryptfs_disk_cache_dropped_total"])

	// Warm, after a remount: every block from the disk.
	addr = freePort(t)
	m = m.remount(append(opts, "--metrics-addr", addr)...)
	s0 = scrape(t, addr)
	sum, warm := readFileHash(t, m.path("big"))
	if sum != want {
		t.Fatal("read from the disk cache: wrong content")
	}
	s1 = scrape(t, addr)
	g0, b0 = getsAndBytes(s0)
	g1, b1 = getsAndBytes(s1)
	hits := s1["s3cryptfs_disk_cache_hits_total"] - s0["s3cryptfs_disk_cache_hits_total"]
	t.Logf("re-read after remount: %.0f GETs, %.0f bytes received, %.0f disk cache hits, in %v (%.0f MiB/s; cold %v)",
		g1-g0, b1-b0, hits, warm, float64(size)/(1<<20)/warm.Seconds(), cold)
	// Two opens (dropping the page cache, then reading): each reads the
	// 132-byte header to check the version.
	if g1-g0 > 2 || b1-b0 > 2*132 {
		t.Errorf("re-read after remount: %.0f GETs, %.0f bytes from the store; want at most the opens' GETs of the 132-byte header", g1-g0, b1-b0)
	}
	if blocks := float64((size + 65535) / 65536); hits < blocks {
		t.Errorf("%.0f disk cache hits, want %.0f (every block)", hits, blocks)
	}
	m.unmount()
	waitCacheReleased(t, dc)

	// What is on disk: the stored ciphertext, no plaintext, no names.
	blocks, used := cacheUsage(t, dc)
	if len(blocks) != (size+65535)/65536 {
		t.Errorf("%d blocks cached for %d blocks read", len(blocks), (size+65535)/65536)
	}
	t.Logf("cache: %d blocks, %d bytes on disk for a %d-byte file", len(blocks), used, size)
	raw := st.raw(t, "big")
	for i, e := range blocks {
		if i%97 == 0 && !bytes.Contains(raw, e.Data) {
			t.Errorf("block in %s slot %d is not a block of the stored object", e.File, e.Slot)
		}
	}
	marker := []byte(diskCacheMarker[:16])
	filepath.Walk(dc, func(p string, info os.FileInfo, err error) error {
		if strings.Contains(p, "big") {
			t.Errorf("cache path %s names the file", p)
		}
		if err != nil || !info.Mode().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, marker) {
			t.Errorf("%s holds plaintext", p)
		}
		return nil
	})
	// The check above can fail: the file holds the marker many times.
	if !bytes.Contains(markerData(1<<10), marker) {
		t.Fatal("BUG: marker")
	}
}

// TestDiskCacheReplacedObject: another client replaces the object between
// two mounts that share a disk cache: the old version's cached blocks are
// not served.
func TestDiskCacheReplacedObject(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	dc := filepath.Join(t.TempDir(), "dc")
	const size = 4<<20 + 1000
	old := markerData(size)
	newer := bytes.ToUpper(markerData(size)) // same size, other bytes
	for i := range newer {
		newer[i] ^= byte(i)
	}

	m := st.mount(t, "--disk-cache", dc)
	if err := os.WriteFile(m.path("f"), old, 0o644); err != nil {
		t.Fatal(err)
	}
	m = m.remount("--disk-cache", dc)
	if sum, _ := readFileHash(t, m.path("f")); sum != sha256.Sum256(old) {
		t.Fatal("first read: wrong content")
	}
	m.unmount()
	waitCacheReleased(t, dc)
	if blocks, _ := cacheUsage(t, dc); len(blocks) == 0 {
		t.Fatal("nothing cached: the test proves nothing")
	}

	// Another client: a mount without the disk cache.
	other := st.mount(t)
	if err := os.WriteFile(other.path("f"), newer, 0o644); err != nil {
		t.Fatal(err)
	}
	other.unmount()

	m = mountAgain(m, "--disk-cache", dc)
	got, err := os.ReadFile(m.path("f"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, newer) {
		t.Errorf("after another client replaced the object: read %s", map[bool]string{true: "the old version", false: "wrong bytes"}[bytes.Equal(got, old)])
	}
	if log := readLog(m.log); strings.Contains(log, "failed authentication") {
		t.Errorf("old entries were looked up for the new version:\n%s", log)
	}
}

// TestDiskCacheCorruptEntry: cache entries damaged on disk are detected,
// logged with the object's key, fetched again (right bytes) and replaced.
func TestDiskCacheCorruptEntry(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	dc := filepath.Join(t.TempDir(), "dc")
	data := markerData(2<<20 + 77)
	m := st.mount(t, "--disk-cache", dc)
	if err := os.WriteFile(m.path("c"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	m = m.remount("--disk-cache", dc)
	readFileHash(t, m.path("c"))
	m.unmount()
	waitCacheReleased(t, dc)

	blocks, _ := cacheUsage(t, dc)
	if len(blocks) != 33 {
		t.Fatalf("%d blocks cached, want 33", len(blocks))
	}
	type place struct {
		file string
		off  int64
	}
	damaged := map[place][]byte{}
	for i, e := range blocks {
		if i%4 != 0 {
			continue
		}
		b := bytes.Clone(e.Data)
		b[(100+i)%len(b)] ^= 0x40
		f, err := os.OpenFile(e.File, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteAt(b, e.Offset)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		damaged[place{e.File, e.Offset}] = b
	}

	m = mountAgain(m, "--disk-cache", dc)
	if sum, _ := readFileHash(t, m.path("c")); sum != sha256.Sum256(data) {
		t.Fatal("read over damaged cache entries: wrong content")
	}
	m.unmount()
	waitCacheReleased(t, dc)
	log := readLog(m.log)
	// The line names the object key (with encrypted names, the encrypted
	// one: the engine below the name layer does not know paths).
	if n := strings.Count(log, "disk cache: entry failed authentication"); n != len(damaged) || !strings.Contains(log, st.key(t, "c")) {
		t.Errorf("%d log lines about damaged entries naming the object, want %d:\n%s", n, len(damaged), log)
	}
	raw := st.raw(t, "c")
	blocks, _ = cacheUsage(t, dc)
	replaced := 0
	for _, e := range blocks {
		if bad, ok := damaged[place{e.File, e.Offset}]; ok {
			replaced++
			if bytes.Equal(e.Data, bad) || !bytes.Contains(raw, e.Data) {
				t.Errorf("damaged block in %s slot %d not replaced by the stored block", e.File, e.Slot)
			}
		}
	}
	if replaced != len(damaged) {
		t.Errorf("%d of the %d damaged blocks are cached again", replaced, len(damaged))
	}
}

// TestDiskCacheSizeCap: reading four times --disk-cache-size keeps the
// directory's entries within 5% of it, and the cache is filled (not just
// small).
func TestDiskCacheSizeCap(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	dc := filepath.Join(t.TempDir(), "dc")
	const capBytes = 16 << 20
	opts := []string{"--disk-cache", dc, "-o", "disk_cache_size=16MiB"}
	m := st.mount(t, opts...)
	const files, fileSize = 5, 6 << 20 // 30 MiB through 16 MiB
	for i := range files {
		if err := os.WriteFile(m.path("f"+strconv.Itoa(i)), markerData(fileSize+i), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m = m.remount(opts...)
	for i := range files {
		readFileHash(t, m.path("f"+strconv.Itoa(i)))
	}
	m.unmount()
	waitCacheReleased(t, dc)
	blocks, used := cacheUsage(t, dc)
	t.Logf("after reading %d MiB through a 16 MiB disk cache: %d blocks, %d bytes on disk", files*fileSize>>20, len(blocks), used)
	if used > capBytes*105/100 {
		t.Errorf("%d bytes on disk, over the 16 MiB cap by more than 5%%", used)
	}
	if used < capBytes*80/100 {
		t.Errorf("%d bytes on disk: the cache was not filled to its cap", used)
	}
	// Least recently used goes first: the last file read is cached whole,
	// so re-reading it needs no GET of its blocks; the first is gone.
	addr := freePort(t)
	m = mountAgain(m, append(opts, "--metrics-addr", addr)...)
	for _, c := range []struct {
		name     string
		gets, at float64
	}{{"f4", 2, 2 * 132}, {"f0", 5, fileSize}} {
		s0 := scrape(t, addr)
		readFileHash(t, m.path(c.name))
		s1 := scrape(t, addr)
		g0, b0 := getsAndBytes(s0)
		g1, b1 := getsAndBytes(s1)
		t.Logf("re-read %s: %.0f GETs, %.0f bytes", c.name, g1-g0, b1-b0)
		if c.name == "f4" && (g1-g0 > c.gets || b1-b0 > c.at) {
			t.Errorf("re-reading the last file read: %.0f GETs, %.0f bytes from the store; want only the opens' headers", g1-g0, b1-b0)
		}
		if c.name == "f0" && b1-b0 < c.at {
			t.Errorf("re-reading the first file read: %.0f bytes from the store; want all of it (evicted first)", b1-b0)
		}
	}
}

// TestDiskCacheNeedsEncryption: --disk-cache without client-side
// encryption would put plaintext on disk: refused as a usage error, with
// nothing mounted.
func TestDiskCacheNeedsEncryption(t *testing.T) {
	st := newStore(t, "local")
	dc := filepath.Join(t.TempDir(), "dc")
	m, r := st.tryMount(t, "--client-encryption=false", "--disk-cache", dc)
	if r.code != 2 || !strings.Contains(r.stderr, "needs client-side encryption") || isMounted(m.dir) {
		t.Fatalf("--disk-cache with --client-encryption=false: exit %d, %q, mounted %v; want exit 2", r.code, r.stderr, isMounted(m.dir))
	}
	if _, err := os.Stat(dc); err == nil {
		t.Error("the cache directory was created")
	}
}

// TestDiskCacheCrash: a mount killed (SIGKILL) while it was writing the
// disk cache leaves no lock behind and nothing that could be served wrong:
// the next mount of the same directory reads the right bytes, from the
// store for whatever the crash lost or tore.
func TestDiskCacheCrash(t *testing.T) {
	st := newStore(t, "minio")
	st.init(t)
	dc := filepath.Join(t.TempDir(), "dc")
	data := markerData(48 << 20)
	want := sha256.Sum256(data)
	m := st.mount(t, "--disk-cache", dc)
	if err := os.WriteFile(m.path("f"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	addr := freePort(t)
	m = m.remount("--disk-cache", dc, "--metrics-addr", addr)
	if sum, _ := readFileHash(t, m.path("f")); sum != want {
		t.Fatal("first read: wrong content")
	}
	// Let the writes catch up (the segments fill, so their headers are
	// written), then crash.
	for start := time.Now(); scrape(t, addr)["s3cryptfs_disk_cache_writes_total"] < 768; time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > time.Minute {
			t.Fatal("the 768 blocks read were not written to the disk cache within a minute")
		}
	}
	pidText, err := os.ReadFile(filepath.Join(dc, "lock"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(pidText)))
	if err != nil {
		t.Fatalf("lock file holds %q, not a pid", pidText)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && syscall.Kill(pid, 0) == nil; i++ {
		time.Sleep(20 * time.Millisecond)
	}
	if r := st.run(t, nil, "unmount", "--lazy", m.dir); r.code != 0 {
		t.Fatalf("unmount --lazy after the crash: %s", r.stderr)
	}
	// Every segment was full, so every block survived the crash.
	if blocks, _ := cacheUsage(t, dc); len(blocks) != 768 {
		t.Errorf("%d blocks on disk after the crash, want 768", len(blocks))
	}
	addr = freePort(t)
	m = mountAgain(m, "--disk-cache", dc, "--metrics-addr", addr)
	s0 := scrape(t, addr)
	if sum, _ := readFileHash(t, m.path("f")); sum != want {
		t.Fatal("read after the crash: wrong content")
	}
	s1 := scrape(t, addr)
	if hits := s1["s3cryptfs_disk_cache_hits_total"] - s0["s3cryptfs_disk_cache_hits_total"]; hits != 768 {
		t.Errorf("re-read after the crash: %.0f disk cache hits, want 768", hits)
	}
	m.unmount()
	waitCacheReleased(t, dc)
	if blocks, _ := cacheUsage(t, dc); len(blocks) != 768 {
		t.Errorf("%d blocks cached after the re-read, want 768", len(blocks))
	}
}
