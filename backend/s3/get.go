package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// maxResumes bounds how many times in a row a broken GET body is
// re-requested without receiving a single byte.
const maxResumes = maxAttempts

// Get returns a reader over [off, off+length) of key (length < 0: to the
// end). The reader re-requests the rest of the range if the connection
// breaks or stalls, with If-Match on the ETag of the first response, so a
// read never mixes two versions of the object: if the object was replaced
// meanwhile the reader fails with ErrPreconditionFailed.
func (s *Store) Get(ctx context.Context, key string, off, length int64, opts backend.GetOptions) (io.ReadCloser, error) {
	if off < 0 {
		return nil, fmt.Errorf("s3: get %s: negative offset %d: %w", s.where(key), off, backend.ErrPermanent)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("s3: get %s: %w", s.where(key), err)
	}
	if length == 0 {
		// Nothing to read, but a missing key or a stale If-Match must
		// still be reported.
		if _, err := s.head(ctx, "get", key, opts.IfMatch); err != nil {
			return nil, err
		}
		return http.NoBody, nil
	}
	r := &reader{s: s, ctx: ctx, key: key, pos: off, end: -1, etag: opts.IfMatch}
	if length > 0 {
		r.end = off + length
	}
	if err := r.open(); err != nil {
		if errors.Is(err, errRangeNotSatisfiable) {
			return s.emptyAfterCheck(ctx, key, opts.IfMatch)
		}
		return nil, err
	}
	return r, nil
}

// errRangeNotSatisfiable is open's report of a 416: the range starts at or
// past the end of the object.
var errRangeNotSatisfiable = errors.New("range not satisfiable")

// emptyAfterCheck answers a read that starts at or past the end: an empty
// reader, once a HEAD has confirmed an If-Match condition (a 416 answer
// does not say whether it held).
func (s *Store) emptyAfterCheck(ctx context.Context, key, ifMatch string) (io.ReadCloser, error) {
	if ifMatch != "" {
		if _, err := s.head(ctx, "get", key, ifMatch); err != nil {
			return nil, err
		}
	}
	return http.NoBody, nil
}

// reader streams one ranged GET and resumes it after failures. Read is
// for one goroutine; Close may be called from another to abort a read.
type reader struct {
	s       *Store
	ctx     context.Context // the caller's
	key     string
	pos     int64  // next offset to deliver
	end     int64  // exclusive end; -1 until the first response says
	etag    string // If-Match for every request after the first (and the first, if the caller gave one)
	resumes int    // consecutive re-requests without progress
	opened  bool   // a response has been accepted: end is the object's, not just the caller's
	err     error  // sticky
	idle    *time.Timer

	mu     sync.Mutex         // guards body and cancel against Close and the idle timer
	body   io.ReadCloser      // nil between requests
	cancel context.CancelFunc // ends the current request
	stuck  atomic.Bool        // the idle timer fired
	closed atomic.Bool
}

// open issues the GET for [pos, end) and installs its body.
func (r *reader) open() error {
	s := r.s
	rctx, cancel := context.WithCancel(r.ctx)
	in := &s3.GetObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(r.key))}
	if r.etag != "" {
		in.IfMatch = aws.String(r.etag)
	}
	switch {
	case r.end >= 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-%d", r.pos, r.end-1))
	case r.pos > 0:
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", r.pos))
	}
	s.sse.get(in)
	out, err := s.client.GetObject(rctx, in)
	if err != nil {
		cancel()
		if isInvalidRange(err) {
			return errRangeNotSatisfiable
		}
		return s.classify(r.ctx, "get", r.key, err)
	}
	if out.ContentLength == nil {
		// Without a length a truncated body could pass for a whole one.
		cancel()
		out.Body.Close()
		return fmt.Errorf("s3: get %s: response without Content-Length: %w", s.where(r.key), backend.ErrPermanent)
	}
	n := *out.ContentLength
	if err := r.checkAnswer(in.Range != nil, aws.ToString(out.ContentRange), n); err != nil {
		cancel()
		out.Body.Close() // unread: nothing of a wrong answer is buffered
		return err
	}
	if r.etag == "" {
		r.etag = aws.ToString(out.ETag)
	}
	r.end = r.pos + n
	r.opened = true
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed.Load() {
		cancel()
		out.Body.Close()
		return r.closedErr()
	}
	r.body, r.cancel = &boundedBody{rc: out.Body, left: n, where: s.where(r.key)}, cancel
	return nil
}

