package registry

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// slowBackoff makes the first sleep 4 s: anything that returns promptly
// after a cancel did not sleep it out.
var slowBackoff = remote.Backoff{Duration: 4 * time.Second, Factor: 2, Steps: 5}

// fastBackoff keeps retry tests quick.
var fastBackoff = remote.Backoff{Duration: 10 * time.Millisecond, Factor: 2, Steps: 5}

func testClient(opts ...Option) *Client {
	return New(append([]Option{WithKeychain(authn.NewMultiKeychain())}, opts...)...)
}

// registryServer answers /v2/ with 200 and hands every other request to h.
func registryServer(t *testing.T, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// cancelAfterFirst returns a context that is cancelled a little after
// first is closed, and the time of the cancel.
func cancelAfterFirst(t *testing.T, first <-chan struct{}) (context.Context, func() time.Time) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	t.Cleanup(cancel)
	var mu sync.Mutex
	var at time.Time
	go func() {
		select {
		case <-first:
		case <-ctx.Done():
			return
		}
		time.Sleep(300 * time.Millisecond) // well inside the 4 s backoff
		mu.Lock()
		at = time.Now()
		mu.Unlock()
		cancel()
	}()
	return ctx, func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return at
	}
}

// A request answered 503 without Retry-After is retried after the
// backoff's sleep; cancelling the context during that sleep ends the
// request at once with the context's error. go-containerregistry's own
// retries sleep with time.Sleep and would return 4 s later.
func TestRetrySleepEndsWithTheContext(t *testing.T) {
	var requests atomic.Int32
	first := make(chan struct{})
	var once sync.Once
	srv := registryServer(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		once.Do(func() { close(first) })
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	c := testClient(WithRetryBackoff(slowBackoff))
	ref, err := c.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/repo:tag")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancelledAt := cancelAfterFirst(t, first)
	_, err = remote.Get(ref, c.RemoteOptions(ctx)...)
	returned := time.Now()
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want the context's error", err)
	}
	if at := cancelledAt(); at.IsZero() || returned.Sub(at) > 200*time.Millisecond {
		t.Errorf("returned %v after the cancel (cancelled: %v), want within 200ms", returned.Sub(at), !at.IsZero())
	}
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1 (the cancel came during the first sleep)", n)
	}
	if !strings.Contains(err.Error(), "503") {
		t.Errorf("err %q does not say what was being retried", err)
	}
}

// Client.Retry, which starts blob uploads over, sleeps the same way.
func TestClientRetrySleepEndsWithTheContext(t *testing.T) {
	c := testClient(WithRetryBackoff(slowBackoff))
	first := make(chan struct{})
	ctx, cancelledAt := cancelAfterFirst(t, first)
	calls := 0
	err := c.Retry(ctx, func(_ context.Context, attempt int) error {
		calls++
		if attempt == 1 {
			close(first)
		}
		return &StallError{Host: "registry.example", After: time.Second}
	})
	returned := time.Now()
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "registry.example") {
		t.Fatalf("err = %v, want the context's error naming what was retried", err)
	}
	if at := cancelledAt(); at.IsZero() || returned.Sub(at) > 200*time.Millisecond {
		t.Errorf("returned %v after the cancel, want within 200ms", returned.Sub(at))
	}
	if calls != 1 {
		t.Errorf("%d calls, want 1", calls)
	}
}

func TestClientRetryAttempts(t *testing.T) {
	c := testClient(WithRetryBackoff(fastBackoff))
	var got []int
	err := c.Retry(t.Context(), func(_ context.Context, attempt int) error {
		got = append(got, attempt)
		return fmt.Errorf("upload: %w", io.ErrUnexpectedEOF)
	})
	if !errors.Is(err, io.ErrUnexpectedEOF) || fmt.Sprint(got) != "[1 2 3 4 5]" {
		t.Errorf("attempts %v, err %v: want 5 attempts and the last error", got, err)
	}
	got = nil
	permanent := errors.New("digest mismatch")
	if err := c.Retry(t.Context(), func(_ context.Context, attempt int) error {
		got = append(got, attempt)
		return permanent
	}); err != permanent || len(got) != 1 {
		t.Errorf("a permanent error was retried (%v) or changed (%v)", got, err)
	}
}

// An operation whose request the transport already retried to the end is
// not started over: five attempts in all, not five times five.
func TestRetriesDoNotMultiply(t *testing.T) {
	var requests atomic.Int32
	srv := registryServer(t, func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		w.WriteHeader(http.StatusBadGateway)
	})
	c := testClient(WithRetryBackoff(fastBackoff))
	ref, _ := c.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/repo:tag")
	calls := 0
	err := c.Retry(t.Context(), func(ctx context.Context, _ int) error {
		calls++
		_, err := remote.Head(ref, c.RemoteOptions(ctx)...)
		return err
	})
	if StatusCode(err) != http.StatusBadGateway {
		t.Fatalf("err = %v, want the 502", err)
	}
	if calls != 1 || requests.Load() != 5 {
		t.Errorf("%d operations and %d requests, want 1 and 5", calls, requests.Load())
	}
}

