package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go/middleware"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// maxObjectSize is S3's limit on one object.
const maxObjectSize = 5 << 40

// smallBody is the size under which a single PUT reads into a buffer of its
// own rather than a pooled part buffer.
const smallBody = 1 << 20

// Put stores r under key. A body of known size up to the part size goes up
// in one PutObject; anything else is a multipart upload whose parts are
// read into pooled buffers and sent Concurrency at a time, so memory is
// bounded by Concurrency+1 parts whatever the object size. On any failure,
// or when ctx ends, the multipart upload is aborted and nothing is stored.
//
// A stream of unknown size (size < 0) uses parts of PartSize for its first
// 1,000 parts, then doubles the part size every 1,000 parts, so it can
// reach S3's 5 TiB object limit within 10,000 parts; memory per upload
// grows with the part size accordingly (only beyond 1,000 parts).
func (s *Store) Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (backend.ObjectInfo, error) {
	return s.PutWith(ctx, key, r, size, backend.PutOptions{Metadata: meta})
}

// PutWith implements backend.Store: Put with S3's conditional writes.
// IfMatch and IfNoneMatch go on the PutObject, or on the
// CompleteMultipartUpload of a multipart upload (where S3 checks them), so
// a lost race costs the upload but stores nothing.
func (s *Store) PutWith(ctx context.Context, key string, r io.Reader, size int64, opts backend.PutOptions) (backend.ObjectInfo, error) {
	meta := opts.Metadata
	if err := backend.CheckPutOptions(opts); err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("s3: put %s: %w", s.where(key), err)
	}
	if err := ctx.Err(); err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("s3: put %s: %w", s.where(key), err)
	}
	if err := checkMeta(meta); err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("s3: put %s: %w", s.where(key), err)
	}
	if size > maxObjectSize {
		return backend.ObjectInfo{}, fmt.Errorf("s3: put %s: %d bytes exceed S3's 5 TiB object limit: %w",
			s.where(key), size, backend.ErrPermanent)
	}
	partSize := s.partSize
	if size > 0 {
		// Known size: parts big enough to stay within 10,000, in MiB.
		need := (size + maxParts - 1) / maxParts
		partSize = max(partSize, (need+(1<<20)-1)&^((1<<20)-1))
	}
	if size >= 0 && size <= partSize {
		return s.putKnownSmall(ctx, key, r, size, opts)
	}

	if size >= 0 {
		// Read one byte past the announced size at most: enough to
		// refuse a longer body without uploading all of it.
		r = io.LimitReader(r, size+1)
	}
	// Read the first part: a stream that ends within it needs no multipart
	// upload.
	buf := s.bufs.get(partSize)
	n, err := io.ReadFull(r, buf)
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		defer s.bufs.put(buf)
		if size >= 0 {
			return backend.ObjectInfo{}, fmt.Errorf("s3: put %s: body ended after %d of %d bytes", s.where(key), n, size)
		}
		return s.putObject(ctx, key, buf[:n], opts)
	case err != nil:
		s.bufs.put(buf)
		return backend.ObjectInfo{}, fmt.Errorf("s3: put %s: reading data: %w", s.where(key), err)
	}
	return s.putMultipart(ctx, key, r, size, opts, partSize, buf)
}

// checkMeta refuses user metadata S3 cannot carry, before any request:
// names travel as x-amz-meta-NAME headers (lower-case letters, digits and
// -_. here, as the contract promises lower case) and values must be
// printable US-ASCII, or the request fails in confusing ways (a signature
// mismatch, a header rejected by net/http).
func checkMeta(meta map[string]string) error {
	for k, v := range meta {
		if k == "" {
			return fmt.Errorf("metadata with an empty name: %w", backend.ErrPermanent)
		}
		for i := 0; i < len(k); i++ {
			if c := k[i]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.') {
				return fmt.Errorf("metadata name %q: only a-z, 0-9, '-', '_' and '.' are allowed: %w", k, backend.ErrPermanent)
			}
		}
		for i := 0; i < len(v); i++ {
			if c := v[i]; c < 0x20 || c > 0x7e {
				return fmt.Errorf("metadata %s: value %q is not printable US-ASCII (encode it first): %w", k, v, backend.ErrPermanent)
			}
		}
	}
	return nil
}

