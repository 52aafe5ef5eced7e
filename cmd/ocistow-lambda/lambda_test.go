package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-lambda-go/lambdacontext"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/testenv"
)

// These tests run the real bootstrap binary under the AWS Lambda Runtime
// Interface Emulator, against real registries and local-kms.
var e2e struct {
	bootstrap   string
	ocistow     string // the CLI, for the plans of ocistow sync
	bed         *testenv.Bed
	cosign      string
	trustedRoot string
}

func TestMain(m *testing.M) {
	// Nothing in these tests may reach for the EC2 metadata service (a
	// non-loopback address) when an AWS SDK finds no credentials.
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	if os.Getenv(panicChildEnv) != "" {
		// A child of TestPanicOffTheInvocationsGoroutineEndsTheProcess,
		// which needs nothing started.
		os.Exit(m.Run())
	}
	code, err := testMain(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lambda e2e setup:", err)
		code = 1
	}
	os.Exit(code)
}

func testMain(m *testing.M) (int, error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ocistow-lambda-e2e-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	if e2e.bootstrap, err = testenv.BuildBootstrap(dir); err != nil {
		return 1, err
	}
	if e2e.ocistow, err = buildCLI(dir); err != nil {
		return 1, err
	}
	if e2e.bed, err = testenv.StartBed(ctx, dir); err != nil {
		return 1, err
	}
	defer e2e.bed.Close()
	if e2e.cosign, err = testenv.Tool("cosign"); err != nil {
		return 1, err
	}
	if e2e.trustedRoot, err = testenv.WriteEmptyTrustedRoot(dir); err != nil {
		return 1, err
	}
	return m.Run(), nil
}

