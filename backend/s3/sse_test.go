package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"

	"github.com/s3cryptfs/s3cryptfs/backend"
)

func randomBytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), 0xa5})
	_, _ = r.Read(b)
	return b
}

// opaque hides everything but Read, so Put must stream.
type opaque struct{ r io.Reader }

func (o opaque) Read(p []byte) (int, error) { return o.r.Read(p) }

func readAll(t *testing.T, s *Store, key string, off, n int64) []byte {
	t.Helper()
	rc, err := s.Get(testCtx(t), key, off, n, backend.GetOptions{})
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("Get(%q): read: %v", key, err)
	}
	return b
}

// TestSSE writes objects in every SSE mode through the store (single PUT,
// streamed multipart, CopyObject, multipart copy) and checks with a bare
// SDK HeadObject that each object carries the encryption asked for, and
// that the store reads them back.
func TestSSE(t *testing.T) {
	srv := server(t)
	ssecKey := randomBytes(99, 32)
	md5sum := md5.Sum(ssecKey)
	keyMD5 := base64.StdEncoding.EncodeToString(md5sum[:])
	bare := srv.SDKClient(t)

	small := randomBytes(1, 100_000)
	big := randomBytes(2, 12<<20+321) // three 5 MiB parts

	for _, mode := range []SSEMode{SSES3, SSEKMS, SSEC} {
		t.Run(string(mode), func(t *testing.T) {
			bucket := srv.NewBucket(t)
			cfg := baseConfig(srv, bucket)
			cfg.SSE = mode
			switch mode {
			case SSEKMS:
				cfg.KMSKeyID, cfg.BucketKey = srv.KMSKeyID, true
			case SSEC:
				cfg.SSECKey = ssecKey
			}
			s := newStoreT(t, cfg)
			s.copyLimit, s.copyPart = 6<<20, 5<<20 // multipart copy for "big"

			ctx := testCtx(t)
			meta := map[string]string{"mode": "100644"}
			if _, err := s.Put(ctx, "small", bytes.NewReader(small), int64(len(small)), meta); err != nil {
				t.Fatalf("Put small: %v", err)
			}
			if _, err := s.Put(ctx, "big", opaque{bytes.NewReader(big)}, -1, meta); err != nil {
				t.Fatalf("Put big (multipart): %v", err)
			}
			if _, err := s.Copy(ctx, "small", "small-copy", backend.CopyOptions{ReplaceMetadata: true, Metadata: map[string]string{"x": "1"}}); err != nil {
				t.Fatalf("Copy small: %v", err)
			}
			if _, err := s.Copy(ctx, "big", "big-copy", backend.CopyOptions{}); err != nil {
				t.Fatalf("Copy big (multipart copy): %v", err)
			}

			// chmod on a mount: a copy onto itself replacing the metadata.
			if _, err := s.Put(ctx, "self", bytes.NewReader(small), int64(len(small)), meta); err != nil {
				t.Fatal(err)
			}
			if _, err := s.Copy(ctx, "self", "self", backend.CopyOptions{ReplaceMetadata: true, Metadata: map[string]string{"mode": "100600"}}); err != nil {
				t.Fatalf("Copy onto itself: %v", err)
			}
			if st, err := s.Stat(ctx, "self"); err != nil || st.Metadata["mode"] != "100600" {
				t.Errorf("after a copy onto itself: %+v, %v", st, err)
			}

			for key, want := range map[string][]byte{"small": small, "big": big, "small-copy": small, "big-copy": big, "self": small} {
				in := &s3.HeadObjectInput{Bucket: aws.String(bucket), Key: aws.String(key)}
				if mode == SSEC {
					in.SSECustomerAlgorithm = aws.String("AES256")
					in.SSECustomerKey = aws.String(base64.StdEncoding.EncodeToString(ssecKey))
					in.SSECustomerKeyMD5 = aws.String(keyMD5)
				}
				h, err := bare.HeadObject(ctx, in)
				if err != nil {
					t.Fatalf("bare HeadObject(%s): %v", key, err)
				}
				switch mode {
				case SSES3:
					if h.ServerSideEncryption != types.ServerSideEncryptionAes256 {
						t.Errorf("%s: ServerSideEncryption = %q, want AES256", key, h.ServerSideEncryption)
					}
				case SSEKMS:
					if h.ServerSideEncryption != types.ServerSideEncryptionAwsKms {
						t.Errorf("%s: ServerSideEncryption = %q, want aws:kms", key, h.ServerSideEncryption)
					}
					if id := aws.ToString(h.SSEKMSKeyId); !strings.HasSuffix(id, srv.KMSKeyID) {
						t.Errorf("%s: SSEKMSKeyId = %q, want the key %q", key, id, srv.KMSKeyID)
					}
				case SSEC:
					if aws.ToString(h.SSECustomerAlgorithm) != "AES256" || aws.ToString(h.SSECustomerKeyMD5) != keyMD5 {
						t.Errorf("%s: SSE-C algorithm %q key MD5 %q, want AES256 %q",
							key, aws.ToString(h.SSECustomerAlgorithm), aws.ToString(h.SSECustomerKeyMD5), keyMD5)
					}
				}
				if got := readAll(t, s, key, 0, -1); !bytes.Equal(got, want) {
					t.Errorf("%s: read back %d bytes differing from the %d written", key, len(got), len(want))
				}
			}
			if got := readAll(t, s, "big", 5<<20-10, 20); !bytes.Equal(got, big[5<<20-10:5<<20+10]) {
				t.Errorf("ranged read across a part boundary differs")
			}
			if st, err := s.Stat(ctx, "big-copy"); err != nil || st.Metadata["mode"] != "100644" || st.Size != int64(len(big)) {
				t.Errorf("Stat(big-copy) = %+v, %v; want size %d and the source's metadata", st, err, len(big))
			}
		})
	}
}

