// Command s3cryptfs mounts an encrypted vault kept in S3 or a local
// directory as a FUSE filesystem.
//
//	s3cryptfs init    [options] STORE
//	s3cryptfs mount   [options] STORE MOUNTPOINT
//	s3cryptfs unmount [--lazy] MOUNTPOINT
//	s3cryptfs version
//
// STORE is s3://bucket[/prefix] or a local directory. Exit codes: 0 success,
// 1 runtime error (nothing mounted), 2 usage error. docs/CONFIGURATION.md
// lists every option.
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
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

const topUsage = `usage: s3cryptfs <command> [options] ...

commands:
  init    [options] STORE              create the vault config in STORE
  mount   [options] STORE MOUNTPOINT   mount STORE (returns once mounted)
  unmount [--lazy] MOUNTPOINT          flush and unmount
  version                              print the version

STORE is s3://bucket[/prefix] or a local directory.
"s3cryptfs <command> -h" lists a command's options.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) == 0 {
		fmt.Fprint(os.Stderr, topUsage)
		return exitUsage
	}
	var err error
	switch args[0] {
	case "init":
		err = cmdInit(args[1:])
	case "mount":
		err = cmdMount(args[1:])
	case "unmount", "umount":
		err = cmdUnmount(args[1:])
	case "version", "--version", "-version":
		fmt.Printf("s3cryptfs %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
		return exitOK
	case "help", "-h", "--help":
		fmt.Print(topUsage)
		return exitOK
	default:
		fmt.Fprintf(os.Stderr, "s3cryptfs: unknown command %q\n\n%s", args[0], topUsage)
		return exitUsage
	}
	var ue usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(os.Stderr, "s3cryptfs %s: %v\n", args[0], err)
		return exitUsage
	default:
		fmt.Fprintf(os.Stderr, "s3cryptfs %s: %v\n", args[0], err)
		return exitRuntime
	}
}
