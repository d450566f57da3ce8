package perf

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"sort"
	"sync"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	s3store "github.com/s3cryptfs/s3cryptfs/backend/s3"
)

// The bare-SDK baselines use aws-sdk-go-v2's S3 client directly, the way a
// careful program would: multipart upload with several parts in flight,
// parallel ranged GETs. The transfer manager (feature/s3/manager) does the
// same thing but is not a dependency of the module; these ~100 lines avoid
// adding one. Part size and parallelism: see sdkPartSize.
var (
	// sdkPartSize and sdkConcurrency: part size and parts in flight of the
	// baselines. The part size was the fastest of the combinations tried
	// on this machine (docs/PERFORMANCE.md), so the baseline is the best the
	// SDK does here, not merely its defaults. The parallelism is the
	// mount's own upload budget (backend/s3's parts in flight, 4, which was
	// also the best here), so that at 20 ms a round trip the SDK hides no
	// more latency behind parallel requests than the mount may.
	// S3CRYPTFS_BENCH_SDK_PART and S3CRYPTFS_BENCH_SDK_CONC override them.
	sdkPartSize    = envSize("S3CRYPTFS_BENCH_SDK_PART", 16<<20)
	sdkConcurrency = int(envSize("S3CRYPTFS_BENCH_SDK_CONC", s3store.DefaultConcurrency))
)

// envSize reads a size from the environment, def when unset or invalid.
func envSize(name string, def int64) int64 {
	if v := os.Getenv(name); v != "" {
		if n, err := parseSize(v); err == nil && n > 0 {
			return n
		}
		fmt.Fprintf(os.Stderr, "perf: ignoring %s=%q\n", name, v)
	}
	return def
}

// sdkUpload stores data under key with a parallel multipart upload (a single
// PutObject when it fits in one part) and returns once S3 has completed it.
func sdkUpload(ctx context.Context, c *s3.Client, bucket, key string, data []byte, partSize int64, conc int) error {
	partSize = max(partSize, 5<<20) // S3's minimum part size (a small S3CRYPTFS_BENCH_SDK_PART is for GETs)
	if int64(len(data)) <= partSize {
		_, err := c.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
			Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))})
		if err != nil {
			return fmt.Errorf("perf: put %s: %w", key, err)
		}
		return nil
	}
	cr, err := c.CreateMultipartUpload(ctx, &s3.CreateMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return fmt.Errorf("perf: create multipart %s: %w", key, err)
	}
	abort := func() {
		_, _ = c.AbortMultipartUpload(context.WithoutCancel(ctx), &s3.AbortMultipartUploadInput{
			Bucket: aws.String(bucket), Key: aws.String(key), UploadId: cr.UploadId})
	}
	nparts := (int64(len(data)) + partSize - 1) / partSize
	parts := make([]types.CompletedPart, nparts)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		next     = make(chan int64)
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				lo := i * partSize
				hi := min(lo+partSize, int64(len(data)))
				out, err := c.UploadPart(ctx, &s3.UploadPartInput{Bucket: aws.String(bucket), Key: aws.String(key),
					UploadId: cr.UploadId, PartNumber: aws.Int32(int32(i + 1)),
					Body: bytes.NewReader(data[lo:hi]), ContentLength: aws.Int64(hi - lo)})
				if err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("perf: upload part %d of %s: %w", i+1, key, err); cancel() })
					continue
				}
				parts[i] = types.CompletedPart{PartNumber: aws.Int32(int32(i + 1)), ETag: out.ETag,
					ChecksumCRC32: out.ChecksumCRC32}
			}
		}()
	}
feed:
	for i := range nparts {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = fmt.Errorf("perf: upload %s: %w", key, ctx.Err())
	}
	if firstErr != nil {
		abort()
		return firstErr
	}
	sort.Slice(parts, func(i, j int) bool { return *parts[i].PartNumber < *parts[j].PartNumber })
	_, err = c.CompleteMultipartUpload(ctx, &s3.CompleteMultipartUploadInput{Bucket: aws.String(bucket), Key: aws.String(key),
		UploadId: cr.UploadId, MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		abort()
		return fmt.Errorf("perf: complete multipart %s: %w", key, err)
	}
	return nil
}

