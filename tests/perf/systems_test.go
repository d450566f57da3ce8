package perf

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs/names"
)

var nan = math.NaN()

// mountSeq numbers mountpoints and logs so that each fresh mount is new.
var mountSeq atomic.Int64

// getSystem returns the mount-based system called name whose mounts reach
// MinIO through p (directly or through the latency proxy), set up once per
// run and setting (bucket, vault or config; one bucket per system for all
// settings, so files written at one setting serve the next). s3fs and
// rclone need S3CRYPTFS_BENCH_COMPARE=1; without it their benchmarks skip,
// saying how to run them.
func getSystem(b *testing.B, e *env, name string, p *netPath) system {
	b.Helper()
	if (name == sysS3fs || name == sysRclone) && !compareEnabled() {
		b.Skipf("%s comparison: run `make bench-compare` (or set S3CRYPTFS_BENCH_COMPARE=1)", name)
	}
	key := name + " " + p.name
	e.mu.Lock()
	s, ok := e.systems[key]
	e.mu.Unlock()
	if ok {
		return s
	}
	bucket := e.bucket(b, name)
	switch name {
	case sysS3cryptfs:
		s = newS3cryptfs(b, e, bucket, p, false)
	case sysS3cryptfsPlain:
		s = newS3cryptfs(b, e, bucket, p, true)
	case sysS3fs:
		s = newS3fs(b, e, bucket, p)
	case sysRclone:
		s = newRclone(b, e, bucket, p)
	default:
		b.Fatalf("BUG: unknown system %q", name)
	}
	e.mu.Lock()
	e.systems[key] = s
	e.mu.Unlock()
	return s
}

// runQuiet runs a command with extra environment, returning its combined
// output in the error when it fails.
func runQuiet(ctx context.Context, extraEnv []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// startDaemon runs a mount command whose parent returns once the mount is up
// (or, for s3fs, once it has forked). Output goes to a log file rather than a
// pipe: a daemon child that inherits a pipe would keep Wait from returning.
func startDaemon(b *testing.B, logPath string, extraEnv []string, name string, args ...string) {
	b.Helper()
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		b.Fatalf("perf: %v", err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), extraEnv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	fmt.Fprintf(logf, "+ %s %s\n", name, strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		b.Fatalf("perf: %s %s: %v; log %s ends with:\n%s", name, strings.Join(args, " "), err, logPath, tailFile(logPath))
	}
}

// newMountDir makes a fresh mountpoint and log path for system sys.
func newMountDir(b *testing.B, e *env, sys string) (dir, log string) {
	b.Helper()
	n := mountSeq.Add(1)
	dir = filepath.Join(e.work, fmt.Sprintf("mnt-%s-%d", sys, n))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatalf("perf: %v", err)
	}
	return dir, filepath.Join(e.work, fmt.Sprintf("log-%s-%d.txt", sys, n))
}

// finishMount waits until dir is a mountpoint, finds the serving process,
// registers the mount for cleanup at the end of b and at exit.
func finishMount(b *testing.B, sys, lat, dir, log, exe string, umount func() error) *mount {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := waitFor(ctx, time.Minute, func(context.Context) (bool, error) { return isMounted(dir), nil }); err != nil {
		b.Fatalf("perf: %s did not mount %s: %v; log %s ends with:\n%s", sys, dir, err, log, tailFile(log))
	}
	m := &mount{sys: sys, lat: lat, dir: dir, log: log, umount: umount}
	_ = waitFor(ctx, 10*time.Second, func(context.Context) (bool, error) {
		m.pid = findMountPID(dir, exe)
		return m.pid != 0, nil
	})
	if m.pid == 0 {
		b.Logf("perf: %s mounted at %s but its process was not found; no RSS figure", sys, dir)
	} else {
		m.cpu0, _ = cpuSeconds(m.pid) // excludes start-up work such as the KDF
	}
	registerMount(m)
	b.Cleanup(func() { m.unmount(b) })
	return m
}