// function starts the bootstrap under the emulator with the environment a
// deployed function would have (plus the test's KMS endpoint), and env.
func function(t *testing.T, env ...string) *testenv.Lambda {
	t.Helper()
	base := append([]string{
		"AWS_LAMBDA_FUNCTION_TIMEOUT=120",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_KMS_KEY_ARN=alias/" + testenv.ECKey,
	}, e2e.bed.KMS.Env()...)
	l, err := testenv.StartLambda(t.Context(), e2e.bootstrap, append(base, env...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

type lambdaError struct {
	ErrorType    string `json:"errorType"`
	ErrorMessage string `json:"errorMessage"`
}

type promoteResult struct {
	Source            string `json:"source"`
	Destination       string `json:"destination"`
	SourceDigest      string `json:"sourceDigest"`
	DestinationDigest string `json:"destinationDigest"`
	Manifests         []struct {
		Platform          string `json:"platform"`
		DestinationDigest string `json:"destinationDigest"`
	} `json:"manifests"`
	BlobsCopied  int     `json:"blobsCopied"`
	BlobsSkipped int     `json:"blobsSkipped"`
	BytesCopied  int64   `json:"bytesCopied"`
	TookSeconds  float64 `json:"tookSeconds"`
	UpToDate     bool    `json:"upToDate"`
	SourcePulls  int     `json:"sourcePulls"`
	Signatures   *struct {
		Key     string   `json:"key"`
		Formats []string `json:"formats"`
		Added   int      `json:"added"`
		Present int      `json:"present"`
	} `json:"signatures"`
}

// invoke sends a promotion payload and returns the result or the function
// error.
func invoke(t *testing.T, l *testenv.Lambda, payload string) (*promoteResult, *lambdaError) {
	t.Helper()
	var res promoteResult
	if le := invokeJSON(t, l, payload, &res); le != nil {
		return nil, le
	}
	return &res, nil
}

func dstRepo(t *testing.T, host string) string {
	return host + "/lambda-" + testenv.RepoName(t.Name())
}

func digestOf(t *testing.T, ref string) string {
	t.Helper()
	d, err := testenv.Get(t.Context(), ref)
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	return d.Digest.String()
}

func payload(src, dst string, annotations map[string]string) string {
	b, _ := json.Marshal(map[string]any{"SrcImageRef": src, "DstImageRef": dst, "Annotations": annotations})
	return string(b)
}

func TestPromotesAndSignsWithTheSeedPayload(t *testing.T) {
	l := function(t)
	dst := dstRepo(t, e2e.bed.Dst.Host) + ":v1"
	res, le := invoke(t, l, payload(e2e.bed.SrcRef("multi"), dst, map[string]string{"team": "foo", "owner": "martin"}))
	if le != nil {
		t.Fatalf("function error %s: %s\n%s", le.ErrorType, le.ErrorMessage, l.Output())
	}
	if res.SourceDigest != e2e.bed.Fixtures["multi"] || res.DestinationDigest != digestOf(t, dst) {
		t.Errorf("result digests %s -> %s; source %s, destination holds %s", res.SourceDigest, res.DestinationDigest, e2e.bed.Fixtures["multi"], digestOf(t, dst))
	}
	if len(res.Manifests) != 2 || res.BlobsCopied != 6 || res.BytesCopied == 0 || res.TookSeconds <= 0 {
		t.Errorf("result %+v: want 2 manifests, 6 blobs copied, bytes and took", res)
	}
	if res.Signatures == nil || res.Signatures.Added != 3 || res.Signatures.Key != "awskms:///alias/"+testenv.ECKey {
		t.Fatalf("signatures %+v: want 3 added with the configured key", res.Signatures)
	}
	// The real cosign verifies the index and every child.
	repo := dstRepo(t, e2e.bed.Dst.Host)
	images := []string{dst}
	for _, m := range res.Manifests {
		images = append(images, repo+"@"+m.DestinationDigest)
	}
	for _, img := range images {
		cmd := exec.Command(e2e.cosign, "verify", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot,
			"--key", "awskms:///alias/"+testenv.ECKey, "-a", "team=foo", "-a", "owner=martin", img)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, e2e.bed.KMS.Env()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("cosign verify %s: %v\n%s", img, err, out)
		}
	}
	// Canonical lines are JSON and carry the request id.
	var copyLine map[string]any
	for _, line := range strings.Split(l.Output(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["method"] == "Copy" {
			copyLine = m
		}
	}
	if copyLine == nil {
		t.Fatalf("no JSON canonical Copy line in the function's output:\n%s", l.Output())
	}
	if id, _ := copyLine["aws_request_id"].(string); id == "" {
		t.Errorf("canonical line lacks aws_request_id: %v", copyLine)
	}
	if copyLine["dst_digest"] != res.DestinationDigest {
		t.Errorf("canonical line dst_digest %v, want %s", copyLine["dst_digest"], res.DestinationDigest)
	}

	// The same invocation again copies nothing and finds every signature.
	again, le := invoke(t, l, payload(e2e.bed.SrcRef("multi"), dst, map[string]string{"team": "foo", "owner": "martin"}))
	if le != nil {
		t.Fatalf("second invocation: %s: %s", le.ErrorType, le.ErrorMessage)
	}
	if again.BlobsCopied != 0 || again.Signatures == nil || again.Signatures.Present != 3 || again.Signatures.Added != 0 {
		t.Errorf("second invocation %+v, signatures %+v: want nothing copied, 3 present", again, again.Signatures)
	}
	// Stamped, and still no pull from the source: the destination records
	// the source digest it was made from.
	if !again.UpToDate || again.SourcePulls != 0 || res.UpToDate || res.SourcePulls != 3 {
		t.Errorf("first invocation upToDate %v with %d pulls, second %v with %d: want 3 pulls, then up to date with none", res.UpToDate, res.SourcePulls, again.UpToDate, again.SourcePulls)
	}
}

func TestErrorTypes(t *testing.T) {
	l := function(t)
	repo := dstRepo(t, e2e.bed.Dst.Host)
	good := e2e.bed.SrcRef("single")
	// A source that serves its manifest as text/html, and a destination
	// that refuses every upload with 400: failures of the source and of
	// the destination that are not about credentials or existence.
	badSource := testenv.NewFront(e2e.bed.Src.Host)
	defer badSource.Close()
	badSource.SetModify(func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/manifests/") {
			resp.Header.Set("Content-Type", "text/html")
		}
		return nil
	})
	badDestination := testenv.NewFront(e2e.bed.Dst.Host)
	defer badDestination.Close()
	badDestination.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost {
			return false
		}
		http.Error(w, `{"errors":[{"code":"BLOB_UPLOAD_INVALID","message":"no uploads today"}]}`, http.StatusBadRequest)
		return true
	})
	cases := []struct {
		name, payload, errorType, want string
	}{
		{"malformed JSON", `{"SrcImageRef":`, "InvalidRequest", "invalid payload"},
		{"not an object", `["busybox"]`, "InvalidRequest", "invalid payload"},
		{"unknown field", `{"SrcImageRef":"` + good + `","DstImageRef":"` + repo + `:a","Annotation":{"team":"foo"}}`, "InvalidRequest", `unknown field "Annotation"`},
		{"trailing data", `{"SrcImageRef":"` + good + `","DstImageRef":"` + repo + `:a"} {}`, "InvalidRequest", "after the JSON object"},
		{"trailing brace", `{"SrcImageRef":"` + good + `","DstImageRef":"` + repo + `:a"}}`, "InvalidRequest", "after the JSON object"},
		{"trailing bracket", `{"SrcImageRef":"` + good + `","DstImageRef":"` + repo + `:a"}]`, "InvalidRequest", "after the JSON object"},
		{"missing source", payload("", repo+":a", nil), "InvalidRequest", "SrcImageRef is required"},
		{"missing destination", payload(good, "", nil), "InvalidRequest", "DstImageRef is required"},
		{"bad reference", payload("Not A Ref!!", repo+":a", nil), "InvalidRequest", "invalid image reference"},
		{"empty annotation key", payload(good, repo+":a", map[string]string{"": "x"}), "InvalidRequest", "empty key"},
		{"source not found", payload(e2e.bed.Src.Host+"/src/missing:v1", repo+":a", nil), "SourceNotFound", "404"},
		{"unauthorized", payload(e2e.bed.Auth.Host+"/private/img:v1", repo+":a", nil), "Unauthorized", "401"},
		{"source fails", payload(badSource.Host+"/src/single:v1", repo+":a", nil), "SourceFailed", "text/html"},
		{"destination fails", payload(good, badDestination.Host+"/"+strings.TrimPrefix(repo, e2e.bed.Dst.Host+"/")+":a", nil), "CopyFailed", "BLOB_UPLOAD_INVALID"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, le := invoke(t, l, c.payload)
			if le == nil {
				t.Fatal("the function succeeded")
			}
			if le.ErrorType != c.errorType || !strings.Contains(le.ErrorMessage, c.want) || strings.Contains(le.ErrorMessage, "\n") {
				t.Errorf("errorType %q message %q: want %q containing %q on one line", le.ErrorType, le.ErrorMessage, c.errorType, c.want)
			}
		})
	}
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	if tags, err := remote.List(r, remote.WithContext(t.Context())); err == nil && len(tags) > 0 {
		t.Errorf("refused invocations left tags %v", tags)
	}
}

