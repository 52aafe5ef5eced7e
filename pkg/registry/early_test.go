package registry_test

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/pkg/registry"
)

// pingHold holds every plain-HTTP ping until a manifest request has been
// sent (or wait has passed), and records the order of what was sent and
// answered. Early reads are sent during the hold; reads that wait for the
// ping are sent after it.
type pingHold struct {
	next      http.RoundTripper
	wait      time.Duration
	manifests chan struct{}

	mu     sync.Mutex
	events []string // "ping answered", "<METHOD> manifest [auth]"
	agents []string // the User-Agent of each manifest request
}

func newPingHold(wait time.Duration) *pingHold {
	return &pingHold{next: http.DefaultTransport, wait: wait, manifests: make(chan struct{}, 64)}
}

func (h *pingHold) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "https" {
		return nil, &tlsRefused{}
	}
	if req.URL.Path == "/v2/" {
		select {
		case <-h.manifests:
		case <-time.After(h.wait):
		}
		resp, err := h.next.RoundTrip(req)
		h.record("ping answered")
		return resp, err
	}
	if strings.Contains(req.URL.Path, "/manifests/") {
		event := req.Method + " manifest"
		if req.Header.Get("Authorization") != "" {
			event += " auth"
		}
		h.record(event)
		h.mu.Lock()
		h.agents = append(h.agents, req.Header.Get("User-Agent"))
		h.mu.Unlock()
		h.manifests <- struct{}{}
	}
	return h.next.RoundTrip(req)
}

func (h *pingHold) record(e string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.events = append(h.events, e)
}

func (h *pingHold) log() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

// slowSecondLookup is an anonymous keychain whose second lookup waits for
// release.
type slowSecondLookup struct {
	mu      sync.Mutex
	n       int
	release chan struct{}
}

func (k *slowSecondLookup) Resolve(authn.Resource) (authn.Authenticator, error) {
	k.mu.Lock()
	k.n++
	n := k.n
	k.mu.Unlock()
	if n == 2 {
		<-k.release
	}
	return authn.Anonymous, nil
}

// holdUntilCancelled holds req until its context ends, or five seconds
// pass, says on cancelled which came first, and returns the error to fail
// req with.
func holdUntilCancelled(req *http.Request, cancelled chan<- bool) error {
	select {
	case <-req.Context().Done():
		cancelled <- true
	case <-time.After(5 * time.Second):
		cancelled <- false
	}
	return cmp.Or(req.Context().Err(), errors.New("held for 5 s"))
}

// roundTripFunc is a RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// tlsRefused is what a plain-HTTP registry answers an HTTPS request with.
type tlsRefused struct{}

func (*tlsRefused) Error() string { return "tls: first record does not look like a TLS handshake" }

