package registry

import (
	"net/http"
	"net/http/httptest"
	"runtime"
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