func TestInvalidConfigurationFailsAtInit(t *testing.T) {
	for _, c := range []struct {
		name string
		env  []string
		want string
	}{
		{"missing key", []string{"AWS_KMS_KEY_ARN=alias/does-not-exist"}, "NotFoundException"},
		{"disabled key", []string{"AWS_KMS_KEY_ARN=alias/" + testenv.DisabledKey}, "Disabled"},
		{"bad bool", []string{"SIGN=perhaps"}, "SIGN"},
		{"no key", []string{"AWS_KMS_KEY_ARN="}, "signing needs a key"},
		{"bad signature format", []string{"SIGNATURE_FORMAT=v3"}, "want legacy, bundle or both"},
		// README Configuration: a key "not for signing"; a keyless source
		// policy whose TRUSTED_ROOT cannot be read, at init for
		// SOURCE_IDENTITY.
		{"key not for signing", []string{"AWS_KMS_KEY_ARN=alias/" + testenv.EncryptKey}, "signing needs a SIGN_VERIFY key"},
		{"unreadable trusted root", []string{"SOURCE_IDENTITY=^https://github\\.com/example/", "SOURCE_ISSUER=https://token.actions.githubusercontent.com",
			"TRUSTED_ROOT=/nonexistent/trusted_root.json"}, "/nonexistent/trusted_root.json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			l := function(t, c.env...)
			_, le := invoke(t, l, payload(e2e.bed.SrcRef("single"), dstRepo(t, e2e.bed.Dst.Host)+":v1", nil))
			if le == nil {
				t.Fatal("the function ran with an invalid configuration")
			}
			if le.ErrorType != "InvalidConfiguration" || !strings.Contains(le.ErrorMessage, c.want) {
				t.Errorf("error %+v: want InvalidConfiguration naming %q", le, c.want)
			}
			// The emulator passes the function's stderr on as it comes:
			// the line may follow the answer.
			deadline := time.Now().Add(10 * time.Second)
			for !strings.Contains(l.Output(), c.want) && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if !strings.Contains(l.Output(), c.want) {
				t.Errorf("init log lacks %q:\n%s", c.want, l.Output())
			}
		})
	}
}