// TestSSECWrongOrMissingKey checks that an SSE-C object read without its key
// or with another key fails with ErrAccessDenied and a message that says
// so, through the store and through the bare SDK.
func TestSSECWrongOrMissingKey(t *testing.T) {
	srv := server(t)
	bucket := srv.NewBucket(t)
	cfg := baseConfig(srv, bucket)
	cfg.SSE, cfg.SSECKey = SSEC, randomBytes(5, 32)
	s := newStoreT(t, cfg)
	if _, err := s.Put(testCtx(t), "secret", strings.NewReader("payload"), 7, nil); err != nil {
		t.Fatal(err)
	}

	_, err := srv.SDKClient(t).GetObject(testCtx(t), &s3.GetObjectInput{Bucket: aws.String(bucket), Key: aws.String("secret")})
	if err == nil {
		t.Fatal("bare GetObject of an SSE-C object without the key succeeded")
	}

	noKey := baseConfig(srv, bucket)
	wrongKey := cfg
	wrongKey.SSECKey = randomBytes(6, 32)
	for name, c := range map[string]Config{"no key": noKey, "wrong key": wrongKey} {
		other := newStoreT(t, c)
		_, err := other.Get(testCtx(t), "secret", 0, -1, backend.GetOptions{})
		checkSSECError(t, name+": Get", err)
		_, err = other.Stat(testCtx(t), "secret")
		checkSSECError(t, name+": Stat", err)
		_, err = other.Copy(testCtx(t), "secret", "copy", backend.CopyOptions{})
		checkSSECError(t, name+": Copy", err)
	}
	if got := readAll(t, s, "secret", 0, -1); string(got) != "payload" {
		t.Errorf("with the right key: %q", got)
	}
}

func checkSSECError(t *testing.T, what string, err error) {
	t.Helper()
	t.Logf("%s: %v", what, err)
	if !errors.Is(err, backend.ErrAccessDenied) || !strings.Contains(err.Error(), "SSE-C key is wrong or missing") {
		t.Errorf("%s: err = %v, want ErrAccessDenied saying the SSE-C key is wrong or missing", what, err)
	}
}

// TestRefuseHTTP needs no server: the endpoint is refused before any request.
func TestRefuseHTTP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key := bytes.Repeat([]byte{1}, 32)
	cases := []struct {
		name string
		cfg  Config
		env  string // AWS_ENDPOINT_URL_S3
		want string
	}{
		{"http", Config{Bucket: "b", Endpoint: "http://127.0.0.1:9"}, "", "is plain http"},
		{"http from env", Config{Bucket: "b"}, "http://127.0.0.1:9", "endpoint http://127.0.0.1:9 (from AWS_ENDPOINT_URL_S3) is plain http"},
		{"SSE-C over http", Config{Bucket: "b", Endpoint: "http://127.0.0.1:9", SSE: SSEC, SSECKey: key}, "", "SSE-C over http is always refused"},
		{"SSE-C over http even when allowed", Config{Bucket: "b", Endpoint: "http://127.0.0.1:9", AllowHTTP: true, SSE: SSEC, SSECKey: key}, "", "SSE-C over http is always refused"},
		{"SSE-C over http from env", Config{Bucket: "b", AllowHTTP: true, SSE: SSEC, SSECKey: key}, "http://127.0.0.1:9", "SSE-C over http is always refused"},
		{"bad scheme", Config{Bucket: "b", Endpoint: "ftp://127.0.0.1:9"}, "", "scheme must be https"},
		{"SSE-C key size", Config{Bucket: "b", Endpoint: "https://127.0.0.1:9", SSE: SSEC, SSECKey: key[:16]}, "", "32-byte key"},
		{"KMS key without kms", Config{Bucket: "b", Endpoint: "https://127.0.0.1:9", SSE: SSES3, KMSKeyID: "k"}, "", "needs SSE mode kms"},
		{"part size", Config{Bucket: "b", Endpoint: "https://127.0.0.1:9", PartSize: 1 << 20}, "", "part size"},
		{"no bucket", Config{Endpoint: "https://127.0.0.1:9"}, "", "no bucket"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("AWS_ENDPOINT_URL_S3", tc.env)
			_, err := New(ctx, tc.cfg)
			if err == nil || !errors.Is(err, backend.ErrPermanent) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New: err = %v, want a permanent error containing %q", err, tc.want)
			}
		})
	}
	// With the opt-in, http passes the check (and fails later, on the
	// closed port, for another reason).
	t.Run("http allowed", func(t *testing.T) {
		t.Setenv("AWS_ACCESS_KEY_ID", "x")
		t.Setenv("AWS_SECRET_ACCESS_KEY", "y")
		ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		defer cancel()
		_, err := New(ctx, Config{Bucket: "b", Endpoint: "http://127.0.0.1:9", AllowHTTP: true})
		if err == nil || strings.Contains(err.Error(), "plain http") {
			t.Fatalf("New with AllowHTTP: err = %v, want a connection failure, not the http refusal", err)
		}
	})
}

