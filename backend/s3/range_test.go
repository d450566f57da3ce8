package s3

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// zeros reads as endless zero bytes without allocating.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// rawAnswer returns a rewrite that answers with the server's status and
// headers, changed by mod, and then body(resp), written raw on the
// connection so that the headers may disagree with the body (net/http's
// ResponseWriter would not send more than the Content-Length it was given).
func rawAnswer(mod func(h http.Header), body func(resp *http.Response) io.Reader) func(http.ResponseWriter, *http.Response) {
	return func(w http.ResponseWriter, resp *http.Response) {
		h := resp.Header.Clone()
		if mod != nil {
			mod(h)
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(http.ErrAbortHandler)
		}
		defer conn.Close()
		_ = conn.SetWriteDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(brw, "HTTP/1.1 %s\r\n", resp.Status)
		_ = h.Write(brw)
		_, _ = brw.WriteString("\r\n")
		_, _ = io.Copy(brw, body(resp))
		_ = brw.Flush()
	}
}

func setHeader(k, v string) func(http.Header) {
	return func(h http.Header) {
		if v == "" {
			h.Del(k)
		} else {
			h.Set(k, v)
		}
	}
}

func both(fs ...func(http.Header)) func(http.Header) {
	return func(h http.Header) {
		for _, f := range fs {
			f(h)
		}
	}
}

const hugeBody = 50 << 20

func huge(*http.Response) io.Reader { return io.LimitReader(zeros{}, hugeBody) }

