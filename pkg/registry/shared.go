package registry

import (
	"context"
	"net/http"
	"sync"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// The Client's one Puller and one Pusher, shared by every operation: a
// registry is pinged, and a token fetched for a repository, once per
// process rather than once per promotion, and every operation draws on one
// connection pool. go-containerregistry's Puller and Pusher are safe for
// concurrent use and take each call's context.
type shared struct {
	once   sync.Once
	puller *remote.Puller
	pusher *remote.Pusher
	err    error
}

// maxSharedStreams bounds the blob streams the shared Puller runs at once:
// far above what ocistow's own bounds let through.
const maxSharedStreams = 1024

// Puller returns the Client's shared Puller.
func (c *Client) Puller() (*remote.Puller, error) {
	c.initShared()
	return c.shared.puller, c.shared.err
}

// Pusher returns the Client's shared Pusher.
func (c *Client) Pusher() (*remote.Pusher, error) {
	c.initShared()
	return c.shared.pusher, c.shared.err
}

func (c *Client) initShared() {
	c.shared.once.Do(func() {
		// The options' context is only the default for calls that take
		// none; every call of a Puller or Pusher takes its own.
		opts := c.RemoteOptions(context.Background())
		// go-containerregistry's Puller lets no more blob streams run at
		// once than its jobs, across everything that shares it: with one
		// Puller per process, a fleet would move -jobs blobs in all, not
		// per image. ocistow bounds streams itself (-jobs large blobs per
		// promotion, small ones apart, -registry-requests per registry),
		// so the Puller's own bound is set out of the way.
		popts := append(opts[:len(opts):len(opts)], remote.WithJobs(maxSharedStreams))
		if c.shared.puller, c.shared.err = remote.NewPuller(popts...); c.shared.err != nil {
			return
		}
		c.shared.pusher, c.shared.err = remote.NewPusher(opts...)
	})
}

// Observer is told of every registry answer of the requests made with a
// context it was attached to (WithObserver), after the transport's own
// retries: each attempt once.
type Observer func(req *http.Request, resp *http.Response)

type observerKey struct{}

// WithObserver returns ctx with obs attached: requests the Client makes
// with it (or a context derived from it) are reported to obs, and to the
// observers ctx already had. Several operations can share the Client's
// transport and still count their own requests, and an operation made
// within another is counted by both.
func WithObserver(ctx context.Context, obs Observer) context.Context {
	if outer, ok := ctx.Value(observerKey{}).(Observer); ok {
		inner := obs
		obs = func(req *http.Request, resp *http.Response) {
			inner(req, resp)
			outer(req, resp)
		}
	}
	return context.WithValue(ctx, observerKey{}, obs)
}

// observe reports each answer to the observer of the request's context.
type observe struct {
	next http.RoundTripper
}

func (t *observe) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.next.RoundTrip(req)
	if obs, ok := req.Context().Value(observerKey{}).(Observer); ok && err == nil {
		obs(req, resp)
	}
	return resp, err
}
