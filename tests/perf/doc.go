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
// Every workload runs at each latency setting: lat=0 is MinIO directly, as
// on loopback a request costs well under a millisecond; lat=10ms puts a
// TCP proxy (proxy_test.go, in a child process) between every client and
// MinIO that delivers each chunk 10 ms after it read it, in both
// directions: a 20 ms round trip, about what S3 costs a small request.
// Sub-benchmarks are named BenchmarkX/lat=10ms/s3cryptfs; the ratio of a
// mount is to the SDK at the same setting. Each figure also carries the
// number of S3 requests of its timed section, read from MinIO's per-bucket
// metrics (the harness's own checks subtracted).
//
// Knobs (environment, so that `make bench` needs no extra flags):
//
//	S3CRYPTFS_BENCH_LATENCY=0,10ms one-way delays to run at (default "0,10ms"; "0" = loopback only)
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
