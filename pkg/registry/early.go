package registry

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type earlyKey struct{}

// WithEarlyRead returns ctx for a call that reads ref's manifest with a
// HEAD or a GET (method), such as the shared Puller's Head or Get: when
// that call has to ping ref's registry first (the process's first request
// to it), the read is sent alongside the ping instead of after it, and if
// the registry lets the call read anonymously it is answered with that
// early read: the first answer from a registry that asks for no
// credentials is one round trip nearer.
//
// The early read is sent without credentials, and only when the Client's
// keychain has none for the registry: a registry that asks for them
// anyway (Docker Hub) is answered as before, at the cost of one unmetered
// 401. One call per registry and Client sends its read early (the first
// to find the registry not yet pinged), so that many calls waiting on one
// ping (a fleet's checks) cost at most that one 401. It answers only the call's own read, once: the same method, URL and
// Accept header, and no Authorization header, so that it is the request
// go-containerregistry would have sent.
func WithEarlyRead(ctx context.Context, method string, ref name.Reference) context.Context {
	if method != http.MethodHead && method != http.MethodGet {
		return ctx
	}
	return context.WithValue(ctx, earlyKey{}, &earlyRead{ctx: ctx, method: method, ref: ref, sent: map[string]*earlyAnswer{}})
}

// manifestAccept is the Accept header of go-containerregistry's manifest
// HEADs and GETs (remote.Puller's Head and Get): every manifest and index
// media type. An early read answers only a request with this header; if
// go-containerregistry changes it, early reads stop answering (and
// TestEarlyRead fails) rather than answering a different request.
var manifestAccept = strings.Join([]string{
	string(types.DockerManifestSchema1),
	string(types.DockerManifestSchema1Signed),
	string(types.DockerManifestSchema2),
	string(types.OCIManifestSchema1),
	string(types.DockerManifestList),
	string(types.OCIImageIndex),
}, ",")

// earlyRead is WithEarlyRead's read of one call.
type earlyRead struct {
	// ctx is the call's, for the early request: the ping's own is
	// cancelled as soon as the ping is answered.
	ctx    context.Context
	method string
	ref    name.Reference
	once   sync.Once

	mu   sync.Mutex
	sent map[string]*earlyAnswer // by scheme://host/path
}

// earlyAnswer is the answer to one early request.
type earlyAnswer struct {
	done   chan struct{}
	answer *keptAnswer // nil when the request failed
	taken  bool
}

// sendEarly sends early's read alongside ping, once per call and at most
// once per registry, when the keychain has no credentials for the registry: over HTTPS, and over plain
// HTTP too where go-containerregistry may fall back to it (never with
// credentials, as none are sent).
func (t *pingCache) sendEarly(ping *http.Request, early *earlyRead) {
	early.once.Do(func() {
		ctx, host := early.ctx, ping.URL.Host
		if early.ref.Context().RegistryStr() != host {
			return
		}
		if _, sent := t.earlyHosts.LoadOrStore(host, true); sent {
			return
		}
		if t.keychain != nil {
			auth, err := authn.Resolve(ctx, t.keychain, early.ref.Context())
			if err != nil || auth != authn.Anonymous {
				return
			}
		}
		schemes := []string{"https"}
		if t.plainHTTPAllowed(host) {
			schemes = append(schemes, "http")
		}
		path := "/v2/" + early.ref.Context().RepositoryStr() + "/manifests/" + early.ref.Identifier()
		for _, scheme := range schemes {
			u := &url.URL{Scheme: scheme, Host: host, Path: path}
			a := &earlyAnswer{done: make(chan struct{})}
			early.mu.Lock()
			early.sent[u.String()] = a
			early.mu.Unlock()
			go t.readEarly(ctx, early.method, u, a)
		}
	})
}

// readEarly sends one early request and keeps its answer in a.
func (t *pingCache) readEarly(ctx context.Context, method string, u *url.URL, a *earlyAnswer) {
	defer close(a.done)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return
	}
	req.Header.Set("Accept", manifestAccept)
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return
	}
	// manifestBody (under t.next) has read and bounded a manifest GET's body.
	a.answer, _ = keep(resp, MaxManifestSize+1)
}

// take returns the early answer to req, or nil when req is not the read
// sent early (or has been answered already, or the early one failed).
func (e *earlyRead) take(req *http.Request) *http.Response {
	if e == nil || req.Method != e.method || req.URL.RawQuery != "" ||
		req.Header.Get("Authorization") != "" || req.Header.Get("Accept") != manifestAccept {
		return nil
	}
	key := (&url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path}).String()
	e.mu.Lock()
	a := e.sent[key]
	if a == nil || a.taken {
		e.mu.Unlock()
		return nil
	}
	a.taken = true
	e.mu.Unlock()
	select {
	case <-a.done:
	case <-req.Context().Done():
		return nil
	}
	if a.answer == nil {
		return nil
	}
	return a.answer.response(req)
}
