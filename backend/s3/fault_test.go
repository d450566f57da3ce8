package s3

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/internal/miniotest"
)

// faultKind is what the proxy does to one request.
type faultKind int

const (
	pass       faultKind = iota
	slowDown             // 503 SlowDown, request not forwarded
	internal             // 500 InternalError, request not forwarded
	forbidden            // 403 AccessDenied, request not forwarded
	delay                // wait, then forward
	resetBody            // forward; cut the connection (RST) after some body bytes
	stallBody            // forward; stop sending after some body bytes
	drop                 // close the connection (RST) without an answer
	respond              // answer status and body, request not forwarded
	lostAnswer           // forward, then cut the connection instead of answering
	rewrite              // forward, then answer with f.rewrite instead
)

type fault struct {
	kind  faultKind
	after int64         // resetBody, stallBody: body bytes sent first
	wait  time.Duration // delay
	// before, if set, runs just before the connection is cut (resetBody).
	before func()
	// status, header and body: the answer (respond).
	status int
	header http.Header
	body   string
	// rewrite writes the answer from the server's (rewrite).
	rewrite func(w http.ResponseWriter, resp *http.Response)
}

// seen is one request as the proxy saw it.
type seen struct {
	method, path, rng, ifMatch string
	fault                      faultKind
}

// faultProxy is a TLS reverse proxy in front of MinIO that injects faults
// chosen per request by rule. It keeps the client's Host header, so SigV4
// signatures made for the proxy's address still verify at MinIO.
type faultProxy struct {
	t      *testing.T
	srv    *httptest.Server
	target *url.URL
	tr     *http.Transport
	caFile string

	mu    sync.Mutex
	rule  func(r *http.Request) fault
	log   []seen
	conns atomic.Int64 // connections accepted
}

func newFaultProxy(t *testing.T, minio *miniotest.Server) *faultProxy {
	t.Helper()
	target, err := url.Parse(minio.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	pemCA, err := os.ReadFile(minio.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pemCA)
	p := &faultProxy{
		t:      t,
		target: target,
		tr: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool},
			MaxIdleConnsPerHost: 32,
		},
	}
	p.srv = httptest.NewUnstartedServer(p)
	p.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			p.conns.Add(1)
		}
	}
	p.srv.StartTLS()
	t.Cleanup(func() {
		p.srv.CloseClientConnections()
		p.srv.Close()
		p.tr.CloseIdleConnections()
	})
	p.caFile = filepath.Join(t.TempDir(), "proxy-ca.pem")
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: p.srv.Certificate().Raw})
	if err := os.WriteFile(p.caFile, crt, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// setRule installs the fault rule and clears the request log.
func (p *faultProxy) setRule(rule func(r *http.Request) fault) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rule = rule
	p.log = nil
}

func (p *faultProxy) requests() []seen {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]seen(nil), p.log...)
}

// config is a store configuration reaching bucket through the proxy.
func (p *faultProxy) config(srv *miniotest.Server, bucket string) Config {
	cfg := baseConfig(srv, bucket)
	cfg.Endpoint = p.srv.URL
	cfg.CABundle = p.caFile
	return cfg
}

// firstN returns a rule applying f to the first n requests that match.
func firstN(n int, match func(r *http.Request) bool, f fault) func(r *http.Request) fault {
	var count atomic.Int64
	return func(r *http.Request) fault {
		if match(r) && count.Add(1) <= int64(n) {
			return f
		}
		return fault{}
	}
}

func anyRequest(*http.Request) bool { return true }

func isGet(r *http.Request) bool {
	return r.Method == http.MethodGet && !r.URL.Query().Has("list-type")
}

func isPut(r *http.Request) bool { return r.Method == http.MethodPut }

const errorXML = `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><RequestId>fault</RequestId></Error>`