func TestTimeoutLeavesTagUntouched(t *testing.T) {
	// Every blob upload to the destination is slow: the 3 × 3 MiB image
	// cannot be copied within a 4 s function timeout.
	front := testenv.NewFront(e2e.bed.Dst.Host)
	defer front.Close()
	var slow atomic.Bool
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if slow.Load() && testenv.IsUpload(r) {
			select {
			case <-time.After(3 * time.Second):
			case <-r.Context().Done():
			}
		}
		return false
	})
	dst := dstRepo(t, front.Host) + ":stable"
	l := function(t, "AWS_LAMBDA_FUNCTION_TIMEOUT=4", "SIGN=false", "JOBS=1")
	if _, le := invoke(t, l, payload(e2e.bed.SrcRef("other"), dst, nil)); le != nil {
		t.Fatalf("first promotion: %s: %s", le.ErrorType, le.ErrorMessage)
	}
	before := digestOf(t, strings.Replace(dst, front.Host, e2e.bed.Dst.Host, 1))
	slow.Store(true)

	_, le := invoke(t, l, payload(e2e.bed.SrcRef("big"), dst, nil))
	if le == nil {
		t.Fatal("a copy that cannot finish in time succeeded")
	}
	if le.ErrorType != "Timeout" || !strings.Contains(le.ErrorMessage, "before the function's timeout") {
		t.Errorf("errorType %q message %q: want Timeout, cancelled before the function's timeout", le.ErrorType, le.ErrorMessage)
	}
	if after := digestOf(t, strings.Replace(dst, front.Host, e2e.bed.Dst.Host, 1)); after != before {
		t.Errorf("tag moved from %s to %s after a cancelled promotion", before, after)
	}
}

