package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// plainServer is a plain-http listener that counts the connections it
// accepts and answers every request 404 NoSuchBucket (so that a client
// reaching it fails at once, without retries).
type plainServer struct {
	srv   *httptest.Server
	conns atomic.Int64
	reqs  atomic.Int64
}

func newPlainServer(t *testing.T) *plainServer {
	t.Helper()
	p := &plainServer{}
	p.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.reqs.Add(1)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(http.StatusNotFound)
		if r.Method != http.MethodHead {
			fmt.Fprintf(w, errorXML, "NoSuchBucket", "The specified bucket does not exist")
		}
	}))
	p.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			p.conns.Add(1)
		}
	}
	p.srv.Start()
	t.Cleanup(p.srv.Close)
	return p
}

// isolateAWSEnv gives the test static credentials and the shared config
// file configFile, and nothing else from the AWS environment.
func isolateAWSEnv(t *testing.T, configFile string) {
	t.Helper()
	for _, k := range []string{"AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
		"AWS_SESSION_TOKEN", "AWS_CA_BUNDLE", "AWS_REGION", "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"} {
		t.Setenv(k, "") // restores the old value after the test
		os.Unsetenv(k)
	}
	t.Setenv("AWS_ACCESS_KEY_ID", "test")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "test-secret")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_CONFIG_FILE", configFile)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(filepath.Dir(configFile), "no-credentials"))
}

// TestHTTPFromSharedConfig: an http endpoint_url in the shared config file
// (a named profile, the default profile, a services section) is refused at
// open, naming that setting, before any connection reaches it; SSE-C over
// it is refused even with AllowHTTP. The control (AllowHTTP, no SSE-C)
// shows the setting really is the endpoint the SDK would use.
func TestHTTPFromSharedConfig(t *testing.T) {
	plain := newPlainServer(t)
	key := bytes.Repeat([]byte{1}, 32)
	cases := []struct {
		name, config, profile, want string
	}{
		// A profile named explicitly takes its credentials from the file,
		// not from the environment.
		{"named profile", "[default]\nregion = us-east-1\n\n[profile plain]\naws_access_key_id = test\n" +
			"aws_secret_access_key = test-secret\nendpoint_url = %s\n", "plain",
			`endpoint_url in profile "plain"`},
		{"default profile", "[default]\nendpoint_url = %s\n", "", `endpoint_url in profile "default"`},
		{"services section", "[default]\nservices = local\n\n[services local]\ns3 =\n  endpoint_url = %s\n", "",
			"endpoint_url in the s3 part of [services local]"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "config")
			if err := os.WriteFile(file, fmt.Appendf(nil, tc.config, plain.srv.URL), 0o600); err != nil {
				t.Fatal(err)
			}
			isolateAWSEnv(t, file)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			base := Config{Bucket: "b", Region: "us-east-1", Profile: tc.profile, PathStyle: true}

			before := plain.conns.Load()
			_, err := New(ctx, base)
			t.Logf("without AllowHTTP: %v", err)
			var ie *insecureError
			if !errors.As(err, &ie) || !errors.Is(err, backend.ErrPermanent) {
				t.Fatalf("New: err = %v, want a permanent http refusal", err)
			}
			for _, w := range []string{tc.want, file, plain.srv.URL, "--allow-http"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not mention %q", w)
				}
			}

			ssec := base
			ssec.AllowHTTP, ssec.SSE, ssec.SSECKey = true, SSEC, key
			_, err = New(ctx, ssec)
			t.Logf("SSE-C with AllowHTTP: %v", err)
			if !errors.As(err, &ie) || !strings.Contains(err.Error(), "SSE-C over http is always refused") ||
				!strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New with SSE-C: err = %v, want the SSE-C refusal naming %q", err, tc.want)
			}
			if n := plain.conns.Load() - before; n != 0 {
				t.Fatalf("%d connections reached the http endpoint before the refusals", n)
			}

			allowed := base
			allowed.AllowHTTP = true
			_, err = New(ctx, allowed)
			if errors.As(err, &ie) || !errors.Is(err, backend.ErrNotFound) {
				t.Fatalf("New with AllowHTTP: err = %v, want the control's bucket-not-found answer", err)
			}
			if plain.conns.Load() == before {
				t.Fatal("control: with AllowHTTP no connection reached the endpoint: the config's endpoint_url was not used")
			}
		})
	}
}

