package registry

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
)

// maxRetryAfter caps how long a single Retry-After answer may make us wait,
// so that a hostile or confused registry cannot stall a promotion for hours.
const maxRetryAfter = 60 * time.Second

// IsLoopback reports whether host (with or without a port) names this
// machine: localhost, *.localhost, 127.0.0.0/8 or ::1. Plain HTTP is allowed
// to such hosts without -insecure-registry, as docker and crane allow it.
func IsLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	h = strings.Trim(h, "[]")
	if h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// hostRouter sends requests for hosts named as insecure through a transport
// that skips TLS verification, and everything else through one that verifies.
type hostRouter struct {
	secure   http.RoundTripper
	insecure http.RoundTripper
	hosts    map[string]bool
}

func (r *hostRouter) RoundTrip(req *http.Request) (*http.Response, error) {
	if r.hosts[req.URL.Host] || r.hosts[req.URL.Hostname()] {
		return r.insecure.RoundTrip(req)
	}
	return r.secure.RoundTrip(req)
}

// plainHTTPGuard refuses plain-HTTP requests to hosts that are neither
// loopback nor explicitly named insecure. go-containerregistry falls back to
// HTTP for RFC 1918 addresses on its own; a promotion tool in the supply
// chain's trust path must not.
type plainHTTPGuard struct {
	next  http.RoundTripper
	hosts map[string]bool
}

func (g *plainHTTPGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !IsLoopback(req.URL.Host) && !g.hosts[req.URL.Host] && !g.hosts[req.URL.Hostname()] {
		return nil, fmt.Errorf("refusing plain HTTP to %s (name it with -insecure-registry to allow)", req.URL.Host)
	}
	// A remote registry may not redirect us to this machine (the Lambda
	// Runtime API, a metadata proxy): loopback is for registries the user
	// named as such.
	if req.Response != nil && IsLoopback(req.URL.Host) && !IsLoopback(req.Response.Request.URL.Host) {
		return nil, fmt.Errorf("refusing a redirect from %s to this machine (%s)", req.Response.Request.URL.Host, req.URL.Host)
	}
	// go-containerregistry's redirect policy replaces net/http's, which
	// stops after 10 redirects; a registry redirecting in a circle would
	// otherwise hold the promotion forever.
	if n := redirects(req); n > maxRedirects {
		return nil, fmt.Errorf("gave up after %d redirects (last from %s)", maxRedirects, req.Response.Request.URL.Host)
	}
	return g.next.RoundTrip(req)
}

// maxRedirects is how many redirects one request may follow, as net/http's
// default policy allows.
const maxRedirects = 10

// redirects counts the redirects that led to req.
func redirects(req *http.Request) int {
	n := 0
	for r := req.Response; r != nil && r.Request != nil; r = r.Request.Response {
		n++
	}
	return n
}

// parseRetryAfter reads a Retry-After value in either of its two forms,
// delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.Atoi(v); err == nil {
		if secs < 0 {
			return 0, false
		}
		return time.Duration(secs) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		d := t.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

// debugLog logs each request with its answer and timing at debug level.
// Only the method, host, path and an allow-list of query parameters are
// logged: never headers, so never an Authorization header or a token, and
// never the signed query of a pre-signed blob URL.
type debugLog struct {
	next   http.RoundTripper
	logger *slog.Logger
}

func (t *debugLog) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	if !t.logger.Enabled(ctx, slog.LevelDebug) {
		return t.next.RoundTrip(req)
	}
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	attrs := []slog.Attr{
		slog.String("method", req.Method),
		slog.String("url", RedactURL(req.URL)),
		slog.Duration("took", time.Since(start)),
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	} else {
		attrs = append(attrs, slog.Int("status", resp.StatusCode))
		if resp.ContentLength >= 0 {
			attrs = append(attrs, slog.Int64("bytes", resp.ContentLength))
		}
	}
	t.logger.LogAttrs(ctx, slog.LevelDebug, "http", attrs...)
	return resp, err
}

// safeQuery reports whether a query parameter carries no secret and helps
// when reading a debug log.
func safeQuery(k string) bool {
	switch k {
	case "digest", "mount", "from", "n", "last":
		return true
	}
	return false
}

// RedactURL renders u without user information and with every query value
// replaced by "redacted" except those known to carry no secret (digest,
// mount, from, n, last). Pre-signed blob URLs carry credentials in their
// query; upload locations carry opaque state.
func RedactURL(u *url.URL) string {
	c := *u
	c.User = nil
	if c.RawQuery != "" {
		q := c.Query()
		for k := range q {
			if !safeQuery(k) {
				q[k] = []string{"redacted"}
			}
		}
		c.RawQuery = q.Encode()
	}
	return c.String()
}