// A 503 with Retry-After is retried no sooner than it asks, even when the
// backoff is shorter.
func TestRetryAfterIsHonoured(t *testing.T) {
	var mu sync.Mutex
	var times []time.Time
	srv := registryServer(t, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		times = append(times, time.Now())
		n := len(times)
		mu.Unlock()
		if n == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusNotFound)
	})
	c := testClient(WithRetryBackoff(fastBackoff))
	ref, _ := c.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/repo:tag")
	_, err := remote.Head(ref, c.RemoteOptions(t.Context())...)
	if StatusCode(err) != http.StatusNotFound {
		t.Fatalf("err = %v, want the 404 of the retried request", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(times) != 2 {
		t.Fatalf("%d requests, want 2", len(times))
	}
	if d := times[1].Sub(times[0]); d < time.Second {
		t.Errorf("retried after %v, want at least the 1 s Retry-After asked", d)
	}
}

func TestReplayable(t *testing.T) {
	body := func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("x")), nil }
	cases := []struct {
		method, path string
		body, get    bool
		want         bool
	}{
		{"GET", "/v2/r/manifests/v1", false, false, true},
		{"HEAD", "/v2/r/blobs/sha256:x", false, false, true},
		{"POST", "/v2/r/blobs/uploads/", false, false, true},
		{"PUT", "/v2/r/blobs/uploads/u?digest=sha256:x", false, false, true}, // commit
		{"PUT", "/v2/r/manifests/v1", true, true, true},
		{"POST", "/token", true, true, true},
		{"PUT", "/v2/r/manifests/v1", true, false, false},
		{"PATCH", "/v2/r/blobs/uploads/u", true, true, false},
		{"PUT", "/v2/r/blobs/uploads/u", true, true, false},
		{"PUT", "/upload/elsewhere", true, true, false},
		{"POST", "/v2/r/blobs/uploads/", true, true, false},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(c.method, "https://registry.example"+c.path, nil)
		if c.body {
			req.Body, _ = body()
		}
		if c.get {
			req.GetBody = body
		}
		if got := replayable(req); got != c.want {
			t.Errorf("replayable(%s %s, body %v, GetBody %v) = %v, want %v", c.method, c.path, c.body, c.get, got, c.want)
		}
	}
}

// cutManifest serves a manifest whose first answer declares its length,
// sends half and closes the connection.
func TestManifestBodyCutIsRetried(t *testing.T) {
	manifest := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)
	for _, mode := range []string{"cut", "stall"} {
		t.Run(mode, func(t *testing.T) {
			var gets atomic.Int32
			release := make(chan struct{})
			srv := registryServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				w.Header().Set("Content-Length", strconv.Itoa(len(manifest)))
				if gets.Add(1) > 1 {
					_, _ = w.Write(manifest)
					return
				}
				_, _ = w.Write(manifest[:len(manifest)/2])
				w.(http.Flusher).Flush()
				if mode == "stall" {
					select {
					case <-r.Context().Done():
					case <-release:
					}
					return
				}
				conn, _, err := w.(http.Hijacker).Hijack()
				if err == nil {
					conn.Close()
				}
			})
			defer close(release)
			c := testClient(WithRetryBackoff(fastBackoff), WithStallTimeout(200*time.Millisecond))
			ref, _ := c.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/repo:tag")
			desc, err := remote.Get(ref, c.RemoteOptions(t.Context())...)
			if err != nil {
				t.Fatalf("a manifest cut mid-body was not retried: %v", err)
			}
			if !bytes.Equal(desc.Manifest, manifest) {
				t.Errorf("got manifest %q", desc.Manifest)
			}
			if n := gets.Load(); n != 2 {
				t.Errorf("%d manifest requests, want 2", n)
			}
		})
	}
}

// endless is a request body that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) { return len(p), nil }

// A registry that stops reading an upload is abandoned after the stall
// timeout with a StallError, instead of hanging until the header timeout.
func TestStalledUploadIsAbandoned(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // never reads the body
	}))
	defer srv.Close()
	defer close(release)
	g := &stallGuard{next: http.DefaultTransport, timeout: 300 * time.Millisecond}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second) // a hang fails, not blocks the suite
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPatch, srv.URL+"/v2/r/blobs/uploads/u", io.LimitReader(endless{}, 1<<30))
	resp, err := g.RoundTrip(req)
	if resp != nil {
		resp.Body.Close()
	}
	var stall *StallError
	if !errors.As(err, &stall) || !stall.Upload || !Temporary(err) {
		t.Fatalf("err = %v, want a temporary StallError for the upload", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("the stall was not detected before the test's own deadline")
	}
	if !strings.Contains(err.Error(), "stalled upload") {
		t.Errorf("message %q", err)
	}
}

