package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	_ "net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/sys/unix"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/metrics"
	"github.com/s3cryptfs/s3cryptfs/cache"
	"github.com/s3cryptfs/s3cryptfs/cache/disk"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs"
	"github.com/s3cryptfs/s3cryptfs/fs/content"
	"github.com/s3cryptfs/s3cryptfs/fs/names"
	"github.com/s3cryptfs/s3cryptfs/internal/vault"
)

// mountFlags are the options of `s3cryptfs mount`.
type mountFlags struct {
	store         storeFlags
	secret        secretFlags
	kms           kmsFlags
	configFile    string // an exported vault config used instead of the store's
	clientEnc     bool
	cacheSize     byteSize
	readOnly      bool
	noXattrs      bool
	noExec        bool
	allowOther    bool
	logLevel      string
	logFile       string
	foreground    bool
	uid, gid      int
	attrTTL       time.Duration
	maxDirty      byteSize
	spoolDir      string
	diskCache     string
	diskCacheSize byteSize
	writeBack     bool
	wbParallel    int
	wbMax         byteSize
	fuseDebug     bool
	allowNonEmpty bool
	options       []string // -o, applied over the other flags (options.go)

	metricsAddr        string
	metricsAllowRemote bool

	// Set by the daemonizing parent for its re-executed child only.
	readyFD  int
	secretFD int
}