// ---- s3cryptfs ----

type s3cryptfsSys struct {
	e          *env
	sys        string // sysS3cryptfs, or sysS3cryptfsPlain for --plaintext-names
	plain      bool
	layout     *names.Layout // the vault's names (encrypted unless plain)
	lat        string
	bin        string
	store      string // s3://bucket
	passFile   string
	extraEnv   []string
	cacheBytes int64
	extraArgs  []string // more mount options (withArgs)
}

// withArgs is s with more mount options.
func (s *s3cryptfsSys) withArgs(args ...string) *s3cryptfsSys {
	c := *s
	c.extraArgs = append(slices.Clone(s.extraArgs), args...)
	return &c
}

// s3cryptfsBinary returns $S3CRYPTFS_BIN or builds ./cmd/s3cryptfs once into
// the work directory (a stale bin/s3cryptfs must not be measured).
func s3cryptfsBinary(b *testing.B, e *env) string {
	b.Helper()
	if p := os.Getenv("S3CRYPTFS_BIN"); p != "" {
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("perf: S3CRYPTFS_BIN: %v", err)
		}
		return p
	}
	bin := filepath.Join(e.work, "s3cryptfs")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := runQuiet(ctx, nil, "go", "build", "-o", bin, "github.com/s3cryptfs/s3cryptfs/cmd/s3cryptfs"); err != nil {
		b.Fatalf("perf: building s3cryptfs: %v", err)
	}
	return bin
}