// TestHTTPSGuard: every request the S3 client sends passes the guard. The
// store works over https (real MinIO, through the TLS fault proxy); a
// request forced to http, by a per-request endpoint or by the SDK's own
// late scheme rewrite, and a 307 redirect to an http URL, are refused
// without a connection to the http side and without retries. SSE-C is
// refused over a redirect even with AllowHTTP; the control (AllowHTTP, no
// SSE-C) shows the SDK does follow such a redirect.
func TestHTTPSGuard(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	p := newFaultProxy(t, srv)
	s, err := faultStore(t, p, srv, bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	if _, err := s.Put(ctx, "obj", strings.NewReader("hello"), 5, nil); err != nil {
		t.Fatalf("Put over https: %v", err)
	}
	if got := readAll(t, s, "obj", 0, -1); string(got) != "hello" {
		t.Fatalf("Get over https: %q", got)
	}

	checkRefused := func(t *testing.T, err error) {
		t.Helper()
		t.Logf("refused: %v", err)
		var ie *insecureError
		if !errors.As(err, &ie) || !errors.Is(err, backend.ErrPermanent) || !strings.Contains(err.Error(), "plain http") {
			t.Fatalf("err = %v, want a permanent http refusal", err)
		}
		var me *retry.MaxAttemptsError
		if errors.As(err, &me) {
			t.Fatalf("the refusal was retried: %v", err)
		}
	}

	t.Run("forced to http", func(t *testing.T) {
		httpURL := "http://" + p.srv.Listener.Addr().String()
		for name, force := range map[string]func(*s3.Options){
			"endpoint":     func(o *s3.Options) { o.BaseEndpoint = aws.String(httpURL) },
			"DisableHTTPS": func(o *s3.Options) { o.EndpointOptions.DisableHTTPS = true },
		} {
			t.Run(name, func(t *testing.T) {
				conns, reqs := p.conns.Load(), len(p.requests())
				_, err := s.client.HeadObject(ctx, &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String("obj")}, force)
				checkRefused(t, err)
				if err := s.classify(ctx, "stat", "obj", err); !errors.Is(err, backend.ErrPermanent) ||
					!strings.HasPrefix(err.Error(), "s3: stat s3://"+bucket+"/obj: s3: request HEAD http://") {
					t.Fatalf("classified: %v, want a permanent error naming the object and the http request", err)
				}
				if p.conns.Load() != conns || len(p.requests()) != reqs {
					t.Fatal("the http request reached the server")
				}
			})
		}
	})

	plain := newPlainServer(t)
	redirect := func(r *http.Request) fault {
		if !isGet(r) {
			return fault{}
		}
		return fault{kind: respond, status: http.StatusTemporaryRedirect,
			header: http.Header{"Location": {plain.srv.URL + r.URL.Path}}}
	}

	t.Run("redirect to http", func(t *testing.T) {
		p.setRule(redirect)
		defer p.setRule(nil)
		_, err := s.Get(ctx, "obj", 0, -1, backend.GetOptions{})
		checkRefused(t, err)
		if n := plain.conns.Load(); n != 0 {
			t.Fatalf("%d connections reached the http redirect target", n)
		}
	})

	t.Run("SSE-C redirect to http with AllowHTTP", func(t *testing.T) {
		key := bytes.Repeat([]byte{9}, 32)
		sc, err := faultStore(t, p, srv, bucket, func(c *Config) { c.SSE, c.SSECKey, c.AllowHTTP = SSEC, key, true })
		if err != nil {
			t.Fatal(err)
		}
		if _, err := sc.Put(ctx, "ssec", strings.NewReader("secret"), 6, nil); err != nil {
			t.Fatalf("SSE-C Put over https: %v", err)
		}
		p.setRule(redirect)
		defer p.setRule(nil)
		_, err = sc.Get(ctx, "ssec", 0, -1, backend.GetOptions{})
		checkRefused(t, err)
		if !strings.Contains(err.Error(), "SSE-C") {
			t.Errorf("the refusal does not say SSE-C: %v", err)
		}
		if n := plain.conns.Load(); n != 0 {
			t.Fatalf("%d connections reached the http redirect target: the SSE-C key went out in clear", n)
		}
	})

	t.Run("control: AllowHTTP follows the redirect", func(t *testing.T) {
		sa, err := faultStore(t, p, srv, bucket, func(c *Config) { c.AllowHTTP = true })
		if err != nil {
			t.Fatal(err)
		}
		p.setRule(redirect)
		defer p.setRule(nil)
		rc, err := sa.Get(ctx, "obj", 0, -1, backend.GetOptions{})
		if err == nil {
			_, _ = io.Copy(io.Discard, rc)
			rc.Close()
		}
		var ie *insecureError
		if errors.As(err, &ie) || plain.reqs.Load() == 0 {
			t.Fatalf("with AllowHTTP: err = %v, %d requests at the http target; want the redirect followed",
				err, plain.reqs.Load())
		}
	})
}
