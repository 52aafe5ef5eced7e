package registry

import (
	"crypto/tls"
	"fmt"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
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
	return g.next.RoundTrip(req)
}

// retryAfter honours the Retry-After header of 429 and 503 answers: it waits
// for the time the registry asked (capped) before handing the answer back to
// go-containerregistry's retry logic, which then retries.
type retryAfter struct {
	next http.RoundTripper
}

func (t *retryAfter) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || (resp.StatusCode != http.StatusTooManyRequests && resp.StatusCode != http.StatusServiceUnavailable) {
		return resp, err
	}
	wait, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if !ok {
		return resp, nil
	}
	timer := time.NewTimer(min(wait, maxRetryAfter))
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-req.Context().Done():
	}
	return resp, nil
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

// manifestLimit refuses manifests larger than MaxManifestSize, whether the
// registry declares the size or streams more than it declared.
type manifestLimit struct {
	next http.RoundTripper
}

func (t *manifestLimit) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || req.Method != http.MethodGet || !isManifestPath(req.URL.Path) {
		return resp, err
	}
	if resp.ContentLength > MaxManifestSize {
		resp.Body.Close()
		return nil, fmt.Errorf("manifest %s is %d bytes, over the %d-byte limit", req.URL.Path, resp.ContentLength, MaxManifestSize)
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: MaxManifestSize + 1, path: req.URL.Path}
	return resp, nil
}

// isManifestPath reports whether path is /v2/<name>/manifests/<reference>.
func isManifestPath(path string) bool {
	parts := strings.Split(path, "/")
	return len(parts) >= 4 && parts[1] == "v2" && parts[len(parts)-2] == "manifests"
}

type limitedBody struct {
	io.ReadCloser
	left int64
	path string
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.ReadCloser.Read(p)
	l.left -= int64(n)
	if l.left <= 0 {
		return n, fmt.Errorf("manifest %s is over the %d-byte limit", l.path, MaxManifestSize)
	}
	return n, err
}

// stallGuard ends a response whose body stops delivering data for longer
// than timeout, so that a stalled registry cannot hang a promotion: each
// read must make progress within timeout.
type stallGuard struct {
	next    http.RoundTripper
	timeout time.Duration
}

func (t *stallGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil || t.timeout <= 0 || resp.Body == nil || resp.Body == http.NoBody {
		return resp, err
	}
	resp.Body = newStallBody(resp.Body, t.timeout, req.URL.Host)
	return resp, nil
}

type stallBody struct {
	rc      io.ReadCloser
	timer   *time.Timer
	timeout time.Duration
	host    string
	stalled atomic.Bool
}

func newStallBody(rc io.ReadCloser, timeout time.Duration, host string) *stallBody {
	b := &stallBody{rc: rc, timeout: timeout, host: host}
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
	return b.rc.Close()
}

// StallError is a response that delivered nothing for too long. It is
// temporary: the request is retried.
type StallError struct {
	Host  string
	After time.Duration
}

func (e *StallError) Error() string {
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
