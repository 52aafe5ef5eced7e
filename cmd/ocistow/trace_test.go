package main

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

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
	if signs := tree.named("Sign"); len(signs) == 1 && !strings.Contains(signs[0].Attributes["ocistow.signature_formats"], "legacy") {
		t.Errorf("Sign span attributes %v: want ocistow.signature_formats naming legacy", signs[0].Attributes)
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

// Tracing is switched by -aws-xray or by the standard OpenTelemetry
// variables alone, and OTEL_SDK_DISABLED=true wins over both.
func TestTracingSwitches(t *testing.T) {
	cases := []struct {
		name string
		env  func(endpoint string) []string
		args []string
		// exported: spans reach the receiver; traced: the canonical lines
		// carry a trace id (tracing is on).
		exported, traced bool
	}{
		{name: "OTEL_EXPORTER_OTLP_ENDPOINT alone", env: func(e string) []string { return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + e} }, exported: true, traced: true},
		{name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT alone", env: func(e string) []string { return []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=" + e + "/v1/traces"} }, exported: true, traced: true},
		// Alone, OTEL_TRACES_EXPORTER=otlp exports to localhost:4318, which
		// a test cannot claim on a shared machine: the trace ids in the
		// canonical lines show tracing is on.
		{name: "OTEL_TRACES_EXPORTER=otlp alone", env: func(string) []string { return []string{"OTEL_TRACES_EXPORTER=otlp"} }, traced: true},
		{name: "OTEL_SDK_DISABLED=true wins over the endpoint and -aws-xray", env: func(e string) []string {
			return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + e, "OTEL_SDK_DISABLED=true"}
		}, args: []string{"-aws-xray"}},
		{name: "OTEL_TRACES_EXPORTER=none wins over the endpoint", env: func(e string) []string {
			return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + e, "OTEL_TRACES_EXPORTER=none"}
		}},
		{name: "nothing asked", env: func(string) []string { return nil }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			recv := testenv.NewOTLPReceiver()
			defer recv.Close()
			args := append([]string{"-source", srcRef("single"), "-destination", dstRepo(t, e2e.dst.Host) + ":v1", "-sign=false"}, c.args...)
			r := ocistow(t, c.env(recv.Endpoint), args...).mustSucceed(t)
			tree := newSpanTree(recv.Spans())
			if c.exported {
				roots, copies := tree.named("ocistow"), tree.named("Copy")
				if len(roots) != 1 || len(copies) != 1 || tree.byID[copies[0].Parent].Name != "ocistow" {
					t.Errorf("want the root ocistow span with Copy under it, got %d spans: %v", len(tree.spans), tree.spans)
				}
			} else if len(tree.spans) != 0 {
				t.Errorf("%d spans exported, want none", len(tree.spans))
			}
			if traced := regexp.MustCompile(`method=Copy.*trace_id=1-[0-9a-f]{8}-[0-9a-f]{24}`).MatchString(r.stderr); traced != c.traced {
				t.Errorf("canonical Copy line has a trace id: %v, want %v:\n%s", traced, c.traced, r.stderr)
			}
		})
	}
}

