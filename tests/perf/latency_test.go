package perf

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/s3cryptfs/s3cryptfs/internal/miniotest"
)

// ---- latency settings ----

// On loopback a request costs MinIO well under a millisecond; real S3
// answers a small request in 10-50 ms, and there round trips per operation
// decide. So every workload runs once per latency setting: 0 is MinIO
// directly (as before), any other value puts a latencyProxy adding that
// delay in each direction between every client and MinIO.
const defaultLatency = "0,10ms"

// latencies returns the settings of S3CRYPTFS_BENCH_LATENCY (one-way
// delays, comma-separated; default "0,10ms").
var latencies = sync.OnceValues(func() ([]time.Duration, error) {
	return parseLatencies(os.Getenv("S3CRYPTFS_BENCH_LATENCY"))
})

func parseLatencies(s string) ([]time.Duration, error) {
	if strings.TrimSpace(s) == "" {
		s = defaultLatency
	}
	var out []time.Duration
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		d := time.Duration(0)
		if f != "0" {
			var err error
			d, err = time.ParseDuration(f)
			if err != nil || d < 0 {
				return nil, fmt.Errorf("perf: S3CRYPTFS_BENCH_LATENCY=%q: %q is not a duration >= 0 (e.g. 0,10ms)", s, f)
			}
		}
		if !slices.Contains(out, d) {
			out = append(out, d)
		}
	}
	return out, nil
}

// latName names a setting in sub-benchmark names and the table: lat=0,
// lat=10ms.
func latName(d time.Duration) string {
	if d == 0 {
		return "lat=0"
	}
	return "lat=" + d.String()
}

// latTitle says what a setting is, for the table.
func latTitle(name string) string {
	d, err := time.ParseDuration(strings.TrimPrefix(name, "lat="))
	if name == "lat=0" {
		d, err = 0, nil
	}
	switch {
	case err != nil:
		return name
	case d == 0:
		return name + ": MinIO directly (loopback, well under 1 ms per request)"
	default:
		return fmt.Sprintf("%s: through the latency proxy, +%v each way (%v round trip)", name, d, 2*d)
	}
}

// netPath is one way to MinIO: directly, or through a latency proxy. Every
// client of a setting (the SDK baseline, the mounts) uses its endpoint.
type netPath struct {
	delay    time.Duration
	name     string     // latName(delay)
	endpoint string     // https://127.0.0.1:PORT of MinIO or of the proxy
	sdk      *s3.Client // the baselines' client on this path
	sdkReqs  atomic.Int64
}

// path returns the network path of setting d, starting its proxy on first
// use. The proxy listens on 127.0.0.1, which MinIO's certificate names, so
// TLS verifies through it as it does directly.
func (e *env) path(b *testing.B, d time.Duration) *netPath {
	b.Helper()
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.paths[d]; ok {
		return p
	}
	p := &netPath{delay: d, name: latName(d), endpoint: e.srv.Endpoint}
	if d > 0 {
		upstream := strings.TrimPrefix(e.srv.Endpoint, "https://")
		pp, err := startProxyProc(upstream, d, filepath.Join(e.work, "proxy-"+d.String()+".log"))
		if err != nil {
			b.Fatal(err)
		}
		p.endpoint = "https://" + pp.addr
	}
	c, err := newS3Client(e.srv, p.endpoint, &p.sdkReqs)
	if err != nil {
		b.Fatal(err)
	}
	p.sdk = c
	// Check the path is what it claims: a first request (new connection,
	// TLS handshake, request) through the proxy takes at least a round trip.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t0 := time.Now()
	if _, err := c.ListBuckets(ctx, &s3.ListBucketsInput{}); err != nil {
		b.Fatalf("perf: %s: first request through %s: %v", p.name, p.endpoint, err)
	}
	if took := time.Since(t0); took < 2*d {
		b.Fatalf("perf: %s: a first request took %v, less than a round trip (%v): the proxy is not delaying", p.name, took, 2*d)
	}
	e.paths[d] = p
	return p
}

// serverEnv is srv.Env() with the endpoint replaced, for the mounts.
func serverEnv(srv *miniotest.Server, endpoint string) []string {
	env := srv.Env()
	for i, kv := range env {
		if strings.HasPrefix(kv, "AWS_ENDPOINT_URL_S3=") {
			env[i] = "AWS_ENDPOINT_URL_S3=" + endpoint
		}
	}
	return env
}

// ---- S3 clients that count their requests ----

// countingTransport counts the HTTP requests that got a response (those
// MinIO has counted too), retries included.
type countingTransport struct {
	rt http.RoundTripper
	n  *atomic.Int64
}

func (t countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := t.rt.RoundTrip(r)
	if err == nil {
		t.n.Add(1)
	}
	return resp, err
}

