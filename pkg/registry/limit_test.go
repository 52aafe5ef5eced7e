package registry

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

func TestMaxRequestsPerRegistry(t *testing.T) {
	var inFlight, most atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		<-release
		w.WriteHeader(http.StatusNotFound)
	}))
	defer srv.Close()
	c := New(WithKeychain(authn.NewMultiKeychain()), WithMaxRequestsPerRegistry(3))
	host := strings.TrimPrefix(srv.URL, "http://")
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref, _ := name.ParseReference(host + "/repo:" + string(rune('a'+i)))
			_, _ = remote.Head(ref, c.RemoteOptions(t.Context())...)
		}()
	}
	// Let requests pile up (without the cap all twelve would reach the
	// server), then let them all go.
	for inFlight.Load() < 3 {
		runtime.Gosched()
	}
	time.Sleep(200 * time.Millisecond)
	close(release)
	wg.Wait()
	if m := most.Load(); m != 3 {
		t.Errorf("at most %d requests were in flight to one registry, want exactly the cap of 3", m)
	}
}

// Waiting requests get a freed place by priority, then by arrival; one
// whose context ends leaves the queue without taking a place.
func TestLimitServesByPriority(t *testing.T) {
	l := &hostLimit{max: 1, hosts: map[string]*hostSlots{}}
	if err := l.acquire(t.Context(), "h"); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var order []int
	var wg sync.WaitGroup
	gone, cancel := context.WithCancel(t.Context())
	queued := func(n int) {
		for {
			l.mu.Lock()
			got := l.hosts["h"].waiting.Len()
			l.mu.Unlock()
			if got == n {
				return
			}
			runtime.Gosched()
		}
	}
	for i, p := range []int{3, 1, 2, 1} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := WithPriority(t.Context(), p)
			if i == 3 {
				ctx = WithPriority(gone, p) // gives up before its turn
			}
			if err := l.acquire(ctx, "h"); err != nil {
				return
			}
			mu.Lock()
			order = append(order, p*10+i)
			mu.Unlock()
			l.done("h")
		}()
		queued(i + 1) // arrivals in this order
	}
	cancel()
	queued(3)
	l.done("h")
	wg.Wait()
	if want := []int{11, 22, 30}; !slices.Equal(order, want) {
		t.Errorf("served %v (priority*10+arrival), want %v", order, want)
	}
	if h := l.hosts["h"]; h.taken != 0 || h.waiting.Len() != 0 {
		t.Errorf("left %d places taken and %d waiting", h.taken, h.waiting.Len())
	}
}