// putKnownSmall uploads a body of known size that fits one part.
func (s *Store) putKnownSmall(ctx context.Context, key string, r io.Reader, size int64, opts backend.PutOptions) (backend.ObjectInfo, error) {
	var buf []byte
	if size < smallBody {
		buf = make([]byte, size)
	} else {
		buf = s.bufs.get(size)
		defer s.bufs.put(buf)
	}
	if n, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
			return backend.ObjectInfo{}, fmt.Errorf("s3: put %s: body ended after %d of %d bytes", s.where(key), n, size)
		}
		return backend.ObjectInfo{}, fmt.Errorf("s3: put %s: reading data: %w", s.where(key), err)
	}
	var one [1]byte
	if n, _ := io.ReadFull(r, one[:]); n > 0 {
		return backend.ObjectInfo{}, fmt.Errorf("s3: put %s: body is longer than the %d bytes announced", s.where(key), size)
	}
	return s.putObject(ctx, key, buf, opts)
}

// conditionErr adds ErrPreconditionFailed to the 404 S3 answers an If-Match
// write of a missing key with, as the backend contract promises.
func conditionErr(err error, opts backend.PutOptions) error {
	if opts.IfMatch != "" && errors.Is(err, backend.ErrNotFound) && !errors.Is(err, backend.ErrPermanent) &&
		!errors.Is(err, backend.ErrPreconditionFailed) {
		return fmt.Errorf("%w (If-Match %s on a missing object): %w", err, opts.IfMatch, backend.ErrPreconditionFailed)
	}
	return err
}

// countAttempts counts the attempts of one request (its middleware sits
// inside the SDK's retry loop).
func countAttempts(n *atomic.Int32) func(*s3.Options) {
	return func(o *s3.Options) {
		o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
			return st.Finalize.Insert(middleware.FinalizeMiddlewareFunc("S3CryptfsCountAttempts",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (
					middleware.FinalizeOutput, middleware.Metadata, error,
				) {
					n.Add(1)
					return next.HandleFinalize(ctx, in)
				}), "Retry", middleware.After)
		})
	}
}

// condString is S3's optional string for a condition.
func condString(v string) *string {
	if v == "" {
		return nil
	}
	return aws.String(v)
}

// putObject stores data with one PutObject.
func (s *Store) putObject(ctx context.Context, key string, data []byte, opts backend.PutOptions) (backend.ObjectInfo, error) {
	meta := opts.Metadata
	if err := ctx.Err(); err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("s3: put %s: %w", s.where(key), err)
	}
	in := &s3.PutObjectInput{
		Bucket:        aws.String(s.bucket),
		Key:           aws.String(s.key(key)),
		Body:          bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))),
		Metadata:      meta,
		IfMatch:       condString(opts.IfMatch),
		IfNoneMatch:   condString(opts.IfNoneMatch),
	}
	s.sse.put(in)
	var attempts atomic.Int32
	var optFns []func(*s3.Options)
	if opts.Conditional() {
		optFns = append(optFns, countAttempts(&attempts))
	}
	out, err := s.client.PutObject(ctx, in, optFns...)
	if err != nil {
		err = conditionErr(s.classify(ctx, "put", key, err), opts)
		if attempts.Load() > 1 && errors.Is(err, backend.ErrPreconditionFailed) {
			// The SDK retries a request whose answer was lost; if an
			// earlier attempt had in fact stored the object, the retry
			// finds that write and fails the condition. The object is
			// ours if it holds exactly our bytes: its ETag is their MD5
			// (for SSE-S3 and no SSE; with SSE-C or SSE-KMS it is not,
			// and the failure stands). Only after a retry: a first
			// attempt that fails its condition lost, even if the object
			// happens to hold the same bytes.
			sum := md5.Sum(data)
			if st, herr := s.head(ctx, "put", key, ""); herr == nil && st.Size == int64(len(data)) &&
				st.ETag == fmt.Sprintf(`"%x"`, sum[:]) {
				return backend.ObjectInfo{
					Key: key, Size: int64(len(data)), ETag: st.ETag,
					LastModified: time.Now(), Metadata: cloneMeta(meta),
				}, nil
			}
		}
		return backend.ObjectInfo{}, err
	}
	return backend.ObjectInfo{
		Key: key, Size: int64(len(data)), ETag: aws.ToString(out.ETag),
		LastModified: time.Now(), Metadata: cloneMeta(meta),
	}, nil
}

// partSizeFor returns the size of part number n (1-based) of a stream of
// unknown length: base for the first 1,000 parts, doubling every 1,000.
func partSizeFor(base int64, n int) int64 {
	return min(base<<((n-1)/1000), maxPartSize)
}