// groups registers the options, in the sections of the help.
func (m *mountFlags) groups() []flagGroup {
	sec := newGroup("Vault secret (at most one of these; else $S3CRYPTFS_PASSPHRASE, else a prompt)")
	m.secret.register(sec.fs, "unlock with a key file (32 bytes as 64 hex digits or base64, mode 0600)")
	m.secret.registerRecovery(sec.fs)
	sec.fs.StringVar(&m.configFile, "config", "", "use this exported vault config (`s3cryptfs config export`) instead of the store's, e.g. when the store's copy is lost or damaged")
	m.kms.register(sec.fs)
	sec.fs.BoolVar(&m.clientEnc, "client-encryption", true, "encrypt on the client (false: objects hold plaintext, no vault config needed)")

	st := newGroup("Store")
	m.store.register(st.fs)

	mnt := newGroup("Mount")
	mnt.fs.StringArrayVarP(&m.options, "options", "o", nil, "mount options opt[=value][,...]: any option above without its --, with - or _ (cache_size=1G,read_only), and ro, rw, noexec, allow_other, uid=N, gid=N; defaults, _netdev, nofail, noauto, x-systemd.* ... are ignored")
	mnt.fs.BoolVar(&m.readOnly, "read-only", false, "mount read-only (every change fails with EROFS); -o ro")
	mnt.fs.BoolVar(&m.noXattrs, "no-xattrs", false, "turn extended attributes off (EOPNOTSUPP), saving one FUSE round trip per write(2)")
	mnt.fs.BoolVar(&m.noExec, "noexec", false, "refuse to execute programs from the mount; -o noexec")
	mnt.fs.Lookup("noexec").Hidden = true // documented with -o; as an option it is mount(8)'s
	mnt.fs.BoolVar(&m.allowOther, "allow-other", false, "let other users access the mount (kernel permission checks on; non-root users need user_allow_other in /etc/fuse.conf)")
	mnt.fs.IntVar(&m.uid, "uid", -1, "owner shown for objects without ownership metadata (-1: the mounting user)")
	mnt.fs.IntVar(&m.gid, "gid", -1, "group shown for objects without ownership metadata (-1: the mounting group)")
	mnt.fs.DurationVar(&m.attrTTL, "attr-timeout", time.Second, "how long attributes and directory entries are cached (0: re-check every time)")
	mnt.fs.BoolVar(&m.allowNonEmpty, "allow-non-empty", false, "mount over a directory that holds files (hidden while mounted)")
	mnt.fs.BoolVar(&m.foreground, "foreground", false, "stay in the foreground, logging to stderr (or --log-file)")
	mnt.fs.IntVar(&m.readyFD, "ready-fd", 0, "internal: report readiness on this descriptor")
	mnt.fs.IntVar(&m.secretFD, "secret-fd", 0, "internal: read the vault secret from this descriptor")
	mnt.fs.Lookup("ready-fd").Hidden = true
	mnt.fs.Lookup("secret-fd").Hidden = true

	mem := newGroup("Cache and memory")
	m.cacheSize = 256 << 20
	mem.fs.Var(&m.cacheSize, "cache-size", "memory for decrypted blocks, e.g. 512MiB, 1G (0: no block cache)")
	m.maxDirty = content.DefaultMaxDirty
	mem.fs.Var(&m.maxDirty, "max-dirty", "unsynced data held in memory before spilling to an encrypted spool file")
	mem.fs.StringVar(&m.spoolDir, "spool-dir", "", "directory for encrypted spool files (default: the system temp dir)")
	mem.fs.StringVar(&m.diskCache, "disk-cache", "", "keep the sealed blocks read (ciphertext, as stored) in this directory across mounts (off by default; one mount per directory)")
	m.diskCacheSize = defaultDiskCacheSize
	mem.fs.Var(&m.diskCacheSize, "disk-cache-size", "disk space the --disk-cache may take, e.g. 20GiB")

	up := newGroup("Uploads")
	up.fs.BoolVar(&m.writeBack, "write-back", false, "close returns before the upload, which runs in the background (fsync, unmount and SIGTERM still wait; see SEMANTICS.md)")
	up.fs.IntVar(&m.wbParallel, "write-back-parallel", fs.DefaultWriteBackParallel, "uploads running at once with --write-back")
	m.wbMax = fs.DefaultWriteBackMaxBytes
	up.fs.Var(&m.wbMax, "write-back-max", "with --write-back, close waits while more than this is waiting to be uploaded")

	lg := newGroup("Logging and metrics")
	lg.fs.StringVar(&m.logFile, "log-file", "", "log file of the background mount (default: s3cryptfs-<mountpoint>.log in $XDG_RUNTIME_DIR, else in $XDG_STATE_HOME/s3cryptfs or ~/.local/state/s3cryptfs, else /run/s3cryptfs for root)")
	lg.fs.StringVar(&m.logLevel, "log-level", "info", "debug, info, warn or error")
	lg.fs.BoolVar(&m.fuseDebug, "fuse-debug", false, "log every FUSE request, INCLUDING FILE NAMES, SYMLINK TARGETS AND THE FIRST BYTES OF FILE DATA (debugging only)")
	lg.fs.StringVar(&m.metricsAddr, "metrics-addr", "", "serve Prometheus metrics on http://HOST:PORT/metrics (off by default; loopback only unless --metrics-allow-remote)")
	lg.fs.BoolVar(&m.metricsAllowRemote, "metrics-allow-remote", false, "let --metrics-addr listen on a non-loopback address (the endpoint has no authentication)")
	return []flagGroup{sec, st, mnt, mem, up, lg}
}

func newMountCommand() *cobra.Command {
	var m mountFlags
	cmd := &cobra.Command{
		Use:   "mount [options] STORE MOUNTPOINT [-o opt[,opt...]]",
		Short: "mount STORE on MOUNTPOINT (returns once mounted)",
		Long: `Mount the vault in STORE (s3://bucket[/prefix] or a local directory) on
MOUNTPOINT. The command returns once the filesystem is mounted and serving
in the background (or with the reason it failed, and nothing mounted);
--foreground serves in this process instead.`,
		Args: exactArgs(2, "STORE and MOUNTPOINT"),
		RunE: func(c *cobra.Command, args []string) error {
			if err := applyMountOptions(c.Flags(), m.options); err != nil {
				return err
			}
			return runMount(&m, c.Flags(), args[0], args[1])
		},
		ValidArgsFunction: func(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
			if len(args) == 1 {
				return nil, cobra.ShellCompDirectiveFilterDirs
			}
			return nil, cobra.ShellCompDirectiveDefault
		},
	}
	addGroups(cmd, m.groups()...)
	registerCompletions(cmd)
	return cmd
}

