package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/backend/local"
	"github.com/s3cryptfs/s3cryptfs/backend/s3"
)

// storeFlags are the options of the object store, shared by init and mount.
// S3 settings follow AWS conventions: the standard credential chain
// (environment, shared config and credentials files, --profile), and the
// AWS_ENDPOINT_URL_S3 / AWS_REGION / AWS_CA_BUNDLE variables.
type storeFlags struct {
	endpoint   string
	region     string
	profile    string
	caBundle   string
	pathStyle  bool
	allowHTTP  bool
	sse        string
	kmsKeyID   string
	ssecKeyFil string
}

func (s *storeFlags) register(fs *pflag.FlagSet) {
	fs.StringVar(&s.endpoint, "endpoint", "", "S3 endpoint URL (default: $AWS_ENDPOINT_URL_S3, else AWS)")
	fs.StringVar(&s.region, "region", "", "S3 region (default: from the AWS config chain, else us-east-1)")
	fs.StringVar(&s.profile, "profile", "", "AWS shared-config profile")
	fs.StringVar(&s.caBundle, "ca-bundle", "", "PEM file of CA certificates to trust (default: $AWS_CA_BUNDLE)")
	fs.BoolVar(&s.pathStyle, "path-style", false, "use path-style S3 URLs (needed by most non-AWS servers)")
	fs.BoolVar(&s.allowHTTP, "allow-http", false, "allow a plain http:// endpoint (never with --sse c)")
	fs.StringVar(&s.sse, "sse", "none", "server-side encryption: none, s3, kms or c")
	fs.StringVar(&s.kmsKeyID, "sse-kms-key-id", "", "KMS key id for --sse kms (default: the bucket's/account's default key)")
	fs.StringVar(&s.ssecKeyFil, "sse-c-key-file", "", "file with the 32-byte SSE-C key (raw or base64), for --sse c")
}

// validate checks the flags that need no network.
func (s *storeFlags) validate(spec string) error {
	switch s.sse {
	case "none", "s3", "kms", "c":
	default:
		return usagef("--sse must be none, s3, kms or c, not %q", s.sse)
	}
	if s.sse == "c" && s.ssecKeyFil == "" {
		return usagef("--sse c needs --sse-c-key-file")
	}
	if s.sse != "c" && s.ssecKeyFil != "" {
		return usagef("--sse-c-key-file is only used with --sse c")
	}
	if s.kmsKeyID != "" && s.sse != "kms" {
		return usagef("--sse-kms-key-id is only used with --sse kms")
	}
	if !isS3(spec) && s.sse != "none" {
		return usagef("--sse needs an s3:// store")
	}
	return nil
}

func isS3(spec string) bool { return strings.HasPrefix(spec, "s3://") }

// openStore opens STORE: s3://bucket[/prefix] or a local directory.
func openStore(ctx context.Context, spec string, s *storeFlags) (backend.Store, error) {
	if !isS3(spec) {
		dir, err := filepath.Abs(spec)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", spec, err)
		}
		st, err := local.New(dir)
		if err != nil {
			return nil, fmt.Errorf("store %s: %w", spec, err)
		}
		return st, nil
	}
	rest := strings.TrimPrefix(spec, "s3://")
	bucket, prefix, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return nil, usagef("store %q: no bucket (want s3://bucket[/prefix])", spec)
	}
	cfg := s3.Config{
		Bucket:    bucket,
		Prefix:    strings.Trim(prefix, "/"),
		Endpoint:  s.endpoint,
		Region:    s.region,
		Profile:   s.profile,
		PathStyle: s.pathStyle,
		AllowHTTP: s.allowHTTP,
		CABundle:  s.caBundle,
		SSE:       s3.SSEMode(s.sse),
		KMSKeyID:  s.kmsKeyID,
	}
	if s.sse == "c" {
		key, err := s.readSSECKey()
		if err != nil {
			return nil, err
		}
		cfg.SSECKey = key
	}
	// Plain http (--allow-http, never with --sse c) is enforced by the
	// store, on the endpoint from any source and on every request.
	st, err := s3.New(ctx, cfg)
	if err != nil {
		return nil, explainStoreError(spec, s.endpointName(), err)
	}
	return st, nil
}

// explainStoreError turns a failure to reach the endpoint, which the SDK
// reports after its retries inside a long chain, into one line naming the
// endpoint, the network error and what to check.
func explainStoreError(spec, endpoint string, err error) error {
	var dns *net.DNSError
	var op *net.OpError
	var cause error
	switch {
	case errors.As(err, &dns):
		cause = dns
	case errors.As(err, &op) && op.Op == "dial":
		cause = op
	default:
		return fmt.Errorf("store %s: %w", spec, err)
	}
	return fmt.Errorf("store %s: cannot reach the S3 endpoint %s (%v): check --endpoint (or AWS_ENDPOINT_URL_S3), --region and the network", spec, endpoint, cause)
}

// endpointName is the endpoint as messages name it: the option, else the
// environment the SDK reads, else AWS.
func (s *storeFlags) endpointName() string {
	for _, e := range []string{s.endpoint, os.Getenv("AWS_ENDPOINT_URL_S3"), os.Getenv("AWS_ENDPOINT_URL")} {
		if e != "" {
			return e
		}
	}
	return "AWS S3"
}

// readSSECKey reads and checks the --sse-c-key-file (mode, format).
func (s *storeFlags) readSSECKey() ([]byte, error) {
	b, err := readSecretFile(s.ssecKeyFil, "SSE-C key file")
	if err != nil {
		return nil, fmt.Errorf("--sse-c-key-file: %w", err)
	}
	key, err := s3.ParseSSECKey(b, s.ssecKeyFil)
	if err != nil {
		return nil, fmt.Errorf("--sse-c-key-file: %w", err)
	}
	return key, nil
}

// checkSSECKey reads the SSE-C key file, so that a bad one is reported
// before a passphrase is asked for (the background mount reads it again).
func (s *storeFlags) checkSSECKey() error {
	if s.sse != "c" {
		return nil
	}
	_, err := s.readSSECKey()
	return err
}
