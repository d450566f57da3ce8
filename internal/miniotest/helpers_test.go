package miniotest

import (
	"crypto/md5"
	"encoding/base64"
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func md5sum(b []byte) string {
	s := md5.Sum(b)
	return b64(s[:])
}
