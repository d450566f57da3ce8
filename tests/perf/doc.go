// Package perf holds the end-to-end benchmarks of s3cryptfs: real FUSE mounts
// over a real MinIO (TLS, loopback), each workload measured next to the bare
// aws-sdk-go-v2 doing the same job on the same bytes in the same run, so a
// result is a ratio against what the object store itself allows on this
// machine rather than an absolute number that depends on the day.
//
// The package has no non-test code; everything lives in _test.go files and
// runs only with -bench (make bench, make bench-compare). Under -short every
// benchmark skips.
//
// Knobs (environment, so that `make bench` needs no extra flags):
//
//	S3CRYPTFS_BENCH_SIZE=quick     small sizes for quick iterations (default: full sizes)
//	S3CRYPTFS_BENCH_COMPARE=1      also run s3fs and rclone's crypt mount (make bench-compare)
//	S3CRYPTFS_BENCH_CACHE=512MiB   --cache-size of the s3cryptfs mount
//	S3CRYPTFS_BENCH_TABLE=FILE     also write the summary table (Markdown) to FILE
//	S3CRYPTFS_BIN=PATH             use this s3cryptfs binary instead of building ./cmd/s3cryptfs
//	S3CRYPTFS_BENCH_MOUNT_ENV=...  extra environment of the s3cryptfs mount process (GOGC=50 ...)
//	S3CRYPTFS_BENCH_MOUNT_ARGS=... extra options of s3cryptfs mount (--attr-timeout 10s ...)
//	S3CRYPTFS_BENCH_PAIRED=0       no second SDK run per system for the ratios
//	S3CRYPTFS_BENCH_SDK_PART, S3CRYPTFS_BENCH_SDK_CONC  part size and parallelism of the baselines
//	S3CRYPTFS_BENCH_DISK=1         keep MinIO's data on disk (default: /dev/shm, unless TMPDIR is set)
//
// Before the first measurement, the SDK uploads and downloads the
// sequential file once, untimed: MinIO's first large transfers after start
// are slower (buffer pools growing), and that cost fell on whichever system
// ran first, the SDK.
//
// At the end of a run the package prints a Markdown table with every system
// side by side (docs/PERFORMANCE.md is made from it).
package perf
