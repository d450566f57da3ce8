package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// backoff is exponential backoff with jitter: attempt n waits a random time
// in [d/2, d] with d = base·2^(n-1), capped at max. Throttling (503
// SlowDown) starts five times higher, as S3 asks clients to slow down.
type backoff struct {
	base, max time.Duration
}

var throttles = retry.IsErrorThrottles(retry.DefaultThrottles)

func (b backoff) BackoffDelay(attempt int, err error) (time.Duration, error) {
	base := b.base
	if base <= 0 {
		base = 200 * time.Millisecond
	}
	if throttles.IsErrorThrottle(err).Bool() {
		base *= 5
	}
	d := b.max
	if attempt < 30 {
		d = min(base<<(attempt-1), b.max)
	}
	return d/2 + rand.N(d/2+1), nil
}

// isRetryableExtra retries what the SDK's standard list leaves out: a
// connection that dies while the response body is being read (io.EOF or
// io.ErrUnexpectedEOF inside a deserialization error) and our own attempt
// timeouts. Every S3 request the store makes is idempotent, so repeating
// one is safe.
func isRetryableExtra(err error) aws.Ternary {
	var ate *attemptTimeoutError
	switch {
	case errors.As(err, &ate):
		return aws.TrueTernary
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return aws.UnknownTernary
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return aws.TrueTernary
	}
	return aws.UnknownTernary
}

// attemptTimeoutError reports one attempt that ran out of time. It is
// retryable and deliberately does not wrap the context error underneath, or
// the SDK would take it for a cancellation by the caller and stop.
type attemptTimeoutError struct {
	op    string
	limit time.Duration
	cause string
}

func (e *attemptTimeoutError) Error() string {
	return fmt.Sprintf("%s: no answer within %v (%s)", e.op, e.limit, e.cause)
}
func (e *attemptTimeoutError) RetryableError() bool { return true }
func (e *attemptTimeoutError) Timeout() bool        { return true }

// attemptTimeout bounds every attempt of every request (it sits inside the
// SDK's retry loop), so a server or network that stops answering costs one
// attempt, not a hung call. GetObject is bounded only until its response
// headers arrive; its body is guarded by the reader's idle timeout instead.
type attemptTimeout struct {
	to *timeouts
}

func (*attemptTimeout) ID() string { return "S3CryptfsAttemptTimeout" }

func (m *attemptTimeout) HandleFinalize(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
	middleware.FinalizeOutput, middleware.Metadata, error,
) {
	op := middleware.GetOperationName(ctx)
	if op == "GetObject" {
		return m.headerPhase(ctx, op, in, next)
	}
	limit := m.to.call
	switch op {
	case "PutObject", "UploadPart":
		if req, ok := in.Request.(*smithyhttp.Request); ok {
			n := req.ContentLength
			if n <= 0 {
				// aws-chunked bodies (trailing checksums) carry the length here.
				fmt.Sscan(req.Header.Get("X-Amz-Decoded-Content-Length"), &n) //nolint:errcheck // 0 when absent
			}
			if n < 0 {
				n = maxPartSize
			}
			limit += time.Duration(n/m.to.minRate) * time.Second
		}
	case "CopyObject", "UploadPartCopy", "CompleteMultipartUpload":
		limit = m.to.copy
	}
	actx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	out, md, err := next.HandleFinalize(actx, in)
	if err != nil && ctx.Err() == nil && errors.Is(actx.Err(), context.DeadlineExceeded) {
		err = &attemptTimeoutError{op: op, limit: limit, cause: err.Error()}
	}
	return out, md, err
}

// headerPhase runs a GetObject attempt whose context is cancelled if the
// response headers take longer than the header timeout. Once they have
// arrived the body streams under that context, which ends when the caller's
// context does (Store.Get gives every request its own).
func (m *attemptTimeout) headerPhase(ctx context.Context, op string, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
	middleware.FinalizeOutput, middleware.Metadata, error,
) {
	actx, cancel := context.WithCancel(ctx)
	var fired atomic.Bool
	timer := time.AfterFunc(m.to.header, func() {
		fired.Store(true)
		cancel()
	})
	out, md, err := next.HandleFinalize(actx, in)
	if timer.Stop() && err == nil {
		return out, md, nil
	}
	if err != nil {
		cancel()
		if fired.Load() && ctx.Err() == nil {
			err = &attemptTimeoutError{op: op, limit: m.to.header, cause: err.Error()}
		}
	}
	// Headers came just as the timer fired: the body is cancelled, and the
	// reader will re-request it.
	return out, md, err
}
