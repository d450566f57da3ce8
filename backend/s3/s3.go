// Package s3 is the backend.Store on Amazon S3 and S3-compatible servers
// (MinIO in tests), built on aws-sdk-go-v2.
//
// What it adds over the bare SDK, and why:
//   - Server-side encryption (SSE-S3, SSE-KMS, SSE-C) chosen once per store
//     and applied to every request that needs it, including both sides of a
//     copy, so no call path can forget a header.
//   - Streamed uploads in parallel parts with a bounded, reused set of part
//     buffers: memory stays at (Concurrency+1) parts for any object size.
//   - Reads that survive a broken connection: a GET body that fails or stalls
//     is re-requested from where it broke, pinned to the first response's
//     ETag so two versions of an object are never mixed.
//   - Retries with backoff on throttling, 5xx and connection errors, and a
//     timeout on every phase of every request, so no call hangs forever.
//   - Errors classified into the backend sentinels (not found, precondition
//     failed, access denied, permanent) with messages that say what to fix.
//   - HTTPS enforced on every request sent, whatever configured the
//     endpoint; plain http only with an explicit opt-in, and never with
//     SSE-C (the key would travel in the clear). See https.go.
//   - GET answers that do not cover exactly the range asked for are refused
//     before their body is read; a body never delivers more than asked.
package s3

