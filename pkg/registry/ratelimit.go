package registry

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
)

// Registries that meter pulls (Docker Hub: 100 manifest GETs per 6 hours
// anonymously, 200 authenticated) say how many are left in a header on
// every manifest answer, HEADs included, which cost nothing:
//
//	ratelimit-limit: 100;w=21600
//	ratelimit-remaining: 76;w=21600
//
// The Client remembers the last count each registry host gave, so that a
// fleet of promotions can stop starting images that need pulls before the
// registry starts refusing them.

// rateLimits is the last ratelimit-remaining each host answered.
type rateLimits struct {
	mu        sync.Mutex
	remaining map[string]int
}

func (r *rateLimits) observe(host string, h http.Header) {
	n, ok := parseRemaining(h.Get("Ratelimit-Remaining"))
	if !ok {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.remaining[host] = n
}

func (r *rateLimits) get(host string) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n, ok := r.remaining[host]
	return n, ok
}

// parseRemaining reads "76;w=21600" (or "76").
func parseRemaining(v string) (int, bool) {
	v, _, _ = strings.Cut(v, ";")
	n, err := strconv.Atoi(strings.TrimSpace(v))
	return n, err == nil && n >= 0
}

// rateLimitWatch records the rate-limit headers of every answer.
type rateLimitWatch struct {
	next   http.RoundTripper
	limits *rateLimits
}

func (t *rateLimitWatch) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if err == nil {
		t.limits.observe(req.URL.Host, resp.Header)
	}
	return resp, err
}

// PullsRemaining returns the number of pulls reg said it has left for us
// (its last ratelimit-remaining header), and false when it never said.
func (c *Client) PullsRemaining(reg name.Registry) (int, bool) {
	host := reg.RegistryStr()
	if host == name.DefaultRegistry {
		host = "registry-1.docker.io" // where go-containerregistry sends Docker Hub's requests
	}
	return c.limits.get(host)
}

// RateLimitError is a registry that refused a request for its rate limit
// and asked to be retried later than ocistow waits (maxRetryAfter): the
// request is not retried. It is not temporary.
type RateLimitError struct {
	Host       string
	Status     int
	RetryAfter time.Duration
}

func (e *RateLimitError) Error() string {
	return fmt.Sprintf("registry %s is rate limiting (%d %s): it asks to be retried after %s", e.Host, e.Status, http.StatusText(e.Status), e.RetryAfter.Round(time.Second))
}
