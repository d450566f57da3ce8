package s3

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

// Copy copies src to dst on the server. A HEAD of src first pins the
// version (its ETag becomes the copy's x-amz-copy-source-if-match, so the
// metadata returned is the copied version's) and gives the size that
// decides between one CopyObject and a multipart copy (above 5 GiB).
func (s *Store) Copy(ctx context.Context, src, dst string, opts backend.CopyOptions) (backend.ObjectInfo, error) {
	if err := checkMeta(opts.Metadata); err != nil {
		return backend.ObjectInfo{}, fmt.Errorf("s3: copy to %s: %w", s.where(dst), err)
	}
	for attempt := 1; ; attempt++ {
		oi, err := s.copyOnce(ctx, src, dst, opts)
		// Without a caller's If-Match, a 412 only means src was replaced
		// between our HEAD and the copy: look again.
		if opts.IfMatch == "" && attempt < 3 && errors.Is(err, backend.ErrPreconditionFailed) {
			continue
		}
		return oi, err
	}
}

func (s *Store) copyOnce(ctx context.Context, src, dst string, opts backend.CopyOptions) (backend.ObjectInfo, error) {
	info, err := s.head(ctx, "copy", src, opts.IfMatch)
	if err != nil {
		return backend.ObjectInfo{}, err
	}
	meta := info.Metadata
	if opts.ReplaceMetadata {
		meta = cloneMeta(opts.Metadata)
	}
	if src == dst && !opts.ReplaceMetadata {
		return info, nil // S3 refuses a copy onto itself that changes nothing
	}
	if info.Size > s.copyThreshold() {
		return s.copyMultipart(ctx, src, dst, info, meta)
	}
	in := &s3.CopyObjectInput{
		Bucket:            aws.String(s.bucket),
		Key:               aws.String(s.key(dst)),
		CopySource:        aws.String(s.copySource(src)),
		CopySourceIfMatch: aws.String(info.ETag),
		MetadataDirective: types.MetadataDirectiveCopy,
	}
	if opts.ReplaceMetadata {
		in.MetadataDirective = types.MetadataDirectiveReplace
		in.Metadata = meta
	}
	s.sse.copy(in)
	out, err := s.client.CopyObject(ctx, in)
	if err != nil {
		return backend.ObjectInfo{}, s.classify(ctx, "copy to "+dst+" from", src, err)
	}
	oi := backend.ObjectInfo{Key: dst, Size: info.Size, Metadata: meta}
	if r := out.CopyObjectResult; r != nil {
		oi.ETag, oi.LastModified = aws.ToString(r.ETag), aws.ToTime(r.LastModified)
	}
	return oi, nil
}

// copyThreshold is the size above which Copy uses UploadPartCopy.
func (s *Store) copyThreshold() int64 {
	if s.copyLimit > 0 {
		return s.copyLimit
	}
	return maxPartSize
}

// copyMultipart copies a large object in parts of at least 512 MiB (fewer
// requests; each part is a server-side copy), Concurrency at a time.
func (s *Store) copyMultipart(ctx context.Context, src, dst string, info backend.ObjectInfo, meta map[string]string) (backend.ObjectInfo, error) {
	partSize := max(s.copyPart, (info.Size+maxParts-1)/maxParts)
	if s.copyPart == 0 {
		partSize = max(512<<20, partSize)
	}
	create := &s3.CreateMultipartUploadInput{
		Bucket:   aws.String(s.bucket),
		Key:      aws.String(s.key(dst)),
		Metadata: meta,
	}
	s.sse.create(create)
	cout, err := s.client.CreateMultipartUpload(ctx, create)
	if err != nil {
		return backend.ObjectInfo{}, s.classify(ctx, "copy to "+dst+" from", src, err)
	}
	uctx, cancel := context.WithCancel(ctx)
	defer cancel()
	up := &upload{s: s, key: dst, id: cout.UploadId, cancel: cancel}
	slots := make(chan struct{}, s.concurrency)
	var wg sync.WaitGroup
	for num, off := 1, int64(0); off < info.Size; num, off = num+1, off+partSize {
		select {
		case slots <- struct{}{}:
		case <-uctx.Done():
		}
		if uctx.Err() != nil {
			break
		}
		end := min(off+partSize, info.Size) - 1
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			in := &s3.UploadPartCopyInput{
				Bucket:            aws.String(s.bucket),
				Key:               aws.String(s.key(dst)),
				UploadId:          up.id,
				PartNumber:        aws.Int32(int32(num)),
				CopySource:        aws.String(s.copySource(src)),
				CopySourceIfMatch: aws.String(info.ETag),
				CopySourceRange:   aws.String(fmt.Sprintf("bytes=%d-%d", off, end)),
			}
			s.sse.uploadPartCopy(in)
			out, err := s.client.UploadPartCopy(uctx, in)
			if err != nil {
				up.fail(s.classify(uctx, fmt.Sprintf("copy (part %d) to %s from", num, dst), src, err))
				return
			}
			up.mu.Lock()
			up.parts = append(up.parts, types.CompletedPart{PartNumber: aws.Int32(int32(num)), ETag: out.CopyPartResult.ETag})
			up.mu.Unlock()
		}()
	}
	wg.Wait()
	err = up.failure()
	if err == nil && ctx.Err() != nil {
		err = fmt.Errorf("s3: copy to %s from %s: %w", dst, s.where(src), ctx.Err())
	}
	if err == nil {
		var oi backend.ObjectInfo
		if oi, err = up.complete(ctx, info.Size, backend.PutOptions{Metadata: meta}); err == nil {
			return oi, nil
		}
	}
	up.abort(ctx)
	return backend.ObjectInfo{}, err
}

