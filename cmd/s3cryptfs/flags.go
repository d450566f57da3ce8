package main

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// normalizeFlagName lets every long option be spelt with '_' as well as
// '-' (--read_only, -o read_only): mount options conventionally use '_',
// the command line '-'.
func normalizeFlagName(_ *pflag.FlagSet, name string) pflag.NormalizedName {
	return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
}

// flagGroup is a titled section of a command's help.
type flagGroup struct {
	title string
	fs    *pflag.FlagSet
}

func newGroup(title string) flagGroup {
	fs := pflag.NewFlagSet(title, pflag.ContinueOnError)
	fs.SortFlags = false
	return flagGroup{title: title, fs: fs}
}

// addGroups adds the groups' flags to cmd and prints its help grouped, in
// the groups' order, like restic's and rclone's help: the synopsis, the
// description, then each group with its defaults.
func addGroups(cmd *cobra.Command, groups ...flagGroup) {
	for _, g := range groups {
		cmd.Flags().AddFlagSet(g.fs)
	}
	cmd.Flags().SortFlags = false
	usage := func(c *cobra.Command) string {
		var b strings.Builder
		fmt.Fprintf(&b, "Usage:\n  %s %s\n", strings.TrimSuffix(c.CommandPath(), " "+c.Name()), c.Use)
		for _, g := range groups {
			if u := g.fs.FlagUsagesWrapped(100); u != "" {
				fmt.Fprintf(&b, "\n%s:\n%s", g.title, u)
			}
		}
		b.WriteString("\n  -h, --help   show this help\n")
		return b.String()
	}
	cmd.SetUsageFunc(func(c *cobra.Command) error {
		fmt.Fprint(c.OutOrStderr(), usage(c))
		return nil
	})
	cmd.SetHelpFunc(func(c *cobra.Command, _ []string) {
		out := c.OutOrStdout()
		if c.Long != "" {
			fmt.Fprintln(out, strings.TrimSpace(c.Long))
			fmt.Fprintln(out)
		}
		fmt.Fprint(out, usage(c))
	})
}

// byteSize is a flag holding a size with an optional unit: 1024, 512KiB,
// 512MiB, 1G, 2GiB (K/M/G/T and KiB/MiB/GiB/TiB are powers of 1024; KB/MB/
// GB/TB are powers of 1000).
type byteSize int64

// String prints the size in the largest binary unit that divides it
// exactly (268435456 -> 256MiB), so help texts read like the docs.
func (b *byteSize) String() string {
	n := int64(*b)
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n != 0 && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

func (b *byteSize) Set(s string) error {
	n, err := parseSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}

// Type names the value in help ("--cache-size size").
func (b *byteSize) Type() string { return "size" }

func parseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	if num == "" {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	mult := map[string]float64{
		"": 1, "b": 1,
		"k": 1 << 10, "kib": 1 << 10, "kb": 1e3,
		"m": 1 << 20, "mib": 1 << 20, "mb": 1e6,
		"g": 1 << 30, "gib": 1 << 30, "gb": 1e9,
		"t": 1 << 40, "tib": 1 << 40, "tb": 1e12,
	}[unit]
	if mult == 0 {
		return 0, fmt.Errorf("invalid size %q: unknown unit %q", s, unit)
	}
	v, err := strconv.ParseFloat(num, 64)
	if err != nil || v < 0 || v*mult > 1<<62 {
		return 0, fmt.Errorf("invalid size %q", s)
	}
	return int64(v * mult), nil
}

// registerCompletions gives the shells the values of the options that
// have a fixed set, and directories where a directory is wanted.
func registerCompletions(cmd *cobra.Command) {
	fixed := map[string][]string{
		"sse":               {"none", "s3", "kms", "c"},
		"log-level":         {"debug", "info", "warn", "error"},
		"client-encryption": {"true", "false"},
	}
	for name, vals := range fixed {
		if cmd.Flags().Lookup(name) != nil {
			cmd.RegisterFlagCompletionFunc(name, cobra.FixedCompletions(vals, cobra.ShellCompDirectiveNoFileComp))
		}
	}
	if cmd.Flags().Lookup("spool-dir") != nil {
		cmd.MarkFlagDirname("spool-dir")
	}
	if cmd.Flags().Lookup("password-command") != nil {
		cmd.RegisterFlagCompletionFunc("password-command", cobra.NoFileCompletions)
	}
}
