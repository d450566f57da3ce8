// Package tests holds the black-box tests of s3cryptfs: they build the real
// binary, mount it through /dev/fuse over a real MinIO (TLS, KMS) and over
// the local store, and check what users and other S3 clients see. They need
// root and /dev/fuse, and are skipped under -short.
package tests