func runMount(m *mountFlags, fset *pflag.FlagSet, spec, mnt string) error {
	if err := m.store.validate(spec); err != nil {
		return err
	}
	if err := m.secret.validate(); err != nil {
		return err
	}
	if err := m.store.checkSSECKey(); err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(m.logLevel)); err != nil {
		return usagef("--log-level must be debug, info, warn or error, not %q", m.logLevel)
	}
	if err := checkMetricsAddr(m.metricsAddr, m.metricsAllowRemote); err != nil {
		return err
	}
	if m.diskCache != "" {
		if !m.clientEnc {
			return usagef("--disk-cache needs client-side encryption: it keeps only sealed blocks, never plaintext")
		}
		if m.diskCacheSize <= 0 {
			return usagef("--disk-cache-size must be positive")
		}
		d, err := filepath.Abs(m.diskCache)
		if err != nil {
			return err
		}
		if err := fset.Set("disk-cache", d); err != nil {
			return err
		}
	}
	mnt, err := filepath.Abs(mnt)
	if err != nil {
		return err
	}
	if err := checkMountpoint(mnt, m.allowNonEmpty); err != nil {
		return err
	}
	// Checked here, before a passphrase is asked for, rather than left
	// to fail in go-fuse with less telling messages.
	if err := checkDevFuse(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		if err := checkUnprivilegedMount(m.allowOther); err != nil {
			return err
		}
	}
	// go-fuse's debug log prints file names, symlink targets and the first
	// bytes of every read and write: only on an explicit flag, and loudly
	// (printed by the calling process to the terminal and by the
	// background one to the log).
	if m.fuseDebug {
		fmt.Fprintln(os.Stderr, "s3cryptfs: warning: --fuse-debug logs file names, symlink targets and the first bytes of file data read and written, in clear, to the log; do not use it on real data, and delete the log afterwards")
	} else if os.Getenv("S3CRYPTFS_FUSE_DEBUG") != "" {
		fmt.Fprintln(os.Stderr, "s3cryptfs: warning: S3CRYPTFS_FUSE_DEBUG is no longer read; --fuse-debug turns on FUSE request logging (which logs file data and names)")
	}
	if !m.foreground {
		return daemonize(m, fset, spec, mnt)
	}
	return serve(m, spec, mnt, level)
}

// checkMountpoint refuses a mountpoint that is missing, not a directory,
// already mounted (including a dead FUSE mount), or not empty (most often
// the wrong directory; its files would be hidden), each with the fix.
func checkMountpoint(mnt string, allowNonEmpty bool) error {
	st, err := os.Stat(mnt)
	switch {
	case errors.Is(err, syscall.ENOTCONN):
		return fmt.Errorf("mountpoint %s: a mount whose process has died is still there (transport endpoint is not connected): run `s3cryptfs unmount --lazy %s` first", mnt, shellQuote(mnt))
	case errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("mountpoint %s does not exist: create it with `mkdir -p %s`", mnt, shellQuote(mnt))
	case err != nil:
		return fmt.Errorf("mountpoint: %w", err)
	case !st.IsDir():
		return fmt.Errorf("mountpoint %s is not a directory", mnt)
	}
	if mounted(mnt) {
		return fmt.Errorf("%s is already a mountpoint: unmount it first (`s3cryptfs unmount %s`)", mnt, shellQuote(mnt))
	}
	if allowNonEmpty || mountType(mnt) == "autofs" {
		// (Listing an autofs mountpoint would trigger the very mount
		// being made.)
		return nil
	}
	d, err := os.Open(mnt)
	if err != nil {
		return fmt.Errorf("mountpoint: %w", err)
	}
	names, _ := d.Readdirnames(1)
	d.Close()
	if len(names) > 0 {
		return fmt.Errorf("mountpoint %s is not empty: the mount would hide its files; choose an empty directory, or pass --allow-non-empty", mnt)
	}
	return nil
}

