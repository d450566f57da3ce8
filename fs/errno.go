package fs

import (
	"context"
	"errors"
	"log/slog"
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
	case errors.Is(err, content.ErrExists):
		// An O_EXCL create, mkdir, symlink or rename lost to another
		// mount of the vault: nothing of ours was stored.
		f.objLog(op, key).Warn("created exclusively, but another writer stored this name first: not stored", "err", err)
		return syscall.EEXIST
	case errors.Is(err, cipher.ErrCorrupt):
		f.objLog(op, key).Error("corrupt object: authentication failed", "err", err)
		return syscall.EIO
	case errors.Is(err, cipher.ErrWrongKey):
		f.objLog(op, key).Error("object encrypted under another key", "err", err)
		return syscall.EIO
	case errors.Is(err, backend.ErrAccessDenied):
		f.objLog(op, key).Error("access denied by the store (credentials, or SSE-C key mismatch)", "err", err)
		return syscall.EACCES
	case errors.Is(err, backend.ErrPreconditionFailed):
		f.objLog(op, key).Warn("object changed by another writer while in use", "err", err)
		return syscall.EIO
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		f.objLog(op, key).Warn("operation cancelled", "err", err)
		return syscall.EINTR
	default:
		f.objLog(op, key).Error("store error", "err", err)
		return syscall.EIO
	}
}

// objLog is the logger for a failed operation on the object key: it names
// the key and, with encrypted names, the file's path (the key alone tells
// the user nothing).
func (f *FS) objLog(op, key string) *slog.Logger {
	lg := f.log.With("op", op, "object", key)
	if p := f.paths.path(key); p != "" {
		lg = lg.With("path", p)
	}
	return lg
}