func newS3cryptfs(b *testing.B, e *env, bucket string, p *netPath, plain bool) *s3cryptfsSys {
	b.Helper()
	s := &s3cryptfsSys{e: e, sys: sysS3cryptfs, plain: plain, lat: p.name, bin: s3cryptfsBinary(b, e), store: "s3://" + bucket}
	if plain {
		s.sys = sysS3cryptfsPlain
	}
	defer s.loadLayout(b)
	s.passFile = filepath.Join(e.work, "passphrase")
	// The mount finds its endpoint in AWS_ENDPOINT_URL_S3 (MinIO's or the
	// proxy's) and trusts MinIO's certificate through AWS_CA_BUNDLE.
	s.extraEnv = serverEnv(e.srv, p.endpoint)
	c, err := parseSize(cfg().cacheSize)
	if err != nil {
		b.Fatalf("perf: S3CRYPTFS_BENCH_CACHE: %v", err)
	}
	s.cacheBytes = c
	if e.haveFixture(s.sys, "vault") { // one vault per bucket, for every setting
		return s
	}
	if err := os.WriteFile(s.passFile, []byte("perf benchmark passphrase, not a secret\n"), 0o600); err != nil {
		b.Fatalf("perf: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	args := []string{"init", "--path-style", "--passphrase-file", s.passFile, "--no-recovery-key"}
	if plain {
		args = append(args, "--plaintext-names")
	}
	if err := runQuiet(ctx, s.extraEnv, s.bin, append(args, s.store)...); err != nil {
		b.Fatalf("perf: s3cryptfs init: %v", err)
	}
	e.setFixture(s.sys, "vault", true)
	return s
}

// loadLayout reads the vault config and opens it with the passphrase, to
// know where files are stored (fileKey).
func (s *s3cryptfsSys) loadLayout(b *testing.B) {
	b.Helper()
	s.layout = names.Plain()
	if s.plain {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bucket := strings.TrimPrefix(s.store, "s3://")
	out, err := s.e.s3.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(".s3cryptfs.conf")})
	if err != nil {
		b.Fatalf("perf: read the vault config: %v", err)
	}
	data, err := io.ReadAll(out.Body)
	out.Body.Close()
	if err != nil {
		b.Fatal(err)
	}
	cfg, err := cipher.ParseConfig(data)
	if err != nil {
		b.Fatal(err)
	}
	pass, err := os.ReadFile(s.passFile)
	if err != nil {
		b.Fatal(err)
	}
	u, err := cfg.UnlockSecret(cipher.Passphrase([]byte(strings.TrimRight(string(pass), "\n"))))
	if err != nil {
		b.Fatalf("perf: open the vault config: %v", err)
	}
	if u.Keys().NameKey() == nil {
		b.Fatal("perf: the default vault does not encrypt names")
	}
	if s.layout, err = names.New(u.Keys().NameKey()); err != nil {
		b.Fatal(err)
	}
}

func (s *s3cryptfsSys) name() string { return s.sys }

func (s *s3cryptfsSys) opaqueKeys() bool { return !s.plain }

// fileKey is the file's key: its path with plaintext names, else the
// names layer's key, directories resolved through their markers.
func (s *s3cryptfsSys) fileKey(rel string) string {
	rel = filepath.ToSlash(rel)
	if s.plain {
		return rel
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bucket := strings.TrimPrefix(s.store, "s3://")
	comps := strings.Split(rel, "/")
	loc := s.layout.Root()
	for _, c := range comps[:len(comps)-1] {
		e, err := s.layout.Entry(loc, c)
		if err != nil {
			return ""
		}
		h, ok, err := s.e.head(ctx, bucket, s.layout.Marker(e.Key))
		if err != nil || !ok {
			return ""
		}
		if loc, err = s.layout.Child(loc, c, h.Metadata); err != nil {
			return ""
		}
	}
	e, err := s.layout.Entry(loc, comps[len(comps)-1])
	if err != nil {
		return ""
	}
	return e.Key
}

func (s *s3cryptfsSys) mount(b *testing.B) *mount {
	b.Helper()
	dir, log := newMountDir(b, s.e, s.sys)
	env := s.extraEnv
	if extra := os.Getenv("S3CRYPTFS_BENCH_MOUNT_ENV"); extra != "" {
		// For experiments on the mount process only, e.g.
		// S3CRYPTFS_BENCH_MOUNT_ENV="GOGC=50 GOMEMLIMIT=600MiB".
		env = append(slices.Clone(env), strings.Fields(extra)...)
	}
	args := []string{"mount", "--path-style", "--cache-size", cfg().cacheSize,
		"--passphrase-file", s.passFile, "--log-file", log}
	// More mount options for experiments, e.g. "--attr-timeout 10s".
	args = append(args, strings.Fields(os.Getenv("S3CRYPTFS_BENCH_MOUNT_ARGS"))...)
	args = append(args, s.extraArgs...)
	startDaemon(b, log, env, s.bin, append(args, s.store, dir)...)
	return finishMount(b, s.sys, s.lat, dir, log, "s3cryptfs", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return runQuiet(ctx, s.extraEnv, s.bin, "unmount", dir)
	})
}

// ---- s3fs (s3fs-fuse 1.90, Debian) ----

type s3fsSys struct {
	e        *env
	lat      string
	endpoint string
	bucket   string
	passwd   string
	extraEnv []string
}

func newS3fs(b *testing.B, e *env, bucket string, p *netPath) *s3fsSys {
	b.Helper()
	requireTool(b, "s3fs", "s3fs")
	s := &s3fsSys{e: e, lat: p.name, endpoint: p.endpoint, bucket: bucket, passwd: filepath.Join(e.work, "s3fs-passwd")}
	if err := os.WriteFile(s.passwd, []byte(e.srv.AccessKey+":"+e.srv.SecretKey+"\n"), 0o600); err != nil {
		b.Fatalf("perf: %v", err)
	}
	// s3fs has no CA option; it hands CURL_CA_BUNDLE to libcurl, so the
	// certificate is verified (no no_check_certificate).
	s.extraEnv = []string{"CURL_CA_BUNDLE=" + e.srv.CAFile}
	return s
}

func (s *s3fsSys) name() string { return sysS3fs }

func (s *s3fsSys) fileKey(rel string) string { return filepath.ToSlash(rel) }

func (s *s3fsSys) mount(b *testing.B) *mount {
	b.Helper()
	dir, log := newMountDir(b, s.e, sysS3fs)
	startDaemon(b, log, s.extraEnv, "s3fs", s.bucket, dir,
		"-o", "url="+s.endpoint,
		"-o", "use_path_request_style",
		"-o", "endpoint="+s.e.srv.Region,
		"-o", "passwd_file="+s.passwd,
		"-o", "logfile="+log,
		"-o", "dbglevel=warn",
	)
	return finishMount(b, sysS3fs, s.lat, dir, log, "s3fs", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		return runQuiet(ctx, nil, "umount", dir)
	})
}

