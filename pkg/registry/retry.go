package registry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// ocistow retries transient registry failures itself rather than through
// go-containerregistry, whose retries sleep with time.Sleep and so outlive
// a cancelled context (a promotion near its Lambda deadline, -timeout).
// Two layers share one schedule (Client's backoff) and one predicate
// (Temporary):
//
//   - retryTransport retries requests it can replay on its own: those
//     without a body, and manifest PUTs and token POSTs whose body
//     GetBody can produce again;
//   - Client.Retry retries whole operations whose request body cannot be
//     replayed by the transport: a blob upload streams from the source, so
//     it must re-open the source and start a new upload session.

// retryStatus reports whether a registry answer is worth retrying: 408,
// 429, 5xx of the kinds that pass, and the two proxy-specific codes
// go-containerregistry retries too (499 nginx, 522 Cloudflare).
func retryStatus(code int) bool {
	switch code {
	case http.StatusRequestTimeout, http.StatusTooManyRequests,
		http.StatusInternalServerError, http.StatusBadGateway,
		http.StatusServiceUnavailable, http.StatusGatewayTimeout,
		499, 522:
		return true
	}
	return false
}

// Temporary reports whether err is a transient failure worth retrying: a
// reset, closed or cut connection, a stalled one (StallError), or an error
// that says it is temporary (a 408, 429 or 5xx answer as
// go-containerregistry reports it). A cancelled or expired context never
// is.
func Temporary(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	var t interface{ Temporary() bool }
	if errors.As(err, &t) && t.Temporary() {
		return true
	}
	return errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET) ||
		errors.Is(err, net.ErrClosed)
}

// Sleep waits for d or until ctx ends, whichever comes first, and returns
// ctx's error in the second case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Retry calls f until it returns nil or an error that is not Temporary, at
// most as many times as the Client's backoff has steps (five by default),
// sleeping the backoff's jittered, growing delay between attempts. attempt
// counts from 1. The sleeps end as soon as ctx does: Retry then returns
// ctx's error, saying what it was about to retry.
//
// It is meant for operations the transport cannot replay by itself, such as
// a blob upload whose body streams from another registry: f must start the
// operation over, re-opening its source, and make its requests with the
// ctx it is given. When one of those requests already went through every
// attempt of the transport's own retries, the operation is not started
// over again: retries do not multiply.
func (c *Client) Retry(ctx context.Context, f func(ctx context.Context, attempt int) error) error {
	b := c.backoff
	steps := max(1, b.Steps)
	st := &retryState{}
	actx := context.WithValue(ctx, retryStateKey{}, st)
	for attempt := 1; ; attempt++ {
		err := f(actx, attempt)
		if err == nil || !Temporary(err) || attempt >= steps || st.exhausted.Load() {
			return err
		}
		st.setLast(Describe(err))
		if ctx.Err() != nil {
			return fmt.Errorf("%w while waiting to retry: %s", ctx.Err(), Describe(err))
		}
		wait := b.Step()
		c.logger.LogAttrs(ctx, slog.LevelDebug, "retry",
			slog.Int("attempt", attempt), slog.Duration("wait", wait), slog.String("err", Describe(err)))
		if serr := Sleep(ctx, wait); serr != nil {
			return fmt.Errorf("%w while waiting to retry: %s", serr, Describe(err))
		}
	}
}

// retryState is what the transport tells Client.Retry about the requests
// of one operation: whether one of them went through all its attempts,
// and the last failure retried.
type retryState struct {
	exhausted atomic.Bool
	mu        sync.Mutex
	last      string
}

type retryStateKey struct{}

func stateOf(ctx context.Context) *retryState {
	st, _ := ctx.Value(retryStateKey{}).(*retryState)
	return st
}

func (s *retryState) setLast(reason string) {
	if s == nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = reason
}

