package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
)

// Mount options (-o) as mount(8), /etc/fstab and systemd mount units give
// them: "opt[=value][,opt[=value]...]". Every long option of `mount` is one
// (cache_size=1G, passphrase_file=/etc/s3cryptfs/pass, read_only), spelt
// with '_' or '-'; a boolean without a value is true. The generic options
// of mount(8) are mapped or ignored here.

// genericOptions maps mount(8)'s own options onto ours.
var genericOptions = map[string]struct{ name, value string }{
	"ro":     {"read-only", "true"},
	"rw":     {"read-only", "false"},
	"noexec": {"noexec", "true"},
	"exec":   {"noexec", "false"},
}

// ignoredOptions are options mount(8), systemd or the fstab format consume
// themselves or that make no sense for this filesystem. suid and dev are
// ignored rather than honoured: a mount by root is always nosuid,nodev,
// since anyone who can write to the store could otherwise plant a set-uid
// binary or a device node.
var ignoredOptions = map[string]bool{
	"defaults": true, "auto": true, "noauto": true, "nofail": true, "_netdev": true,
	"user": true, "nouser": true, "users": true, "owner": true, "group": true,
	"suid": true, "nosuid": true, "dev": true, "nodev": true,
	"atime": true, "noatime": true, "relatime": true, "norelatime": true,
	"strictatime": true, "nostrictatime": true, "lazytime": true, "nolazytime": true,
	"diratime": true, "nodiratime": true, "sync": true, "async": true,
	"silent": true, "loud": true, "nosymfollow": true,
}

// internalFlags cannot be set with -o: they are daemonize's to set.
var internalFlags = map[string]bool{"ready-fd": true, "secret-fd": true, "options": true}

// applyMountOptions sets the flags named by -o options. They are applied
// after the command line's own flags, so -o wins when both name an option.
func applyMountOptions(fset *pflag.FlagSet, lists []string) error {
	for _, list := range lists {
		opts, err := splitOptions(list)
		if err != nil {
			return err
		}
		for _, o := range opts {
			if err := applyMountOption(fset, o); err != nil {
				return err
			}
		}
	}
	return nil
}

func applyMountOption(fset *pflag.FlagSet, opt string) error {
	name, value, hasValue := strings.Cut(opt, "=")
	if ignoredOptions[name] || strings.HasPrefix(name, "x-") || name == "comment" {
		return nil
	}
	if g, ok := genericOptions[name]; ok && !hasValue {
		name, value, hasValue = g.name, g.value, true
	}
	norm := strings.ReplaceAll(name, "_", "-")
	f := fset.Lookup(norm)
	if f == nil || internalFlags[norm] {
		return usagef("-o %s: unknown mount option %q (mount options are the long options of `s3cryptfs mount --help`, without --)", opt, name)
	}
	if !hasValue {
		if f.Value.Type() != "bool" {
			return usagef("-o %s: needs a value (%s=...)", opt, name)
		}
		value = "true"
	}
	if err := fset.Set(norm, value); err != nil {
		return usagef("-o %s: %v", opt, err)
	}
	return nil
}

// splitOptions splits a comma-separated option list. A value may be put in
// double quotes to hold commas (password_command="pass show a,b"), as
// libmount allows; the quotes are removed.
func splitOptions(list string) ([]string, error) {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, r := range list {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ',' && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if quoted {
		return nil, usagef("-o %s: unbalanced double quote", list)
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	return out, nil
}

// The mount(8) helper. mount -t fuse.s3cryptfs (and fstab, and systemd
// mount units, which run mount) executes /sbin/mount.fuse.s3cryptfs, a
// link to this binary installed by `make install`, as
//
//	mount.fuse.s3cryptfs STORE MOUNTPOINT [-sfnv] [-o options] [-t fuse.s3cryptfs]
//
// This is preferred over fuse3's generic mount.fuse3, which would run
// "s3cryptfs STORE MOUNTPOINT -o ..." through sh -c, without our command
// name, after taking some options for itself.

func isHelperName(base string) bool {
	return base == "mount.fuse.s3cryptfs" || base == "mount.s3cryptfs"
}

// helperArgs turns the helper's command line into a `mount` command line.
// fake is mount -f: check everything, mount nothing.
func helperArgs(args []string) (cmd []string, fake bool, err error) {
	var pos, opts []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-o" || a == "-t":
			if i+1 == len(args) {
				return nil, false, usagef("%s needs a value", a)
			}
			if a == "-o" {
				opts = append(opts, args[i+1])
			}
			i++
		case strings.HasPrefix(a, "-o"):
			opts = append(opts, a[2:])
		case strings.HasPrefix(a, "-t"):
		case len(a) > 1 && a[0] == '-' && strings.Trim(a[1:], "sfnvwi") == "":
			// -s sloppy, -n no mtab, -v verbose, -w read-write, -i no
			// helper: nothing to do; -f fake.
			fake = fake || strings.Contains(a, "f")
		case strings.HasPrefix(a, "-"):
			return nil, false, usagef("unknown helper option %s", a)
		default:
			pos = append(pos, a)
		}
	}
	if len(pos) != 2 {
		return nil, false, usagef("usage: mount.fuse.s3cryptfs STORE MOUNTPOINT [-o options]")
	}
	cmd = []string{"mount"}
	for _, o := range opts {
		cmd = append(cmd, "-o", o)
	}
	return append(cmd, "--", pos[0], pos[1]), fake, nil
}

// runHelper runs as mount(8)'s helper.
func runHelper(args []string) int {
	cmd, fake, err := helperArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mount.fuse.s3cryptfs: %v\n", err)
		return exitUsage
	}
	if fake {
		return exitOK
	}
	return run(cmd)
}