// ---- rclone crypt over rclone s3 (rclone 1.60, Debian) ----

type rcloneSys struct {
	e      *env
	lat    string
	config string
}

func newRclone(b *testing.B, e *env, bucket string, p *netPath) *rcloneSys {
	b.Helper()
	requireTool(b, "rclone", "rclone")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "rclone", "obscure", "perf benchmark passphrase, not a secret").Output()
	if err != nil {
		b.Fatalf("perf: rclone obscure: %v", err)
	}
	// File names stay in clear, like s3cryptfs today, so listings cost the
	// same; rclone then only appends ".bin" to each object name.
	conf := fmt.Sprintf(`[minio]
type = s3
provider = Minio
access_key_id = %s
secret_access_key = %s
region = %s
endpoint = %s

[crypt]
type = crypt
remote = minio:%s
filename_encryption = off
directory_name_encryption = false
password = %s
`, e.srv.AccessKey, e.srv.SecretKey, e.srv.Region, p.endpoint, bucket, strings.TrimSpace(string(out)))
	s := &rcloneSys{e: e, lat: p.name, config: filepath.Join(e.work, "rclone-"+p.name+".conf")}
	if err := os.WriteFile(s.config, []byte(conf), 0o600); err != nil {
		b.Fatalf("perf: %v", err)
	}
	return s
}

func (s *rcloneSys) name() string { return sysRclone }

func (s *rcloneSys) fileKey(rel string) string { return filepath.ToSlash(rel) + ".bin" }

func (s *rcloneSys) mount(b *testing.B) *mount {
	b.Helper()
	dir, log := newMountDir(b, s.e, sysRclone)
	cacheDir := dir + ".vfscache" // fresh per mount: a fresh mount has no cache
	// rclone's S3 client (aws-sdk-go v1) cannot combine AWS_CA_BUNDLE, if
	// the environment has one, with its own transport; --ca-cert does it.
	startDaemon(b, log, []string{"AWS_CA_BUNDLE="}, "rclone", "mount", "crypt:", dir,
		"--config", s.config,
		"--ca-cert", s.e.srv.CAFile,
		"--daemon", "--daemon-wait", "1m",
		"--vfs-cache-mode", "writes",
		// Upload as soon as a file is closed; the benchmarks still wait
		// until the object is in the bucket, as close() does not.
		"--vfs-write-back", "0s",
		"--cache-dir", cacheDir,
		"--log-file", log, "--log-level", "NOTICE",
	)
	return finishMount(b, sysRclone, s.lat, dir, log, "rclone", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		err := runQuiet(ctx, nil, "umount", dir)
		_ = os.RemoveAll(cacheDir)
		return err
	})
}

// requireTool fails b (it does not skip: the comparison was asked for) when
// a comparison tool is missing; make bench-compare installs them.
func requireTool(b *testing.B, tool, pkg string) {
	b.Helper()
	if _, err := exec.LookPath(tool); err != nil {
		b.Fatalf("perf: %s not installed: run `make bench-compare` (installs it) or `apt-get install -y %s`", tool, pkg)
	}
}
