// Package registry holds what ocistow needs to talk to OCI registries: image
// reference parsing with ocistow's insecure-registry rules, credentials, and
// an HTTP transport that retries transient failures (honouring Retry-After,
// with sleeps that end with the context), abandons stalled requests,
// refuses plain HTTP to remote hosts, and logs requests at debug level
// without secrets.
//
// It produces go-containerregistry remote options; the registry protocol
// itself is go-containerregistry's.
package registry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// DefaultJobs is the number of blobs moved at once when WithJobs is not
// given: the number of usable CPUs (GOMAXPROCS), but at least
// MinDefaultJobs, since copies are bound by the network rather than the
// CPU.
func DefaultJobs() int { return max(MinDefaultJobs, runtime.GOMAXPROCS(0)) }

// MinDefaultJobs is the least DefaultJobs returns.
const MinDefaultJobs = 4

// DefaultBackoff returns the retry schedule for transient registry
// failures (connection resets, timeouts, stalls, 408, 429, 5xx): five
// attempts, sleeping about 0.5, 1, 2 and 4 seconds between them, longer
// when the registry sends Retry-After. Steps counts attempts.
func DefaultBackoff() remote.Backoff {
	return remote.Backoff{Duration: 500 * time.Millisecond, Factor: 2, Jitter: 0.2, Steps: 5}
}

// Client carries the settings shared by every registry operation of one
// ocistow process: credentials, the connection pool, insecure hosts, and
// concurrency. A Client is safe for concurrent use.
type Client struct {
	keychain   authn.Keychain
	base       http.RoundTripper
	insecure   map[string]bool
	jobs       int
	backoff    remote.Backoff
	userAgent  string
	logger     *slog.Logger
	tp         trace.TracerProvider
	stall      time.Duration
	limit      *hostLimit // nil: no cap
	limits     *rateLimits
	shared     shared
	writers    onceMap[*Writer]     // one per repository
	pings      onceMap[*keptAnswer] // one per registry and scheme (see pingcache.go)
	earlyHosts sync.Map             // registries sent an early read (see early.go)
}

// DefaultStallTimeout is how long a response body may deliver nothing
// before the request is abandoned (and retried).
const DefaultStallTimeout = 60 * time.Second

// WithStallTimeout sets how long a response may deliver no data before it
// is abandoned; 0 turns the guard off.
func WithStallTimeout(d time.Duration) Option { return func(c *Client) { c.stall = d } }

// Option configures a Client.
type Option func(*Client)

// WithKeychain sets where credentials come from. The default is the Docker
// config keychain (~/.docker/config.json, DOCKER_CONFIG, credential helpers).
func WithKeychain(k authn.Keychain) Option { return func(c *Client) { c.keychain = k } }

// WithInsecureRegistries names registries (host or host:port) that may be
// reached over plain HTTP or over TLS without certificate verification.
// Loopback registries never need naming.
func WithInsecureRegistries(hosts ...string) Option {
	return func(c *Client) {
		for _, h := range hosts {
			c.insecure[h] = true
		}
	}
}

// WithJobs sets how many blobs and manifests move concurrently.
func WithJobs(n int) Option {
	return func(c *Client) {
		if n > 0 {
			c.jobs = n
		}
	}
}

// WithRetryBackoff sets the retry schedule for transient failures, both
// for requests the transport replays and for Client.Retry. Steps is the
// number of attempts.
func WithRetryBackoff(b remote.Backoff) Option { return func(c *Client) { c.backoff = b } }

// WithLogger sets the logger that receives one debug record per HTTP
// request. The default discards them.
func WithLogger(l *slog.Logger) Option { return func(c *Client) { c.logger = l } }

// WithTracerProvider records a span for every HTTP request to a registry
// (otelhttp). No trace header is sent to registries.
func WithTracerProvider(tp trace.TracerProvider) Option { return func(c *Client) { c.tp = tp } }

// WithUserAgent sets the User-Agent sent to registries.
func WithUserAgent(ua string) Option { return func(c *Client) { c.userAgent = ua } }

// WithBaseTransport replaces the transport under ocistow's own layers
// (retries, stall guard, manifest limit, debug logging). It is meant for tests and for callers with
// their own connection pool; the plain-HTTP guard is not applied to it.
func WithBaseTransport(rt http.RoundTripper) Option { return func(c *Client) { c.base = rt } }

// New returns a Client configured by opts.
func New(opts ...Option) *Client {
	c := &Client{
		keychain: authn.DefaultKeychain,
		insecure: map[string]bool{},
		jobs:     DefaultJobs(),
		stall:    DefaultStallTimeout,
		backoff:  DefaultBackoff(),
		logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		limits:   &rateLimits{remaining: map[string]int{}},
	}
	for _, o := range opts {
		o(c)
	}
	if c.base == nil {
		c.base = newBaseTransport(c.insecure)
	}
	return c
}