import (
	"context"
	"crypto/md5"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/ratelimit"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go/middleware"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// SSEMode selects S3 server-side encryption for everything the store writes.
type SSEMode string

// Server-side encryption modes.
const (
	SSENone SSEMode = "none" // no server-side encryption requested (the bucket default applies)
	SSES3   SSEMode = "s3"   // SSE-S3: AES256 with keys S3 manages
	SSEKMS  SSEMode = "kms"  // SSE-KMS: a KMS key (KMSKeyID, or the account's aws/s3 key)
	SSEC    SSEMode = "c"    // SSE-C: a 256-bit key the client sends with every request
)

// Defaults and limits.
const (
	DefaultPartSize    = 8 << 20
	DefaultConcurrency = 4
	minPartSize        = 5 << 20 // S3's minimum for every part but the last
	maxPartSize        = 5 << 30 // S3's maximum part, and single PUT/COPY size
	maxParts           = 10000
	maxConcurrency     = 64
	maxAttempts        = 10
)

// Config describes one store: where the objects live and how to reach and
// protect them. Only Bucket is required.
type Config struct {
	Bucket string
	// Prefix, when set, is prepended to every key ("vault" and "vault/" both
	// put key "a/b" at "vault/a/b").
	Prefix string
	// Endpoint is the S3 API URL; "" means AWS_ENDPOINT_URL_S3 (then
	// AWS_ENDPOINT_URL), else endpoint_url from the shared config profile,
	// else AWS's own endpoint for the region.
	Endpoint string
	// Region; "" means the AWS chain (AWS_REGION, the profile), else us-east-1.
	Region string
	// Profile names a shared-config profile; "" means AWS_PROFILE or default.
	Profile string
	// PathStyle addresses buckets as https://host/bucket (MinIO, most
	// self-hosted servers) instead of https://bucket.host.
	PathStyle bool
	// AllowHTTP permits plain http:// to the endpoint, from whatever
	// source. Never allowed with SSE-C.
	AllowHTTP bool
	// CABundle is a PEM file of extra trusted CAs; "" means AWS_CA_BUNDLE.
	CABundle string

	SSE       SSEMode
	KMSKeyID  string // for SSE "kms"; "" = the account's default aws/s3 key
	BucketKey bool   // for SSE "kms": use an S3 Bucket Key (fewer KMS calls)
	SSECKey   []byte // for SSE "c": exactly 32 bytes (see ReadSSECKeyFile)

	// PartSize is the multipart part size (0 = DefaultPartSize, at least
	// 5 MiB). Objects up to PartSize go up in one PutObject.
	PartSize int64
	// Concurrency is the number of parts in flight per upload (0 =
	// DefaultConcurrency). An upload holds at most Concurrency+1 parts in
	// memory.
	Concurrency int
}

// Store is a backend.Store on one bucket (and prefix).
type Store struct {
	client      *s3.Client
	bucket      string
	prefix      string
	endpoint    string // for messages
	region      string
	sse         sse
	partSize    int64
	concurrency int
	bufs        *bufferPool
	timeouts    *timeouts
	// copyLimit and copyPart, when set (tests), replace the 5 GiB
	// single-copy limit and the multipart copy part size.
	copyLimit, copyPart int64
}

var _ backend.Store = (*Store)(nil)

// timeouts bound each phase of a request. Tests shorten them.
type timeouts struct {
	// header bounds the wait for a GET's response headers, per attempt.
	header time.Duration
	// bodyIdle bounds a GET body read that receives nothing.
	bodyIdle time.Duration
	// call bounds one attempt of a small request (HEAD, LIST, DELETE...).
	call time.Duration
	// upload bounds one attempt of a PUT or part upload: call plus the
	// time to send the body at minRate bytes per second.
	minRate int64
	// copy bounds one attempt of a server-side copy or multipart completion,
	// which can take minutes for gigabytes.
	copy time.Duration
	// resumeBase is the first delay before re-requesting a broken GET body.
	resumeBase time.Duration
}

func defaultTimeouts() *timeouts {
	return &timeouts{
		header:     time.Minute,
		bodyIdle:   time.Minute,
		call:       2 * time.Minute,
		minRate:    128 << 10,
		copy:       15 * time.Minute,
		resumeBase: 200 * time.Millisecond,
	}
}

// New validates cfg, builds the client and checks that the credentials
// resolve and the bucket exists, so that configuration mistakes surface here
// with a message saying what to fix rather than on the first file access.
func New(ctx context.Context, cfg Config) (*Store, error) {
	return newStore(ctx, cfg, defaultTimeouts(), 0)
}

// newStore is New with adjustable timeouts and, for tests, a retry base
// delay (0 = the default).
func newStore(ctx context.Context, cfg Config, to *timeouts, retryBase time.Duration) (*Store, error) {
	if cfg.Bucket == "" {
		return nil, fmt.Errorf("s3: no bucket given: %w", backend.ErrPermanent)
	}
	s := &Store{
		bucket:      cfg.Bucket,
		prefix:      normalizePrefix(cfg.Prefix),
		partSize:    cfg.PartSize,
		concurrency: cfg.Concurrency,
		timeouts:    to,
	}
	if s.partSize == 0 {
		s.partSize = DefaultPartSize
	}
	if s.partSize < minPartSize || s.partSize > maxPartSize {
		return nil, fmt.Errorf("s3: part size %d out of range: S3 needs %d (5 MiB) to %d (5 GiB): %w",
			s.partSize, minPartSize, int64(maxPartSize), backend.ErrPermanent)
	}
	if s.concurrency == 0 {
		s.concurrency = DefaultConcurrency
	}
	if s.concurrency < 1 || s.concurrency > maxConcurrency {
		return nil, fmt.Errorf("s3: concurrency %d out of range 1..%d: %w", s.concurrency, maxConcurrency, backend.ErrPermanent)
	}
	var err error
	if s.sse, err = newSSE(cfg); err != nil {
		return nil, err
	}
	endpoint, endpointFrom, err := configuredEndpoint(cfg)
	if err != nil {
		return nil, err
	}
	pool, err := loadCABundle(cfg.CABundle)
	if err != nil {
		return nil, err
	}
	s.bufs = newBufferPool(s.concurrency + 1)

	httpClient := awshttp.NewBuildableClient().
		WithDialerOptions(func(d *net.Dialer) {
			d.Timeout = 10 * time.Second
			d.KeepAlive = 30 * time.Second
		}).
		WithTransportOptions(func(tr *http.Transport) {
			tr.TLSHandshakeTimeout = 10 * time.Second
			tr.ExpectContinueTimeout = time.Second
			tr.IdleConnTimeout = 90 * time.Second
			// A backstop only: each attempt has its own, tighter bound
			// (attemptTimeout); this one must allow a server-side copy of
			// 5 GiB, which answers only when done.
			tr.ResponseHeaderTimeout = 15 * time.Minute
			// Parts and ranged reads run in parallel, from several
			// uploads and readers at once: keep enough connections warm
			// that none is torn down and re-handshaked between requests.
			tr.MaxIdleConns = 4 * maxConcurrency
			tr.MaxIdleConnsPerHost = max(4*s.concurrency, 32)
			// Large bodies: bigger buffers mean fewer syscalls.
			tr.WriteBufferSize = 64 << 10
			tr.ReadBufferSize = 64 << 10
			if tr.TLSClientConfig == nil {
				tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
			}
			if pool != nil {
				tr.TLSClientConfig.RootCAs = pool
			}
		})

	retryer := func() aws.Retryer {
		return retry.NewStandard(func(o *retry.StandardOptions) {
			o.MaxAttempts = maxAttempts
			o.MaxBackoff = 20 * time.Second
			// The default client-side retry quota gives up on every call
			// after a burst of failures; a filesystem riding out an
			// outage should keep backing off instead.
			o.RateLimiter = ratelimit.None
			o.Backoff = backoff{base: retryBase, max: 20 * time.Second}
			o.Retryables = append(o.Retryables, retry.IsErrorRetryableFunc(isRetryableExtra))
		})
	}
	opts := []func(*config.LoadOptions) error{
		config.WithHTTPClient(httpClient),
		config.WithRetryer(retryer),
	}
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	awsCfg, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("s3: loading AWS configuration (profile %q): %w: %w", cfg.Profile, err, backend.ErrPermanent)
	}
	if awsCfg.Region == "" {
		awsCfg.Region = "us-east-1"
	}
	s.region = awsCfg.Region
	// The S3 client, and only it, sends through the https guard: the
	// credential providers sharing awsCfg.HTTPClient include the instance
	// and container metadata services, which are plain http by design.
	guard := &httpsGuard{allow: cfg.AllowHTTP && s.sse.mode != SSEC, mode: s.sse.mode}
	s3HTTP, err := guardedClient(httpClient, guard)
	if err != nil {
		return nil, err
	}
	s.client = s3.NewFromConfig(awsCfg, func(o *s3.Options) {
		o.HTTPClient = s3HTTP
		o.UsePathStyle = cfg.PathStyle
		// Ranged reads and multipart objects carry no whole-object
		// checksum; the SDK would log that on every GET.
		o.DisableLogOutputChecksumValidationSkipped = true
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Finalize.Insert(&attemptTimeout{to: s.timeouts}, "Retry", middleware.After)
		})
	})

	// Check the endpoint the client resolved, whatever set it, before any
	// request: the guard would refuse each request anyway, but here the
	// message can say which setting to change.
	s.endpoint = aws.ToString(s.client.Options().BaseEndpoint)
	if s.endpoint != "" {
		if endpoint == "" {
			endpointFrom = endpointSource(awsCfg, cfg.Profile, s.endpoint)
		}
		guard.endpoint = s.endpoint + " from " + endpointFrom
		if err := checkScheme(s.endpoint, endpointFrom, guard.allow, s.sse.mode); err != nil {
			return nil, err
		}
	} else {
		guard.endpoint = "AWS S3"
	}

	if err := s.checkCredentials(ctx, awsCfg); err != nil {
		return nil, err
	}
	if err := s.checkBucket(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// normalizePrefix makes a non-empty prefix end in exactly one '/' and start
// with none, so that keys stay relative to a "directory" of the bucket.
func normalizePrefix(p string) string {
	p = strings.Trim(p, "/")
	if p == "" {
		return ""
	}
	return p + "/"
}

// loadCABundle returns the system roots plus the certificates of the PEM
// file (path, else AWS_CA_BUNDLE), or nil when neither is set.
func loadCABundle(path string) (*x509.CertPool, error) {
	from := "CA bundle"
	if path == "" {
		path, from = os.Getenv("AWS_CA_BUNDLE"), "AWS_CA_BUNDLE"
	}
	if path == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("s3: reading %s: %w: %w", from, err, backend.ErrPermanent)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("s3: %s %s holds no PEM certificate: %w", from, path, backend.ErrPermanent)
	}
	return pool, nil
}