// putMultipart uploads r as a multipart upload whose first part, of
// partSize bytes, is already in first.
func (s *Store) putMultipart(ctx context.Context, key string, r io.Reader, size int64, opts backend.PutOptions,
	partSize int64, first []byte,
) (backend.ObjectInfo, error) {
	meta := opts.Metadata
	create := &s3.CreateMultipartUploadInput{
		Bucket:            aws.String(s.bucket),
		Key:               aws.String(s.key(key)),
		Metadata:          meta,
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	}
	s.sse.create(create)
	cout, err := s.client.CreateMultipartUpload(ctx, create)
	if err != nil {
		s.bufs.put(first)
		return backend.ObjectInfo{}, s.classify(ctx, "put", key, err)
	}
	up := &upload{s: s, key: key, id: cout.UploadId}
	uctx, cancel := context.WithCancel(ctx)
	defer cancel()
	up.cancel = cancel

	// At most Concurrency parts upload while the next one is read: with
	// the buffer being filled, Concurrency+1 part buffers in all.
	slots := make(chan struct{}, s.concurrency)
	var wg sync.WaitGroup
	total := int64(0)
	buf, n := first, len(first)
	for num := 1; ; num++ {
		select {
		case slots <- struct{}{}:
		case <-uctx.Done():
		}
		if uctx.Err() != nil {
			s.bufs.put(buf)
			break
		}
		total += int64(n)
		wg.Add(1)
		go func(num int, part []byte, buf []byte) {
			defer wg.Done()
			defer func() { <-slots }()
			defer s.bufs.put(buf)
			up.sendPart(uctx, num, part)
		}(num, buf[:n], buf)
		if n < len(buf) {
			break // a short part is the last
		}
		if num == maxParts {
			if size < 0 {
				// Peek whether there is more: the limit only matters then.
				var one [1]byte
				if m, _ := io.ReadFull(r, one[:]); m > 0 {
					up.fail(fmt.Errorf("s3: put %s: stream exceeds %d parts (object too large)", s.where(key), maxParts))
				}
			}
			break
		}
		next := partSize
		if size < 0 {
			next = partSizeFor(partSize, num+1)
		}
		buf = s.bufs.get(next)
		n, err = io.ReadFull(r, buf)
		if errors.Is(err, io.EOF) {
			s.bufs.put(buf)
			break // the stream ended on a part boundary
		}
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			s.bufs.put(buf)
			up.fail(fmt.Errorf("s3: put %s: reading data: %w", s.where(key), err))
			break
		}
	}
	wg.Wait()

	err = up.failure()
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("s3: put %s: %w", s.where(key), ctx.Err())
	}
	if err == nil && size >= 0 && total != size {
		err = fmt.Errorf("s3: put %s: body had %d bytes, %d announced", s.where(key), total, size)
	}
	if err == nil {
		var oi backend.ObjectInfo
		if oi, err = up.complete(ctx, total, opts); err == nil {
			return oi, nil
		}
	}
	up.abort(ctx)
	return backend.ObjectInfo{}, err
}

// upload is one multipart upload in progress.
type upload struct {
	s      *Store
	key    string
	id     *string
	cancel context.CancelFunc

	mu    sync.Mutex
	parts []types.CompletedPart
	err   error // the first failure
}

func (u *upload) sendPart(ctx context.Context, num int, data []byte) {
	in := &s3.UploadPartInput{
		Bucket:            aws.String(u.s.bucket),
		Key:               aws.String(u.s.key(u.key)),
		UploadId:          u.id,
		PartNumber:        aws.Int32(int32(num)),
		Body:              bytes.NewReader(data),
		ContentLength:     aws.Int64(int64(len(data))),
		ChecksumAlgorithm: types.ChecksumAlgorithmCrc32,
	}
	u.s.sse.uploadPart(in)
	out, err := u.s.client.UploadPart(ctx, in)
	if err != nil {
		u.fail(u.s.classify(ctx, fmt.Sprintf("put (part %d)", num), u.key, err))
		return
	}
	u.mu.Lock()
	u.parts = append(u.parts, types.CompletedPart{
		PartNumber: aws.Int32(int32(num)), ETag: out.ETag, ChecksumCRC32: out.ChecksumCRC32,
	})
	u.mu.Unlock()
}

// fail records the first error and stops the other parts.
func (u *upload) fail(err error) {
	u.mu.Lock()
	if u.err == nil {
		u.err = err
	}
	u.mu.Unlock()
	u.cancel()
}

