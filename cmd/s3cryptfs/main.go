// Command s3cryptfs mounts an encrypted vault kept in S3 or a local
// directory as a FUSE filesystem.
//
//	s3cryptfs init    [options] STORE
//	s3cryptfs mount   [options] STORE MOUNTPOINT [-o opt[,opt...]]
//	s3cryptfs unmount [--lazy] MOUNTPOINT
//	s3cryptfs ls|cat|get|verify [options] STORE ...   (reader.go)
//	s3cryptfs passwd | recover | rotate | rekey [options] STORE
//	s3cryptfs key list | add | remove [options] STORE [SLOT]
//	s3cryptfs config export [options] STORE FILE
//	s3cryptfs bucket-policy [--sse s3|kms] [--dry-run] s3://BUCKET
//	s3cryptfs version
//	s3cryptfs completion bash|zsh|fish
//
// Installed as mount.fuse.s3cryptfs (a link to this binary) it is the
// mount(8) helper for the type fuse.s3cryptfs (see helper.go).
//
// STORE is s3://bucket[/prefix] or a local directory. Exit codes: 0 success,
// 1 runtime error (nothing mounted), 2 usage error. docs/CONFIGURATION.md
// lists every option.
package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"

	"github.com/spf13/cobra"
)

var version = "dev"

// Exit codes, part of the command-line contract.
const (
	exitOK      = 0
	exitRuntime = 1
	exitUsage   = 2
)

// usageError is a problem with the command line: exit code 2.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return usageError{fmt.Sprintf(format, args...)}
}

func main() {
	if isHelperName(filepath.Base(os.Args[0])) {
		os.Exit(runHelper(os.Args[1:]))
	}
	os.Exit(run(os.Args[1:]))
}

// run executes one command line (without the program name) and returns the
// exit code.
func run(args []string) int {
	return runWith(args, os.Stdout, os.Stderr)
}

func runWith(args []string, stdout, stderr io.Writer) int {
	root := newRootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	cmd, err := root.ExecuteC()
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "%s: %v\n", cmdName(cmd), err)
		if cmd != nil && cmd != root {
			fmt.Fprintf(stderr, "(see %s --help)\n", cmdName(cmd))
		}
		return exitUsage
	default:
		fmt.Fprintf(stderr, "%s: %v\n", cmdName(cmd), err)
		return exitRuntime
	}
}

// cmdName is the command as messages name it: "s3cryptfs mount".
func cmdName(c *cobra.Command) string {
	if c == nil {
		return "s3cryptfs"
	}
	return c.CommandPath()
}

// newRootCommand builds the command tree. Each command's RunE only turns
// parsed flags into its config and calls the code that does the work.
func newRootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "s3cryptfs",
		Short: "an encrypted FUSE filesystem over S3 or a local directory",
		Long: `s3cryptfs keeps each file as one client-side encrypted object in an S3
bucket (or a local directory) and mounts the vault as a FUSE filesystem.

STORE is s3://bucket[/prefix] or a local directory.
Exit codes: 0 ok, 1 error (nothing mounted), 2 usage error.`,
		// Unknown commands reach RunE (instead of cobra's own error) so that
		// they exit 2 like every other usage error.
		Args: cobra.ArbitraryArgs,
		RunE: func(c *cobra.Command, args []string) error {
			if len(args) == 0 {
				c.SetOut(c.ErrOrStderr())
				c.Help()
				return usagef("no command given")
			}
			return usagef("unknown command %q", args[0])
		},
		SilenceErrors: true,
		SilenceUsage:  true,
		Version:       version,
	}
	root.SetVersionTemplate(versionString() + "\n")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err.Error()} })
	root.SetGlobalNormalizationFunc(normalizeFlagName)
	root.CompletionOptions.HiddenDefaultCmd = false
	root.AddCommand(newInitCommand(), newMountCommand(), newUnmountCommand(),
		newPasswdCommand(), newRecoverCommand(), newKeyCommand(), newConfigCommand(), newRotateCommand(), newRekeyCommand(), newBucketPolicyCommand(),
		&cobra.Command{
			Use:   "version",
			Short: "print the version",
			Args:  noArgs,
			RunE: func(c *cobra.Command, _ []string) error {
				fmt.Fprintln(c.OutOrStdout(), versionString())
				return nil
			},
		})
	root.AddCommand(readerCommands()...)
	return root
}

func versionString() string {
	return fmt.Sprintf("s3cryptfs %s (%s %s/%s)", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func noArgs(_ *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("takes no arguments, got %q", args)
	}
	return nil
}

// exactArgs is cobra.ExactArgs as a usage error (exit 2) naming the operands.
func exactArgs(n int, names string) cobra.PositionalArgs {
	return func(_ *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("want %s, got %d arguments", names, len(args))
		}
		return nil
	}
}
