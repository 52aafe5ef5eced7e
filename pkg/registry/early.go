package registry

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type earlyKey struct{}

// WithEarlyRead returns ctx for a call that reads ref's manifest with a
// HEAD or a GET (method), such as the shared Puller's Head or Get. When
// that call is the one that has to ping ref's registry (the process's
// first request to it), the read is sent alongside the ping instead of
// after it; and when the read go-containerregistry then sends carries no
// credentials either (the registry asked for none, or for Basic
// credentials the keychain does not have), the early answer is its answer:
// the first answer from such a registry is one round trip nearer.
//
// The early read is sent without credentials, only when the Client's
// keychain has none for the repository, with the retries of any request
// (a Retry-After is waited for, the call's read waiting with it), and it
// is cancelled as soon as the call's own read is answered otherwise. A registry that asks
// for credentials anyway (Docker Hub) gets one request it answers with a
// 401. At most one call per registry and Client sends its read early (the
// first to find the registry not yet pinged), so that many calls waiting on
// one ping (a fleet's checks) cost at most that one request. It answers only
// the call's own read, once: the same method, URL and Accept header, and no
// Authorization header, so that it is the request go-containerregistry
// would have sent. An early read that fails fails the call's read as the
// read itself would have (after the same retries), rather than sending it
// again.
//
// release ends the early read, if it is still under way: call it when
// the call returns, as with context.WithCancel.
func WithEarlyRead(ctx context.Context, method string, ref name.Reference) (_ context.Context, release func()) {
	if method != http.MethodHead && method != http.MethodGet {
		return ctx, func() {}
	}
	e := &earlyRead{ctx: ctx, method: method, ref: ref, answers: map[string]*earlyAnswer{}}
	return context.WithValue(ctx, earlyKey{}, e), e.release
}

// manifestAccept is the Accept header of go-containerregistry's manifest
// HEADs and GETs (remote.Puller's Head and Get): every manifest and index
// media type. An early read answers only a request with this header; if
// go-containerregistry changes it, early reads stop answering (and
// TestEarlyRead fails) rather than answering a different request.
const manifestAccept = string(types.DockerManifestSchema1) + "," +
	string(types.DockerManifestSchema1Signed) + "," +
	string(types.DockerManifestSchema2) + "," +
	string(types.OCIManifestSchema1) + "," +
	string(types.DockerManifestList) + "," +
	string(types.OCIImageIndex)

// earlyRead is WithEarlyRead's read of one call.
type earlyRead struct {
	// ctx is the call's, for the early request: the ping's own is
	// cancelled as soon as the ping is answered.
	ctx    context.Context
	method string
	ref    name.Reference
	once   sync.Once

	mu      sync.Mutex
	answers map[string]*earlyAnswer // by scheme://host/path; nil once released
	cancel  context.CancelFunc      // ends the early requests; nil until sent
}

// earlyAnswer is the answer to one early request.
type earlyAnswer struct {
	sent   atomic.Bool // the request has gone out (the keychain said so)
	done   chan struct{}
	answer *keptAnswer // or err
	err    error
}

// sendEarly sends early's read alongside ping, once per call and at most
// once per registry: over HTTPS, and over plain HTTP too where
// go-containerregistry may fall back to it. The keychain is asked in the
// background, so that the ping is not held up.
func (t *pingCache) sendEarly(ping *http.Request, early *earlyRead) {
	early.once.Do(func() {
		host := ping.URL.Host
		if early.ref.Context().RegistryStr() != host {
			return
		}
		if _, sent := t.earlyHosts.LoadOrStore(host, true); sent {
			return
		}
		schemes := []string{"https"}
		if t.plainHTTPAllowed(host) {
			schemes = append(schemes, "http")
		}
		ctx, cancel := context.WithCancel(early.ctx)
		path := "/v2/" + early.ref.Context().RepositoryStr() + "/manifests/" + early.ref.Identifier()
		urls := make([]*url.URL, len(schemes))
		answers := make([]*earlyAnswer, len(schemes))
		early.mu.Lock()
		if early.answers == nil { // the call is past its read already
			early.mu.Unlock()
			cancel()
			return
		}
		early.cancel = cancel
		for i, scheme := range schemes {
			urls[i] = &url.URL{Scheme: scheme, Host: host, Path: path}
			answers[i] = &earlyAnswer{done: make(chan struct{})}
			early.answers[urls[i].String()] = answers[i]
		}
		early.mu.Unlock()
		go func() {
			if !t.anonymous(ctx, early.ref.Context()) {
				for _, a := range answers {
					close(a.done)
				}
				return
			}
			for i := range urls {
				go t.readEarly(ctx, early.method, urls[i], answers[i])
			}
		}()
	})
}

// anonymous reports whether the keychain has no credentials for repo.
func (t *pingCache) anonymous(ctx context.Context, repo name.Repository) bool {
	if t.keychain == nil {
		return true
	}
	auth, err := authn.Resolve(ctx, t.keychain, repo)
	return err == nil && auth == authn.Anonymous
}

// readEarly sends one early request, through the retries, with the
// User-Agent go-containerregistry gives the call's own, and keeps its
// answer in a.
func (t *pingCache) readEarly(ctx context.Context, method string, u *url.URL, a *earlyAnswer) {
	defer close(a.done)
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		a.err = err
		return
	}
	req.Header.Set("Accept", manifestAccept)
	a.sent.Store(true)
	resp, err := transport.NewUserAgent(t.next, t.userAgent).RoundTrip(req)
	if err != nil {
		a.err = err
		return
	}
	// manifestBody (under t.next) has read and bounded a manifest GET's body.
	a.answer, a.err = keep(resp, MaxManifestSize+1)
}

// take answers req, the call's first request after the ping, with the
// early read's outcome (its answer, or the error it ended with after the
// retries), and reports whether it did. It does not when req is not the
// read sent early, when the early one has not gone out yet (the keychain
// still being asked), or when it ended with its context. Either way the
// early requests are done with: those still under way are cancelled, and
// a later request of the call is sent.
func (e *earlyRead) take(req *http.Request) (taken bool, resp *http.Response, err error) {
	if e == nil {
		return false, nil, nil
	}
	key := (&url.URL{Scheme: req.URL.Scheme, Host: req.URL.Host, Path: req.URL.Path}).String()
	e.mu.Lock()
	a := e.answers[key]
	e.mu.Unlock()
	defer e.release()
	if a == nil || !a.sent.Load() || req.Method != e.method || req.URL.RawQuery != "" ||
		req.Header.Get("Authorization") != "" || req.Header.Get("Accept") != manifestAccept {
		return false, nil, nil
	}
	select {
	case <-a.done:
	case <-req.Context().Done():
		return false, nil, nil
	}
	switch {
	case a.err != nil && (errors.Is(a.err, context.Canceled) || errors.Is(a.err, context.DeadlineExceeded)):
		return false, nil, nil
	case a.err != nil:
		return true, nil, a.err
	}
	return true, a.answer.response(req), nil
}

// release is done with the early requests: those under way are
// cancelled, and no answer is given from then on.
func (e *earlyRead) release() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.answers = nil
	if e.cancel != nil {
		e.cancel()
	}
}