func TestPromotesMoreThanItsMemory(t *testing.T) {
	// 192 MiB of layers through a function with 128 MB. The bound checked
	// is half of that, less than one layer: holding any layer in memory
	// would break it.
	const layers, size = 3, 64 << 20
	img, err := testenv.BulkImage(layers, size, 7)
	if err != nil {
		t.Fatal(err)
	}
	src := e2e.bed.Src.Host + "/src/bulk:v1"
	if err := testenv.Push(t.Context(), src, img); err != nil {
		t.Fatal(err)
	}
	// Nor may the copy spill to disk. TMPDIR is a path below a regular
	// file, where nothing can be created (ENOTDIR, even for root), so a
	// temporary file would fail the invocation; HOME is an empty directory
	// that must stay empty.
	notDir := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(notDir, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	l := function(t, "SIGN=false", "TMPDIR="+filepath.Join(notDir, "tmp"), "HOME="+home)
	res, le := invoke(t, l, payload(src, dstRepo(t, e2e.bed.Dst.Host)+":v1", nil))
	if le != nil {
		t.Fatalf("%s: %s\n%s", le.ErrorType, le.ErrorMessage, l.Output())
	}
	if res.BytesCopied < layers*size {
		t.Fatalf("copied %d bytes, want at least %d", res.BytesCopied, layers*size)
	}
	peak, err := testenv.PeakRSS(e2e.bootstrap)
	if err != nil {
		t.Fatalf("cannot tell whether the copy streamed: %v", err)
	}
	t.Logf("peak RSS %.1f MiB while copying %d MiB", float64(peak)/(1<<20), layers*size>>20)
	if peak >= size {
		t.Errorf("peak RSS %d MiB, not below one %d MiB layer: the copy does not stream", peak>>20, size>>20)
	}
	if written, err := os.ReadDir(home); err != nil || len(written) != 0 {
		t.Errorf("the function wrote to its HOME: %v %v", written, err)
	}
}

// The real bootstrap under the emulator exports its spans before each
// invocation returns (Lambda freezes the process after).
func TestSpansAreFlushedBeforeTheInvocationReturns(t *testing.T) {
	recv := testenv.NewOTLPReceiver()
	defer recv.Close()
	l := function(t, "AWS_XRAY=true", "OTEL_EXPORTER_OTLP_ENDPOINT="+recv.Endpoint)
	if _, le := invoke(t, l, payload(e2e.bed.SrcRef("single"), dstRepo(t, e2e.bed.Dst.Host)+":v1", map[string]string{"team": "foo"})); le != nil {
		t.Fatalf("%s: %s", le.ErrorType, le.ErrorMessage)
	}
	names := map[string]bool{}
	for _, s := range recv.Spans() {
		names[strings.Fields(s.Name)[0]] = true
	}
	for _, want := range []string{"ocistow-lambda", "Copy", "Sign", "blob", "manifest", "sign"} {
		if !names[want] {
			t.Errorf("no %s span exported by the time the invocation returned (have %v)", want, names)
		}
	}
	if !strings.Contains(l.Output(), `"trace_id":"1-`) {
		t.Errorf("the JSON canonical lines lack a trace id:\n%s", l.Output())
	}
}

// Lambda hands the runtime the invocation's X-Ray header (aws-lambda-go
// puts it in the context); ocistow's spans must join that trace under the
// function's segment. The emulator does not forward the header (its tracer
// is a no-op), so this runs the handler in-process with the context Lambda
// would give it.
func TestSpansJoinTheInvocationsTrace(t *testing.T) {
	recv := testenv.NewOTLPReceiver()
	defer recv.Close()
	env := map[string]string{
		"AWS_XRAY":                    "true",
		"OTEL_EXPORTER_OTLP_ENDPOINT": recv.Endpoint,
		"AWS_KMS_KEY_ARN":             "alias/" + testenv.ECKey,
	}
	for _, kv := range e2e.bed.KMS.Env() {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	// In-process, the AWS SDK and the OTLP exporter read the process
	// environment, as they do in Lambda.
	for k, v := range env {
		t.Setenv(k, v)
	}
	var logs testenv.Buffer
	h, err := newHandler(t.Context(), func(k string) (string, bool) { v, ok := env[k]; return v, ok }, &logs)
	if err != nil {
		t.Fatal(err)
	}
	root := fmt.Sprintf("%08x%s", time.Now().Unix(), "0123456789abcdef01234567")
	parent := "53995c3f42cd8ad8"
	header := "Root=1-" + root[:8] + "-" + root[8:] + ";Parent=" + parent + ";Sampled=1"
	ctx := lambdacontext.NewContext(t.Context(), &lambdacontext.LambdaContext{AwsRequestID: "req-1"})
	ctx = context.WithValue(ctx, "x-amzn-trace-id", header) //nolint:staticcheck // the key aws-lambda-go uses
	if _, err := h.Invoke(ctx, []byte(payload(e2e.bed.SrcRef("single"), dstRepo(t, e2e.bed.Dst.Host)+":v1", nil))); err != nil {
		t.Fatal(err)
	}
	// Spans of the init (the key check) are traces of their own; every span
	// of the invocation is in the invocation's trace.
	var spans []testenv.Span
	for _, s := range recv.Spans() {
		if s.Parent == "" && s.Name != "ocistow-lambda" {
			continue
		}
		spans = append(spans, s)
	}
	var top *testenv.Span
	for i, s := range spans {
		if s.TraceID != root {
			t.Errorf("span %s in trace %s, not the invocation's %s", s.Name, s.TraceID, root)
		}
		if s.Name == "ocistow-lambda" {
			top = &spans[i]
		}
	}
	if top == nil || top.Parent != parent {
		var names []string
		for _, s := range spans {
			names = append(names, s.Name)
		}
		t.Fatalf("want the ocistow-lambda span under the function's segment %s, got %+v (spans: %v)", parent, top, names)
	}
	if len(spans) < 5 {
		t.Errorf("only %d spans", len(spans))
	}
	want := `"trace_id":"1-` + root[:8] + "-" + root[8:] + `"`
	if !strings.Contains(logs.String(), want) || !strings.Contains(logs.String(), `"aws_request_id":"req-1"`) {
		t.Errorf("canonical lines lack %s or the request id:\n%s", want, logs.String())
	}
}

func TestTimeoutWhileWaitingToRetry(t *testing.T) {
	// The destination answers every upload 503: the retries' waits (0.5,
	// 1, 2 s) run past the 3 s function timeout, and must end with it, so
	// that the function reports Timeout rather than being killed.
	front := testenv.NewFront(e2e.bed.Dst.Host)
	defer front.Close()
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost {
			return false
		}
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return true
	})
	l := function(t, "AWS_LAMBDA_FUNCTION_TIMEOUT=3", "SIGN=false", "JOBS=1")
	_, le := invoke(t, l, payload(e2e.bed.SrcRef("other"), dstRepo(t, front.Host)+":v1", nil))
	if le == nil {
		t.Fatal("a copy to a destination that refuses every upload succeeded")
	}
	if le.ErrorType != "Timeout" || !strings.Contains(le.ErrorMessage, "before the function's timeout") {
		t.Errorf("errorType %q message %q: want Timeout, cancelled before the function's timeout", le.ErrorType, le.ErrorMessage)
	}
	if n := front.Count(func(r testenv.Request) bool { return r.Method == http.MethodPost }); n < 3 {
		t.Errorf("%d uploads tried: the timeout came before the retries' waits it is about", n)
	}
}