// pushRandom pushes a random image to ref and returns its digest.
func pushRandom(t *testing.T, ref string) string {
	t.Helper()
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// staticKeychain has the same credentials for every registry.
type staticKeychain struct{}

func (staticKeychain) Resolve(authn.Resource) (authn.Authenticator, error) {
	return authn.FromConfig(authn.AuthConfig{Username: "u", Password: "p"}), nil
}

// TestEarlyRead checks that a manifest read made with WithEarlyRead goes
// out alongside the registry's ping, and answers the call, on a registry
// that asks for no credentials; and that it is left out, or left unused,
// where credentials are involved.
func TestEarlyRead(t *testing.T) {
	for _, method := range []string{http.MethodHead, http.MethodGet} {
		t.Run(method+" open registry", func(t *testing.T) {
			s := newWriterServer(t)
			want := pushRandom(t, s.host+"/app:v1")
			h := newPingHold(5 * time.Second)
			c := registry.New(registry.WithBaseTransport(h))
			got := readManifest(t, c, method, s.host+"/app:v1")
			if got != want {
				t.Errorf("digest %s, want %s", got, want)
			}
			wantLog := []string{method + " manifest", "ping answered"}
			if log := h.log(); strings.Join(log, "; ") != strings.Join(wantLog, "; ") {
				t.Errorf("sent and answered: %q, want %q (the read sent alongside the ping, and not again)", log, wantLog)
			}
		})
	}

	t.Run("credentials in the keychain", func(t *testing.T) {
		s := newWriterServer(t)
		want := pushRandom(t, s.host+"/app:v1")
		h := newPingHold(200 * time.Millisecond)
		c := registry.New(registry.WithBaseTransport(h), registry.WithKeychain(staticKeychain{}))
		if got := readManifest(t, c, http.MethodHead, s.host+"/app:v1"); got != want {
			t.Errorf("digest %s, want %s", got, want)
		}
		wantLog := []string{"ping answered", "HEAD manifest auth"}
		if log := h.log(); strings.Join(log, "; ") != strings.Join(wantLog, "; ") {
			t.Errorf("sent and answered: %q, want %q (no read sent early with credentials to send)", log, wantLog)
		}
	})

	t.Run("registry asking for a token", func(t *testing.T) {
		s := newWriterServer(t)
		want := pushRandom(t, s.host+"/app:v1")
		front, tokens := newBearerFront(t, s.host)
		h := newPingHold(5 * time.Second)
		c := registry.New(registry.WithBaseTransport(h))
		if got := readManifest(t, c, http.MethodHead, front+"/app:v1"); got != want {
			t.Errorf("digest %s, want %s", got, want)
		}
		wantLog := []string{"HEAD manifest", "ping answered", "HEAD manifest auth"}
		if log := h.log(); strings.Join(log, "; ") != strings.Join(wantLog, "; ") {
			t.Errorf("sent and answered: %q, want %q (the early read's 401 left unused)", log, wantLog)
		}
		// Given the early 401, the bearer transport would have asked for
		// its token again.
		if got := tokens(); len(got) != 1 {
			t.Errorf("tokens asked for: %q, want one", got)
		}
		// The early read is the request go-containerregistry sends, down
		// to its User-Agent.
		h.mu.Lock()
		agents := slices.Clone(h.agents)
		h.mu.Unlock()
		if len(agents) != 2 || agents[0] != agents[1] || !strings.Contains(agents[0], "go-containerregistry") {
			t.Errorf("User-Agents of the early and the real read: %q, want go-containerregistry's, twice", agents)
		}
	})

	t.Run("one early read per registry", func(t *testing.T) {
		s := newWriterServer(t)
		pushRandom(t, s.host+"/a:v1")
		pushRandom(t, s.host+"/b:v1")
		front, _ := newBearerFront(t, s.host)
		// Both calls wait on one ping, held long enough for both to
		// have sent an early read if each did.
		h := newPingHold(time.Second)
		hold := &pingHoldFor{pingHold: h, reads: 2}
		c := registry.New(registry.WithBaseTransport(hold))
		var wg sync.WaitGroup
		for _, repo := range []string{"a", "b"} {
			wg.Go(func() {
				if _, err := earlyRead(t.Context(), c, http.MethodHead, front+"/"+repo+":v1"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		early := 0
		for _, e := range h.log() {
			if e == "HEAD manifest" {
				early++
			}
		}
		if early != 1 {
			t.Errorf("reads sent early without credentials: %d, want 1: %q", early, h.log())
		}
	})

	t.Run("unused early read cancelled", func(t *testing.T) {
		s := newWriterServer(t)
		want := pushRandom(t, s.host+"/app:v1")
		front, _ := newBearerFront(t, s.host)
		// The early read (no credentials) hangs until it is cancelled;
		// the call's own read, with its token, is answered.
		cancelled := make(chan bool, 1)
		c := registry.New(registry.WithBaseTransport(roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.URL.Scheme == "https" {
				return nil, &tlsRefused{}
			}
			if strings.Contains(req.URL.Path, "/manifests/") && req.Header.Get("Authorization") == "" {
				return nil, holdUntilCancelled(req, cancelled)
			}
			return http.DefaultTransport.RoundTrip(req)
		})))
		if got := readManifest(t, c, http.MethodHead, front+"/app:v1"); got != want {
			t.Errorf("digest %s, want %s", got, want)
		}
		if !<-cancelled {
			t.Error("the early read went on after the call's own read was answered")
		}
	})

	t.Run("early read retried", func(t *testing.T) {
		s := newWriterServer(t)
		want := pushRandom(t, s.host+"/app:v1")
		// The first manifest read (the early one) is answered 503 with
		// Retry-After: 1; it is retried no sooner, and the call's read
		// waits for it rather than asking at once.
		var mu sync.Mutex
		var at []time.Time
		c := registry.New(registry.WithBaseTransport(roundTripFunc(func(req *http.Request) (*http.Response, error) {
			if req.URL.Scheme == "https" {
				return nil, &tlsRefused{}
			}
			if strings.Contains(req.URL.Path, "/manifests/") {
				mu.Lock()
				at = append(at, time.Now())
				first := len(at) == 1
				mu.Unlock()
				if first {
					return &http.Response{StatusCode: http.StatusServiceUnavailable, Status: "503 Service Unavailable",
						Header: http.Header{"Retry-After": {"1"}}, Body: http.NoBody, Request: req}, nil
				}
			}
			return http.DefaultTransport.RoundTrip(req)
		})))
		if got := readManifest(t, c, http.MethodHead, s.host+"/app:v1"); got != want {
			t.Errorf("digest %s, want %s", got, want)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(at) != 2 {
			t.Fatalf("manifest reads sent: %d, want 2 (the early one and its retry)", len(at))
		}
		if d := at[1].Sub(at[0]); d < time.Second {
			t.Errorf("the read after a 503 with Retry-After: 1 went out %v later", d)
		}
	})

	t.Run("early read failing", func(t *testing.T) {
		s := newWriterServer(t)
		pushRandom(t, s.host+"/app:v1")
		// Every manifest read is reset: the early one goes through the
		// retries and its failure is the call's, not sent again.
		var mu sync.Mutex
		reads := 0
		c := registry.New(registry.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 3}),
			registry.WithBaseTransport(roundTripFunc(func(req *http.Request) (*http.Response, error) {
				if req.URL.Scheme == "https" {
					return nil, &tlsRefused{}
				}
				if strings.Contains(req.URL.Path, "/manifests/") {
					mu.Lock()
					reads++
					mu.Unlock()
					return nil, syscall.ECONNRESET
				}
				return http.DefaultTransport.RoundTrip(req)
			})))
		if _, err := earlyRead(t.Context(), c, http.MethodHead, s.host+"/app:v1"); err == nil || !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("read error %v, want the connection reset", err)
		}
		mu.Lock()
		defer mu.Unlock()
		if reads != 3 {
			t.Errorf("manifest reads sent: %d, want 3 (one schedule of retries, not two)", reads)
		}
	})

	t.Run("released when the call fails first", func(t *testing.T) {
		// The registry cannot be pinged; the early read hangs until it is
		// cancelled.
		cancelled := make(chan bool, 1)
		c := registry.New(registry.WithRetryBackoff(remote.Backoff{Steps: 1}),
			registry.WithBaseTransport(roundTripFunc(func(req *http.Request) (*http.Response, error) {
				if strings.Contains(req.URL.Path, "/manifests/") && req.URL.Scheme == "http" {
					return nil, holdUntilCancelled(req, cancelled)
				}
				return nil, &tlsRefused{}
			})))
		if _, err := earlyRead(t.Context(), c, http.MethodHead, "127.0.0.1:9/app:v1"); err == nil {
			t.Fatal("a registry that cannot be pinged was read")
		}
		if !<-cancelled {
			t.Error("the early read went on after its call had returned")
		}
	})

	t.Run("keychain slower than the ping", func(t *testing.T) {
		s := newWriterServer(t)
		want := pushRandom(t, s.host+"/app:v1")
		// go-containerregistry's own lookup (the first) answers at once;
		// the early read's (the second) only once the call is over: the
		// call's read does not wait for an early read not yet sent.
		kc := &slowSecondLookup{release: make(chan struct{})}
		sent := &sentLog{next: http.DefaultTransport}
		c := registry.New(registry.WithKeychain(kc), registry.WithBaseTransport(sent))
		read := make(chan string, 1)
		go func() {
			d, err := earlyRead(t.Context(), c, http.MethodHead, s.host+"/app:v1")
			if err != nil {
				t.Error(err)
			}
			read <- d
		}()
		select {
		case got := <-read:
			close(kc.release)
			if got != want {
				t.Errorf("digest %s, want %s", got, want)
			}
		case <-time.After(5 * time.Second):
			t.Error("the call's read waited for an early read the keychain held back")
			close(kc.release)
			<-read
		}
		if n := sent.count("HEAD http://" + s.host + "/v2/app/manifests/v1"); n != 1 {
			t.Errorf("manifest HEADs sent: %d, want the call's own", n)
		}
	})

	t.Run("answers once", func(t *testing.T) {
		s := newWriterServer(t)
		pushRandom(t, s.host+"/app:v1")
		h := newPingHold(5 * time.Second)
		c := registry.New(registry.WithBaseTransport(h))
		p, err := c.Puller()
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := name.ParseReference(s.host + "/app:v1")
		ctx, release := registry.WithEarlyRead(t.Context(), http.MethodHead, ref)
		defer release()
		for range 2 {
			if _, err := p.Head(ctx, ref); err != nil {
				t.Fatal(err)
			}
		}
		wantLog := []string{"HEAD manifest", "ping answered", "HEAD manifest"}
		if log := h.log(); strings.Join(log, "; ") != strings.Join(wantLog, "; ") {
			t.Errorf("sent and answered: %q, want %q (a second read with the same context asks the registry)", log, wantLog)
		}
	})
}

// pingHoldFor is a pingHold whose pings wait for reads manifest requests
// (or the wait) rather than one.
type pingHoldFor struct {
	*pingHold
	reads int
}

func (h *pingHoldFor) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && req.URL.Path == "/v2/" {
		deadline := time.After(h.wait)
		for range h.reads {
			select {
			case <-h.manifests:
			case <-deadline:
			}
		}
		resp, err := h.next.RoundTrip(req)
		h.record("ping answered")
		return resp, err
	}
	return h.pingHold.RoundTrip(req)
}

// readManifest reads ref's manifest with method through the Client's
// shared Puller, with WithEarlyRead, and returns its digest.
func readManifest(t *testing.T, c *registry.Client, method, ref string) string {
	t.Helper()
	d, err := earlyRead(t.Context(), c, method, ref)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func earlyRead(ctx context.Context, c *registry.Client, method, ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	p, err := c.Puller()
	if err != nil {
		return "", err
	}
	ctx, release := registry.WithEarlyRead(ctx, method, r)
	defer release()
	if method == http.MethodHead {
		d, err := p.Head(ctx, r)
		if err != nil {
			return "", fmt.Errorf("HEAD %s: %w", ref, err)
		}
		return d.Digest.String(), nil
	}
	d, err := p.Get(ctx, r)
	if err != nil {
		return "", fmt.Errorf("GET %s: %w", ref, err)
	}
	return d.Digest.String(), nil
}
