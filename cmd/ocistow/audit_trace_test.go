package main

import (
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/ocistow/ocistow/internal/testenv"
)

// README (Insight, Tracing): "the step's span (Copy, Sign, Verify) carries
// the stable ocistow.error_type": ocistow verify of an unsigned image
// fails, and its Verify span says VerificationFailed, with an error status.
func TestVerifySpanCarriesTheErrorType(t *testing.T) {
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	ocistow(t, nil, "-source", srcRef("single"), "-destination", dst, "-sign=false").mustSucceed(t)
	recv := testenv.NewOTLPReceiver()
	defer recv.Close()
	r := ocistow(t, append(e2e.kms.Env(), "OTEL_EXPORTER_OTLP_ENDPOINT="+recv.Endpoint),
		"verify", "-aws-kms-key-arn", "alias/"+ecKey, dst)
	if r.code != 1 {
		t.Fatalf("verify of an unsigned image: exit %d, want 1\n%s", r.code, r.stderr)
	}
	tree := newSpanTree(recv.Spans())
	steps := tree.named("Verify")
	if len(steps) != 1 {
		t.Fatalf("want one Verify span, got %d of %d spans", len(steps), len(tree.spans))
	}
	if s := steps[0]; !s.Error || s.Status == "" || s.Attributes["ocistow.error_type"] != "VerificationFailed" {
		t.Errorf("Verify span: error %v, status %q, ocistow.error_type %q; want an error status with a message and VerificationFailed",
			s.Error, s.Status, s.Attributes["ocistow.error_type"])
	}
}

// README (Insight, Tracing): the Copy span carries "src, dst, digests,
// blob counts, bytes" and the Sign span "key, digests, formats, signatures
// added/present": checked against the promotion's own JSON result.
func TestCopyAndSignSpansCarryTheirAttributes(t *testing.T) {
	recv := testenv.NewOTLPReceiver()
	defer recv.Close()
	src, dst := srcRef("multi"), dstRepo(t, e2e.dst.Host)+":v1"
	r := ocistow(t, append(e2e.kms.Env(), "OTEL_EXPORTER_OTLP_ENDPOINT="+recv.Endpoint),
		"-source", src, "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey, "-o", "json").mustSucceed(t)
	var res struct {
		SourceDigest, DestinationDigest         string
		BlobsCopied, BlobsSkipped, BlobsMounted int
		BytesCopied                             int64
		Signatures                              struct {
			Key     string
			Digests []struct{ Digest string }
			Added   int
			Present int
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("result %q: %v", r.stdout, err)
	}
	if res.BlobsCopied == 0 || res.BytesCopied == 0 || len(res.Signatures.Digests) != 3 || res.Signatures.Added != 3 {
		t.Fatalf("the promotion copied and signed too little to check the spans against: %s", r.stdout)
	}
	tree := newSpanTree(recv.Spans())
	attrs := func(name string) map[string]string {
		t.Helper()
		s := tree.named(name)
		if len(s) != 1 || s[0].Name != name {
			t.Fatalf("want one %s span, got %d", name, len(s))
		}
		return s[0].Attributes
	}
	check := func(span string, a map[string]string, want map[string]string) {
		t.Helper()
		for k, v := range want {
			if a[k] != v {
				t.Errorf("%s span: %s = %q, want %q", span, k, a[k], v)
			}
		}
	}
	cp := attrs("Copy")
	check("Copy", cp, map[string]string{
		"ocistow.source":             src,
		"ocistow.destination":        dst,
		"ocistow.source_digest":      res.SourceDigest,
		"ocistow.destination_digest": res.DestinationDigest,
		"ocistow.blobs_copied":       strconv.Itoa(res.BlobsCopied),
		"ocistow.blobs_skipped":      strconv.Itoa(res.BlobsSkipped),
		"ocistow.blobs_mounted":      strconv.Itoa(res.BlobsMounted),
		"ocistow.bytes_copied":       strconv.FormatInt(res.BytesCopied, 10),
	})
	sg := attrs("Sign")
	check("Sign", sg, map[string]string{
		"ocistow.key":                res.Signatures.Key,
		"ocistow.signatures_added":   "3",
		"ocistow.signatures_present": "0",
	})
	if res.Signatures.Key != "awskms:///alias/"+ecKey {
		t.Errorf("signing key %q", res.Signatures.Key)
	}
	// Slices arrive as the OTLP array value's text: every digest is named.
	for _, d := range res.Signatures.Digests {
		if !strings.Contains(sg["ocistow.digests"], d.Digest) {
			t.Errorf("Sign span's ocistow.digests %q lacks %s", sg["ocistow.digests"], d.Digest)
		}
	}
	if !strings.Contains(sg["ocistow.signature_formats"], `"legacy"`) {
		t.Errorf("Sign span's ocistow.signature_formats %q lacks legacy", sg["ocistow.signature_formats"])
	}
}

// README (Flags, Insight): "-aws-xray (AWS_XRAY=true) … turns on
// OpenTelemetry tracing", each alone, without any OTEL_* variable. Spans
// then go to localhost:4318, which a test cannot claim on a shared machine
// (pkg/tracing's TestDefaultExportIsOTLPHTTPToLocalhost4318 checks that
// default): the trace ids on the canonical lines show that tracing is on,
// and without either switch there are none.
func TestAWSXRayAloneTurnsTracingOn(t *testing.T) {
	traced := regexp.MustCompile(`msg=Copy .*trace_id=1-[0-9a-f]{8}-[0-9a-f]{24}`)
	for _, c := range []struct {
		name   string
		env    []string
		args   []string
		traced bool
	}{
		{name: "-aws-xray", args: []string{"-aws-xray"}, traced: true},
		{name: "AWS_XRAY=true", env: []string{"AWS_XRAY=true"}, traced: true},
		{name: "neither", traced: false},
	} {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"-source", srcRef("single"), "-destination", dstRepo(t, e2e.dst.Host) + ":v1", "-sign=false"}, c.args...)
			r := ocistow(t, c.env, args...).mustSucceed(t)
			if got := traced.MatchString(r.stderr); got != c.traced {
				t.Errorf("canonical Copy line has a trace id: %v, want %v:\n%s", got, c.traced, r.stderr)
			}
		})
	}
}
