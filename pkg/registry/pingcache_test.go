package registry_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/pkg/registry"
)

// sentLog records every request that leaves the Client (its base
// transport) as "METHOD scheme://host/path".
type sentLog struct {
	mu   sync.Mutex
	sent []string
	next http.RoundTripper
}

func (s *sentLog) RoundTrip(req *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.sent = append(s.sent, req.Method+" "+req.URL.Scheme+"://"+req.URL.Host+req.URL.Path)
	s.mu.Unlock()
	return s.next.RoundTrip(req)
}

func (s *sentLog) count(line string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.sent {
		if l == line {
			n++
		}
	}
	return n
}

// useRepositories builds a transport for each of four repositories the
// ways a promotion does: two Writers, a HEAD through the shared Puller,
// and a tag list.
func useRepositories(t *testing.T, c *registry.Client, host string) {
	t.Helper()
	ctx := t.Context()
	for _, r := range []string{"a", "b"} {
		repo, err := name.NewRepository(host + "/" + r)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Writer(ctx, repo); err != nil {
			t.Fatalf("Writer(%s): %v", repo, err)
		}
	}
	p, err := c.Puller()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host + "/c:v1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Head(ctx, ref); err == nil {
		t.Fatal("Head of a missing image succeeded")
	}
	if _, err := c.ListTags(ctx, host+"/d"); err == nil {
		t.Fatal("ListTags of a missing repository succeeded")
	}
}

// TestPingOncePerRegistry checks that a registry is pinged once however
// many repositories and transports use it, and that the HTTPS attempt
// go-containerregistry makes first on a loopback registry goes out once:
// go-containerregistry alone pings once per repository and per Writer.
func TestPingOncePerRegistry(t *testing.T) {
	s := newWriterServer(t)
	sent := &sentLog{next: http.DefaultTransport}
	c := registry.New(registry.WithBaseTransport(sent))
	useRepositories(t, c, s.host)

	if got := sent.count("GET http://" + s.host + "/v2/"); got != 1 {
		t.Errorf("plain-HTTP pings sent: %d, want 1\n%s", got, strings.Join(sent.sent, "\n"))
	}
	if got := sent.count("GET https://" + s.host + "/v2/"); got != 1 {
		t.Errorf("HTTPS pings sent: %d, want 1 (the first, which fails on a plain-HTTP registry)\n%s", got, strings.Join(sent.sent, "\n"))
	}
	// Another Client pings again: the answers belong to a Client.
	useRepositories(t, registry.New(registry.WithBaseTransport(sent)), s.host)
	if got := sent.count("GET http://" + s.host + "/v2/"); got != 2 {
		t.Errorf("plain-HTTP pings after a second Client: %d, want 2", got)
	}
}

// TestPingFailureNotKept checks that a registry that cannot be reached is
// asked again by the next operation, not answered with the old failure.
func TestPingFailureNotKept(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	host := strings.TrimPrefix(srv.URL, "http://")
	srv.Close() // nothing listens there now
	sent := &sentLog{next: http.DefaultTransport}
	c := registry.New(registry.WithBaseTransport(sent), registry.WithRetryBackoff(remote.Backoff{Steps: 1}))
	repo, err := name.NewRepository(host + "/a")
	if err != nil {
		t.Fatal(err)
	}
	var pings [2]int
	for i := range pings {
		if _, err := c.Writer(t.Context(), repo); err == nil {
			t.Fatalf("Writer %d: no error from a registry that is not there", i)
		}
		pings[i] = sent.count("GET http://" + host + "/v2/")
	}
	if pings[0] == 0 || pings[1] != 2*pings[0] {
		t.Errorf("plain-HTTP pings sent by the first Writer: %d, by both: %d; want the second to ask again as the first did (a failure is not kept)\n%s",
			pings[0], pings[1], strings.Join(sent.sent, "\n"))
	}
}

