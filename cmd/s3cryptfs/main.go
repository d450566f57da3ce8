// Command s3cryptfs mounts an encrypted vault kept in S3 or a local directory.
package main

import (
	"fmt"
	"os"
)

var version = "dev"

func main() {
	if len(os.Args) > 1 && (os.Args[1] == "version" || os.Args[1] == "--version") {
		fmt.Println("s3cryptfs", version)
		return
	}
	fmt.Fprintln(os.Stderr, "usage: s3cryptfs init|mount|unmount|version ...")
	os.Exit(2)
}
