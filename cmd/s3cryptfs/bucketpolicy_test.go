package main

import (
	"encoding/json"
	"strings"
	"testing"
)

// TestMergePolicy: the merge keeps every statement it did not add (also a
// lone statement object and unknown top-level fields), replaces its own,
// and refuses a policy it cannot read rather than replace it.
func TestMergePolicy(t *testing.T) {
	sids := func(doc string) []string {
		t.Helper()
		var p struct {
			Id        string
			Statement []struct{ Sid string }
		}
		if err := json.Unmarshal([]byte(doc), &p); err != nil {
			t.Fatalf("%v: %s", err, doc)
		}
		var out []string
		for _, s := range p.Statement {
			out = append(out, s.Sid)
		}
		return append(out, "Id="+p.Id)
	}
	for _, c := range []struct {
		name, existing, sse, want string
		kept                      int
	}{
		{"none", "", "", "S3cryptfsDenyInsecureTransport,Id=", 0},
		{"list", `{"Version":"2012-10-17","Id":"x","Statement":[{"Sid":"A","Effect":"Allow"}]}`, "kms",
			"A,S3cryptfsDenyInsecureTransport,S3cryptfsDenyPutWithOtherSSE,Id=x", 1},
		{"single object", `{"Statement":{"Sid":"B","Effect":"Deny"}}`, "s3",
			"B,S3cryptfsDenyInsecureTransport,S3cryptfsDenyPutWithOtherSSE,Id=", 1},
		{"ours replaced", `{"Statement":[{"Sid":"S3cryptfsDenyPutWithoutSSE"},{"Sid":"C"},{"Sid":"S3cryptfsDenyInsecureTransport"}]}`, "",
			"C,S3cryptfsDenyInsecureTransport,Id=", 1},
	} {
		got, kept, err := mergePolicy(c.existing, policyStatements("b", c.sse))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if s := strings.Join(sids(got), ","); s != c.want || kept != c.kept {
			t.Fatalf("%s: statements %s (kept %d), want %s (kept %d)\n%s", c.name, s, kept, c.want, c.kept, got)
		}
	}
	got, _, _ := mergePolicy("", policyStatements("b", "kms"))
	for _, want := range []string{`"aws:SecureTransport": "false"`, `"s3:x-amz-server-side-encryption": "aws:kms"`,
		`"Null": {`, `"s3:x-amz-server-side-encryption": "false"`, `"arn:aws:s3:::b/*"`} {
		if !strings.Contains(got, want) {
			t.Fatalf("policy lacks %s:\n%s", want, got)
		}
	}
	for _, bad := range []string{`{not json`, `{"Statement":"x"}`, `{"Statement":["x"]}`} {
		if _, _, err := mergePolicy(bad, policyStatements("b", "")); err == nil || !strings.Contains(err.Error(), "refusing to replace it") {
			t.Fatalf("%s: %v", bad, err)
		}
	}
}