// checkAnswer refuses a GET answer that does not cover exactly the bytes
// asked for, before its body is read: the server's word is not trusted
// over the request, or a faulty or hostile server could make a reader of
// 100 bytes take in gigabytes, or hand over bytes from the wrong offset.
// n is the answer's Content-Length, contentRange its Content-Range.
//
// An answer may be shorter than asked only on the first request, and only
// where the object ends (a read past the end); a re-request must return
// exactly the rest that the first answer announced.
func (r *reader) checkAnswer(ranged bool, contentRange string, n int64) error {
	want := int64(-1) // bytes asked for; -1: to the end of the object
	if r.end >= 0 {
		want = r.end - r.pos
	}
	bad := func(why string) error {
		asked := fmt.Sprintf("bytes %d-", r.pos)
		if want >= 0 {
			asked += fmt.Sprint(r.end - 1)
		}
		return fmt.Errorf("s3: get %s: asked for %s, the server answered %d bytes (Content-Range %q): %s: %w",
			r.s.where(r.key), asked, n, contentRange, why, backend.ErrPermanent)
	}
	if want >= 0 && n > want {
		return bad("more than asked for")
	}
	if r.opened && n != want {
		return bad("a re-request must return the rest announced by the first answer")
	}
	if !ranged {
		return nil // the whole object, whatever its size
	}
	start, last, total, ok := parseContentRange(contentRange)
	switch {
	case !ok && r.pos == 0:
		// The server ignored the Range and sent the object from its
		// start, which is where we asked to start; its length is
		// checked above.
		return nil
	case !ok:
		return bad("no valid Content-Range: the server ignored the Range and the body would start at the wrong offset")
	case start != r.pos || last-start+1 != n:
		return bad("Content-Range does not match the range asked for and the Content-Length")
	case (want < 0 || n < want) && last+1 != total:
		// Accepting it would end the read early as if the object ended.
		return bad("shorter than asked for, but not at the end of the object")
	}
	return nil
}

// parseContentRange parses "bytes first-last/total" (total "*": -1).
func parseContentRange(s string) (first, last, total int64, ok bool) {
	var tot string
	if n, err := fmt.Sscanf(s, "bytes %d-%d/%s", &first, &last, &tot); err != nil || n != 3 {
		return 0, 0, 0, false
	}
	total = -1
	if tot != "*" {
		if _, err := fmt.Sscan(tot, &total); err != nil {
			return 0, 0, 0, false
		}
	}
	if first < 0 || last < first || (total >= 0 && last >= total) {
		return 0, 0, 0, false
	}
	return first, last, total, true
}

// boundedBody delivers at most the announced length of a GET body and
// fails if the server sends more, so that no reader ever takes in more
// than it asked for. (net/http already stops at the Content-Length; this
// does not rely on it, or on whatever wraps the body in the SDK.)
type boundedBody struct {
	rc    io.ReadCloser
	left  int64
	where string
}