func TestSignatureFormat(t *testing.T) {
	l := function(t, "SIGNATURE_FORMAT=bundle")
	repo := dstRepo(t, e2e.bed.Dst.Host)
	// The function's SIGNATURE_FORMAT, then the payload's SignatureFormat.
	res, le := invoke(t, l, payload(e2e.bed.SrcRef("single"), repo+":v1", map[string]string{"team": "foo"}))
	if le != nil {
		t.Fatalf("invoke: %+v", le)
	}
	if res.Signatures == nil || !slices.Equal(res.Signatures.Formats, []string{"bundle"}) || res.Signatures.Added != 1 {
		t.Errorf("signatures %+v, want one bundle added", res.Signatures)
	}
	both := `{"SrcImageRef":"` + e2e.bed.SrcRef("single") + `","DstImageRef":"` + repo + `:v1","Annotations":{"team":"foo"},"SignatureFormat":"both"}`
	if res, le = invoke(t, l, both); le != nil {
		t.Fatalf("invoke: %+v", le)
	}
	if !slices.Equal(res.Signatures.Formats, []string{"legacy", "bundle"}) || res.Signatures.Added != 1 || res.Signatures.Present != 1 {
		t.Errorf("signatures %+v, want the legacy one added and the bundle present", res.Signatures)
	}
	bad := strings.Replace(both, `"both"`, `"sigstore"`, 1)
	if _, le := invoke(t, l, bad); le == nil || le.ErrorType != "InvalidRequest" || !strings.Contains(le.ErrorMessage, "SignatureFormat") {
		t.Errorf("SignatureFormat sigstore: %+v, want InvalidRequest", le)
	}
}