// TestMissingCredentials needs no server: with no credentials anywhere,
// New says what to set.
func TestMissingCredentials(t *testing.T) {
	dir := t.TempDir()
	for k, v := range map[string]string{
		"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": "", "AWS_SESSION_TOKEN": "", "AWS_PROFILE": "",
		"AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": dir + "/config", "AWS_SHARED_CREDENTIALS_FILE": dir + "/credentials",
		"AWS_WEB_IDENTITY_TOKEN_FILE": "", "AWS_CONTAINER_CREDENTIALS_FULL_URI": "", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "",
	} {
		t.Setenv(k, v)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := New(ctx, Config{Bucket: "b", Endpoint: "https://127.0.0.1:9", Region: "us-east-1"})
	if !errors.Is(err, backend.ErrAccessDenied) {
		t.Fatalf("New without credentials: err = %v, want ErrAccessDenied", err)
	}
	for _, want := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "~/.aws/credentials"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	// A profile that does not exist is named in the error.
	_, err = New(ctx, Config{Bucket: "b", Endpoint: "https://127.0.0.1:9", Profile: "nosuchprofile"})
	if err == nil || !strings.Contains(err.Error(), "nosuchprofile") {
		t.Errorf("New with a missing profile: err = %v, want it named", err)
	}
}

func TestReadSSECKeyFile(t *testing.T) {
	dir := t.TempDir()
	raw := randomBytes(7, 32)
	cases := map[string]struct {
		content []byte
		ok      bool
	}{
		"raw":        {raw, true},
		"base64":     {[]byte(base64.StdEncoding.EncodeToString(raw) + "\n"), true},
		"base64url":  {[]byte(base64.RawURLEncoding.EncodeToString(raw)), true},
		"short":      {raw[:31], false},
		"base64 16":  {[]byte(base64.StdEncoding.EncodeToString(raw[:16])), false},
		"empty":      {nil, false},
		"hex is not": {[]byte(strings.Repeat("ab", 32)), false},
	}
	for name, tc := range cases {
		p := dir + "/" + strings.ReplaceAll(name, " ", "_")
		if err := writeFile(p, tc.content); err != nil {
			t.Fatal(err)
		}
		k, err := ReadSSECKeyFile(p)
		if tc.ok && (err != nil || !bytes.Equal(k, raw)) {
			t.Errorf("%s: got %x, %v; want the key", name, k, err)
		}
		if !tc.ok && err == nil {
			t.Errorf("%s: accepted %x", name, k)
		}
	}
	if _, err := ReadSSECKeyFile(dir + "/missing"); err == nil {
		t.Error("missing file accepted")
	}
}

func TestCheckMeta(t *testing.T) {
	good := []map[string]string{nil, {}, {"mode": "100644", "mtime": "1700000000.5", "x-y_z.1": "two words ~!"}}
	for _, m := range good {
		if err := checkMeta(m); err != nil {
			t.Errorf("checkMeta(%v): %v", m, err)
		}
	}
	bad := []map[string]string{{"": "v"}, {"Mode": "1"}, {"a b": "1"}, {"k": "ünï"}, {"k": "line\nbreak"}, {"k": "\x00"}}
	for _, m := range bad {
		if err := checkMeta(m); !errors.Is(err, backend.ErrPermanent) {
			t.Errorf("checkMeta(%q) = %v, want a permanent error", m, err)
		}
	}
}
