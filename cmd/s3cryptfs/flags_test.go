package main

import (
	"errors"
	"flag"
	"fmt"
	"testing"
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

func TestParseInterspersed(t *testing.T) {
	for _, c := range []struct {
		args []string
		pos  string
		v    bool
		n    int
		err  bool
	}{
		{[]string{"a", "b"}, "[a b]", false, 0, false},
		{[]string{"-v", "a", "b"}, "[a b]", true, 0, false},
		{[]string{"a", "--n", "3", "b", "-v"}, "[a b]", true, 3, false},
		{[]string{"a", "b", "--n=4"}, "[a b]", false, 4, false},
		{[]string{"a", "--", "-v", "b"}, "[a -v b]", false, 0, false},
		{[]string{"a", "--bogus"}, "", false, 0, true},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(discard{})
		v := fs.Bool("v", false, "")
		n := fs.Int("n", 0, "")
		pos, err := parseInterspersed(fs, c.args)
		if c.err {
			var ue usageError
			if !errors.As(err, &ue) {
				t.Errorf("%v: err %v, want a usage error", c.args, err)
			}
			continue
		}
		if err != nil || fmt.Sprint(pos) != c.pos || *v != c.v || *n != c.n {
			t.Errorf("%v: pos %v v %v n %d err %v; want %s %v %d", c.args, pos, *v, *n, err, c.pos, c.v, c.n)
		}
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func TestRunExitCodes(t *testing.T) {
	for _, c := range []struct {
		args []string
		want int
	}{
		{nil, exitUsage},
		{[]string{"frobnicate"}, exitUsage},
		{[]string{"version"}, exitOK},
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