// slowSource is a request body that waits before its first bytes, as a
// slow source registry feeding an upload does.
type slowSource struct {
	wait time.Duration
	r    io.Reader
	once sync.Once
}

func (s *slowSource) Read(p []byte) (int, error) {
	s.once.Do(func() { time.Sleep(s.wait) })
	return s.r.Read(p)
}

// Waiting on the body's source is not the destination's stall: an upload
// fed slowly completes.
func TestSlowSourceIsNotAnUploadStall(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Got", strconv.FormatInt(n, 10))
		w.WriteHeader(http.StatusAccepted)
	}))
	defer srv.Close()
	g := &stallGuard{next: http.DefaultTransport, timeout: 200 * time.Millisecond}
	body := &slowSource{wait: 600 * time.Millisecond, r: io.LimitReader(endless{}, 1<<20)}
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodPatch, srv.URL+"/v2/r/blobs/uploads/u", io.NopCloser(body))
	resp, err := g.RoundTrip(req)
	if err != nil {
		t.Fatalf("a slow source was blamed on the destination: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted || resp.Header.Get("X-Got") != strconv.Itoa(1<<20) {
		t.Errorf("status %d, got %s bytes", resp.StatusCode, resp.Header.Get("X-Got"))
	}
}

// TestUploadErrorsGoContainerregistryCallsTemporary holds the README's
// "a blob upload the registry refuses with an error code
// go-containerregistry counts as temporary starts over": an operation
// failing with a 400 BLOB_UPLOAD_INVALID (an upload session the registry
// dropped) or UNKNOWN is retried to the end of the schedule, one failing
// with a 400 DIGEST_INVALID is not.
func TestUploadErrorsGoContainerregistryCallsTemporary(t *testing.T) {
	c := testClient(WithRetryBackoff(fastBackoff))
	for code, want := range map[transport.ErrorCode]int{
		transport.BlobUploadInvalidErrorCode: 5,
		transport.UnknownErrorCode:           5,
		transport.DigestInvalidErrorCode:     1,
	} {
		attempts := 0
		err := c.Retry(t.Context(), func(context.Context, int) error {
			attempts++
			return &transport.Error{StatusCode: http.StatusBadRequest, Errors: []transport.Diagnostic{{Code: code, Message: "refused"}}}
		})
		if err == nil || attempts != want {
			t.Errorf("a 400 %s: %d attempts (%v), want %d", code, attempts, err, want)
		}
	}
}

// TestObserversNest holds WithObserver's promise that an operation made
// within another is counted by both: a request made with a context
// carrying two observers, one added inside the other, reaches each once.
func TestObserversNest(t *testing.T) {
	srv := registryServer(t, func(w http.ResponseWriter, r *http.Request) {})
	c := testClient(WithRetryBackoff(fastBackoff))
	var outer, inner atomic.Int32
	ctx := WithObserver(t.Context(), func(*http.Request, *http.Response) { outer.Add(1) })
	ctx = WithObserver(ctx, func(*http.Request, *http.Response) { inner.Add(1) })
	ref, _ := c.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/repo:tag")
	_, _ = remote.Head(ref, c.RemoteOptions(ctx)...)
	if outer.Load() == 0 || outer.Load() != inner.Load() {
		t.Errorf("the outer observer saw %d requests, the inner %d: want the same, at least one", outer.Load(), inner.Load())
	}
}

// TestDefaultSchedule holds the README's "five attempts" with exponential
// backoff from about half a second: the schedule a Client uses unless
// told otherwise.
func TestDefaultSchedule(t *testing.T) {
	b := New().backoff
	if b.Steps != 5 || b.Duration != 500*time.Millisecond || b.Factor != 2 {
		t.Errorf("default schedule %+v, want 5 attempts from 500ms, doubling", b)
	}
}

// TestRetriedStatuses holds the README's list of the answers retried:
// 408, 429, 500, 502, 503, 504, 499 and 522 are, each for the schedule's
// five attempts; 400, 404 and 501 are not.
func TestRetriedStatuses(t *testing.T) {
	for _, tc := range []struct {
		status   int
		requests int32
	}{
		{408, 5}, {429, 5}, {500, 5}, {502, 5}, {503, 5}, {504, 5}, {499, 5}, {522, 5},
		{400, 1}, {404, 1}, {501, 1},
	} {
		var requests atomic.Int32
		srv := registryServer(t, func(w http.ResponseWriter, r *http.Request) {
			requests.Add(1)
			w.WriteHeader(tc.status)
		})
		c := testClient(WithRetryBackoff(fastBackoff))
		ref, _ := c.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/repo:tag")
		if _, err := remote.Head(ref, c.RemoteOptions(t.Context())...); err == nil {
			t.Errorf("%d: no error", tc.status)
		}
		if got := requests.Load(); got != tc.requests {
			t.Errorf("%d: %d requests, want %d", tc.status, got, tc.requests)
		}
	}
}
