package s3

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// opError is a classified store error: one readable message, and errors.Is
// matching both the backend sentinels it belongs to and the SDK error
// underneath.
type opError struct {
	msg   string
	kinds []error
	err   error
}

func (e *opError) Error() string   { return e.msg }
func (e *opError) Unwrap() []error { return append(append([]error(nil), e.kinds...), e.err) }

// classify turns an SDK error from operation op on key into a store error.
// The message names the operation and object, says what the failure means
// and, where it is a configuration problem, what to do about it.
func (s *Store) classify(ctx context.Context, op, key string, err error) error {
	if err == nil {
		return nil
	}
	where := s.where(key)
	if key == "" {
		where = "s3://" + s.bucket
	}
	mk := func(detail string, kinds ...error) error {
		msg := fmt.Sprintf("s3: %s %s: %s", op, where, detail)
		if detail == "" {
			msg = fmt.Sprintf("s3: %s %s: %v", op, where, err)
		} else {
			msg += " (" + err.Error() + ")"
		}
		return &opError{msg: msg, kinds: kinds, err: err}
	}
	var ie *insecureError
	if errors.As(err, &ie) {
		// The guard's own message says what to change; the SDK's wrapping
		// around it adds nothing.
		return &opError{msg: fmt.Sprintf("s3: %s %s: %s", op, where, ie.msg), kinds: []error{backend.ErrPermanent}, err: err}
	}
	if cerr := ctx.Err(); cerr != nil {
		// The SDK reports cancellation in several shapes; make sure
		// errors.Is(err, context.Canceled) holds whatever it chose.
		if errors.Is(err, cerr) {
			return mk("")
		}
		return mk(cerr.Error(), cerr)
	}

	var code, message string
	var ae smithy.APIError
	if errors.As(err, &ae) {
		code, message = ae.ErrorCode(), ae.ErrorMessage()
	}
	status := 0
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) {
		status = re.HTTPStatusCode()
	}

	switch {
	case code == "NoSuchBucket":
		return mk(fmt.Sprintf("bucket %q does not exist at %s (check the bucket name, the region %s and the endpoint)",
			s.bucket, s.endpointName(), s.region), backend.ErrNotFound, backend.ErrPermanent)
	case code == "NoSuchUpload":
		return mk("the multipart upload no longer exists (aborted, or expired by a lifecycle rule)", backend.ErrPermanent)
	case code == "NoSuchKey" || code == "NotFound" || status == http.StatusNotFound:
		return mk("not found", backend.ErrNotFound)
	case code == "ConditionalRequestConflict":
		// S3 (409): another conditional write of the key is in flight.
		// One of the two wins; this one is reported lost, which is safe
		// (the caller re-reads and retries) if occasionally pessimistic.
		return mk("precondition failed: a concurrent conditional write of the object is in progress",
			backend.ErrPreconditionFailed)
	case code == "PreconditionFailed" || status == http.StatusPreconditionFailed:
		return mk("precondition failed: the object changed (its ETag no longer matches)", backend.ErrPreconditionFailed)
	case isSSECKeyError(op, code, message, status, s.sse.mode):
		have := "no SSE-C key is configured, and the object needs one"
		if s.sse.mode == SSEC {
			have = "the configured SSE-C key is not the one the object was written with" +
				" (or the credentials lack read permission)"
		}
		return mk("access denied: the SSE-C key is wrong or missing: "+have, backend.ErrAccessDenied)
	case status == http.StatusForbidden || accessCodes[code] != "":
		hint := accessCodes[code]
		if hint == "" {
			hint = "access denied: the credentials lack permission for this request (check the IAM or bucket policy" +
				", and for SSE-KMS the key policy)"
		}
		return mk(hint, backend.ErrAccessDenied)
	case isCredentialsError(err):
		return mk(noCredentialsHelp, backend.ErrAccessDenied)
	case code == "SlowDown" || code == "InternalError" || code == "RequestTimeout" || code == "ServiceUnavailable" ||
		status == http.StatusTooManyRequests || status >= 500:
		return mk("") // transient
	case status == http.StatusMovedPermanently:
		return mk(fmt.Sprintf("the bucket is in another region than %s, or needs path-style addressing: "+
			"set the region (or PathStyle)", s.region), backend.ErrPermanent)
	case status >= 400 && status < 500:
		return mk("", backend.ErrPermanent)
	case code != "" && status == 0:
		// A modelled error without a response (rare): trust the code.
		return mk("", backend.ErrPermanent)
	}
	return mk("") // connection errors, exhausted retries on 5xx: transient
}

// accessCodes are the S3 error codes meaning the credentials were refused,
// with what to tell the user.
var accessCodes = map[string]string{
	"AccessDenied":              "access denied: the credentials lack permission for this request (check the IAM or bucket policy, and for SSE-KMS the key policy)",
	"InvalidAccessKeyId":        "access denied: the access key id is not known to the server (check AWS_ACCESS_KEY_ID or the profile)",
	"SignatureDoesNotMatch":     "access denied: the request signature does not match (wrong secret key, or a proxy altering requests)",
	"ExpiredToken":              "access denied: the session token has expired (refresh the credentials)",
	"InvalidToken":              "access denied: the session token is invalid",
	"TokenRefreshRequired":      "access denied: the session token must be refreshed",
	"AllAccessDisabled":         "access denied: all access to this object or bucket has been disabled",
	"AccountProblem":            "access denied: a problem with the AWS account prevents the request",
	"KMS.AccessDeniedException": "access denied: the credentials may not use the SSE-KMS key",
}

// isSSECKeyError recognises a read refused because the object is SSE-C
// encrypted and the request carried no key or another key. S3 and MinIO
// answer 400 InvalidRequest ("stored using a form of Server Side
// Encryption") without a key, and 403 AccessDenied with a wrong one; a HEAD
// carries no body, so there only the status is known.
func isSSECKeyError(op, code, message string, status int, mode SSEMode) bool {
	m := strings.ToLower(message)
	read := strings.HasPrefix(op, "stat") || strings.HasPrefix(op, "get") || strings.HasPrefix(op, "copy")
	switch {
	case strings.Contains(m, "server side encryption") || strings.Contains(m, "sse-c") ||
		strings.Contains(m, "customer key") || strings.Contains(m, "customer provided key") ||
		strings.Contains(m, "encryption parameters") || strings.Contains(m, "md5 hash of the key"):
		return true
	case code == "XMinioObjectTampered":
		return true
	case read && status == http.StatusBadRequest && (code == "" || code == "BadRequest"):
		// A bare 400 on a HEAD: the SSE-C case.
		return true
	case mode == SSEC && read && status == http.StatusForbidden:
		// With a wrong key MinIO and S3 say only "Access Denied".
		return true
	}
	return false
}

// isCredentialsError recognises a request that never left because no
// credentials could be resolved.
func isCredentialsError(err error) bool {
	msg := err.Error()
	return strings.Contains(msg, "failed to retrieve credentials") ||
		strings.Contains(msg, "failed to refresh cached credentials") ||
		strings.Contains(msg, "get identity:")
}

// bucketRegion returns the region S3 says the bucket lives in, from a
// HeadBucket error's x-amz-bucket-region header, if any.
func bucketRegion(err error) string {
	var re *smithyhttp.ResponseError
	if errors.As(err, &re) && re.Response != nil {
		return re.Response.Header.Get("X-Amz-Bucket-Region")
	}
	return ""
}

func (s *Store) endpointName() string {
	if s.endpoint == "" {
		return "AWS S3"
	}
	return s.endpoint
}
