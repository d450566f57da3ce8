package main

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
)

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"4096", 4096, true},
		{"512MiB", 512 << 20, true},
		{"512M", 512 << 20, true},
		{"1G", 1 << 30, true},
		{"1g", 1 << 30, true},
		{"1.5GiB", 3 << 29, true},
		{"16KiB", 16 << 10, true},
		{"2MB", 2000000, true},
		{"1T", 1 << 40, true},
		{"", 0, false},
		{"MiB", 0, false},
		{"12XB", 0, false},
		{"-1", 0, false},
		{"1e3", 0, false},
	} {
		got, err := parseSize(c.in)
		if (err == nil) != c.ok || (c.ok && got != c.want) {
			t.Errorf("parseSize(%q) = %d, %v; want %d ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

// parseMount parses a mount command line as the mount command does,
// without running it.
func parseMount(t *testing.T, args []string) (*mountFlags, []string, error) {
	t.Helper()
	var m mountFlags
	fs := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SetNormalizeFunc(normalizeFlagName)
	for _, g := range m.groups() {
		fs.AddFlagSet(g.fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	if err := applyMountOptions(fs, m.options); err != nil {
		return nil, nil, err
	}
	return &m, fs.Args(), nil
}

// TestMountOptionSyntax: GNU forms (--opt value, --opt=value, options after
// the operands, "--"), '_' for '-', and -o lists as fstab gives them.
func TestMountOptionSyntax(t *testing.T) {
	for _, c := range []struct {
		args  []string
		check func(m *mountFlags) bool
		pos   string
		err   string
	}{
		{[]string{"--cache-size", "1G", "s", "m"}, func(m *mountFlags) bool { return m.cacheSize == 1<<30 }, "[s m]", ""},
		{[]string{"s", "--cache-size=512MiB", "m", "--read-only"}, func(m *mountFlags) bool { return m.cacheSize == 512<<20 && m.readOnly }, "[s m]", ""},
		{[]string{"--read_only", "--cache_size", "2M", "s", "m"}, func(m *mountFlags) bool { return m.readOnly && m.cacheSize == 2<<20 }, "[s m]", ""},
		{[]string{"s", "--", "--m"}, func(m *mountFlags) bool { return true }, "[s --m]", ""},
		{[]string{"s", "m", "-o", "ro,cache_size=1G,allow_other,uid=7,gid=8,passphrase_file=/p"}, func(m *mountFlags) bool {
			return m.readOnly && m.cacheSize == 1<<30 && m.allowOther && m.uid == 7 && m.gid == 8 && m.secret.passphraseFile == "/p"
		}, "[s m]", ""},
		{[]string{"s", "m", "-o", "defaults,_netdev,nofail,noauto,x-systemd.automount,x-systemd.idle-timeout=60,suid,nodev,rw,noatime,comment=x"}, func(m *mountFlags) bool {
			return !m.readOnly && !m.noExec
		}, "[s m]", ""},
		{[]string{"s", "m", "-oro", "-o", "noexec,sse=kms,path_style,endpoint=https://h:9000,ca-bundle=/ca.pem"}, func(m *mountFlags) bool {
			return m.readOnly && m.noExec && m.store.sse == "kms" && m.store.pathStyle && m.store.endpoint == "https://h:9000" && m.store.caBundle == "/ca.pem"
		}, "[s m]", ""},
		// -o wins over the command line: the fstab line is the last word.
		{[]string{"--read-only", "s", "m", "-o", "rw,client_encryption=false"}, func(m *mountFlags) bool { return !m.readOnly && !m.clientEnc }, "[s m]", ""},
		{[]string{"s", "m", "-o", `password_command="pass show a,b",attr_timeout=3s`}, func(m *mountFlags) bool {
			return m.secret.passwordCommand == "pass show a,b" && m.attrTTL == 3*time.Second
		}, "[s m]", ""},
		{[]string{"s", "m", "-o", "frobnicate"}, nil, "", "unknown mount option"},
		{[]string{"s", "m", "-o", "secret_fd=0"}, nil, "", "unknown mount option"},
		{[]string{"s", "m", "-o", "cache_size"}, nil, "", "needs a value"},
		{[]string{"s", "m", "-o", "cache_size=lots"}, nil, "", "invalid size"},
		{[]string{"s", "m", "-o", "attr_timeout=soon"}, nil, "", "attr_timeout"},
		{[]string{"s", "m", "-o", `password_command="x`}, nil, "", "unbalanced"},
		{[]string{"--bogus", "s", "m"}, nil, "", "bogus"},
	} {
		m, pos, err := parseMount(t, c.args)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%q: err %v, want one mentioning %q", c.args, err, c.err)
			}
			continue
		}
		if err != nil || fmt.Sprint(pos) != c.pos || !c.check(m) {
			t.Errorf("%q: pos %v err %v, flags %+v; want %s", c.args, pos, err, m, c.pos)
		}
	}
}

// TestHelperArgs: mount(8)'s call of mount.fuse.s3cryptfs becomes a mount
// command line.
func TestHelperArgs(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want string
		fake bool
		err  bool
	}{
		{[]string{"s3://b/p", "/mnt/v", "-o", "rw,_netdev,passphrase_file=/etc/p"}, "[mount -o rw,_netdev,passphrase_file=/etc/p -- s3://b/p /mnt/v]", false, false},
		{[]string{"/srv/vault", "/mnt/v", "-n", "-s", "-o", "ro", "-t", "fuse.s3cryptfs"}, "[mount -o ro -- /srv/vault /mnt/v]", false, false},
		{[]string{"-sfnv", "/srv/vault", "/mnt/v", "-oro"}, "[mount -o ro -- /srv/vault /mnt/v]", true, false},
		{[]string{"/srv/vault", "/mnt/v"}, "[mount -- /srv/vault /mnt/v]", false, false},
		{[]string{"/srv/vault"}, "", false, true},
		{[]string{"/srv/vault", "/mnt/v", "-o"}, "", false, true},
		{[]string{"/srv/vault", "/mnt/v", "-x"}, "", false, true},
	} {
		got, fake, err := helperArgs(c.in)
		if (err != nil) != c.err || (!c.err && (fmt.Sprint(got) != c.want || fake != c.fake)) {
			t.Errorf("helperArgs(%q) = %q fake=%v err %v; want %s fake=%v err=%v", c.in, got, fake, err, c.want, c.fake, c.err)
		}
	}
	if !isHelperName("mount.fuse.s3cryptfs") || isHelperName("s3cryptfs") {
		t.Error("isHelperName")
	}
}

// TestChildFlags: the background process gets every option the user gave,
// however given, and not the secret's source once the secret is piped.
func TestChildFlags(t *testing.T) {
	var m mountFlags
	fs := pflag.NewFlagSet("mount", pflag.ContinueOnError)
	fs.SetNormalizeFunc(normalizeFlagName)
	for _, g := range m.groups() {
		fs.AddFlagSet(g.fs)
	}
	if err := fs.Parse([]string{"--cache-size", "1G", "--password-command", "echo x", "s", "m", "-o", "ro,attr_timeout=200ms,log_file=/l"}); err != nil {
		t.Fatal(err)
	}
	if err := applyMountOptions(fs, m.options); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(childFlags(fs, true), " ")
	for _, want := range []string{"--cache-size=1GiB", "--read-only=true", "--attr-timeout=200ms"} {
		if !strings.Contains(got, want) {
			t.Errorf("child flags %q lack %q", got, want)
		}
	}
	for _, bad := range []string{"password-command", "options", "log-file"} {
		if strings.Contains(got, bad) {
			t.Errorf("child flags %q hold %q", got, bad)
		}
	}
	if got := strings.Join(childFlags(fs, false), " "); !strings.Contains(got, "--password-command=echo x") {
		t.Errorf("without a piped secret the child needs --password-command: %q", got)
	}
}

// TestHelp: help is grouped, shows defaults in human units, and lists the
// options every command has always had.
func TestHelp(t *testing.T) {
	var out, errb strings.Builder
	if code := runWith([]string{"mount", "--help"}, &out, &errb); code != 0 {
		t.Fatalf("mount --help: exit %d %s", code, errb.String())
	}
	h := out.String()
	for _, want := range []string{"Vault secret", "Store:", "Cache and memory:", "--cache-size size", "(default 256MiB)",
		"--attr-timeout duration", "(default 1s)", "--password-command", "--metrics-addr", "-o, --options", "--sse string"} {
		if !strings.Contains(h, want) {
			t.Errorf("mount --help lacks %q:\n%s", want, h)
		}
	}
	if strings.Contains(h, "secret-fd") || strings.Contains(h, "ready-fd") {
		t.Errorf("mount --help shows internal options:\n%s", h)
	}
	for _, shell := range []string{"bash", "zsh"} {
		out.Reset()
		if code := runWith([]string{"completion", shell}, &out, &errb); code != 0 || !strings.Contains(out.String(), "s3cryptfs") {
			t.Errorf("completion %s: exit %d, %d bytes", shell, code, out.Len())
		}
	}
	// Completion of --sse's values, through cobra's hidden __complete.
	out.Reset()
	if code := runWith([]string{"__complete", "mount", "--sse", ""}, &out, &errb); code != 0 || !strings.Contains(out.String(), "kms") {
		t.Errorf("completing --sse: exit %d %q", code, out.String())
	}
}

func TestRunExitCodes(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, exitUsage},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"version"}, exitOK},
		{[]string{"--version"}, exitOK},
		{[]string{"mount", "--help"}, exitOK},
		{[]string{"mount", "s", "m", "-o", "frobnicate"}, exitUsage},
		{[]string{"mount", "s", "m", "-o", "cache_size=lots"}, exitUsage},
		{[]string{"mount", "--password-command", "true", "--key-file", "k", "s", "m"}, exitUsage},
		{[]string{"mount", "--metrics-addr", "0.0.0.0:9100", "s", "m"}, exitUsage},
		{[]string{"mount", "--metrics-addr", "9100", "s", "m"}, exitUsage},
		{[]string{"mount", "only-one"}, exitUsage},
		{[]string{"mount", "--sse", "rot13", "s", "m"}, exitUsage},
		{[]string{"init"}, exitUsage},
		{[]string{"init", "--block-size", "lots", "x"}, exitUsage},
		{[]string{"unmount"}, exitUsage},
		{[]string{"unmount", t.TempDir()}, exitRuntime}, // not mounted
		{[]string{"init", "/proc/no/such/store"}, exitRuntime},
	} {
		if got := run(c.args); got != c.want {
			t.Errorf("run(%q) = %d, want %d", c.args, got, c.want)
		}
	}
}

func TestUnescapeMount(t *testing.T) {
	if got := unescapeMount(`/mnt/with\040space\011tab`); got != "/mnt/with space\ttab" {
		t.Fatalf("got %q", got)
	}
}

// TestByteSizeString: sizes print in the largest exact binary unit and
// parse back to the same value.
func TestByteSizeString(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{{0, "0"}, {1000, "1000"}, {1 << 10, "1KiB"}, {256 << 20, "256MiB"}, {3 << 30, "3GiB"}, {1<<20 + 1, "1048577"}} {
		b := byteSize(tc.n)
		if got := b.String(); got != tc.want {
			t.Errorf("String(%d) = %q, want %q", tc.n, got, tc.want)
		}
		var back byteSize
		if err := back.Set(b.String()); err != nil || back != b {
			t.Errorf("Set(%q) = %d, %v; want %d", b.String(), back, err, tc.n)
		}
	}
}
