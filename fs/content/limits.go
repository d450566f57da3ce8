package content

import "errors"

// MaxFileSize is the largest plaintext size a file can reach: WriteAt and
// Truncate refuse to go past it with ErrFileTooBig (the filesystem returns
// EFBIG). 4 TiB (2^42) is the largest power of two whose object fits every
// store this engine writes to, in every mode:
//
//   - S3 caps an object at 5 TiB. Encrypted with the smallest block size
//     (4 KiB, 28 bytes of overhead each) a 4 TiB file is a 4.03 TiB object.
//   - Every upload is a multipart stream of unknown size (streaming and
//     rewrite both), whose parts backend/s3 doubles every 1,000 parts:
//     10,000 parts hold 1,023,000 x the first part, 4.88 TiB with S3's
//     smallest part (5 MiB), 7.8 TiB with the default 8 MiB.
//   - The local store's file systems hold at least that (ext4: 16 TiB).
//
// It is a multiple of every block size, and it keeps every offset the
// engine computes (object sizes, block offsets, off+len) far from int64
// overflow. The kernel cannot be told this limit (FUSE fixes the
// superblock's maximum at 2^63-1), so the filesystem enforces it in its
// handlers too, to answer a write straddling it with a short count.
const MaxFileSize = 1 << 42

// ErrFileTooBig reports a write or truncate past MaxFileSize, or an object
// larger than maxObjectSize.
var ErrFileTooBig = errors.New("file too large")

// ErrExists: a file created exclusively (File.CreateExclusive) was not
// stored because another writer stored an object under its key first.
var ErrExists = errors.New("another writer stored this name first")

// maxObjectSize bounds the objects Open (and PlainSize) accepts: 2^62
// bytes. Larger ones exist only on the local store or by tampering; their
// block offsets (block index x sealed block size, plus off+len of a read)
// could overflow int64. It is far above MaxFileSize so that large objects
// written by other tools (a plaintext vault) can still be read.
const maxObjectSize = 1 << 62