func (p *faultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	f := fault{}
	if p.rule != nil {
		f = p.rule(r)
	}
	p.log = append(p.log, seen{r.Method, r.URL.Path, r.Header.Get("Range"), r.Header.Get("If-Match"), f.kind})
	p.mu.Unlock()

	reply := func(status int, code, msg string) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(status)
		if r.Method != http.MethodHead {
			fmt.Fprintf(w, errorXML, code, msg)
		}
	}
	switch f.kind {
	case slowDown:
		reply(http.StatusServiceUnavailable, "SlowDown", "Please reduce your request rate.")
		return
	case internal:
		reply(http.StatusInternalServerError, "InternalError", "We encountered an internal error. Please try again.")
		return
	case forbidden:
		reply(http.StatusForbidden, "AccessDenied", "Access Denied.")
		return
	case respond:
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/xml")
		for k, vs := range f.header {
			w.Header()[k] = vs
		}
		w.WriteHeader(f.status)
		_, _ = io.WriteString(w, f.body)
		return
	case drop:
		rst(w)
		return
	case delay:
		select {
		case <-time.After(f.wait):
		case <-r.Context().Done():
			return
		}
	}

	out := r.Clone(r.Context())
	out.URL.Scheme, out.URL.Host = p.target.Scheme, p.target.Host
	out.Host = r.Host
	out.RequestURI = ""
	if r.ContentLength == 0 {
		out.Body = nil
	}
	resp, err := p.tr.RoundTrip(out)
	if err != nil {
		if r.Context().Err() == nil {
			reply(http.StatusBadGateway, "BadGateway", err.Error())
		}
		return
	}
	defer resp.Body.Close()
	if f.kind == lostAnswer {
		_, _ = io.Copy(io.Discard, resp.Body)
		rst(w)
		return
	}
	if f.kind == rewrite {
		f.rewrite(w, resp)
		return
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	ok := resp.StatusCode/100 == 2
	if (f.kind == resetBody || f.kind == stallBody) && ok {
		_, _ = io.CopyN(w, resp.Body, f.after)
		w.(http.Flusher).Flush()
		if f.kind == stallBody {
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return
		}
		if f.before != nil {
			f.before()
		}
		rst(w)
		return
	}
	_, _ = io.Copy(w, resp.Body)
}

// rst closes the client's connection abruptly (TCP RST, not FIN).
func rst(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*tls.Conn); ok {
		if nc, ok := tc.NetConn().(*net.TCPConn); ok {
			_ = nc.SetLinger(0)
		}
	}
	conn.Close()
}

// faultStore is a store through the proxy with short retry delays and
// timeouts, so that fault tests take seconds.
func faultStore(t *testing.T, p *faultProxy, srv *miniotest.Server, bucket string, mod func(*Config)) (*Store, error) {
	t.Helper()
	cfg := p.config(srv, bucket)
	if mod != nil {
		mod(&cfg)
	}
	to := defaultTimeouts()
	to.header, to.bodyIdle, to.call = 2*time.Second, time.Second, 3*time.Second
	to.resumeBase = 10 * time.Millisecond
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	return newStore(ctx, cfg, to, 10*time.Millisecond)
}

func countFaults(reqs []seen, k faultKind) int {
	n := 0
	for _, r := range reqs {
		if r.fault == k {
			n++
		}
	}
	return n
}