// newBaseTransport returns the shared, connection-pooling transport that
// every registry request goes through.
func newBaseTransport(insecure map[string]bool) http.RoundTripper {
	mk := func(skipVerify bool) *http.Transport {
		return &http.Transport{
			Proxy: http.ProxyFromEnvironment,
			DialContext: (&net.Dialer{
				Timeout:   30 * time.Second,
				KeepAlive: 30 * time.Second,
			}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConns:          100,
			MaxIdleConnsPerHost:   50,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ResponseHeaderTimeout: 2 * time.Minute,
			ExpectContinueTimeout: time.Second,
			TLSClientConfig:       &tls.Config{InsecureSkipVerify: skipVerify, MinVersion: tls.VersionTLS12}, //nolint:gosec // only for hosts the user named with -insecure-registry
		}
	}
	var rt http.RoundTripper = mk(false)
	if len(insecure) > 0 {
		rt = &hostRouter{secure: rt, insecure: mk(true), hosts: insecure}
	}
	return &plainHTTPGuard{next: rt, hosts: insecure}
}

// MaxManifestSize is the largest manifest or index ocistow reads: 4 MiB,
// the limit registries such as Distribution and ECR enforce on writes.
const MaxManifestSize = 4 << 20

// manifestBody refuses manifests larger than MaxManifestSize, whether the
// registry declares the size or streams more than it declared, and reads
// every manifest body whole inside the round trip: a body cut short or
// stalled after the headers then fails the round trip itself, with a
// temporary error that retryTransport retries like any other, instead of
// surfacing later, past every retry, as "unexpected EOF".
type manifestBody struct {
	next http.RoundTripper
}

func (t *manifestBody) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !isManifestPath(req.URL.Path) {
		return resp, err
	}
	if resp.ContentLength > MaxManifestSize {
		resp.Body.Close()
		return nil, &manifestTooLarge{path: req.URL.Path, size: resp.ContentLength}
	}
	body, err := io.ReadAll(&limitedBody{r: resp.Body, left: MaxManifestSize + 1, path: req.URL.Path})
	resp.Body.Close()
	if err != nil {
		var tooLarge *manifestTooLarge
		if errors.As(err, &tooLarge) {
			return nil, err
		}
		return nil, &manifestReadError{path: req.URL.Path, err: err}
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	resp.ContentLength = int64(len(body))
	return resp, nil
}

// isManifestPath reports whether path is /v2/<name>/manifests/<reference>.
func isManifestPath(path string) bool {
	parts := strings.Split(path, "/")
	return len(parts) >= 4 && parts[1] == "v2" && parts[len(parts)-2] == "manifests"
}

// manifestTooLarge is a manifest over MaxManifestSize. It is not
// temporary: asking again brings the same manifest.
type manifestTooLarge struct {
	path string
	size int64 // declared, or 0 when streamed past the limit
}

func (e *manifestTooLarge) Error() string {
	if e.size > 0 {
		return fmt.Sprintf("manifest %s is %d bytes, over the %d-byte limit", e.path, e.size, MaxManifestSize)
	}
	return fmt.Sprintf("manifest %s is over the %d-byte limit", e.path, MaxManifestSize)
}

// manifestReadError is a manifest body that broke off (reset, cut short,
// stalled). It is as temporary as its cause, and a body cut short always
// is.
type manifestReadError struct {
	path string
	err  error
}

func (e *manifestReadError) Error() string {
	return fmt.Sprintf("reading manifest %s: %v", e.path, e.err)
}

func (e *manifestReadError) Unwrap() error { return e.err }

// Temporary marks the error as worth retrying.
func (e *manifestReadError) Temporary() bool { return Temporary(e.err) }

type limitedBody struct {
	r    io.Reader
	left int64
	path string
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	if l.left <= 0 {
		return n, &manifestTooLarge{path: l.path}
	}
	return n, err
}

// stallGuard ends a request that makes no progress for longer than
// timeout, in either direction, so that a stalled registry cannot hang a
// promotion:
//
//   - each read of a response body must deliver within timeout;
//   - a request with a body (an upload) must have the registry take some of
//     it, or answer, within timeout of the last bytes it took. When the
//     registry stops reading, the transport's writes block and it stops
//     asking the body for more; after timeout of that, the request is
//     cancelled and fails with a StallError.
//
// Only the waits on the registry count: time spent inside a read of the
// request body (waiting on the source registry that feeds an upload) or
// between reads of the response body (a reader busy elsewhere) does not.
type stallGuard struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *stallGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if t.timeout <= 0 {
		return t.next.RoundTrip(req)
	}
	var w *uploadWatch
	if req.Body != nil && req.Body != http.NoBody {
		req, w = watchUpload(req, t.timeout)
	}
	resp, err := t.next.RoundTrip(req)
	release := func() {}
	if w != nil {
		release = w.cancel
		if w.answered() {
			if err == nil {
				resp.Body.Close()
			}
			w.cancel()
			return nil, &StallError{Host: req.URL.Host, After: t.timeout, Upload: true}
		}
	}
	if err != nil || resp.Body == nil || resp.Body == http.NoBody {
		release()
		return resp, err
	}
	resp.Body = newStallBody(resp.Body, t.timeout, req.URL.Host, release)
	return resp, nil
}

