package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/s3cryptfs/s3cryptfs/backend/s3"
)

// Statement ids of what bucket-policy adds. Statements with this prefix
// are the command's own: it replaces them on every run and touches no
// other statement (an earlier version's S3cryptfsDenyPutWithoutSSE too).
const (
	policySidPrefix = "S3cryptfs"
	sidTLS          = policySidPrefix + "DenyInsecureTransport"
	sidSSE          = policySidPrefix + "DenyPutWithOtherSSE"
	sseHeaderKey    = "s3:x-amz-server-side-encryption"
)

// policyStatements are the deny statements for bucket: every request over
// plain http, and (sse "s3" or "kms") every write that asks for another
// server-side encryption than that one.
//
// Why not also deny a write that asks for none, as the usual example
// policies do: the s3:PutObject action also covers UploadPart and
// CompleteMultipartUpload, which never carry the
// x-amz-server-side-encryption header (only CreateMultipartUpload does),
// and a negated condition on a key the request lacks is true. Such a
// statement denies every part of every multipart upload, so every file
// larger than one part could no longer be written. The Null condition
// limits the deny to requests that carry the header. A write that names no
// encryption gets the bucket's default encryption, which is why
// CONFIGURATION.md has the default set to the same SSE.
// TestBucketPolicyEnforced checks both on MinIO's policy engine.
func policyStatements(bucket, sse string) []any {
	arn := "arn:aws:s3:::" + bucket
	st := []any{map[string]any{
		"Sid":       sidTLS,
		"Effect":    "Deny",
		"Principal": "*",
		"Action":    "s3:*",
		"Resource":  []string{arn, arn + "/*"},
		"Condition": map[string]any{"Bool": map[string]string{"aws:SecureTransport": "false"}},
	}}
	if sse != "" {
		st = append(st, map[string]any{
			"Sid":       sidSSE,
			"Effect":    "Deny",
			"Principal": "*",
			"Action":    "s3:PutObject",
			"Resource":  arn + "/*",
			"Condition": map[string]any{
				"StringNotEquals": map[string]string{sseHeaderKey: sseHeaderValue[sse]},
				"Null":            map[string]string{sseHeaderKey: "false"},
			},
		})
	}
	return st
}

// sseHeaderValue is the x-amz-server-side-encryption value of each --sse.
var sseHeaderValue = map[string]string{"s3": "AES256", "kms": "aws:kms"}

// mergePolicy returns the bucket policy document with this command's
// statements replaced by want and every other statement kept as it was.
func mergePolicy(existing string, want []any) (string, int, error) {
	doc := map[string]any{}
	if strings.TrimSpace(existing) != "" {
		if err := json.Unmarshal([]byte(existing), &doc); err != nil {
			return "", 0, fmt.Errorf("the bucket's current policy is not JSON (%v): refusing to replace it; fix or remove it first", err)
		}
	}
	var stmts []any
	switch s := doc["Statement"].(type) {
	case nil:
	case []any:
		stmts = s
	case map[string]any: // a single statement may be written without a list
		stmts = []any{s}
	default:
		return "", 0, errors.New("the bucket's current policy has a Statement that is neither an object nor a list: refusing to replace it")
	}
	var kept []any
	for _, s := range stmts {
		m, ok := s.(map[string]any)
		if !ok {
			return "", 0, errors.New("the bucket's current policy has a statement that is not an object: refusing to replace it")
		}
		if sid, _ := m["Sid"].(string); strings.HasPrefix(sid, policySidPrefix) {
			continue // ours, from an earlier run: replaced below
		}
		kept = append(kept, s)
	}
	if doc["Version"] == nil {
		doc["Version"] = "2012-10-17"
	}
	doc["Statement"] = append(kept, want...)
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return "", 0, err
	}
	return string(b), len(kept), nil
}

func newBucketPolicyCommand() *cobra.Command {
	var sf storeFlags
	var sse string
	var dryRun bool
	pol := newGroup("Policy")
	pol.fs.StringVar(&sse, "sse", "", "also deny every write asking for another server-side encryption than this one: s3 (AES256) or kms (aws:kms); set the bucket's default encryption to the same")
	pol.fs.BoolVar(&dryRun, "dry-run", false, "print the merged policy and change nothing")
	st := newGroup("Store")
	// --sse names the policy's encryption here; the store's SSE options
	// do not apply to reading and writing a bucket policy.
	all := pflag.NewFlagSet("store", pflag.ContinueOnError)
	sf.register(all)
	all.VisitAll(func(f *pflag.Flag) {
		if !strings.HasPrefix(f.Name, "sse") {
			st.fs.AddFlag(f)
		}
	})
	cmd := &cobra.Command{
		Use:   "bucket-policy [options] STORE",
		Short: "add deny statements to the bucket policy: plain http, and (--sse) writes asking for another SSE",
		Long: `Merge into the bucket policy of STORE (s3://bucket[/prefix]) a statement that
denies every request made without TLS (aws:SecureTransport false) and, with
--sse, one that denies every write (PutObject, CopyObject, multipart upload)
that asks for another server-side encryption. A write that asks for none
gets the bucket's default encryption: set it to the same SSE (see
CONFIGURATION.md); the policy cannot deny such writes without also denying
every part of every multipart upload. The
bucket's other statements are kept as they are; the command's own
statements (Sid S3cryptfs...) are replaced on each run. --dry-run prints the
policy that would be written.`,
		Args: exactArgs(1, "exactly one STORE (s3://bucket)"),
		RunE: func(_ *cobra.Command, args []string) error {
			spec := args[0]
			if !isS3(spec) {
				return usagef("bucket-policy needs an s3:// store, not %q", spec)
			}
			switch sse {
			case "", "s3", "kms":
			default:
				return usagef("--sse must be s3 or kms, not %q", sse)
			}
			ctx, cancel := context.WithTimeout(context.Background(), adminTimeout)
			defer cancel()
			bs, err := openStore(ctx, spec, &sf)
			if err != nil {
				return err
			}
			s3s, ok := bs.(*s3.Store)
			if !ok {
				return usagef("bucket-policy needs an s3:// store")
			}
			existing, err := s3s.BucketPolicy(ctx)
			if err != nil {
				return err
			}
			merged, kept, err := mergePolicy(existing, policyStatements(s3s.Bucket(), sse))
			if err != nil {
				return fmt.Errorf("bucket %s: %w", s3s.Bucket(), err)
			}
			if dryRun {
				fmt.Println(merged)
				return nil
			}
			if err := s3s.PutBucketPolicy(ctx, merged); err != nil {
				return err
			}
			fmt.Fprintf(os.Stdout, "bucket %s: policy set (%d existing statement(s) kept, plain http denied%s)\n",
				s3s.Bucket(), kept, map[bool]string{true: ", writes asking for another SSE than " + sse + " denied"}[sse != ""])
			return nil
		},
	}
	addGroups(cmd, pol, st)
	registerCompletions(cmd)
	return cmd
}
