// Package backend defines Store, the one small interface between s3cryptfs and
// the place its objects live, and the error classes every store reports.
//
// A Store only ever sees ciphertext (or, with client-side encryption turned
// off, whatever the filesystem hands it); it knows nothing about files,
// blocks or keys. Implementations live in subpackages: s3 (the product) and
// local (a directory). Keys are relative to the store's own root or prefix and
// use '/' as separator; a key ending in '/' is an ordinary (usually empty)
// object, used by the filesystem as a directory marker.
package backend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"
)

// ObjectInfo describes one stored object.
type ObjectInfo struct {
	Key          string
	Size         int64
	ETag         string // opaque; changes on every write of the key
	LastModified time.Time
	// Metadata is the object's user metadata (x-amz-meta-* on S3). Keys are
	// lower-case ASCII without the x-amz-meta- prefix. List results leave it
	// nil: only Stat, Put and Copy fill it.
	Metadata map[string]string
}

// GetOptions qualify a ranged read.
type GetOptions struct {
	// IfMatch, when not empty, makes the read fail with ErrPreconditionFailed
	// unless the object's current ETag equals it.
	IfMatch string
}

// CopyOptions qualify a server-side copy.
type CopyOptions struct {
	// ReplaceMetadata makes the destination carry Metadata instead of the
	// source's user metadata (S3's MetadataDirective REPLACE).
	ReplaceMetadata bool
	Metadata        map[string]string
	// IfMatch, when not empty, makes the copy fail with ErrPreconditionFailed
	// unless the source's current ETag equals it.
	IfMatch string
}

// PutOptions qualify a Put: metadata and the conditions of a conditional
// write. A conditional write is atomic against every other write of the key
// (Put, PutWith, Copy, Delete), in this process and any other: of two writers
// that read the same ETag and both write with IfMatch set to it, exactly one
// succeeds.
type PutOptions struct {
	// Metadata is the object's user metadata, as for Put.
	Metadata map[string]string
	// IfMatch, when not empty, makes the write fail with
	// ErrPreconditionFailed unless the key exists and its current ETag
	// equals it (a missing key fails too: errors.Is(err, ErrNotFound)
	// holds then as well).
	IfMatch string
	// IfNoneMatch "*" makes the write fail with ErrPreconditionFailed if the
	// key exists: create, never replace. Any other non-empty value is
	// refused (ErrPermanent), as S3 does.
	IfNoneMatch string
}

// Conditional reports whether opts carry a condition.
func (o PutOptions) Conditional() bool { return o.IfMatch != "" || o.IfNoneMatch != "" }

// CheckPutOptions refuses conditions no store supports (both set, or an
// IfNoneMatch other than "*"); stores call it first.
func CheckPutOptions(o PutOptions) error {
	switch {
	case o.IfNoneMatch != "" && o.IfNoneMatch != "*":
		return fmt.Errorf("IfNoneMatch %q: only \"*\" is supported: %w", o.IfNoneMatch, ErrPermanent)
	case o.IfNoneMatch != "" && o.IfMatch != "":
		return fmt.Errorf("IfMatch and IfNoneMatch together: %w", ErrPermanent)
	}
	return nil
}

// ListFunc is called once per listed entry, in lexical key order. For an
// object, obj is set and prefix is empty; for a common prefix (a "directory"
// when listing with a delimiter) prefix is set, ending in the delimiter. A
// non-nil error stops the listing and is returned by List.
type ListFunc func(obj *ObjectInfo, prefix string) error

// Store is a flat namespace of immutable-while-written objects.
//
// Contract (every implementation; backend/storetest checks it):
//   - Every method honours ctx: a cancelled context ends the call promptly
//     with an error wrapping ctx.Err().
//   - Errors are classified with the sentinels below so callers can use
//     errors.Is; an unclassified error is transient.
//   - A successful Put or Copy is durable when it returns, and replaces the
//     key atomically: readers see the old object or the new one, never a mix.
//   - Methods are safe for concurrent use.
type Store interface {
	// Stat returns the object's size, ETag, modification time and metadata,
	// or ErrNotFound.
	Stat(ctx context.Context, key string) (ObjectInfo, error)

	// Get returns a reader over bytes [off, off+length) of the object;
	// length < 0 means to the end. A range that runs past the end is cut at
	// the end, and one that starts at or past the end yields an empty reader
	// (not an error). The caller must Close the reader. Errors: ErrNotFound,
	// ErrPreconditionFailed (opts.IfMatch), ErrAccessDenied.
	Get(ctx context.Context, key string, off, length int64, opts GetOptions) (io.ReadCloser, error)

	// Put stores everything r yields under key with the given user metadata.
	// size is the exact length when known, or -1 to stream: the store then
	// uploads in parts, several in flight, holding in memory no more than the
	// parts in flight, so an object of any size can be written from a pipe.
	// If r fails, or ctx is cancelled, nothing is stored (an incomplete
	// multipart upload is aborted) and the error is returned.
	Put(ctx context.Context, key string, r io.Reader, size int64, meta map[string]string) (ObjectInfo, error)

	// PutWith is Put with options: Put(ctx, key, r, size, meta) is
	// PutWith(ctx, key, r, size, PutOptions{Metadata: meta}). With a
	// condition (opts.IfMatch, opts.IfNoneMatch) the check and the replace
	// are one atomic step; a failed condition stores nothing and returns
	// ErrPreconditionFailed. Conditions work for streamed bodies (size -1)
	// too: S3 checks them when the multipart upload completes, so the
	// whole body is uploaded before a lost race is known.
	PutWith(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) (ObjectInfo, error)

	// Copy copies src to dst on the server side (dst may equal src, to
	// replace metadata). Objects over the single-request copy limit are
	// copied in parts. Without opts.ReplaceMetadata dst keeps src's metadata.
	Copy(ctx context.Context, src, dst string, opts CopyOptions) (ObjectInfo, error)

	// Delete removes key. Deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error

	// DeleteMany removes every key, in as few requests as the store allows.
	// Missing keys are not an error.
	DeleteMany(ctx context.Context, keys []string) error

	// List calls fn for every key that starts with prefix, across every page.
	// With a non-empty delimiter, keys that contain the delimiter after the
	// prefix are rolled up into one common prefix each (S3 semantics).
	List(ctx context.Context, prefix, delimiter string, fn ListFunc) error
}

// Error classes. Stores wrap their errors so that errors.Is(err, ErrX) holds;
// the message keeps the store's own detail.
var (
	// ErrNotFound: the key (or, for S3, the bucket) does not exist.
	ErrNotFound = errors.New("not found")
	// ErrPreconditionFailed: an If-Match condition did not hold, usually
	// because the object was replaced since its ETag was read.
	ErrPreconditionFailed = errors.New("precondition failed")
	// ErrAccessDenied: credentials are missing or refused, or an SSE-C key
	// does not match the object's.
	ErrAccessDenied = errors.New("access denied")
	// ErrPermanent: retrying will not help (bad request, invalid
	// configuration, missing bucket). ErrNotFound, ErrPreconditionFailed and
	// ErrAccessDenied are permanent too; IsPermanent reports all four.
	ErrPermanent = errors.New("permanent error")
)

// IsPermanent reports whether retrying err cannot succeed.
func IsPermanent(err error) bool {
	return errors.Is(err, ErrPermanent) || errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrPreconditionFailed) || errors.Is(err, ErrAccessDenied) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}