// rootRunDir holds root's logs when it has no HOME (a variable for tests).
var rootRunDir = "/run"

// defaultLogFile is where a background mount logs when --log-file is not
// given: one file per mountpoint, in a directory only this user can write
// ($XDG_RUNTIME_DIR, else $XDG_STATE_HOME/s3cryptfs or
// ~/.local/state/s3cryptfs, created 0700). Never a shared directory such as
// /tmp, where another user could plant a file or symlink at the predictable
// name and read the log (object keys, errors) or have it written elsewhere.
func defaultLogFile(mnt string) (string, error) {
	name := "s3cryptfs-" + strings.Trim(strings.ReplaceAll(mnt, "/", "-"), "-") + ".log"
	// The XDG spec says relative paths in these variables are invalid.
	if dir := os.Getenv("XDG_RUNTIME_DIR"); filepath.IsAbs(dir) {
		return filepath.Join(dir, name), nil
	}
	state := os.Getenv("XDG_STATE_HOME")
	if !filepath.IsAbs(state) {
		home, err := os.UserHomeDir()
		switch {
		case err == nil && filepath.IsAbs(home):
			state = filepath.Join(home, ".local", "state")
		case os.Geteuid() == 0:
			// mount(8) run by systemd or from a boot script may have no
			// HOME; /run is root's own, like $XDG_RUNTIME_DIR for a user.
			state = rootRunDir
		default:
			return "", errors.New("no per-user directory for the log (XDG_RUNTIME_DIR, XDG_STATE_HOME and HOME unset): give --log-file")
		}
	}
	dir := filepath.Join(state, "s3cryptfs")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("log directory: %w", err)
	}
	return filepath.Join(dir, name), nil
}

// openLogFile opens (creating it 0600) the log for appending. It does not
// follow a symlink at path and refuses a file that belongs to another user:
// the log names objects and errors, and a planted link would send it, with
// this user's rights, wherever its owner chose.
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|syscall.O_NOFOLLOW, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("log file %s is a symbolic link; refusing to follow it (remove it, or give the real path with --log-file)", path)
	}
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
		if uid := st.Sys().(*syscall.Stat_t).Uid; int(uid) != os.Geteuid() {
			f.Close()
			return nil, fmt.Errorf("log file %s belongs to uid %d, not to this user; remove it or give another --log-file", path, uid)
		}
	}
	return f, nil
}

// daemonize re-executes the command with --foreground in a new session,
// its output in the log file, and waits until the child reports that the
// mount is ready or why it failed. The secret, from wherever it comes
// (prompt, file or S3CRYPTFS_PASSPHRASE), is read here and handed to the
// child through a pipe, never through its arguments or environment: the
// child lives as long as the mount, and its environment is visible in
// /proc/PID/environ and core dumps.
func daemonize(m *mountFlags, fset *pflag.FlagSet, spec, mnt string) error {
	logPath := m.logFile
	if logPath == "" {
		var err error
		if logPath, err = defaultLogFile(mnt); err != nil {
			return err
		}
	}
	logf, err := openLogFile(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()

	var sec *secret
	if m.clientEnc {
		s, err := vaultSecret(&m.secret, peekConfig(spec, m))
		if err != nil {
			return err
		}
		sec = &secret{b: encodeSecret(s)}
		clear(s.Key)
	}
	readyR, readyW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer readyR.Close()
	extra := []*os.File{readyW}
	child := []string{"mount", "--foreground", "--ready-fd=3", "--log-file=" + logPath}
	var secW *os.File
	if sec != nil {
		secR, w, err := os.Pipe()
		if err != nil {
			return err
		}
		defer secR.Close()
		secW = w
		extra = append(extra, secR)
		child = append(child, "--secret-fd=4")
	}
	child = append(child, childFlags(fset, sec != nil)...)
	child = append(child, "--", spec, mnt)
	self, err := os.Executable()
	if err != nil {
		return err
	}
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return err
	}
	defer devnull.Close()
	cmd := exec.Command(self, child...)
	cmd.Env = envWithoutSecrets()
	cmd.Stdin = devnull
	cmd.Stdout = logf
	cmd.Stderr = logf
	cmd.ExtraFiles = extra
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		readyW.Close()
		return fmt.Errorf("start background mount: %w", err)
	}
	readyW.Close()
	if secW != nil {
		go func() {
			secW.Write(sec.b)
			secW.Close()
			clear(sec.b)
		}()
	}
	line, _ := bufio.NewReader(readyR).ReadString('\n')
	line = strings.TrimSpace(line)
	switch {
	case line == "ok":
		cmd.Process.Release()
		return nil
	case strings.HasPrefix(line, "error: "):
		cmd.Wait()
		return errors.New(strings.TrimPrefix(line, "error: "))
	default:
		err := cmd.Wait()
		return fmt.Errorf("background mount exited (%v) without mounting; see %s", err, logPath)
	}
}

