package registry

import (
	"context"
	"sync"
)

// onceMap makes a value once per key for concurrent callers: the first
// caller for a key makes it, the others wait for that one and share its
// result, and later callers reuse it. A failure is not kept unless the
// caller says so: the next caller for the key tries again.
type onceMap[V any] struct {
	mu sync.Mutex
	m  map[string]*onceEntry[V]
}

type onceEntry[V any] struct {
	done chan struct{}
	v    V
	err  error
}

// get returns the value for key, made by build if no caller has made it
// (or is making it). keep, when not nil, is asked whether a failure is
// kept for later callers. Waiting for another caller ends with ctx.
func (o *onceMap[V]) get(ctx context.Context, key string, build func() (V, error), keep func(error) bool) (V, error) {
	o.mu.Lock()
	if o.m == nil {
		o.m = map[string]*onceEntry[V]{}
	}
	e, ok := o.m[key]
	if !ok {
		e = &onceEntry[V]{done: make(chan struct{})}
		o.m[key] = e
	}
	o.mu.Unlock()
	if !ok {
		e.v, e.err = build()
		if e.err != nil && (keep == nil || !keep(e.err)) {
			o.mu.Lock()
			delete(o.m, key)
			o.mu.Unlock()
		}
		close(e.done)
	}
	select {
	case <-e.done:
		return e.v, e.err
	case <-ctx.Done():
		var zero V
		return zero, ctx.Err()
	}
}

// made reports whether the value for key was made without a failure,
// waiting for a caller making it; false when there is none, it failed,
// or ctx ended first.
func (o *onceMap[V]) made(ctx context.Context, key string) bool {
	return o.succeeded(key, ctx.Done())
}

// ready reports whether the value for key has been made without a
// failure, without waiting for a caller making it.
func (o *onceMap[V]) ready(key string) bool {
	now := make(chan struct{})
	close(now)
	return o.succeeded(key, now)
}

// succeeded reports whether the value for key was made without a
// failure, waiting for a caller making it until stop is closed.
func (o *onceMap[V]) succeeded(key string, stop <-chan struct{}) bool {
	o.mu.Lock()
	e, found := o.m[key]
	o.mu.Unlock()
	if !found {
		return false
	}
	select {
	case <-e.done: // before stop, when both are ready
		return e.err == nil
	default:
	}
	select {
	case <-e.done:
		return e.err == nil
	case <-stop:
		return false
	}
}