// checkCredentials resolves credentials once so that a machine with none
// gets a message naming every way to provide them, instead of an SDK error
// on the first request.
func (s *Store) checkCredentials(ctx context.Context, awsCfg aws.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if awsCfg.Credentials == nil {
		return fmt.Errorf("s3: %s: %w", noCredentialsHelp, backend.ErrAccessDenied)
	}
	if _, err := awsCfg.Credentials.Retrieve(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return fmt.Errorf("s3: resolving credentials: %w", err)
		}
		return fmt.Errorf("s3: %s (%v): %w", noCredentialsHelp, err, backend.ErrAccessDenied)
	}
	return nil
}

const noCredentialsHelp = "no usable AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY " +
	"(plus AWS_SESSION_TOKEN for temporary ones), or name a profile from ~/.aws/credentials or ~/.aws/config " +
	"with AWS_PROFILE or the profile option (other files: AWS_SHARED_CREDENTIALS_FILE, AWS_CONFIG_FILE), " +
	"or run where an IAM role is available"

// checkBucket makes sure the bucket exists and is reachable.
func (s *Store) checkBucket(ctx context.Context) error {
	_, err := s.client.HeadBucket(ctx, &s3.HeadBucketInput{Bucket: aws.String(s.bucket)})
	if err == nil {
		return nil
	}
	if region := bucketRegion(err); region != "" && region != s.region {
		return fmt.Errorf("s3: bucket %q is in region %s, not %s: set the region to %s: %w",
			s.bucket, region, s.region, region, backend.ErrPermanent)
	}
	err = s.classify(ctx, "check bucket", "", err)
	if errors.Is(err, backend.ErrNotFound) {
		// HEAD answers carry no error code: a 404 here is NoSuchBucket.
		return &opError{
			msg: fmt.Sprintf("s3: bucket %q does not exist at %s (check the bucket name, the region %s and the endpoint)",
				s.bucket, s.endpointName(), s.region),
			kinds: []error{backend.ErrNotFound, backend.ErrPermanent},
			err:   err,
		}
	}
	return err
}

