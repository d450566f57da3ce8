package content

// Notes for the filesystem tree (the caller of this package):
//
//   - Keep one *File per inode while it has open handles (and while it is
//     dirty); every handle gets its own *Handle from File.NewHandle and
//     closes it on release. Handle.Close does not sync.
//   - flush/fsync/release call File.Sync(ctx, meta) and report its error
//     (EIO; ENOSPC is only ever returned by WriteAt, when the spool disk is
//     full). meta nil means "keep the stored metadata"; pass the full map
//     (mode, uid, gid, mtime) when it changed: a clean file then costs one
//     server-side Copy, a dirty one carries it in its upload.
//   - Sync on a clean file with unchanged meta is free (no request, unless
//     the File was opened from listing info without metadata: one Stat).
//   - Rename (file or directory): Sync first, then Copy+Delete, then
//     File.SetKey(newKey) and File.Refresh(copyInfo) for every open File
//     that moved. That pair is taken as "same bytes, new address": adopted
//     even if the file became dirty meanwhile, cache kept. SetKey alone
//     keeps the old ETag, and reads (If-Match) fail wherever the store gave
//     the copy a new ETag (mem, local, S3 multipart copies).
//   - A streaming upload starts with the metadata the File had when the
//     stream began (Create's meta, or the stored one). If Sync's meta
//     differs (a new mtime, typically), the object gets one extra
//     server-side Copy after the upload; for objects over 5 GiB that is a
//     multipart copy. Taking mtime from LastModified for such files would
//     avoid it.
//   - Refresh(info) when Stat/List shows a new ETag for a clean file; it is
//     ignored while the file is dirty or being synced (local state wins).
//   - Errors: errors.Is(err, cipher.ErrCorrupt) -> EIO (already logged, once,
//     with the key and block); backend.ErrPreconditionFailed from ReadAt ->
//     the object was replaced behind our back (ESTALE or EIO; Refresh and
//     retry is the way to read the new version); backend.ErrNotFound,
//     ErrAccessDenied pass through wrapped.
//   - Engine.Close aborts uploads still streaming: sync every dirty file
//     before closing the engine.
//   - A file written sequentially from empty streams to the store while it
//     is written; only its first 16 MiB (the replay window) are kept
//     besides the upload. If the upload fails after that, the content is
//     lost: Sync, ReadAt and WriteAt return the store's error (EIO) until
//     the file is truncated to 0, and the loss is logged. backend/s3
//     retries every part before an upload fails. Reading such a file back
//     while it is written, or writing elsewhere in it, completes the
//     upload first (one extra upload when it is written to again).
//   - Sizes: WriteAt and Truncate never take a file past MaxFileSize; they
//     refuse whole (ErrFileTooBig -> EFBIG) any write whose end or any size
//     beyond it, so clip a write that straddles it first to return POSIX's
//     short count. Open refuses objects over 2^62 bytes (ErrFileTooBig).
//     ReadAt at or past EOF returns 0 and never more than it filled.
//   - Readahead memory is bounded engine-wide (window + 4 GETs: 64 MiB with
//     the default 32 MiB window); a File's prefetched blocks go when its
//     last Handle closes, so close every Handle.