func (b *boundedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		n, err := b.rc.Read(one[:])
		if n > 0 {
			return 0, fmt.Errorf("s3: get %s: the body is longer than its announced length: %w", b.where, backend.ErrPermanent)
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.rc.Read(p)
	b.left -= int64(n)
	return n, err
}

func (b *boundedBody) Close() error { return b.rc.Close() }

func (r *reader) closedErr() error {
	return fmt.Errorf("s3: get %s: reader closed", r.s.where(r.key))
}

func (r *reader) Read(p []byte) (int, error) {
	for {
		switch {
		case r.err != nil:
			return 0, r.err
		case r.closed.Load():
			return 0, r.closedErr()
		case r.pos >= r.end:
			return 0, io.EOF
		}
		r.mu.Lock()
		body := r.body
		r.mu.Unlock()
		if body == nil {
			if err := r.reopen(); err != nil {
				r.err = err
				return 0, err
			}
			continue
		}
		n, err := r.readBody(body, p)
		r.pos += int64(n)
		if n > 0 {
			r.resumes = 0
		}
		if r.pos >= r.end && (err == nil || err == io.EOF) {
			r.finish(body)
			return n, nil // io.EOF on the next call
		}
		if err == nil {
			return n, nil
		}
		// The body ended early or broke.
		r.release()
		switch {
		case r.closed.Load():
			r.err = r.closedErr()
		case r.ctx.Err() != nil:
			r.err = fmt.Errorf("s3: get %s: %w", r.s.where(r.key), r.ctx.Err())
		case r.pos >= r.end:
			// Everything arrived but the body still failed (a checksum
			// mismatch on the whole object): nothing to re-request.
			r.err = fmt.Errorf("s3: get %s: %w", r.s.where(r.key), err)
		default:
			r.resumes++
			if r.resumes > maxResumes {
				r.err = fmt.Errorf("s3: get %s: connection broke %d times at offset %d without progress, last: %w",
					r.s.where(r.key), maxResumes, r.pos, err)
			}
		}
		if r.err != nil {
			return n, r.err
		}
		if n > 0 {
			return n, nil // re-request on the next Read
		}
	}
}

// readBody reads from body with the idle timer armed: if nothing arrives
// within the idle timeout the request is cancelled and the read fails, to
// be resumed.
func (r *reader) readBody(body io.Reader, p []byte) (int, error) {
	if r.idle == nil {
		r.idle = time.AfterFunc(r.s.timeouts.bodyIdle, r.onIdle)
	} else {
		r.idle.Reset(r.s.timeouts.bodyIdle)
	}
	n, err := body.Read(p)
	r.idle.Stop()
	if err != nil && r.stuck.Swap(false) {
		err = fmt.Errorf("no data for %v: %w", r.s.timeouts.bodyIdle, err)
	}
	return n, err
}

func (r *reader) onIdle() {
	r.stuck.Store(true)
	r.mu.Lock()
	if r.cancel != nil {
		r.cancel()
	}
	r.mu.Unlock()
}

// reopen waits a backoff and re-requests the rest of the range.
func (r *reader) reopen() error {
	if r.resumes > 0 {
		d := backoff{base: r.s.timeouts.resumeBase, max: 10 * time.Second}
		delay, _ := d.BackoffDelay(r.resumes, nil)
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.ctx.Done():
			t.Stop()
			return fmt.Errorf("s3: get %s: %w", r.s.where(r.key), r.ctx.Err())
		}
	}
	err := r.open()
	if errors.Is(err, errRangeNotSatisfiable) {
		// The object got shorter under the same ETag: impossible unless
		// the server misbehaves.
		return fmt.Errorf("s3: get %s: object ended before offset %d on re-request: %w", r.s.where(r.key), r.pos, err)
	}
	return err
}

// finish ends a body that has delivered all its bytes. net/http hands the
// connection back to the pool only once the body has reported io.EOF; it
// normally does so with the last bytes, but a wrapper (the SDK's checksum
// reader, for one) may report it on the next call, which a caller reading
// exactly its range never makes. One more read settles it; at the end of
// the announced length it returns at once.
func (r *reader) finish(body io.Reader) {
	var one [1]byte
	_, _ = body.Read(one[:])
	r.release()
}

// release closes the current body and ends its request.
func (r *reader) release() {
	r.mu.Lock()
	body, cancel := r.body, r.cancel
	r.body, r.cancel = nil, nil
	r.mu.Unlock()
	if body != nil {
		body.Close()
	}
	if cancel != nil {
		cancel()
	}
}

// Close ends the read; it may be called while a Read is blocked, which then
// fails.
func (r *reader) Close() error {
	r.closed.Store(true)
	r.release()
	return nil
}

// isInvalidRange reports a 416 Range Not Satisfiable.
func isInvalidRange(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) && ae.ErrorCode() == "InvalidRange" {
		return true
	}
	var re *smithyhttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable
}

// head runs HeadObject (with If-Match when given) and returns the object's
// description; op names the caller's operation in errors.
func (s *Store) head(ctx context.Context, op, key, ifMatch string) (backend.ObjectInfo, error) {
	in := &s3.HeadObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key))}
	if ifMatch != "" {
		in.IfMatch = aws.String(ifMatch)
	}
	s.sse.head(in)
	out, err := s.client.HeadObject(ctx, in)
	if err != nil {
		return backend.ObjectInfo{}, s.classify(ctx, op, key, err)
	}
	return backend.ObjectInfo{
		Key:          key,
		Size:         aws.ToInt64(out.ContentLength),
		ETag:         aws.ToString(out.ETag),
		LastModified: aws.ToTime(out.LastModified),
		Metadata:     cloneMeta(out.Metadata),
	}, nil
}

// Stat describes key.
func (s *Store) Stat(ctx context.Context, key string) (backend.ObjectInfo, error) {
	return s.head(ctx, "stat", key, "")
}

// cloneMeta returns a fresh, non-nil copy of m with lower-case keys (S3
// header names are case-insensitive; the contract promises lower case).
func cloneMeta(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[lower(k)] = v
	}
	return out
}

func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			b := []byte(s)
			for j := i; j < len(b); j++ {
				if 'A' <= b[j] && b[j] <= 'Z' {
					b[j] += 'a' - 'A'
				}
			}
			return string(b)
		}
	}
	return s
}