// sdkDownload reads the object with parallel ranged GETs of partSize into
// dst (len(dst) = object size) and checks every range against want when want
// is not nil, as the mount benchmarks do for their reads.
func sdkDownload(ctx context.Context, c *s3.Client, bucket, key string, dst, want []byte, partSize int64, conc int) error {
	size := int64(len(dst))
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		next     = make(chan int64)
	)
	fail := func(err error) { errOnce.Do(func() { firstErr = err; cancel() }) }
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for lo := range next {
				hi := min(lo+partSize, size)
				if err := sdkGetRange(ctx, c, bucket, key, lo, dst[lo:hi]); err != nil {
					fail(err)
					continue
				}
				if want != nil && !bytes.Equal(dst[lo:hi], want[lo:hi]) {
					fail(fmt.Errorf("perf: %s: bytes [%d,%d) differ from what was written", key, lo, hi))
				}
			}
		}()
	}
feed:
	for lo := int64(0); lo < size; lo += partSize {
		select {
		case next <- lo:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = fmt.Errorf("perf: download %s: %w", key, ctx.Err())
	}
	return firstErr
}

// sdkGetRange reads len(dst) bytes of key at off.
func sdkGetRange(ctx context.Context, c *s3.Client, bucket, key string, off int64, dst []byte) error {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", off, off+int64(len(dst))-1))})
	if err != nil {
		return fmt.Errorf("perf: get %s at %d: %w", key, off, err)
	}
	defer out.Body.Close()
	if _, err := io.ReadFull(out.Body, dst); err != nil {
		return fmt.Errorf("perf: read %s at %d: %w", key, off, err)
	}
	return nil
}

// sdkGet reads a whole (small) object.
func sdkGet(ctx context.Context, c *s3.Client, bucket, key string) ([]byte, error) {
	out, err := c.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)})
	if err != nil {
		return nil, fmt.Errorf("perf: get %s: %w", key, err)
	}
	defer out.Body.Close()
	b, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, fmt.Errorf("perf: read %s: %w", key, err)
	}
	return b, nil
}

// sdkListKeys returns every key under prefix (no delimiter: the whole tree).
func sdkListKeys(ctx context.Context, c *s3.Client, bucket, prefix string) ([]string, error) {
	var keys []string
	p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(prefix)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("perf: list %s: %w", prefix, err)
		}
		for _, o := range page.Contents {
			keys = append(keys, aws.ToString(o.Key))
		}
	}
	return keys, nil
}

// sdkListDirs lists the tree under prefix the way ls -R walks it: one
// directory at a time (ListObjectsV2 with delimiter "/"), descending into
// each common prefix. It returns the number of objects listed.
func sdkListDirs(ctx context.Context, c *s3.Client, bucket, prefix string) (int, error) {
	n := 0
	dirs := []string{prefix}
	for len(dirs) > 0 {
		dir := dirs[len(dirs)-1]
		dirs = dirs[:len(dirs)-1]
		p := s3.NewListObjectsV2Paginator(c, &s3.ListObjectsV2Input{Bucket: aws.String(bucket), Prefix: aws.String(dir),
			Delimiter: aws.String("/")})
		for p.HasMorePages() {
			page, err := p.NextPage(ctx)
			if err != nil {
				return 0, fmt.Errorf("perf: list %s: %w", dir, err)
			}
			n += len(page.Contents)
			for _, cp := range page.CommonPrefixes {
				dirs = append(dirs, aws.ToString(cp.Prefix))
			}
		}
	}
	return n, nil
}

// sdkDeleteKeys deletes keys with DeleteObjects, 1,000 per request.
func sdkDeleteKeys(ctx context.Context, c *s3.Client, bucket string, keys []string) error {
	for len(keys) > 0 {
		n := min(len(keys), 1000)
		ids := make([]types.ObjectIdentifier, n)
		for i, k := range keys[:n] {
			ids[i] = types.ObjectIdentifier{Key: aws.String(k)}
		}
		out, err := c.DeleteObjects(ctx, &s3.DeleteObjectsInput{Bucket: aws.String(bucket),
			Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		if err != nil {
			return fmt.Errorf("perf: delete objects: %w", err)
		}
		if len(out.Errors) > 0 {
			return fmt.Errorf("perf: delete %s: %s", aws.ToString(out.Errors[0].Key), aws.ToString(out.Errors[0].Message))
		}
		keys = keys[n:]
	}
	return nil
}

// sdkParallel runs fn(i) for i in [0, n) on conc goroutines and returns the
// first error.
func sdkParallel(ctx context.Context, n, conc int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
		next     = make(chan int)
	)
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := fn(ctx, i); err != nil {
					errOnce.Do(func() { firstErr = err; cancel() })
				}
			}
		}()
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		firstErr = ctx.Err()
	}
	return firstErr
}
