package tests

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestHTTPFromSharedConfig: an endpoint_url = http://... in the shared
// config file (AWS_CONFIG_FILE), in a named profile chosen with --profile
// or in the default section, makes init and mount exit 1 with a message
// naming that setting and --allow-http, before a single connection reaches
// the endpoint, and nothing is mounted. With --sse c they refuse even with
// --allow-http. The control, --allow-http without SSE-C, does reach the
// endpoint: the setting is really in effect.
func TestHTTPFromSharedConfig(t *testing.T) {
	requireFUSE(t)
	// A plain-http listener that counts connections and answers every
	// request 404 NoSuchBucket, so a client that reaches it fails at once.
	var conns atomic.Int64
	lis := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusNotFound)
		if r.Method != http.MethodHead {
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchBucket</Code><Message>no</Message></Error>`)
		}
	}))
	lis.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	lis.Start()
	defer lis.Close()

	dir := t.TempDir()
	pf := passFile(t, passphrase)
	keyFile := filepath.Join(dir, "ssec.key")
	if err := os.WriteFile(keyFile, bytes.Repeat([]byte{7}, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	creds := "aws_access_key_id = test\naws_secret_access_key = test-secret\n"
	cases := []struct {
		name, config string
		args         []string // --profile, if any
		names        string   // what the message must name
	}{
		{"named profile", "[default]\n" + creds + "\n[profile plain]\n" + creds + "endpoint_url = " + lis.URL + "\n",
			[]string{"--profile", "plain"}, `endpoint_url in profile "plain"`},
		{"default section", "[default]\n" + creds + "endpoint_url = " + lis.URL + "\n",
			nil, `endpoint_url in profile "default"`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfgFile := filepath.Join(t.TempDir(), "config")
			if err := os.WriteFile(cfgFile, []byte(tc.config), 0o600); err != nil {
				t.Fatal(err)
			}
			env := awsEnvWith(cfgFile)
			ssec := []string{"--sse", "c", "--sse-c-key-file", keyFile, "--allow-http"}
			for _, run := range []struct {
				name    string
				mount   bool
				extra   []string
				message []string
			}{
				{"init", false, nil, []string{"plain http", "--allow-http"}},
				{"mount", true, nil, []string{"plain http", "--allow-http"}},
				{"init --sse c --allow-http", false, ssec, []string{"SSE-C over http is always refused"}},
				{"mount --sse c --allow-http", true, ssec, []string{"SSE-C over http is always refused"}},
			} {
				before := conns.Load()
				mnt := t.TempDir()
				args := []string{"init", "--passphrase-file", pf}
				if run.mount {
					args = []string{"mount", "--passphrase-file", pf, "--log-file", filepath.Join(t.TempDir(), "log")}
				}
				args = append(append(append(args, tc.args...), "--path-style"), run.extra...)
				args = append(args, "s3://bucket/vault")
				if run.mount {
					args = append(args, mnt)
				}
				code, stderr := runIsolated(t, env, args...)
				t.Logf("%s: exit %d: %s", run.name, code, strings.TrimSpace(stderr))
				if isMounted(mnt) {
					syscall.Unmount(mnt, unix.MNT_DETACH)
					t.Fatalf("%s: something was mounted", run.name)
				}
				if code != 1 {
					t.Errorf("%s: exit %d, want 1", run.name, code)
				}
				for _, w := range append(run.message, tc.names, cfgFile) {
					if !strings.Contains(stderr, w) {
						t.Errorf("%s: the message does not mention %q", run.name, w)
					}
				}
				if n := conns.Load() - before; n != 0 {
					t.Errorf("%s: %d connections reached the http endpoint", run.name, n)
				}
			}

			// Control: with --allow-http (no SSE-C) init does use the
			// endpoint_url, and fails there on the missing bucket.
			before := conns.Load()
			code, stderr := runIsolated(t, env, append(append([]string{"init", "--passphrase-file", pf, "--allow-http", "--path-style"},
				tc.args...), "s3://bucket/vault")...)
			if code != 1 || !strings.Contains(stderr, "does not exist") || conns.Load() == before {
				t.Fatalf("control with --allow-http: exit %d, %d connections, stderr %q; want the endpoint reached and the bucket missing",
					code, conns.Load()-before, stderr)
			}
		})
	}
}

// awsEnvWith is an AWS environment of its own: the shared config file
// cfgFile (which holds the credentials), no credentials file, no
// endpoint, region or profile from the environment, no instance metadata.
func awsEnvWith(cfgFile string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AWS_") {
			env = append(env, kv)
		}
	}
	return append(env,
		"AWS_CONFIG_FILE="+cfgFile,
		"AWS_SHARED_CREDENTIALS_FILE="+filepath.Join(filepath.Dir(cfgFile), "no-credentials"),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_REGION=us-east-1",
	)
}

// runIsolated runs the binary with exactly env and returns its exit code
// and stderr.
func runIsolated(t *testing.T, env []string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, args...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), stderr.String()
	} else if err != nil {
		t.Fatalf("run s3cryptfs %v: %v", args, err)
	}
	return 0, stderr.String()
}