// TestGetLongerThanAsked: a server that answers a 100-byte range with
// 50 MiB (announced or not) is refused before the body is read: Get or the
// read fails with a permanent error naming the object, and the reader's
// heap use stays far below the body's size. Answers at the wrong offset,
// or shorter than asked but not at the object's end, are refused too; a
// body shorter than its Content-Length is resumed and, if it never
// arrives, fails.
func TestGetLongerThanAsked(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	p := newFaultProxy(t, srv)
	s, err := faultStore(t, p, srv, bucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx := testCtx(t)
	data := randomBytes(5, 1000)
	if _, err := s.Put(ctx, "obj", bytes.NewReader(data), int64(len(data)), nil); err != nil {
		t.Fatal(err)
	}
	const off, length = 200, 100
	where := s.where("obj")
	// net/http logs the first bytes of an answer's excess (up to 64 KiB,
	// escaped) when it arrives on an idle connection: noise here.
	log.SetOutput(io.Discard)
	t.Cleanup(func() { log.SetOutput(os.Stderr) })
	bigLength := setHeader("Content-Length", strconv.Itoa(hugeBody))

	cases := []struct {
		name    string
		rewrite func(http.ResponseWriter, *http.Response)
		want    string // in the error; "" = no error, length bytes
		// permanent: the error must be (every refusal is; a short body
		// is retried as a broken connection).
		permanent bool
	}{
		{"50 MiB with its Content-Length", rawAnswer(bigLength, huge), "more than asked for", true},
		{"50 MiB with a matching Content-Range", rawAnswer(both(bigLength,
			setHeader("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+hugeBody-1, off+hugeBody))), huge),
			"more than asked for", true},
		{"50 MiB chunked, no Content-Length", func(w http.ResponseWriter, resp *http.Response) {
			for k, vs := range resp.Header {
				w.Header()[k] = vs
			}
			w.Header().Del("Content-Length")
			w.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(w, huge(resp))
		}, "without Content-Length", true},
		// net/http stops at the announced length: the reader takes its 100
		// bytes and nothing more.
		{"50 MiB behind a Content-Length of 100", rawAnswer(nil, huge), "", false},
		{"whole object, Range ignored", rawAnswer(both(setHeader("Content-Range", ""),
			setHeader("Content-Length", strconv.Itoa(len(data)))),
			func(*http.Response) io.Reader { return bytes.NewReader(data) }), "more than asked for", true},
		{"wrong offset", rawAnswer(setHeader("Content-Range", fmt.Sprintf("bytes 0-%d/%d", length-1, len(data))),
			func(r *http.Response) io.Reader { return r.Body }), "does not match", true},
		{"shorter, not at the end", rawAnswer(both(setHeader("Content-Length", "50"),
			setHeader("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, off+49, len(data)))),
			func(r *http.Response) io.Reader { return io.LimitReader(r.Body, 50) }), "not at the end of the object", true},
		// Each answer brings half of what it announces, then the
		// connection closes: the reader re-requests the rest until one
		// brings nothing.
		{"always shorter than its Content-Length", rawAnswer(nil,
			func(r *http.Response) io.Reader { return io.LimitReader(r.Body, r.ContentLength/2) }), "connection broke", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p.setRule(func(r *http.Request) fault {
				if isGet(r) {
					return fault{kind: rewrite, rewrite: tc.rewrite}
				}
				return fault{}
			})
			defer p.setRule(nil)

			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			var got []byte
			rc, err := s.Get(ctx, "obj", off, length, backend.GetOptions{})
			if err == nil {
				got, err = io.ReadAll(rc) // as fs/content does for a whole small object
				rc.Close()
			}
			runtime.ReadMemStats(&after)
			grew := after.TotalAlloc - before.TotalAlloc
			t.Logf("err: %v; %d bytes read; heap allocated meanwhile: %.2f MiB", err, len(got), float64(grew)/(1<<20))

			// Buffering the 50 MiB body would allocate at least that
			// much; the refusals take a few hundred KiB (TLS, SDK). (The
			// short bodies take a dozen requests, each a new TLS
			// connection: not a case for this bound.)
			if strings.HasPrefix(tc.name, "50 MiB") && grew > 8<<20 {
				t.Fatalf("%d bytes allocated during the read: the body was buffered", grew)
			}
			switch {
			case tc.want == "":
				if err != nil || len(got) != length {
					t.Fatalf("read %d bytes of a %d-byte range, err %v", len(got), length, err)
				}
			case err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), where):
				t.Fatalf("err = %v, want an error naming %s and saying %q", err, where, tc.want)
			case tc.permanent && !errors.Is(err, backend.ErrPermanent):
				t.Fatalf("err = %v, want a permanent error", err)
			case !bytes.HasPrefix(data[off:off+length], got):
				t.Fatalf("the bytes read before the error are not the object's")
			}
		})
	}

	// The same checks hold for the re-request that resumes a broken body:
	// its answer must bring exactly the rest of the range.
	for _, tc := range []struct {
		name    string
		rewrite func(http.ResponseWriter, *http.Response)
		want    string
	}{
		{"re-request answered with 50 MiB", rawAnswer(bigLength, huge), "more than asked for"},
		{"re-request answered short, as if the object ended", rawAnswer(both(setHeader("Content-Length", "30"),
			setHeader("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off+50, off+79, off+80))),
			func(r *http.Response) io.Reader { return io.LimitReader(r.Body, 30) }), "must return the rest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var n atomic.Int64
			p.setRule(func(r *http.Request) fault {
				switch {
				case !isGet(r):
					return fault{}
				case n.Add(1) == 1:
					return fault{kind: resetBody, after: 50}
				}
				return fault{kind: rewrite, rewrite: tc.rewrite}
			})
			defer p.setRule(nil)
			runtime.GC()
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			rc, err := s.Get(ctx, "obj", off, length, backend.GetOptions{})
			if err != nil {
				t.Fatalf("Get: %v (the first answer is MinIO's)", err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			runtime.ReadMemStats(&after)
			grew := after.TotalAlloc - before.TotalAlloc
			t.Logf("err: %v; %d bytes read; heap allocated meanwhile: %.2f MiB", err, len(got), float64(grew)/(1<<20))
			if grew > 8<<20 {
				t.Fatalf("%d bytes allocated during the read: the body was buffered", grew)
			}
			if err == nil || !errors.Is(err, backend.ErrPermanent) || !strings.Contains(err.Error(), tc.want) ||
				!strings.Contains(err.Error(), where) {
				t.Fatalf("err = %v, want a permanent error naming %s and saying %q", err, where, tc.want)
			}
			if n.Load() != 2 || !bytes.Equal(got, data[off:off+50]) {
				t.Fatalf("%d GETs, %d bytes read; want 2 GETs and the 50 bytes before the break", n.Load(), len(got))
			}
		})
	}

	// The proxy's answers pass unchanged: the checks accept an honest
	// server, ranges running past the end included.
	for _, r := range [][2]int64{{off, length}, {950, 100}, {0, -1}, {990, -1}} {
		want := data[r[0]:]
		if r[1] >= 0 {
			want = want[:min(r[1], int64(len(want)))]
		}
		if got := readAll(t, s, "obj", r[0], r[1]); !bytes.Equal(got, want) {
			t.Fatalf("Get(%d, %d): %d bytes, want %d", r[0], r[1], len(got), len(want))
		}
	}
}

func TestParseContentRange(t *testing.T) {
	good := map[string][3]int64{
		"bytes 0-99/1000":  {0, 99, 1000},
		"bytes 5-5/6":      {5, 5, 6},
		"bytes 100-199/*":  {100, 199, -1},
		"bytes 0-0/1":      {0, 0, 1},
		"bytes 10-1009/1x": {0, 0, 0}, // bad total
	}
	for s, w := range good {
		f, l, tot, ok := parseContentRange(s)
		if w == [3]int64{} {
			if ok {
				t.Errorf("%q accepted", s)
			}
			continue
		}
		if !ok || f != w[0] || l != w[1] || tot != w[2] {
			t.Errorf("%q: %d %d %d %v, want %v", s, f, l, tot, ok, w)
		}
	}
	for _, s := range []string{"", "bytes */1000", "bytes 9-5/10", "bytes 0-10/10", "items 0-1/2", "bytes -1-5/10"} {
		if _, _, _, ok := parseContentRange(s); ok {
			t.Errorf("%q accepted", s)
		}
	}
}

// TestBoundedBody: the wrapper delivers at most its length and fails on
// more, whatever the reader underneath does.
func TestBoundedBody(t *testing.T) {
	b := &boundedBody{rc: io.NopCloser(io.LimitReader(zeros{}, 1<<20)), left: 100, where: "s3://b/k"}
	got, err := io.ReadAll(b)
	if len(got) != 100 || err == nil || !errors.Is(err, backend.ErrPermanent) || !strings.Contains(err.Error(), "s3://b/k") {
		t.Fatalf("a longer body: %d bytes, err %v; want 100 bytes and a permanent error naming the object", len(got), err)
	}
	b = &boundedBody{rc: io.NopCloser(strings.NewReader("exactly")), left: 7}
	if got, err := io.ReadAll(b); string(got) != "exactly" || err != nil {
		t.Fatalf("an exact body: %q, %v", got, err)
	}
}
