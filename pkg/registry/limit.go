package registry

import (
	"container/heap"
	"context"
	"net/http"
	"sync"
)

// WithMaxRequestsPerRegistry caps the requests in flight to any one
// registry host at n (0: no cap), across every operation of the Client: a
// fleet of promotions at once does not open more than n requests to Docker
// Hub, or to ECR. A request holds its place until its answer's headers
// arrive (an upload, until its body is sent), not while a response body
// streams, so that a blob streaming from one registry into an upload to
// the same registry cannot wait on itself. Waiting requests get the places
// as they free in the order of their priority (WithPriority), then of
// their arrival.
func WithMaxRequestsPerRegistry(n int) Option {
	return func(c *Client) {
		if n > 0 {
			c.limit = &hostLimit{max: n, hosts: map[string]*hostSlots{}}
		}
	}
}

type priorityKey struct{}

// WithPriority returns ctx with the requests made with it given priority
// p where a registry's places are capped (WithMaxRequestsPerRegistry):
// waiting requests of a lower p go first. A fleet gives each image its
// place in the file, so that the images being written are not held up by
// the reads of the images after them. Requests without a priority have 0.
func WithPriority(ctx context.Context, p int) context.Context {
	return context.WithValue(ctx, priorityKey{}, p)
}

// PriorityOf returns the priority WithPriority gave ctx (0 when none).
func PriorityOf(ctx context.Context) int {
	p, _ := ctx.Value(priorityKey{}).(int)
	return p
}

// hostLimit holds the places of each registry host.
type hostLimit struct {
	max   int
	mu    sync.Mutex
	hosts map[string]*hostSlots
	seq   uint64
}

// hostSlots is one host's places: how many are taken, and who waits.
type hostSlots struct {
	taken   int
	waiting waiters
}

// waiter is a request waiting for a place; ready is closed when it has
// one.
type waiter struct {
	priority int
	seq      uint64
	ready    chan struct{}
	index    int // in the heap; -1 once out of it
}

// waiters is a heap of waiting requests, the next to go first.
type waiters []*waiter

func (w waiters) Len() int { return len(w) }
func (w waiters) Less(i, j int) bool {
	if w[i].priority != w[j].priority {
		return w[i].priority < w[j].priority
	}
	return w[i].seq < w[j].seq
}
func (w waiters) Swap(i, j int) { w[i], w[j] = w[j], w[i]; w[i].index = i; w[j].index = j }
func (w *waiters) Push(x any)   { v := x.(*waiter); v.index = len(*w); *w = append(*w, v) }
func (w *waiters) Pop() any {
	old := *w
	v := old[len(old)-1]
	*w, v.index = old[:len(old)-1], -1
	return v
}

// acquire takes a place at host, waiting its turn; it fails only when ctx
// ends first.
func (l *hostLimit) acquire(ctx context.Context, host string) error {
	l.mu.Lock()
	h, ok := l.hosts[host]
	if !ok {
		h = &hostSlots{}
		l.hosts[host] = h
	}
	if h.taken < l.max && h.waiting.Len() == 0 {
		h.taken++
		l.mu.Unlock()
		return nil
	}
	l.seq++
	w := &waiter{priority: PriorityOf(ctx), seq: l.seq, ready: make(chan struct{})}
	heap.Push(&h.waiting, w)
	l.mu.Unlock()
	select {
	case <-w.ready:
		return nil
	case <-ctx.Done():
		l.mu.Lock()
		defer l.mu.Unlock()
		if w.index < 0 { // given a place meanwhile: hand it on
			l.release(h)
		} else {
			heap.Remove(&h.waiting, w.index)
		}
		return ctx.Err()
	}
}

// done gives back a place at host.
func (l *hostLimit) done(host string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.release(l.hosts[host])
}

// release passes a place of h to the next waiter, or frees it; l.mu is
// held.
func (l *hostLimit) release(h *hostSlots) {
	if h.waiting.Len() > 0 {
		close(heap.Pop(&h.waiting).(*waiter).ready)
		return
	}
	h.taken--
}

// limited is the transport that takes a place for each request.
type limited struct {
	next  http.RoundTripper
	limit *hostLimit
}

func (t *limited) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := t.limit.acquire(req.Context(), req.URL.Host); err != nil {
		return nil, err
	}
	defer t.limit.done(req.URL.Host)
	return t.next.RoundTrip(req)
}