// Jobs returns the configured concurrency.
func (c *Client) Jobs() int { return c.jobs }

// ListTags lists the tags of repository (all pages), as the registry
// returns them.
func (c *Client) ListTags(ctx context.Context, repository string) ([]string, error) {
	repo, err := c.ParseRepository(repository)
	if err != nil {
		return nil, err
	}
	p, err := c.Puller()
	if err != nil {
		return nil, err
	}
	return p.List(ctx, repo)
}

// ParseRepository parses s as a repository (no tag or digest), with the
// same rules as ParseReference.
func (c *Client) ParseRepository(s string) (name.Repository, error) {
	if strings.TrimSpace(s) != s || s == "" {
		return name.Repository{}, fmt.Errorf("invalid repository %q", s)
	}
	var opts []name.Option
	if r, err := name.NewRepository(s); err == nil && c.insecure[r.RegistryStr()] {
		opts = append(opts, name.Insecure)
	}
	repo, err := name.NewRepository(s, opts...)
	if err != nil {
		return name.Repository{}, fmt.Errorf("invalid repository %q: %w", s, stripParsePrefix(err))
	}
	return repo, nil
}

// ParseReference parses s as an image reference (tag or digest). Short
// Docker names resolve as Docker resolves them: "busybox" is
// index.docker.io/library/busybox:latest. Registries named insecure are
// marked so that go-containerregistry may fall back to plain HTTP.
func (c *Client) ParseReference(s string) (name.Reference, error) {
	if strings.TrimSpace(s) != s || s == "" {
		return nil, fmt.Errorf("invalid image reference %q", s)
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, fmt.Errorf("invalid image reference %q: %w", s, stripParsePrefix(err))
	}
	if c.insecure[ref.Context().RegistryStr()] {
		ref, err = name.ParseReference(s, name.Insecure)
		if err != nil {
			return nil, fmt.Errorf("invalid image reference %q: %w", s, stripParsePrefix(err))
		}
	}
	return ref, nil
}

// stripParsePrefix drops the library's own "could not parse reference"
// preamble, which repeats what our message already says.
func stripParsePrefix(err error) error {
	msg := err.Error()
	if i := strings.Index(msg, ": "); i >= 0 && strings.HasPrefix(msg, "could not parse reference") {
		return fmt.Errorf("%s", msg[i+2:])
	}
	return err
}

// roundTripper is the transport under every request the Client makes:
// registry pings answered once per registry (see pingcache.go), manifests
// by digest read once per operation (see manifestcache.go), each
// attempt logged and guarded on its own, the retries ocistow's (see
// retry.go).
func (c *Client) roundTripper() http.RoundTripper {
	base := c.base
	if c.tp != nil {
		// otelhttp records the whole URL; a pre-signed blob URL carries
		// credentials in its query. Overwrite it with the redacted form.
		base = otelhttp.NewTransport(&redactSpanURL{next: base},
			otelhttp.WithTracerProvider(c.tp),
			otelhttp.WithPropagators(propagation.NewCompositeTextMapPropagator()),
			otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return "HTTP " + r.Method }),
		)
	}
	if c.limit != nil {
		base = &limited{next: base, limit: c.limit}
	}
	attempt := &debugLog{next: &manifestBody{next: &stallGuard{next: &observe{next: &rateLimitWatch{next: base, limits: c.limits}}, timeout: c.stall}}, logger: c.logger}
	return &pingCache{
		pings: &c.pings, insecure: c.insecure,
		keychain: c.keychain, earlyHosts: &c.earlyHosts, userAgent: c.userAgent,
		next: &manifestCacheTransport{next: &headFirst{next: &retryTransport{next: attempt, backoff: c.backoff, logger: c.logger}}},
	}
}

// RemoteOptions returns the go-containerregistry options for operations
// bound to ctx, over the Client's transport (its retries, guards, logging
// and tracing). Most callers want the shared Puller and Pusher instead.
func (c *Client) RemoteOptions(ctx context.Context) []remote.Option {
	rt := c.roundTripper()
	// The retries are ocistow's (see retry.go), so go-containerregistry's
	// are turned off: one attempt, no status codes to retry.
	opts := []remote.Option{
		remote.WithContext(ctx),
		remote.WithAuthFromKeychain(c.keychain),
		remote.WithTransport(rt),
		remote.WithJobs(c.jobs),
		remote.WithRetryBackoff(remote.Backoff{Steps: 1}),
		remote.WithRetryStatusCodes(),
		remote.WithRetryPredicate(func(error) bool { return false }),
	}
	if c.userAgent != "" {
		opts = append(opts, remote.WithUserAgent(c.userAgent))
	}
	return opts
}
