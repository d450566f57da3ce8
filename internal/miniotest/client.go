package miniotest

import (
	"crypto/tls"
	"net/http"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
)

// SDKClient returns a bare aws-sdk-go-v2 S3 client for the server (path
// style, TLS trusting CAFile), for assertions and baselines that must not
// go through the code under test. Its transport keeps enough idle
// connections for parallel transfers.
func (s *Server) SDKClient(t testing.TB) *s3.Client {
	t.Helper()
	c, tr, err := s.newSDKClient()
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

func (s *Server) newSDKClient() (*s3.Client, *http.Transport, error) {
	pool, err := loadCA(s.CAFile)
	if err != nil {
		return nil, nil, err
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tr.MaxIdleConnsPerHost = 64
	hc := &http.Client{Transport: tr}
	c := s3.New(s3.Options{
		Region:       s.Region,
		BaseEndpoint: aws.String(s.Endpoint),
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(s.AccessKey, s.SecretKey, ""),
		HTTPClient:   hc,
		// A loaded machine can make MinIO answer 503 for a moment (it
		// initialises subsystems after it reports ready); test setup
		// should ride that out rather than fail.
		Retryer: retry.NewStandard(func(o *retry.StandardOptions) { o.MaxAttempts = 8 }),
	})
	return c, tr, nil
}