// newTLSTransport trusts MinIO's certificate (its own CA) and keeps enough
// idle connections for parallel transfers, like miniotest's SDKClient.
func newTLSTransport(caFile string) (*http.Transport, error) {
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("perf: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("perf: no certificate in %s", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 64
	return tr, nil
}

// newS3Client is miniotest's SDKClient with another endpoint (the proxy's)
// and a request counter.
func newS3Client(srv *miniotest.Server, endpoint string, n *atomic.Int64) (*s3.Client, error) {
	tr, err := newTLSTransport(srv.CAFile)
	if err != nil {
		return nil, err
	}
	return s3.New(s3.Options{
		Region:       srv.Region,
		BaseEndpoint: aws.String(endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(srv.AccessKey, srv.SecretKey, ""),
		HTTPClient:   &http.Client{Transport: countingTransport{rt: tr, n: n}},
		Retryer:      retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 8 }),
	}), nil
}

// ---- request counts ----

// Requests are counted by MinIO, not at the proxy: the proxy sees only
// TLS, and MinIO counts every S3 request per bucket whatever the client
// (the SDK, s3cryptfs, s3fs, rclone) and whatever the path (direct or
// proxied). Its metrics v3 endpoint is read before and after each timed
// section; the harness's own checks on the same bucket (the HEADs and
// listings that wait for durability) go through the observer client, which
// counts what it sends, and are subtracted.

// enableMinIOMetrics lets the harness read MinIO's metrics without a
// bearer token. MinIO inherits the test process's environment; the server
// listens on 127.0.0.1 only and lives for this run.
func enableMinIOMetrics() {
	if os.Getenv("MINIO_PROMETHEUS_AUTH_TYPE") == "" {
		os.Setenv("MINIO_PROMETHEUS_AUTH_TYPE", "public")
	}
}

// bucketRequests returns the number of S3 requests MinIO has completed on
// bucket since it started.
func (e *env) bucketRequests(ctx context.Context, bucket string) (int64, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, e.srv.Endpoint+"/minio/metrics/v3/bucket/api/"+bucket, nil)
	if err != nil {
		return 0, fmt.Errorf("perf: %w", err)
	}
	resp, err := e.metrics.Do(req)
	if err != nil {
		return 0, fmt.Errorf("perf: metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, fmt.Errorf("perf: metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("perf: metrics: %s: %.200s", resp.Status, body)
	}
	return parseBucketAPITotal(body, bucket)
}

// parseBucketAPITotal sums minio_bucket_api_total (one series per S3 API
// name) of bucket in Prometheus text format. No series at all means no
// request yet: MinIO creates them on first use.
func parseBucketAPITotal(text []byte, bucket string) (int64, error) {
	var sum float64
	sc := bufio.NewScanner(bytes.NewReader(text))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "minio_bucket_api_total{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			return 0, fmt.Errorf("perf: metrics line %q", line)
		}
		if !strings.Contains(labels, `bucket="`+bucket+`"`) {
			continue
		}
		v, err := strconv.ParseFloat(strings.Fields(value)[0], 64)
		if err != nil {
			return 0, fmt.Errorf("perf: metrics line %q: %w", line, err)
		}
		sum += v
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("perf: metrics: %w", err)
	}
	return int64(sum), nil
}

// settledRequests is bucketRequests once the count has stopped moving:
// MinIO counts a request when its handler returns, and for a response
// larger than the server's write buffer (a listing) the client can have
// all of it a moment before that. A count read too early would put a
// request made before a timed section into it.
func (e *env) settledRequests(bucket string) (int64, error) {
	ctx := context.Background()
	n, err := e.bucketRequests(ctx, bucket)
	for range 5 {
		if err != nil {
			return 0, err
		}
		time.Sleep(20 * time.Millisecond)
		var again int64
		again, err = e.bucketRequests(ctx, bucket)
		if err == nil && again == n {
			return n, nil
		}
		n = again
	}
	return n, err
}

// reqCount counts the requests on one bucket during a timed section.
type reqCount struct {
	e          *env
	bucket     string
	srv0, obs0 int64
	client     *atomic.Int64 // the SDK baseline's own count, cross-checked; nil for mounts
	client0    int64
	err        error
}

// countRequests starts counting requests on bucket; call it right before
// the timer starts. client, when not nil, is the counter of the only
// client expected on the bucket besides the observer (the SDK baseline).
func (e *env) countRequests(bucket string, client *atomic.Int64) *reqCount {
	c := &reqCount{e: e, bucket: bucket, client: client, obs0: e.obsReqs.Load()}
	if client != nil {
		c.client0 = client.Load()
	}
	c.srv0, c.err = e.settledRequests(bucket)
	return c
}

// done returns the requests since countRequests, less the observer's
// (NaN if MinIO's metrics cannot be read; said once). Call it after the
// timer stopped.
func (c *reqCount) done(b *testing.B) float64 {
	b.Helper()
	srv1, err := c.e.settledRequests(c.bucket)
	if c.err == nil {
		c.err = err
	}
	if c.err != nil {
		noMetrics.Do(func() { b.Logf("perf: no request counts: %v", c.err) })
		return nan
	}
	n := (srv1 - c.srv0) - (c.e.obsReqs.Load() - c.obs0)
	if c.client != nil {
		if own := c.client.Load() - c.client0; own != n {
			b.Logf("perf: MinIO counted %d requests on %s, the SDK sent %d", n, c.bucket, own)
		}
	}
	return float64(n)
}

var noMetrics sync.Once

// fmtReqs prints a request count (an average over b.N runs).
func fmtReqs(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(math.Round(v), 'f', 0, 64) + " req"
}