// ReadSSECKeyFile reads an SSE-C key: a file holding exactly 32 raw bytes,
// or the base64 of 32 bytes (surrounding whitespace ignored).
func ReadSSECKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("s3: reading SSE-C key: %w", err)
	}
	return ParseSSECKey(b, path)
}

// ParseSSECKey decodes the content of an SSE-C key file (see
// ReadSSECKeyFile); name says where it came from, for the error.
func ParseSSECKey(b []byte, name string) ([]byte, error) {
	path := name
	if len(b) == 32 {
		return b, nil
	}
	txt := strings.TrimSpace(string(b))
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawStdEncoding, base64.URLEncoding, base64.RawURLEncoding} {
		if k, err := enc.DecodeString(txt); err == nil && len(k) == 32 {
			return k, nil
		}
	}
	return nil, fmt.Errorf("s3: SSE-C key file %s must hold 32 raw bytes or the base64 of 32 bytes (got %d bytes): %w",
		path, len(b), backend.ErrPermanent)
}

// sse holds the request fields of the store's server-side encryption.
type sse struct {
	mode      SSEMode
	kmsKeyID  *string
	bucketKey *bool
	// SSE-C: algorithm, base64 key and base64 MD5 of the key.
	cAlg, cKey, cKeyMD5 *string
}

func newSSE(cfg Config) (sse, error) {
	e := sse{mode: cfg.SSE}
	if e.mode == "" {
		e.mode = SSENone
	}
	if cfg.SSE != SSEKMS && (cfg.KMSKeyID != "" || cfg.BucketKey) {
		return e, fmt.Errorf("s3: a KMS key id or bucket key needs SSE mode kms, not %q: %w", e.mode, backend.ErrPermanent)
	}
	if cfg.SSE != SSEC && cfg.SSECKey != nil {
		return e, fmt.Errorf("s3: an SSE-C key needs SSE mode c, not %q: %w", e.mode, backend.ErrPermanent)
	}
	switch e.mode {
	case SSENone, SSES3:
	case SSEKMS:
		if cfg.KMSKeyID != "" {
			e.kmsKeyID = aws.String(cfg.KMSKeyID)
		}
		if cfg.BucketKey {
			e.bucketKey = aws.Bool(true)
		}
	case SSEC:
		if len(cfg.SSECKey) != 32 {
			return e, fmt.Errorf("s3: SSE-C needs a 32-byte key, got %d bytes: %w", len(cfg.SSECKey), backend.ErrPermanent)
		}
		sum := md5.Sum(cfg.SSECKey)
		e.cAlg = aws.String("AES256")
		e.cKey = aws.String(base64.StdEncoding.EncodeToString(cfg.SSECKey))
		e.cKeyMD5 = aws.String(base64.StdEncoding.EncodeToString(sum[:]))
	default:
		return e, fmt.Errorf("s3: unknown SSE mode %q (want none, s3, kms or c): %w", cfg.SSE, backend.ErrPermanent)
	}
	return e, nil
}

// key maps a store key to the object key in the bucket.
func (s *Store) key(k string) string { return s.prefix + k }

// where names an object for messages: s3://bucket/prefix/key.
func (s *Store) where(k string) string {
	return "s3://" + s.bucket + "/" + s.prefix + k
}
