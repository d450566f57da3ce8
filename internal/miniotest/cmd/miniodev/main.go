// Command miniodev runs the test MinIO (TLS, static KMS key) in the
// foreground for people: `make minio`. It prints the endpoint, credentials,
// CA file and the environment to paste into a shell, and stops on Ctrl-C.
// With -dir the certificate, KMS key and objects survive restarts.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/s3cryptfs/s3cryptfs/internal/miniotest"
)

func main() {
	dir := flag.String("dir", "", "keep certificates, KMS key and data in this directory (default: a temporary one, removed on exit)")
	port := flag.Int("port", 9000, "S3 API port on 127.0.0.1 (0 = any free port)")
	consolePort := flag.Int("console-port", 0, "console port on 127.0.0.1 (0 = any free port)")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	srv, err := miniotest.Start(ctx, miniotest.Options{
		Dir: *dir, Port: *port, ConsolePort: *consolePort,
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) },
	})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf(`MinIO is running (Ctrl-C to stop).
  endpoint:    %s
  access key:  %s
  secret key:  %s
  region:      %s
  CA file:     %s
  KMS key id:  %s
  data:        %s
  log:         %s

Environment for the AWS chain (s3cryptfs, aws cli):
`, srv.Endpoint, srv.AccessKey, srv.SecretKey, srv.Region, srv.CAFile, srv.KMSKeyID, srv.DataDir, srv.LogFile)
	for _, kv := range srv.Env() {
		fmt.Printf("  export %s\n", kv)
	}

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	<-sig
	fmt.Fprintln(os.Stderr, "stopping MinIO")
	srv.Stop()
}