// copySource is the x-amz-copy-source value for key: bucket/key with every
// byte but unreserved characters and '/' percent-encoded (S3 decodes it;
// '+' must not be left to mean a space).
func (s *Store) copySource(key string) string {
	const hex = "0123456789ABCDEF"
	src := s.bucket + "/" + s.key(key)
	var b strings.Builder
	b.Grow(len(src) * 3 / 2)
	for i := 0; i < len(src); i++ {
		c := src[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '_' || c == '.' || c == '~' || c == '/' {
			b.WriteByte(c)
		} else {
			b.WriteByte('%')
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&15])
		}
	}
	return b.String()
}

// Delete removes key; a missing key is not an error.
func (s *Store) Delete(ctx context.Context, key string) error {
	_, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(s.bucket), Key: aws.String(s.key(key))})
	if err != nil {
		err = s.classify(ctx, "delete", key, err)
		if errors.Is(err, backend.ErrNotFound) && !errors.Is(err, backend.ErrPermanent) {
			return nil // NoSuchKey; a missing bucket stays an error
		}
	}
	return err
}

// deleteBatch is S3's limit of keys per DeleteObjects request.
const deleteBatch = 1000

// DeleteMany removes keys with DeleteObjects, 1,000 keys a request, several
// requests in flight. Keys that could not be deleted are all reported (the
// error lists the first few); missing keys are not an error.
func (s *Store) DeleteMany(ctx context.Context, keys []string) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3: delete many: %w", err)
	}
	keys = slices.Clone(keys)
	slices.Sort(keys)
	keys = slices.Compact(keys)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	slots := make(chan struct{}, s.concurrency)
	for batch := range slices.Chunk(keys, deleteBatch) {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Go(func() {
			defer func() { <-slots }()
			if e := s.deleteBatch(ctx, batch); len(e) > 0 {
				mu.Lock()
				errs = append(errs, e...)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("s3: delete many: %w", err)
	}
	if len(errs) == 0 {
		return nil
	}
	if len(errs) > 10 {
		errs = append(errs[:10], fmt.Errorf("s3: delete many: and %d more keys failed", len(errs)-10))
	}
	return errors.Join(errs...)
}

func (s *Store) deleteBatch(ctx context.Context, keys []string) []error {
	ids := make([]types.ObjectIdentifier, len(keys))
	for i, k := range keys {
		ids[i] = types.ObjectIdentifier{Key: aws.String(s.key(k))}
	}
	out, err := s.client.DeleteObjects(ctx, &s3.DeleteObjectsInput{
		Bucket: aws.String(s.bucket),
		Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)},
	})
	if err != nil {
		return []error{s.classify(ctx, fmt.Sprintf("delete many (%d keys from %q)", len(keys), keys[0]), "", err)}
	}
	var errs []error
	for _, e := range out.Errors {
		code := aws.ToString(e.Code)
		if code == "NoSuchKey" {
			continue
		}
		key := strings.TrimPrefix(aws.ToString(e.Key), s.prefix)
		kinds := []error{backend.ErrPermanent}
		switch {
		case accessCodes[code] != "":
			kinds = []error{backend.ErrAccessDenied}
		case code == "InternalError" || code == "SlowDown" || code == "ServiceUnavailable":
			kinds = nil // transient
		}
		errs = append(errs, &opError{
			msg:   fmt.Sprintf("s3: delete %s: %s: %s", s.where(key), code, aws.ToString(e.Message)),
			kinds: kinds,
			err:   errors.New(code),
		})
	}
	return errs
}

// List calls fn for every key under prefix in lexical order, rolling keys
// up into common prefixes at delim. ListObjectsV2 returns objects and
// common prefixes as two sorted lists per page; they are merged so fn sees
// one ordered sequence.
func (s *Store) List(ctx context.Context, prefix, delim string, fn backend.ListFunc) error {
	in := &s3.ListObjectsV2Input{Bucket: aws.String(s.bucket), Prefix: aws.String(s.prefix + prefix)}
	if delim != "" {
		in.Delimiter = aws.String(delim)
	}
	p := s3.NewListObjectsV2Paginator(s.client, in)
	for p.HasMorePages() {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("s3: list %s: %w", s.where(prefix), err)
		}
		page, err := p.NextPage(ctx)
		if err != nil {
			return s.classify(ctx, "list", prefix, err)
		}
		objs, pfxs := page.Contents, page.CommonPrefixes
		for len(objs) > 0 || len(pfxs) > 0 {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("s3: list %s: %w", s.where(prefix), err)
			}
			if len(pfxs) == 0 || len(objs) > 0 && aws.ToString(objs[0].Key) < aws.ToString(pfxs[0].Prefix) {
				o := objs[0]
				objs = objs[1:]
				err = fn(&backend.ObjectInfo{
					Key:          strings.TrimPrefix(aws.ToString(o.Key), s.prefix),
					Size:         aws.ToInt64(o.Size),
					ETag:         aws.ToString(o.ETag),
					LastModified: aws.ToTime(o.LastModified),
				}, "")
			} else {
				cp := pfxs[0]
				pfxs = pfxs[1:]
				err = fn(nil, strings.TrimPrefix(aws.ToString(cp.Prefix), s.prefix))
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}