// TestPingBearer checks the kept ping on a registry with token
// authentication: one ping, a token per repository and scope, and the
// requests made with the right token.
func TestPingBearer(t *testing.T) {
	host, tokens := newBearerFront(t, newWriterServer(t).host)
	sent := &sentLog{next: http.DefaultTransport}
	c := registry.New(registry.WithBaseTransport(sent))
	useRepositories(t, c, host)
	if got := sent.count("GET http://" + host + "/v2/"); got != 1 {
		t.Errorf("pings sent: %d, want 1\n%s", got, strings.Join(sent.sent, "\n"))
	}
	asked := tokens()
	for _, want := range []string{"repository:a:push,pull", "repository:b:push,pull", "repository:c:pull", "repository:d:pull"} {
		found := false
		for _, s := range asked {
			found = found || s == want
		}
		if !found {
			t.Errorf("no token asked for %q; asked: %q", want, asked)
		}
	}
	// The Writer's requests carry its token: a HEAD of a blob reaches the
	// registry (404 from the registry, not 401 or 403 from the front).
	repo, _ := name.NewRepository(host + "/a")
	w, err := c.Writer(t.Context(), repo)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := w.HasBlob(t.Context(), testBlob("x").Digest); err != nil || ok {
		t.Errorf("HasBlob = %v, %v; want false, nil", ok, err)
	}
}

// newBearerFront starts a front for the registry at inner that asks for a
// bearer token, as Docker Hub does: /v2/ and any request without a token
// get a 401 challenge, tokens are handed out to anyone at /token and name
// the repository they were asked for, and a token for another repository
// gets a 403. It returns the front's host and the scopes tokens were asked
// for so far.
func newBearerFront(t *testing.T, inner string) (host string, tokens func() []string) {
	var mu sync.Mutex
	var asked []string
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: inner})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			scope := r.URL.Query().Get("scope")
			mu.Lock()
			asked = append(asked, scope)
			mu.Unlock()
			_ = json.NewEncoder(w).Encode(map[string]string{"token": "t:" + scope})
			return
		}
		auth := r.Header.Get("Authorization")
		if r.URL.Path == "/v2/" || !strings.HasPrefix(auth, "Bearer t:repository:") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+host+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		// The token names the repository it was issued for.
		repo := strings.SplitN(strings.TrimPrefix(auth, "Bearer t:repository:"), ":", 2)[0]
		if !strings.HasPrefix(r.URL.Path, "/v2/"+repo+"/") {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host = strings.TrimPrefix(srv.URL, "http://")
	return host, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(asked)
	}
}

// overlapCheck fails every HTTPS ping, after waiting for a plain-HTTP ping
// of the same registry to have been sent, and says whether it was.
type overlapCheck struct {
	next      http.RoundTripper
	once      sync.Once
	plainSent chan struct{}
	overlap   chan bool
}

func (o *overlapCheck) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path != "/v2/" {
		return o.next.RoundTrip(req)
	}
	if req.URL.Scheme == "http" {
		o.once.Do(func() { close(o.plainSent) })
		return o.next.RoundTrip(req)
	}
	select {
	case <-o.plainSent:
		o.overlap <- true
	case <-time.After(5 * time.Second):
		o.overlap <- false
	}
	return nil, errors.New("tls: first record does not look like a TLS handshake")
}

// TestPingPlainHTTPAlongside checks that on a registry that may be reached
// over plain HTTP, the plain-HTTP ping is sent while the HTTPS one is
// still waiting for its answer, not after it failed.
func TestPingPlainHTTPAlongside(t *testing.T) {
	s := newWriterServer(t)
	o := &overlapCheck{next: http.DefaultTransport, plainSent: make(chan struct{}), overlap: make(chan bool, 8)}
	repo, err := name.NewRepository(s.host + "/a")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := registry.New(registry.WithBaseTransport(o)).Writer(t.Context(), repo); err != nil {
		t.Fatal(err)
	}
	if !<-o.overlap {
		t.Error("the plain-HTTP ping was sent only after the HTTPS one had failed")
	}
}
