package registry

import (
	"net/http"
	"sync"
)

// WithMaxRequestsPerRegistry caps the requests in flight to any one
// registry host at n (0: no cap), across every operation of the Client: a
// fleet of promotions at once does not open more than n requests to Docker
// Hub, or to ECR. A request holds its place until its answer's headers
// arrive (an upload, until its body is sent), not while a response body
// streams, so that a blob streaming from one registry into an upload to
// the same registry cannot wait on itself.
func WithMaxRequestsPerRegistry(n int) Option {
	return func(c *Client) {
		if n > 0 {
			c.limit = &hostLimit{max: n, slots: map[string]chan struct{}{}}
		}
	}
}

// hostLimit is a semaphore per registry host.
type hostLimit struct {
	max   int
	mu    sync.Mutex
	slots map[string]chan struct{}
}

func (l *hostLimit) slot(host string) chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	s, ok := l.slots[host]
	if !ok {
		s = make(chan struct{}, l.max)
		l.slots[host] = s
	}
	return s
}

// limited is the transport that takes a place for each request.
type limited struct {
	next  http.RoundTripper
	limit *hostLimit
}

func (t *limited) RoundTrip(req *http.Request) (*http.Response, error) {
	s := t.limit.slot(req.URL.Host)
	select {
	case s <- struct{}{}:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	defer func() { <-s }()
	return t.next.RoundTrip(req)
}
