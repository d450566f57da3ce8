package fs

import (
	"context"
	"errors"
	"syscall"

	"github.com/s3cryptfs/s3cryptfs/backend"
	"github.com/s3cryptfs/s3cryptfs/cipher"
	"github.com/s3cryptfs/s3cryptfs/fs/content"
)

// errno is the one place where errors become syscall.Errno. Everything the
// user cannot act on from the errno alone is logged with the object key.
func (f *FS) errno(op, key string, err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, backend.ErrNotFound):
		return syscall.ENOENT
	case errors.Is(err, content.ErrFileTooBig):
		// The caller's request (a write or truncate past the maximum
		// file size), not a fault: not logged. Also an object too large
		// to address, which the listing already logged.
		return syscall.EFBIG
	case errors.Is(err, cipher.ErrCorrupt):
		f.log.Error("corrupt object: authentication failed", "op", op, "object", key, "err", err)
		return syscall.EIO
	case errors.Is(err, cipher.ErrWrongKey):
		f.log.Error("object encrypted under another key", "op", op, "object", key, "err", err)
		return syscall.EIO
	case errors.Is(err, backend.ErrAccessDenied):
		f.log.Error("access denied by the store (credentials, or SSE-C key mismatch)", "op", op, "object", key, "err", err)
		return syscall.EACCES
	case errors.Is(err, backend.ErrPreconditionFailed):
		f.log.Warn("object changed by another writer while in use", "op", op, "object", key, "err", err)
		return syscall.EIO
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		f.log.Warn("operation cancelled", "op", op, "object", key, "err", err)
		return syscall.EINTR
	default:
		f.log.Error("store error", "op", op, "object", key, "err", err)
		return syscall.EIO
	}
}