// TestTimeoutAfterTheCopySaysTheTagMoved: a deadline that cuts signing or
// the referrers short comes after the tag moved; the Timeout error says
// the copy succeeded and which step was cut, rather than that the tag
// stayed.
func TestTimeoutAfterTheCopySaysTheTagMoved(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		body map[string]any
		// held reports whether a request to the source (src) or the
		// destination is one the step that is cut short sends first.
		held func(src bool, r *http.Request) bool
		want string
	}{
		{name: "signing", env: nil, body: nil, want: "signing failed",
			// Signing reads the digest's .sig tag first.
			held: func(src bool, r *http.Request) bool {
				return !src && strings.Contains(r.URL.Path, "/manifests/sha256-") && strings.HasSuffix(r.URL.Path, ".sig")
			}},
		{name: "referrers", env: []string{"SIGN=false"}, body: map[string]any{"Referrers": true}, want: "copying the referrers failed",
			// The referrers step lists the source's referrers first.
			held: func(src bool, r *http.Request) bool {
				return src && (strings.Contains(r.URL.Path, "/referrers/") || strings.Contains(r.URL.Path, "/manifests/sha256-"))
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var held atomic.Int32
			hook := func(src bool) func(w http.ResponseWriter, r *http.Request) bool {
				return func(w http.ResponseWriter, r *http.Request) bool {
					if tc.held(src, r) {
						held.Add(1)
						<-r.Context().Done()
						return true
					}
					return false
				}
			}
			srcFront, dstFront := testenv.NewFront(e2e.bed.Src.Host), testenv.NewFront(e2e.bed.Dst.Host)
			defer srcFront.Close()
			defer dstFront.Close()
			srcFront.SetHook(hook(true))
			dstFront.SetHook(hook(false))
			src := strings.Replace(e2e.bed.SrcRef("single"), e2e.bed.Src.Host, srcFront.Host, 1)
			dst := dstRepo(t, dstFront.Host) + ":v1"
			l := function(t, append([]string{"AWS_LAMBDA_FUNCTION_TIMEOUT=3"}, tc.env...)...)
			body := map[string]any{"SrcImageRef": src, "DstImageRef": dst}
			maps.Copy(body, tc.body)
			raw, err := json.Marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			_, le := invoke(t, l, string(raw))
			if le == nil {
				t.Fatal("a promotion whose last step cannot finish in time succeeded")
			}
			if held.Load() == 0 {
				t.Fatal("the step never sent the request held: the test cut nothing short")
			}
			for _, want := range []string{"before the function's timeout", "copy succeeded (", tc.want} {
				if le.ErrorType != "Timeout" || !strings.Contains(le.ErrorMessage, want) {
					t.Errorf("errorType %q message %q: want Timeout saying %q", le.ErrorType, le.ErrorMessage, want)
				}
			}
			if strings.Contains(le.ErrorMessage, "not moved") {
				t.Errorf("message %q says the tag was not moved; it was", le.ErrorMessage)
			}
			if got := digestOf(t, strings.Replace(dst, dstFront.Host, e2e.bed.Dst.Host, 1)); got != e2e.bed.Fixtures["single"] {
				t.Errorf("destination tag at %s, want the copied %s", got, e2e.bed.Fixtures["single"])
			}
		})
	}
}