// A failure is recorded on the span that failed, and the step's span
// (Copy, Sign) carries the error's stable ocistow.error_type.
func TestSpanErrorsCarryTheErrorType(t *testing.T) {
	cases := []struct {
		name        string
		source      func(t *testing.T) string
		destination func(t *testing.T) string
		sign        bool
		code        int
		// step is the span that carries errorType; failed, if not "", a
		// span under it (by name prefix) that must be marked failed too.
		step, errorType, failed string
		// fine are step spans that must not be marked failed.
		fine []string
	}{
		{
			name:   "source not found",
			source: func(*testing.T) string { return e2e.src.Host + "/src/missing:v1" },
			code:   1, step: "Copy", errorType: "SourceNotFound",
		},
		{
			name: "corrupt blob",
			source: func(t *testing.T) string {
				front := testenv.NewFront(e2e.src.Host)
				t.Cleanup(front.Close)
				front.SetModify(func(resp *http.Response) error {
					if !isBlobGet(resp.Request) || resp.StatusCode != http.StatusOK {
						return nil
					}
					b, err := io.ReadAll(resp.Body)
					resp.Body.Close()
					if err != nil {
						return err
					}
					if len(b) > 0 {
						b[len(b)/2] ^= 0xff // same length, other bytes
					}
					resp.Body = io.NopCloser(bytes.NewReader(b))
					return nil
				})
				return front.Host + "/src/single:v1"
			},
			code: 1, step: "Copy", errorType: "SourceFailed", failed: "blob sha256:",
		},
		{
			name:   "signature refused",
			source: func(*testing.T) string { return srcRef("single") },
			destination: func(t *testing.T) string {
				front := testenv.NewFront(e2e.dst.Host)
				t.Cleanup(front.Close)
				front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
					if r.Method != http.MethodPut || !strings.HasSuffix(r.URL.Path, ".sig") {
						return false
					}
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusForbidden)
					_, _ = io.WriteString(w, `{"errors":[{"code":"DENIED","message":"no signatures here"}]}`)
					return true
				})
				return dstRepo(t, front.Host) + ":v1"
			},
			sign: true, code: 3, step: "Sign", errorType: "SigningFailed", failed: "sign sha256:", fine: []string{"Copy"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			recv := testenv.NewOTLPReceiver()
			defer recv.Close()
			dst := dstRepo(t, e2e.dst.Host) + ":v1"
			if c.destination != nil {
				dst = c.destination(t)
			}
			args := []string{"-source", c.source(t), "-destination", dst, "-sign=" + strconv.FormatBool(c.sign)}
			if c.sign {
				args = append(args, "-aws-kms-key-arn", "alias/"+ecKey)
			}
			r := ocistow(t, append(e2e.kms.Env(), "OTEL_EXPORTER_OTLP_ENDPOINT="+recv.Endpoint), args...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\n%s", r.code, c.code, r.stderr)
			}
			tree := newSpanTree(recv.Spans())
			steps := tree.named(c.step)
			if len(steps) != 1 {
				t.Fatalf("want one %s span, got %d of %d spans", c.step, len(steps), len(tree.spans))
			}
			step := steps[0]
			if !step.Error || step.Attributes["ocistow.error_type"] != c.errorType || step.Status == "" {
				t.Errorf("%s span: error %v, status %q, ocistow.error_type %q; want an error status with a message and %s",
					c.step, step.Error, step.Status, step.Attributes["ocistow.error_type"], c.errorType)
			}
			if root := tree.named("ocistow"); len(root) != 1 || !root[0].Error {
				t.Errorf("the root span is not marked failed: %v", root)
			}
			if c.failed != "" {
				var failed int
				for _, s := range tree.named(c.failed) {
					if s.Error && s.Status != "" && tree.under(s, c.step) {
						failed++
					}
				}
				if failed == 0 {
					t.Errorf("no %q span under %s is marked failed with a message", c.failed, c.step)
				}
			}
			for _, f := range c.fine {
				for _, s := range tree.named(f) {
					if s.Error || s.Attributes["ocistow.error_type"] != "" {
						t.Errorf("%s span marked failed (%q, %q), though it succeeded", s.Name, s.Status, s.Attributes["ocistow.error_type"])
					}
				}
			}
		})
	}
}

// Span attributes, statuses and events never carry the signed query of a
// pre-signed blob URL: url.full is redacted, as -debug's lines are, and so
// are the errors recorded on failed spans.
func TestSpansRedactSignedURLs(t *testing.T) {
	const secret = "s3cr3tSignatureValue"
	const query = "?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE%2F20260101&X-Amz-Signature=" + secret
	var presigned atomic.Int32
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("X-Amz-Signature") == secret {
			presigned.Add(1)
		}
		d, err := name.NewDigest(e2e.src.Host + "/src/single@" + strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		l, err := remote.Layer(d)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		rc, err := l.Compressed()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer rc.Close()
		_, _ = io.Copy(w, rc)
	}))
	defer storage.Close()
	for _, c := range []struct {
		name string
		// storage is where blobs are redirected to, with the signed query.
		storage string
		code    int
	}{
		{name: "blob served", storage: storage.URL},
		// The redirect is refused (link-local), with an error that quotes
		// the whole pre-signed URL.
		{name: "redirect refused", storage: "http://169.254.169.254/bucket", code: 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			presigned.Store(0)
			front := testenv.NewFront(e2e.src.Host)
			defer front.Close()
			front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !isBlobGet(r) {
					return false
				}
				http.Redirect(w, r, c.storage+r.URL.Path[strings.LastIndex(r.URL.Path, "/"):]+query, http.StatusTemporaryRedirect)
				return true
			})
			recv := testenv.NewOTLPReceiver()
			defer recv.Close()
			r := ocistow(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint},
				"-source", front.Host+"/src/single:v1", "-destination", dstRepo(t, e2e.dst.Host)+":v1", "-sign=false")
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\n%s", r.code, c.code, r.stderr)
			}
			spans := recv.Spans()
			var redacted, failed int
			for _, s := range spans {
				for _, text := range s.Texts() {
					if strings.Contains(text, secret) || strings.Contains(text, "AKIAEXAMPLE") {
						t.Errorf("span %s carries the pre-signed URL's query: %q", s.Name, text)
					}
				}
				if u := s.Attributes["url.full"]; strings.HasPrefix(u, storage.URL) && strings.Contains(u, "X-Amz-Signature=redacted") {
					redacted++
				}
				if s.Error && strings.Contains(s.Status, "169.254.169.254/bucket/sha256:") {
					failed++
				}
			}
			if c.code == 0 && (presigned.Load() == 0 || redacted == 0) {
				t.Errorf("%d blobs fetched with the pre-signed URL, %d HTTP spans to it with a redacted url.full (of %d spans); want both", presigned.Load(), redacted, len(spans))
			}
			if c.code != 0 && failed == 0 {
				t.Errorf("no failed span quotes the refused URL (of %d spans)", len(spans))
			}
			if strings.Contains(r.stderr, secret) {
				t.Errorf("stderr carries the pre-signed URL's query:\n%s", r.stderr)
			}
		})
	}
}