// uploadWatch cancels a request whose registry stopped taking its body and
// did not answer for timeout. Its timer runs only while the transport is
// not inside a read of the body, and stops for good once the answer comes.
type uploadWatch struct {
	timeout time.Duration
	cancel  context.CancelFunc

	mu      sync.Mutex
	timer   *time.Timer
	reading bool // the transport is inside a read of the body
	done    bool // the answer came (or the request failed)
	fired   bool // the watch cancelled the request
}

// watchUpload returns a copy of req whose context the watch may cancel and
// whose body (and GetBody's) the watch observes.
func watchUpload(req *http.Request, timeout time.Duration) (*http.Request, *uploadWatch) {
	ctx, cancel := context.WithCancel(req.Context())
	w := &uploadWatch{timeout: timeout, cancel: cancel}
	w.timer = time.AfterFunc(timeout, w.fire)
	r := req.WithContext(ctx)
	r.Body = &watchedBody{ReadCloser: req.Body, w: w}
	if get := req.GetBody; get != nil {
		r.GetBody = func() (io.ReadCloser, error) {
			b, err := get()
			if err != nil {
				return nil, err
			}
			return &watchedBody{ReadCloser: b, w: w}, nil
		}
	}
	return r, w
}

func (w *uploadWatch) fire() {
	w.mu.Lock()
	if w.done || w.reading {
		w.mu.Unlock()
		return
	}
	w.fired = true
	w.mu.Unlock()
	w.cancel()
}

func (w *uploadWatch) enterRead() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reading = true
	w.timer.Stop()
}

func (w *uploadWatch) leaveRead() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.reading = false
	if !w.done && !w.fired {
		w.timer.Reset(w.timeout)
	}
}

// answered stops the watch and reports whether it had cancelled the
// request.
func (w *uploadWatch) answered() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.done = true
	w.timer.Stop()
	return w.fired
}

type watchedBody struct {
	io.ReadCloser
	w *uploadWatch
}

func (b *watchedBody) Read(p []byte) (int, error) {
	b.w.enterRead()
	defer b.w.leaveRead()
	return b.ReadCloser.Read(p)
}

type stallBody struct {
	rc      io.ReadCloser
	timer   *time.Timer
	timeout time.Duration
	host    string
	stalled atomic.Bool
	release func()
}

func newStallBody(rc io.ReadCloser, timeout time.Duration, host string, release func()) *stallBody {
	b := &stallBody{rc: rc, timeout: timeout, host: host, release: release}
	b.timer = time.AfterFunc(timeout, func() {
		b.stalled.Store(true)
		rc.Close()
	})
	b.timer.Stop() // runs only while a Read waits
	return b
}

// Read times only the wait inside the read, so that a reader that stops
// reading (a destination that stopped taking the upload this body feeds)
// is not blamed on this registry.
func (b *stallBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.timeout)
	n, err := b.rc.Read(p)
	b.timer.Stop()
	if b.stalled.Load() {
		return n, &StallError{Host: b.host, After: b.timeout}
	}
	return n, err
}

func (b *stallBody) Close() error {
	b.timer.Stop()
	err := b.rc.Close()
	b.release()
	return err
}

// StallError is a registry that made no progress for too long: a response
// that delivered nothing, or an upload the registry stopped taking without
// answering. It is temporary: the request is retried.
type StallError struct {
	Host  string
	After time.Duration
	// Upload is set when the registry stopped taking a request body.
	Upload bool
}

func (e *StallError) Error() string {
	if e.Upload {
		return fmt.Sprintf("registry %s took no data and sent no answer for %s: gave up on a stalled upload", e.Host, e.After)
	}
	return fmt.Sprintf("registry %s sent nothing for %s: gave up on a stalled connection", e.Host, e.After)
}

// Temporary marks the error as worth retrying.
func (e *StallError) Temporary() bool { return true }

// Timeout marks the error as a timeout.
func (e *StallError) Timeout() bool { return true }

// redactSpanURL sits under otelhttp and replaces the url.full attribute of
// the request's span with RedactURL's form.
type redactSpanURL struct {
	next http.RoundTripper
}

func (t *redactSpanURL) RoundTrip(req *http.Request) (*http.Response, error) {
	trace.SpanFromContext(req.Context()).SetAttributes(attribute.String("url.full", RedactURL(req.URL)))
	return t.next.RoundTrip(req)
}