// childFlags are the options given to this mount (on the command line or
// with -o), as --name=value for the background process, which parses them
// again. Left out: what daemonize sets itself, the -o list (already
// applied), and, when the secret goes through the pipe, where it came from
// (the child must not run a --password-command a second time).
func childFlags(fset *pflag.FlagSet, secretPiped bool) []string {
	skip := map[string]bool{"foreground": true, "ready-fd": true, "secret-fd": true, "log-file": true, "options": true}
	if secretPiped {
		skip["passphrase-file"], skip["key-file"], skip["password-command"], skip["recovery-key-file"] = true, true, true, true
	}
	var args []string
	fset.Visit(func(f *pflag.Flag) {
		if !skip[f.Name] {
			args = append(args, "--"+f.Name+"="+f.Value.String())
		}
	})
	return args
}

// ready reports the outcome to the daemonizing parent, if there is one.
type ready struct{ w *os.File }

func (r *ready) report(err error) {
	if r.w == nil {
		return
	}
	if err != nil {
		msg := strings.ReplaceAll(err.Error(), "\n", " ")
		fmt.Fprintf(r.w, "error: %s\n", msg)
	} else {
		fmt.Fprintln(r.w, "ok")
	}
	r.w.Close()
	r.w = nil
}

// serve mounts in this process and serves until unmounted. On SIGTERM or
// SIGINT it syncs every open file and unmounts.
func serve(m *mountFlags, spec, mnt string, level slog.Level) (err error) {
	var rd ready
	if m.readyFD > 0 {
		rd.w = os.NewFile(uintptr(m.readyFD), "ready")
	}
	defer func() { rd.report(err) }()

	logOut := io.Writer(os.Stderr)
	if m.logFile != "" && m.readyFD == 0 {
		f, err := openLogFile(m.logFile)
		if err != nil {
			return err
		}
		defer f.Close()
		logOut = f
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: level}))
	if addr := os.Getenv("S3CRYPTFS_PPROF"); addr != "" {
		// Opt-in profiling for performance work (docs/PERFORMANCE.md);
		// give a loopback address: the endpoints are unauthenticated.
		go func() { log.Warn("pprof server ended", "addr", addr, "err", http.ListenAndServe(addr, nil)) }()
		log.Info("pprof listening", "addr", addr)
	}

	var mm *mountMetrics
	if m.metricsAddr != "" {
		mm = newMountMetrics()
		stop, err := mm.listen(m.metricsAddr, log)
		if err != nil {
			return err
		}
		defer stop()
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := openStore(ctx, spec, &m.store)
	if err != nil {
		return err
	}
	if mm != nil {
		// Wrapped before the vault config is read, so that every
		// request of the mount is counted.
		ms, err := metrics.New(st, mm.reg)
		if err != nil {
			return err
		}
		st = ms
	}
	keys, err := unlock(ctx, st, m)
	if err != nil {
		return err
	}
	limitBase := int64(m.cacheSize)
	if m.diskCache != "" {
		limitBase += disk.DefaultQueueBytes // blocks waiting to be written
	}
	setMemoryLimit(limitBase, log)
	var bc *cache.Cache
	if m.cacheSize > 0 {
		if bc, err = cache.New(int64(m.cacheSize)); err != nil {
			return fmt.Errorf("cache: %w", err)
		}
		defer bc.Close()
	}
	if mm != nil {
		mm.registerCache(bc)
	}
	var dc *disk.Cache
	if m.diskCache != "" && keys != nil {
		l := keys.Layout()
		dc, err = disk.Open(disk.Options{Dir: m.diskCache, MaxBytes: int64(m.diskCacheSize), NameKey: keys.CacheNameKey(),
			MaxEntry: l.BlockSize + cipher.BlockOverhead,
			// Segment files of about 1 MiB: creating a file costs far
			// more than writing 64 KiB into one.
			SegmentBlocks: max(1, min((1<<20)/l.BlockSize, 1020)),
			Logger:        log,
			// A mount of the same directory that was just unmounted may
			// still be writing its last blocks.
			LockWait: 5 * time.Second})
		if err != nil {
			return err
		}
		defer dc.Close() // after the engine's Close: writes what is queued
		st := dc.Stats()
		log.Info("disk cache", "dir", m.diskCache, "max_bytes", int64(m.diskCacheSize), "segments", st.Segments, "bytes", st.Bytes)
		if mm != nil {
			mm.registerDiskCache(dc)
		}
	}
	eng, err := content.New(content.Options{
		Store:     st,
		Keys:      keys,
		Cache:     bc,
		DiskCache: dc,
		MaxDirty:  int64(m.maxDirty),
		SpoolDir:  m.spoolDir,
		Logger:    log,
		// Sequentially written files keep the mtime their upload began
		// with instead of a whole-object copy at close (SEMANTICS.md).
		StreamKeepsMeta: fs.StreamKeepsMeta,
	})
	if err != nil {
		return fmt.Errorf("content engine: %w", err)
	}
	defer eng.Close()

	uid, gid := uint32(os.Getuid()), uint32(os.Getgid())
	if m.uid >= 0 {
		uid = uint32(m.uid)
	}
	if m.gid >= 0 {
		gid = uint32(m.gid)
	}
	ttl := m.attrTTL
	if ttl <= 0 {
		ttl = -1 // fs.Options: negative = no caching (0 would mean the default)
	}
	layout := names.Plain()
	if keys != nil && keys.NameKey() != nil {
		if layout, err = names.New(keys.NameKey()); err != nil {
			return err
		}
	}
	root, fsys, err := fs.NewRoot(fs.Options{
		Store: st, Engine: eng, Keys: keys, Names: layout, ReadOnly: m.readOnly, NoXattrs: m.noXattrs,
		UID: uid, GID: gid, AttrTimeout: ttl, Logger: log,
		MaxNameLen: maxNameLen(spec, layout),
		WriteBack:  m.writeBack, WriteBackParallel: m.wbParallel, WriteBackMaxBytes: int64(m.wbMax),
	})
	if err != nil {
		return err
	}
	if mm != nil {
		mm.registerWriteBack(fsys)
	}
	opts := fsys.MountOptions()
	opts.FsName = spec
	opts.Name = "s3cryptfs"
	opts.AllowOther = m.allowOther
	opts.MaxWrite = 1 << 20
	if m.allowOther {
		opts.Options = append(opts.Options, "default_permissions")
	}
	if os.Geteuid() == 0 {
		// root mounts with mount(2) directly, no fusermount3 needed.
		opts.DirectMount = true
		opts.DirectMountFlags = syscall.MS_NOSUID | syscall.MS_NODEV
		if m.readOnly {
			opts.DirectMountFlags |= syscall.MS_RDONLY
		}
		if m.noExec {
			opts.DirectMountFlags |= syscall.MS_NOEXEC
		}
	} else {
		if m.readOnly {
			opts.Options = append(opts.Options, "ro")
		}
		if m.noExec {
			opts.Options = append(opts.Options, "noexec")
		}
	}
	opts.Debug = m.fuseDebug
	// gofs.Mount, with the file system wrapped to count reads, writes and
	// open files when metrics are on.
	rawFS := gofs.NewNodeFS(root, opts)
	if mm != nil {
		rawFS = &countingFS{RawFileSystem: rawFS, m: mm}
	}
	server, err := fuse.NewServer(rawFS, mnt, &opts.MountOptions)
	if err == nil {
		go server.Serve()
		err = server.WaitMount()
	}
	if err != nil {
		return fmt.Errorf("mount %s: %w", mnt, explainMountError(err, m.allowOther))
	}
	setKernelReadahead(mnt, log)
	log.Info("mounted", "store", spec, "mountpoint", mnt, "client_encryption", keys != nil,
		"sse", m.store.sse, "read_only", m.readOnly, "version", version)
	rd.report(nil)

	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		for s := range sigs {
			log.Info("signal: syncing open files and unmounting", "signal", s.String())
			sctx, scancel := context.WithTimeout(context.Background(), 10*time.Minute)
			if err := fsys.SyncAll(sctx); err != nil {
				log.Error("sync before unmount failed", "err", err)
			}
			scancel()
			if err := server.Unmount(); err != nil {
				log.Error("unmount failed (busy?); still serving", "err", err)
			}
		}
	}()
	server.Wait()
	signal.Stop(sigs)
	if err := fsys.SyncAll(context.Background()); err != nil {
		log.Error("sync after unmount failed", "err", err)
	}
	log.Info("unmounted", "mountpoint", mnt)
	return nil
}