func (u *upload) failure() error {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.err
}

func (u *upload) complete(ctx context.Context, size int64, opts backend.PutOptions) (backend.ObjectInfo, error) {
	meta := opts.Metadata
	parts := slices.SortedFunc(slices.Values(u.parts), func(a, b types.CompletedPart) int {
		return int(aws.ToInt32(a.PartNumber) - aws.ToInt32(b.PartNumber))
	})
	in := &s3.CompleteMultipartUploadInput{
		Bucket:          aws.String(u.s.bucket),
		Key:             aws.String(u.s.key(u.key)),
		UploadId:        u.id,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts},
		IfMatch:         condString(opts.IfMatch),
		IfNoneMatch:     condString(opts.IfNoneMatch),
	}
	u.s.sse.complete(in)
	oi := backend.ObjectInfo{Key: u.key, Size: size, LastModified: time.Now(), Metadata: cloneMeta(meta)}
	out, err := u.s.client.CompleteMultipartUpload(ctx, in)
	if err != nil {
		err = conditionErr(u.s.classify(ctx, "put (complete)", u.key, err), opts)
		// Completing is the one request that is not idempotent: if the
		// answer to a completion that succeeded was lost, the retry finds
		// the upload gone. The object is then ours if its ETag is the one
		// S3 derives from our parts.
		if strings.Contains(err.Error(), "NoSuchUpload") {
			if want := multipartETag(parts); want != "" {
				if st, herr := u.s.head(ctx, "put (complete)", u.key, ""); herr == nil && st.ETag == want && st.Size == size {
					oi.ETag = st.ETag
					return oi, nil
				}
			}
		}
		return backend.ObjectInfo{}, err
	}
	oi.ETag = aws.ToString(out.ETag)
	return oi, nil
}

// multipartETag is the ETag S3 (and MinIO) give an object completed from
// parts: the MD5 of the parts' binary MD5s, then "-" and the part count.
// It returns "" if a part ETag is not a hex MD5 (some SSE modes).
func multipartETag(parts []types.CompletedPart) string {
	h := md5.New()
	for _, p := range parts {
		b, err := hex.DecodeString(strings.Trim(aws.ToString(p.ETag), `"`))
		if err != nil || len(b) != md5.Size {
			return ""
		}
		h.Write(b)
	}
	return fmt.Sprintf(`"%x-%d"`, h.Sum(nil), len(parts))
}

// abort discards the upload's parts. It runs even when ctx is cancelled
// (that is usually why it runs), bounded in time; if it fails the parts
// linger until a lifecycle rule removes them, which is harmless but costs
// storage, so the bucket should have an AbortIncompleteMultipartUpload rule.
func (u *upload) abort(ctx context.Context) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
	defer cancel()
	_, _ = u.s.client.AbortMultipartUpload(actx, &s3.AbortMultipartUploadInput{
		Bucket: aws.String(u.s.bucket), Key: aws.String(u.s.key(u.key)), UploadId: u.id,
	})
}

// bufferPool recycles part buffers between parts and uploads, so a
// streamed upload allocates its Concurrency+1 buffers once instead of one
// per part. It keeps at most max idle buffers, and drops them all after
// idleTrim without use, so an idle store holds no part memory.
//
// (A sync.Pool would be simpler, but it empties at every garbage
// collection: the dropped buffers stay counted in the heap until the next
// cycle while fresh ones are allocated, which doubles peak memory during a
// long upload.)
type bufferPool struct {
	free  chan []byte
	mu    sync.Mutex
	timer *time.Timer
}

const idleTrim = 30 * time.Second

func newBufferPool(max int) *bufferPool {
	p := &bufferPool{free: make(chan []byte, max)}
	p.timer = time.AfterFunc(idleTrim, p.trim)
	return p
}

// get returns a buffer of length size.
func (p *bufferPool) get(size int64) []byte {
	for {
		select {
		case b := <-p.free:
			if int64(cap(b)) >= size {
				return b[:size]
			}
			// A smaller buffer from before a part size change: drop it.
		default:
			return make([]byte, size)
		}
	}
}

func (p *bufferPool) put(b []byte) {
	select {
	case p.free <- b[:cap(b)]:
	default: // enough idle buffers already
	}
	p.mu.Lock()
	p.timer.Reset(idleTrim)
	p.mu.Unlock()
}

// trim drops the idle buffers.
func (p *bufferPool) trim() {
	for {
		select {
		case <-p.free:
		default:
			return
		}
	}
}