func (s *retryState) lastFailure() string {
	if s == nil {
		return ""
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

// retryTransport retries the requests it can replay (see replayable) on
// temporary failures and on 408, 429 and 5xx answers, with the Client's
// schedule, waiting at least as long as a Retry-After asks (capped at
// maxRetryAfter). Its sleeps end with the request's context. A request it
// cannot replay is sent once; when its answer carries a Retry-After, the
// wait happens here before the answer goes up to Client.Retry.
type retryTransport struct {
	next    http.RoundTripper
	backoff remote.Backoff
	logger  *slog.Logger
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx := req.Context()
	st := stateOf(ctx)
	if err := ctx.Err(); err != nil {
		// An operation that goes on after its context ended (such as
		// go-containerregistry retrying an upload without a cross-repository
		// mount) would report just the context's error: say what was being
		// retried when it ended.
		if last := st.lastFailure(); last != "" {
			return nil, fmt.Errorf("%w while waiting to retry: %s", err, last)
		}
	}
	b := t.backoff
	steps := max(1, b.Steps)
	replay := replayable(req)
	for attempt := 1; ; attempt++ {
		r := req
		if attempt > 1 && req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				return nil, fmt.Errorf("replaying the body of %s %s: %w", req.Method, RedactURL(req.URL), err)
			}
			r = req.Clone(ctx)
			r.Body = body
		}
		resp, err := t.next.RoundTrip(r)
		var after time.Duration
		switch {
		case err != nil:
			if !Temporary(err) || ctx.Err() != nil {
				return resp, err
			}
		case retryStatus(resp.StatusCode):
			if d, ok := parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()); ok {
				if d > maxRetryAfter {
					// Hours, as Docker Hub asks when the pulls are
					// spent: waiting helps no one.
					resp.Body.Close()
					return nil, &RateLimitError{Host: req.URL.Host, Status: resp.StatusCode, RetryAfter: d}
				}
				after = d
			}
		default:
			return resp, nil
		}
		if !replay || attempt >= steps {
			if replay && attempt > 1 && st != nil {
				st.exhausted.Store(true)
			}
			if err == nil && !replay && after > 0 {
				// Client.Retry starts the operation over; the registry
				// asked for this much patience first.
				_ = Sleep(ctx, after)
			}
			return resp, err
		}
		reason := failure(req, resp, err)
		st.setLast(reason)
		if resp != nil {
			// Drain a little so that the connection can be reused.
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
		}
		wait := max(b.Step(), after)
		t.logger.LogAttrs(ctx, slog.LevelDebug, "retry",
			slog.String("method", req.Method), slog.String("url", RedactURL(req.URL)),
			slog.Int("attempt", attempt), slog.Duration("wait", wait), slog.String("err", reason))
		if serr := Sleep(ctx, wait); serr != nil {
			return nil, fmt.Errorf("%w while waiting to retry: %s", serr, reason)
		}
	}
}

// failure describes on one line why a request is being retried.
func failure(req *http.Request, resp *http.Response, err error) string {
	if err != nil {
		return Describe(err)
	}
	return fmt.Sprintf("registry %s answered %d %s (%s %s)", req.URL.Host, resp.StatusCode, http.StatusText(resp.StatusCode), req.Method, req.URL.Path)
}

// replayable reports whether the transport may send req again by itself:
// it has no body, or a body GetBody can produce again that is not part of
// a blob upload. A blob upload (PATCH, PUT or POST with a body to an
// upload location) belongs to a session on the registry that a failure
// leaves in an unknown state: it is started over by Client.Retry instead.
func replayable(req *http.Request) bool {
	if req.Body == nil || req.Body == http.NoBody {
		return true
	}
	if req.GetBody == nil {
		return false
	}
	switch req.Method {
	case http.MethodPatch:
		return false
	case http.MethodPut:
		return isManifestPath(req.URL.Path)
	case http.MethodPost:
		return !strings.Contains(req.URL.Path, "/blobs/uploads/")
	}
	return true
}