// defaultDiskCacheSize is --disk-cache-size's default.
const defaultDiskCacheSize = 10 << 30

// memoryHeadroom is what the mount needs beside the block cache: buffers
// of requests in flight, dirty blocks, the tree.
//
// 160 MiB: the limit covers the Go runtime's memory, not the binary's own
// pages (~25 MiB resident), and a full cache of exactly-sized blocks
// (since e4a7c56) let the heap reach the limit: with 192 MiB the peak RSS
// of a 512 MiB-cache mount came to 702-714 MiB against its 712 MiB target.
const memoryHeadroom = 160 << 20

// setMemoryLimit gives the Go runtime a soft memory limit of the cache size
// plus headroom, unless GOMEMLIMIT says otherwise. Without it the default
// GOGC lets the heap grow to twice the live data (a full cache) before a
// collection: docs/PERFORMANCE.md measured 1.17 GiB RSS with a 512 MiB cache,
// and 595 MiB at the same speed with a 600 MiB limit. The limit is soft:
// more live data (a large dirty file) costs more GC, never a failure.
func setMemoryLimit(cacheSize int64, log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	limit := cacheSize + memoryHeadroom
	debug.SetMemoryLimit(limit)
	log.Debug("soft memory limit", "bytes", limit)
}

// kernelReadaheadKB is the kernel's readahead for the mount, in KiB: the
// size of the READ requests a sequential reader's page cache sends us.
const kernelReadaheadKB = 1024

