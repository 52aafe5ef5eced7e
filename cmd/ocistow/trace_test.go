package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ocistow/ocistow/internal/testenv"
)

// spanTree indexes received spans for assertions.
type spanTree struct {
	spans []testenv.Span
	byID  map[string]testenv.Span
}

func newSpanTree(spans []testenv.Span) spanTree {
	t := spanTree{spans: spans, byID: map[string]testenv.Span{}}
	for _, s := range spans {
		t.byID[s.SpanID] = s
	}
	return t
}

func (t spanTree) named(prefix string) []testenv.Span {
	var out []testenv.Span
	for _, s := range t.spans {
		if strings.HasPrefix(s.Name, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// under reports whether s descends from a span named ancestor.
func (t spanTree) under(s testenv.Span, ancestor string) bool {
	for p, ok := t.byID[s.Parent]; ok; p, ok = t.byID[p.Parent] {
		if p.Name == ancestor {
			return true
		}
	}
	return false
}

func TestTracedPromotionShowsTheBlobTree(t *testing.T) {
	recv := testenv.NewOTLPReceiver()
	defer recv.Close()
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	env := append(e2e.kms.Env(), "OTEL_EXPORTER_OTLP_ENDPOINT="+recv.Endpoint)
	r := ocistow(t, env, "-aws-xray", "-source", srcRef("multi"), "-destination", dst,
		"-annotations", "team=foo", "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)

	tree := newSpanTree(recv.Spans())
	roots := tree.named("ocistow")
	if len(roots) != 1 || roots[0].Parent != "" {
		t.Fatalf("want one root span named ocistow, got %v (of %d spans)", roots, len(tree.spans))
	}
	traceID := roots[0].TraceID
	for _, s := range tree.spans {
		if s.TraceID != traceID {
			t.Errorf("span %s is in trace %s, not the promotion's %s", s.Name, s.TraceID, traceID)
		}
	}
	// X-Ray trace ids start with the epoch second they were made.
	secs, err := strconv.ParseInt(traceID[:8], 16, 64)
	if err != nil || time.Since(time.Unix(secs, 0)).Abs() > time.Hour {
		t.Errorf("trace id %s does not start with the current time in seconds (X-Ray format)", traceID)
	}
	for _, method := range []string{"Copy", "Sign"} {
		spans := tree.named(method)
		if len(spans) != 1 || tree.byID[spans[0].Parent].Name != "ocistow" {
			t.Errorf("want one %s span under the root, got %v", method, spans)
		}
	}
	blobs := tree.named("blob sha256:")
	if len(blobs) != 6 {
		t.Errorf("want 6 blob spans (2 images x 2 layers + config), got %d", len(blobs))
	}
	for _, b := range blobs {
		if !tree.under(b, "Copy") || b.Attributes["oci.blob.outcome"] != "uploaded" || b.Attributes["oci.blob.size"] == "" || b.Attributes["oci.blob.retries"] != "0" {
			t.Errorf("blob span %s: %v (under Copy: %v)", b.Name, b.Attributes, tree.under(b, "Copy"))
		}
		var http int
		for _, s := range tree.spans {
			if s.Parent == b.SpanID && strings.HasPrefix(s.Name, "HTTP ") {
				http++
			}
		}
		if http == 0 {
			t.Errorf("blob span %s has no HTTP request spans under it", b.Name)
		}
	}
	if m := tree.named("manifest "); len(m) != 3 {
		t.Errorf("want 3 manifest spans (2 children, the index), got %d", len(m))
	}
	signs := tree.named("sign sha256:")
	if len(signs) != 3 {
		t.Errorf("want 3 signature spans, got %d", len(signs))
	}
	var kms int
	for _, s := range tree.spans {
		if strings.HasPrefix(s.Name, "KMS") && tree.under(s, "Sign") {
			kms++
		}
	}
	if kms < 3 {
		t.Errorf("want a KMS span per signature under Sign, got %d", kms)
	}
	// The canonical lines carry the trace id, in X-Ray form.
	xray := "1-" + traceID[:8] + "-" + traceID[8:]
	for _, method := range []string{"method=Copy", "method=Sign"} {
		if !regexp.MustCompile(method + `.*trace_id=` + xray).MatchString(r.stderr) {
			t.Errorf("canonical %s line lacks trace_id=%s:\n%s", method, xray, r.stderr)
		}
	}
}

func TestNoSpansWithoutTracing(t *testing.T) {
	recv := testenv.NewOTLPReceiver()
	defer recv.Close()
	// The endpoint variable alone turns tracing on; OTEL_SDK_DISABLED wins.
	env := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint, "OTEL_SDK_DISABLED=true"}
	r := ocistow(t, env, "-source", srcRef("single"), "-destination", dstRepo(t, e2e.dst.Host)+":v1", "-sign=false").mustSucceed(t)
	if n := len(recv.Spans()); n != 0 {
		t.Errorf("tracing off, yet %d spans were exported", n)
	}
	if strings.Contains(r.stderr, "trace_id=") {
		t.Errorf("tracing off, yet the log has a trace id:\n%s", r.stderr)
	}
}