// TestTransientFaults: throttling, 5xx, resets and stalls mid-body and
// latency are retried (or resumed) and the operation succeeds.
func TestTransientFaults(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	p := newFaultProxy(t, srv)
	s, err := faultStore(t, p, srv, bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(11, 12<<20+5) // three parts
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	t.Run("SlowDown on PUTs", func(t *testing.T) {
		p.setRule(firstN(3, isPut, fault{kind: slowDown}))
		if _, err := s.Put(ctx, "big", opaque{bytes.NewReader(data)}, -1, nil); err != nil {
			t.Fatalf("Put through 3 SlowDowns: %v", err)
		}
		if n := countFaults(p.requests(), slowDown); n != 3 {
			t.Errorf("%d SlowDowns served, want 3", n)
		}
		p.setRule(firstN(2, isPut, fault{kind: slowDown}))
		if _, err := s.Put(ctx, "small", strings.NewReader("small"), 5, nil); err != nil {
			t.Fatalf("single Put through 2 SlowDowns: %v", err)
		}
	})
	t.Run("connection dropped", func(t *testing.T) {
		p.setRule(firstN(3, isPut, fault{kind: drop}))
		if _, err := s.Put(ctx, "dropped", opaque{bytes.NewReader(data)}, -1, nil); err != nil {
			t.Fatalf("multipart Put through dropped connections: %v", err)
		}
		if n := countFaults(p.requests(), drop); n != 3 {
			t.Errorf("%d connections dropped, want 3", n)
		}
		p.setRule(firstN(2, anyRequest, fault{kind: drop}))
		if got := readAll(t, s, "dropped", 0, -1); !bytes.Equal(got, data) {
			t.Fatal("content differs")
		}
	})
	t.Run("InternalError on GET and HEAD", func(t *testing.T) {
		p.setRule(firstN(4, anyRequest, fault{kind: internal}))
		if _, err := s.Stat(ctx, "big"); err != nil {
			t.Fatalf("Stat through 500s: %v", err)
		}
		if got := readAll(t, s, "big", 0, -1); !bytes.Equal(got, data) {
			t.Fatal("content differs")
		}
		if n := countFaults(p.requests(), internal); n != 4 {
			t.Errorf("%d errors served, want 4", n)
		}
	})
	t.Run("reset mid-body", func(t *testing.T) {
		p.setRule(firstN(2, isGet, fault{kind: resetBody, after: 3 << 20}))
		if got := readAll(t, s, "big", 100, -1); !bytes.Equal(got, data[100:]) {
			t.Fatal("content differs after resets")
		}
		reqs := p.requests()
		if len(reqs) != 3 || countFaults(reqs, resetBody) != 2 {
			t.Fatalf("requests %+v, want 2 broken GETs and 1 good one", reqs)
		}
		// Each re-request continues where the body broke (a reset loses
		// what was in flight, so "where" is only known to the client),
		// pinned to the first response's ETag.
		prev := int64(-1)
		for i, r := range reqs {
			var from, to int64
			if _, err := fmt.Sscanf(r.rng, "bytes=%d-%d", &from, &to); i > 0 && (err != nil || to != int64(len(data)-1)) {
				t.Errorf("GET %d: Range %q, want bytes=N-%d", i, r.rng, len(data)-1)
			}
			if i == 0 && r.rng != "bytes=100-" {
				t.Errorf("GET 0: Range %q, want bytes=100-", r.rng)
			}
			if from <= prev || from > prev+3<<20+100 {
				t.Errorf("GET %d: resumes at %d after %d: not where the previous body broke", i, from, prev)
			}
			if i > 0 && r.ifMatch == "" {
				t.Errorf("GET %d: re-request without If-Match", i)
			}
			prev = from
		}
	})
	t.Run("stall mid-body", func(t *testing.T) {
		p.setRule(firstN(1, isGet, fault{kind: stallBody, after: 1 << 20}))
		if got := readAll(t, s, "big", 0, 8<<20); !bytes.Equal(got, data[:8<<20]) {
			t.Fatal("content differs after a stall")
		}
		if reqs := p.requests(); len(reqs) != 2 || reqs[1].rng != fmt.Sprintf("bytes=%d-%d", 1<<20, 8<<20-1) {
			t.Fatalf("requests %+v, want a stalled GET and a resumed one", reqs)
		}
	})
	t.Run("latency", func(t *testing.T) {
		// Shorter than the timeouts: just slow. (Half a second, well
		// inside the 2 s header timeout: with 1 s, a loaded machine (a
		// benchmark beside CI) pushed an attempt past it.)
		p.setRule(firstN(3, anyRequest, fault{kind: delay, wait: 500 * time.Millisecond}))
		if got := readAll(t, s, "small", 0, -1); string(got) != "small" {
			t.Fatalf("read %q", got)
		}
		// Longer than the header timeout (2s): that attempt is abandoned
		// and retried.
		p.setRule(firstN(1, isGet, fault{kind: delay, wait: 4 * time.Second}))
		if got := readAll(t, s, "small", 0, -1); string(got) != "small" {
			t.Fatalf("read %q", got)
		}
		if n := len(p.requests()); n != 2 {
			t.Errorf("%d GETs, want 2 (one timed out, one retried)", n)
		}
		p.setRule(firstN(1, isPut, fault{kind: delay, wait: 5 * time.Second}))
		if _, err := s.Put(ctx, "slow", strings.NewReader("slow"), 4, nil); err != nil {
			t.Fatalf("Put after a stalled attempt: %v", err)
		}
	})
}

// TestLostCompletion: when the answer to a successful
// CompleteMultipartUpload is lost, the SDK's retry finds the upload gone
// (NoSuchUpload); the store recognises its own object by the multipart
// ETag and reports success.
func TestLostCompletion(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	p := newFaultProxy(t, srv)
	s, err := faultStore(t, p, srv, bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(31, 11<<20)
	isComplete := func(r *http.Request) bool { return r.Method == http.MethodPost && r.URL.Query().Has("uploadId") }
	p.setRule(firstN(1, isComplete, fault{kind: lostAnswer}))
	oi, err := s.Put(testCtx(t), "obj", opaque{bytes.NewReader(data)}, -1, nil)
	if err != nil {
		t.Fatalf("Put whose completion answer was lost: %v", err)
	}
	if n := countFaults(p.requests(), lostAnswer); n != 1 {
		t.Fatalf("%d completions lost, want 1", n)
	}
	st, err := s.Stat(testCtx(t), "obj")
	if err != nil || st.ETag != oi.ETag || st.Size != int64(len(data)) {
		t.Errorf("Stat = %+v, %v; want the Put's ETag %q and size %d", st, err, oi.ETag, len(data))
	}
	if got := readAll(t, s, "obj", 0, -1); !bytes.Equal(got, data) {
		t.Error("content differs")
	}
}

// TestLostConditionalPut: when the answer to a conditional PutObject that
// succeeded is lost, the SDK's retry fails its own condition (the object
// now exists, with another ETag); the store recognises its own bytes and
// reports success. A first attempt that fails its condition is a loss even
// when the object holds the same bytes.
func TestLostConditionalPut(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	p := newFaultProxy(t, srv)
	s, err := faultStore(t, p, srv, bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	isPut := func(r *http.Request) bool { return r.Method == http.MethodPut }
	put := func(key, body string, opts backend.PutOptions) (backend.ObjectInfo, error) {
		return s.PutWith(ctx, key, strings.NewReader(body), int64(len(body)), opts)
	}
	p.setRule(firstN(1, isPut, fault{kind: lostAnswer}))
	created, err := put("new", "created once", backend.PutOptions{IfNoneMatch: "*"})
	if err != nil {
		t.Fatalf("If-None-Match put whose answer was lost: %v", err)
	}
	if n := countFaults(p.requests(), lostAnswer); n != 1 {
		t.Fatalf("%d answers lost, want 1", n)
	}
	p.setRule(firstN(1, isPut, fault{kind: lostAnswer}))
	replaced, err := put("new", "replaced once", backend.PutOptions{IfMatch: created.ETag})
	if err != nil {
		t.Fatalf("If-Match put whose answer was lost: %v", err)
	}
	if st, err := s.Stat(ctx, "new"); err != nil || st.ETag != replaced.ETag {
		t.Errorf("Stat = %+v, %v; want the ETag %q", st, err, replaced.ETag)
	}
	p.setRule(func(*http.Request) fault { return fault{} })
	if _, err := put("new", "replaced once", backend.PutOptions{IfNoneMatch: "*"}); !errors.Is(err, backend.ErrPreconditionFailed) {
		t.Errorf("If-None-Match on an object with the same bytes, no retry: %v, want ErrPreconditionFailed", err)
	}
}

// TestDeleteManyReportsKeys: per-key failures in a DeleteObjects answer are
// all reported, classified, and missing keys are not failures.
func TestDeleteManyReportsKeys(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	p := newFaultProxy(t, srv)
	s, err := faultStore(t, p, srv, bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	const result = `<?xml version="1.0" encoding="UTF-8"?><DeleteResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">` +
		`<Error><Key>locked</Key><Code>AccessDenied</Code><Message>Access Denied.</Message></Error>` +
		`<Error><Key>gone</Key><Code>NoSuchKey</Code><Message>The specified key does not exist.</Message></Error>` +
		`<Error><Key>busy</Key><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>` +
		`</DeleteResult>`
	p.setRule(func(r *http.Request) fault {
		if r.Method == http.MethodPost && r.URL.Query().Has("delete") {
			return fault{kind: respond, status: http.StatusOK, body: result}
		}
		return fault{}
	})
	err = s.DeleteMany(testCtx(t), []string{"locked", "gone", "busy", "fine"})
	if err == nil {
		t.Fatal("DeleteMany with two failed keys succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "s3://"+bucket+"/locked") || !strings.Contains(msg, "s3://"+bucket+"/busy") || strings.Contains(msg, "/gone") {
		t.Errorf("error %q should name locked and busy, not gone", msg)
	}
	if !errors.Is(err, backend.ErrAccessDenied) {
		t.Errorf("error %v should match ErrAccessDenied (key locked)", err)
	}
}

// TestConnectionReuse: ranged reads that stop exactly at the end of their
// range (io.ReadFull, then Close, as the filesystem reads blocks) leave
// their connection reusable, so a run of small reads does not pay for a TLS
// handshake each.
func TestConnectionReuse(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	p := newFaultProxy(t, srv)
	s, err := faultStore(t, p, srv, bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(21, 1<<20)
	if _, err := s.Put(testCtx(t), "obj", bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	before := p.conns.Load()
	buf := make([]byte, 64<<10)
	for i := range 20 {
		off := int64(i) * 50_000
		rc, err := s.Get(testCtx(t), "obj", off, int64(len(buf)), backend.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(rc, buf); err != nil {
			t.Fatal(err)
		}
		rc.Close()
		if !bytes.Equal(buf, data[off:off+int64(len(buf))]) {
			t.Fatalf("range at %d differs", off)
		}
	}
	if n := p.conns.Load() - before; n > 2 {
		t.Errorf("20 sequential ranged reads opened %d connections, want them to reuse one", n)
	}
}

// TestPutLongerThanAnnounced: a body longer than the size given is refused
// without uploading the excess, and nothing is stored.
func TestPutLongerThanAnnounced(t *testing.T) {
	srv := server(t)
	s := newStoreT(t, baseConfig(srv, srv.NewBucket(t)))
	for _, size := range []int64{100, 6 << 20} { // single PUT, multipart
		src := newGenReader(64 << 20)
		_, err := s.Put(testCtx(t), "k", src, size, nil)
		if err == nil || !strings.Contains(err.Error(), "announced") {
			t.Errorf("Put(size %d) of a 64 MiB body: err = %v, want a size mismatch", size, err)
		}
		if src.off > size+s.partSize {
			t.Errorf("Put(size %d) read %d bytes of the body: more than needed to see the mismatch", size, src.off)
		}
		if _, err := s.Stat(testCtx(t), "k"); !errors.Is(err, backend.ErrNotFound) {
			t.Errorf("after the refused Put(size %d): Stat err = %v, want ErrNotFound", size, err)
		}
	}
}

// TestReplacedDuringResume: when the object is replaced between a broken
// body and its re-request, the read fails with ErrPreconditionFailed rather
// than splicing two versions.
func TestReplacedDuringResume(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	p := newFaultProxy(t, srv)
	s, err := faultStore(t, p, srv, bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(12, 4<<20)
	if _, err := s.Put(testCtx(t), "obj", bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	bare := srv.SDKClient(t)
	replace := func() {
		_, err := bare.PutObject(context.Background(), &s3.PutObjectInput{
			Bucket: aws.String(bucket), Key: aws.String("obj"), Body: bytes.NewReader(randomBytes(13, 4<<20)),
		})
		if err != nil {
			t.Errorf("replacing obj: %v", err)
		}
	}
	p.setRule(firstN(1, isGet, fault{kind: resetBody, after: 1 << 20, before: replace}))
	rc, err := s.Get(testCtx(t), "obj", 0, -1, backend.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	got, err := io.ReadAll(rc)
	if !errors.Is(err, backend.ErrPreconditionFailed) {
		t.Fatalf("read across a replacement: %d bytes, err %v; want ErrPreconditionFailed", len(got), err)
	}
	if !bytes.Equal(got, data[:len(got)]) {
		t.Error("bytes delivered before the failure are not the old version's")
	}
}

// TestPermanentFaults: refused credentials and a missing bucket fail at
// once (one request, no retries) with errors saying what is wrong.
func TestPermanentFaults(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	p := newFaultProxy(t, srv)

	fast := func(t *testing.T, what string, start time.Time, maxReqs int) {
		t.Helper()
		t.Logf("%s: %d request(s) in %v", what, len(p.requests()), time.Since(start).Round(time.Millisecond))
		// A hang detector with room for a loaded machine, far below what
		// ten retries with backoff would take.
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s took %v: retried?", what, d)
		}
		if n := len(p.requests()); n > maxReqs {
			t.Errorf("%s made %d requests, want at most %d (no retries)", what, n, maxReqs)
		}
	}

	t.Run("403 at New", func(t *testing.T) {
		p.setRule(func(*http.Request) fault { return fault{kind: forbidden} })
		start := time.Now()
		_, err := faultStore(t, p, srv, bucket, nil)
		t.Logf("New: %v", err)
		if !errors.Is(err, backend.ErrAccessDenied) || !backend.IsPermanent(err) || !strings.Contains(err.Error(), "access denied") {
			t.Errorf("New: err = %v, want ErrAccessDenied", err)
		}
		fast(t, "New", start, 1)
	})
	t.Run("403 on GET", func(t *testing.T) {
		p.setRule(nil)
		s, err := faultStore(t, p, srv, bucket, nil)
		if err != nil {
			t.Fatal(err)
		}
		p.setRule(func(*http.Request) fault { return fault{kind: forbidden} })
		start := time.Now()
		_, err = s.Get(testCtx(t), "k", 0, -1, backend.GetOptions{})
		if !errors.Is(err, backend.ErrAccessDenied) || !strings.Contains(err.Error(), "lack permission") {
			t.Errorf("Get: err = %v, want ErrAccessDenied", err)
		}
		fast(t, "Get", start, 1)
		start = time.Now()
		p.setRule(func(*http.Request) fault { return fault{kind: forbidden} })
		_, err = s.Put(testCtx(t), "k", opaque{bytes.NewReader(randomBytes(3, 11<<20))}, -1, nil)
		if !errors.Is(err, backend.ErrAccessDenied) {
			t.Errorf("Put: err = %v, want ErrAccessDenied", err)
		}
		fast(t, "multipart Put", start, 2) // create refused, abort refused
	})
	t.Run("missing bucket", func(t *testing.T) {
		p.setRule(nil)
		start := time.Now()
		_, err := faultStore(t, p, srv, "no-such-bucket-here", nil)
		t.Logf("New: %v", err)
		if !errors.Is(err, backend.ErrNotFound) || !errors.Is(err, backend.ErrPermanent) ||
			!strings.Contains(err.Error(), `bucket "no-such-bucket-here" does not exist`) {
			t.Errorf("New: err = %v, want a permanent ErrNotFound naming the bucket", err)
		}
		fast(t, "New", start, 1)
	})
	t.Run("bucket removed", func(t *testing.T) {
		p.setRule(nil)
		gone := srv.NewBucket(t)
		s, err := faultStore(t, p, srv, gone, nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := srv.SDKClient(t).DeleteBucket(testCtx(t), &s3.DeleteBucketInput{Bucket: aws.String(gone)}); err != nil {
			t.Fatal(err)
		}
		p.setRule(nil)
		start := time.Now()
		_, err = s.Get(testCtx(t), "k", 0, -1, backend.GetOptions{})
		if !errors.Is(err, backend.ErrNotFound) || !backend.IsPermanent(err) || !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("Get: err = %v, want a permanent ErrNotFound naming the bucket", err)
		}
		t.Logf("Get: %v", err)
		_, err = s.Put(testCtx(t), "k", strings.NewReader("x"), 1, nil)
		t.Logf("Put: %v", err)
		if !errors.Is(err, backend.ErrPermanent) || !strings.Contains(err.Error(), gone) {
			t.Errorf("Put: err = %v, want a permanent error naming the bucket", err)
		}
		fast(t, "Get and Put", start, 2)
	})
}