// setKernelReadahead raises the kernel's readahead for the mount from its
// 128 KiB default to kernelReadaheadKB. The kernel caps a FUSE mount's
// readahead at the default whatever the daemon asks at INIT; only the
// mount's backing device info in sysfs can raise it, and only root may
// write there, so for other users this does nothing (logged at debug).
// 1 MiB READs instead of 128 KiB ones cut the mount's system time of a
// cold sequential read by a quarter (docs/PERFORMANCE.md).
func setKernelReadahead(mnt string, log *slog.Logger) {
	var st syscall.Stat_t
	if err := syscall.Stat(mnt, &st); err != nil {
		log.Debug("kernel readahead unchanged", "err", err)
		return
	}
	path := fmt.Sprintf("/sys/class/bdi/%d:%d/read_ahead_kb", unix.Major(st.Dev), unix.Minor(st.Dev))
	if err := os.WriteFile(path, []byte(strconv.Itoa(kernelReadaheadKB)), 0); err != nil {
		log.Debug("kernel readahead unchanged", "err", err)
		return
	}
	log.Debug("kernel readahead set", "path", path, "kib", kernelReadaheadKB)
}

// maxNameLen is the longest file name the store can hold: 255 bytes on S3
// (the Linux limit), 251 on the local store (it appends a 4-byte suffix).
func maxNameLen(spec string, layout *names.Layout) int {
	if isS3(spec) || layout.Encrypted() { // encrypted names: every key segment is short
		return 255
	}
	return 251
}

