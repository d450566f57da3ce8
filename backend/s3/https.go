package s3

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// HTTPS enforcement has two layers:
//
//   - At store open, the endpoint the SDK client actually resolved (from the
//     endpoint option, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, or endpoint_url
//     in the shared config file, whichever won) is checked, and a plain http
//     one is refused with a message naming the setting it came from.
//   - Every request the S3 client sends passes httpsGuard, a RoundTripper
//     inside the client's http.Client. It sees the URL of each request as it
//     goes to the wire, after every SDK middleware (one of which, the
//     legacy EndpointOptions.DisableHTTPS, rewrites the scheme late in the
//     Finalize step) and on every redirect hop the http.Client follows (the
//     SDK follows 307/308 to any URL, headers included). A middleware sees
//     only what the steps before it did, and no redirect at all, so this is
//     where the guarantee lives; the open-time check only makes the common
//     case fail early with a better message.

// configuredEndpoint returns the endpoint set explicitly by cfg.Endpoint or
// the environment ("" if neither), normalized to a URL, and the name of the
// setting it came from. The shared config file's endpoint_url is left to
// the SDK (which also honours its services sections); endpointSource names
// it afterwards.
func configuredEndpoint(cfg Config) (ep, from string, err error) {
	ep, from = cfg.Endpoint, "the endpoint option (--endpoint)"
	if ep == "" {
		ep, from = os.Getenv("AWS_ENDPOINT_URL_S3"), "AWS_ENDPOINT_URL_S3"
	}
	if ep == "" {
		ep, from = os.Getenv("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL"
	}
	if ep == "" {
		return "", "", nil
	}
	if !strings.Contains(ep, "://") {
		ep = "https://" + ep
	}
	if u, perr := url.Parse(ep); perr != nil || u.Host == "" {
		return "", "", fmt.Errorf("s3: %s %q is not a URL like https://host:port: %w", from, ep, backend.ErrPermanent)
	}
	return ep, from, nil
}

// endpointSource names, best effort, the shared-config setting that gave
// the SDK its endpoint ep when neither the option nor the environment did.
func endpointSource(awsCfg aws.Config, profile, ep string) string {
	file := os.Getenv("AWS_CONFIG_FILE")
	if file == "" {
		file = config.DefaultSharedConfigFilename()
	}
	for _, src := range awsCfg.ConfigSources {
		sc, ok := src.(config.SharedConfig)
		if !ok {
			continue
		}
		name := sc.Profile
		if name == "" {
			name = profile
		}
		if v := sc.Services.ServiceValues["s3"]["endpoint_url"]; v == ep {
			return fmt.Sprintf("endpoint_url in the s3 part of [services %s], used by profile %q of the shared config file %s",
				sc.ServicesSectionName, name, file)
		}
		if sc.BaseEndpoint == ep {
			return fmt.Sprintf("endpoint_url in profile %q of the shared config file %s", name, file)
		}
	}
	return "the AWS configuration"
}

// checkScheme refuses a plain http endpoint unless allowHTTP (which the
// caller never sets with SSE-C); from names the setting that asked for it.
func checkScheme(ep, from string, allowHTTP bool, mode SSEMode) error {
	u, err := url.Parse(ep)
	if err != nil || u.Host == "" {
		return fmt.Errorf("s3: endpoint %q from %s is not a URL like https://host:port: %w", ep, from, backend.ErrPermanent)
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		if allowHTTP {
			return nil
		}
		return httpRefusal(fmt.Sprintf("endpoint %s (from %s)", ep, from), mode)
	}
	return fmt.Errorf("s3: endpoint %q from %s: scheme must be https (or http with --allow-http): %w", ep, from, backend.ErrPermanent)
}

// httpRefusal is the error for plain http to what; http is refused only
// when not allowed, so the mode alone says which of the two reasons holds.
func httpRefusal(what string, mode SSEMode) error {
	if mode == SSEC {
		return &insecureError{msg: fmt.Sprintf("s3: %s is plain http, and SSE-C over http is always refused: "+
			"the encryption key would travel in the clear with every request; use an https:// endpoint there", what)}
	}
	return &insecureError{msg: fmt.Sprintf("s3: %s is plain http: requests, object data and metadata would travel "+
		"unencrypted and unauthenticated; change it to https://, or accept plain http explicitly with "+
		"--allow-http on a trusted network", what)}
}

// insecureError is a refusal to use plain http. It is permanent for the
// store's callers and, through RetryableError, for the SDK's retryer, which
// otherwise retries every error of the HTTP client as a connection error.
type insecureError struct{ msg string }

func (e *insecureError) Error() string        { return e.msg }
func (e *insecureError) Unwrap() error        { return backend.ErrPermanent }
func (e *insecureError) RetryableError() bool { return false }

// httpsGuard refuses, before any connection is made, every request whose
// URL is not https, unless plain http is allowed (never with SSE-C).
type httpsGuard struct {
	next     http.RoundTripper
	allow    bool    // plain http accepted (AllowHTTP and not SSE-C)
	mode     SSEMode // for the message
	endpoint string  // the configured endpoint and its source, for the message
}

func (g *httpsGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "https" || (g.allow && req.URL.Scheme == "http") {
		return g.next.RoundTrip(req)
	}
	if req.Body != nil {
		req.Body.Close() // a RoundTripper must close the body, even on error
	}
	// The query string is left out: it could carry a presigned signature.
	what := fmt.Sprintf("request %s %s://%s%s (endpoint %s)", req.Method, req.URL.Scheme, req.URL.Host, req.URL.Path, g.endpoint)
	if req.URL.Scheme != "http" {
		return nil, &insecureError{msg: fmt.Sprintf("s3: %s: scheme must be https", what)}
	}
	return nil, httpRefusal(what, g.mode)
}

// guardedClient returns an HTTP client for the S3 client: b's, with g in
// front of its transport, so that every hop of every request passes g.
func guardedClient(b *awshttp.BuildableClient, g *httpsGuard) (*http.Client, error) {
	// Freeze keeps the SDK's own client setup: its redirect policy (307
	// and 308 followed) and our transport options. (The S3 client adds
	// nothing to a non-buildable client that it would add to b: the legacy
	// defaults mode sets no timeouts, and S3 has no SDK read timeout.)
	frozen, ok := b.Freeze().(*http.Client)
	if !ok {
		return nil, fmt.Errorf("s3: BUG: the SDK's HTTP client is a %T, not an *http.Client: cannot enforce https: %w",
			b.Freeze(), backend.ErrPermanent)
	}
	c := *frozen
	g.next = c.Transport
	if g.next == nil {
		g.next = http.DefaultTransport
	}
	c.Transport = g
	return &c, nil
}