// peekConfig reads the vault config before the secret is asked for, to
// learn whether KMS can open it without one. Any failure returns nil: the
// background mount reads the config again and reports the error.
func peekConfig(spec string, m *mountFlags) *cipher.Config {
	if m.secret.given() || os.Getenv(passphraseEnv) != "" {
		return nil // the secret is named: no need to look
	}
	var data []byte
	var err error
	if m.configFile != "" {
		data, err = readConfigFile(m.configFile)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		var st backend.Store
		if st, err = openStore(ctx, spec, &m.store); err == nil {
			data, err = readObject(ctx, st, fs.ConfigKey)
		}
	}
	if err != nil {
		return nil
	}
	cfg, err := cipher.ParseConfig(data)
	if err != nil {
		return nil
	}
	return cfg
}

// unlock reads and opens the vault config (the store's, or --config's),
// or (client encryption off) makes sure the store is not an encrypted
// vault mounted by mistake.
func unlock(ctx context.Context, st backend.Store, m *mountFlags) (*cipher.Keys, error) {
	if !m.clientEnc {
		_, err := readObject(ctx, st, fs.ConfigKey)
		if err == nil {
			return nil, errors.New("the store holds an encrypted vault (" + fs.ConfigKey + "); refusing --client-encryption=false, which would show ciphertext")
		}
		if !errors.Is(err, backend.ErrNotFound) {
			return nil, fmt.Errorf("check for a vault config: %w", err)
		}
		return nil, nil
	}
	var data []byte
	var err error
	where := fs.ConfigKey
	if m.configFile != "" {
		data, err = readConfigFile(m.configFile)
		where = m.configFile
	} else {
		data, err = readStoreConfig(ctx, st)
	}
	if err != nil {
		return nil, err
	}
	cfg, err := parseVaultConfig(data, where)
	if err != nil {
		return nil, err
	}
	var s cipher.Secret
	if m.secretFD > 0 {
		f := os.NewFile(uintptr(m.secretFD), "secret")
		b, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, fmt.Errorf("read secret: %w", err)
		}
		if s, err = decodeSecret(b); err != nil {
			return nil, err
		}
	} else if s, err = vaultSecret(&m.secret, cfg); err != nil {
		return nil, err
	}
	// The bytes already parsed are opened (not the store's object read
	// again): what was checked above is what is unlocked.
	v, err := vault.Open(ctx, st, vault.OpenOptions{Secret: s, KMS: &lazyKMS{f: &m.kms}, Config: data})
	clear(s.Key) // not needed any more: the keys are derived
	if err != nil {
		return nil, explainUnlock(err, s)
	}
	return v.Keys(), nil
}

// readObject reads a small object whole.
func readObject(ctx context.Context, st backend.Store, key string) ([]byte, error) {
	rc, err := st.Get(ctx, key, 0, -1, backend.GetOptions{})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, 1<<20))
}

// mounted reports whether path is a mountpoint (per /proc/self/mountinfo).
// An autofs mount does not count: systemd's automount (x-systemd.automount)
// sits there and runs mount(8) on first access, which mounts over it.
func mounted(path string) bool {
	return mountType(path) != "" && mountType(path) != "autofs"
}

// mountType is the type of the last filesystem mounted on path ("" if
// none).
func mountType(path string) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	typ := ""
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && unescapeMount(f[4]) == path {
			// The optional fields end at "-"; the type follows.
			for i := 5; i+1 < len(f); i++ {
				if f[i] == "-" {
					typ = f[i+1]
					break
				}
			}
		}
	}
	return typ
}

// unescapeMount decodes the \NNN octal escapes of /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
