package registry

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
)

// maxPingBody bounds the body of a ping answer that is kept and replayed.
// Registries answer /v2/ with "{}" or a short error document.
const maxPingBody = 64 << 10

// pings are a Client's registry pings (GET /v2/), one per registry and
// scheme, shared by every transport the Client makes.
//
// go-containerregistry pings a registry to learn how it authenticates each
// time it builds a transport: once per repository for the shared Puller
// and Pusher, and once per Writer. The answer is a property of the
// registry, not of the repository, so the first answer is kept and
// replayed: a fleet of fifty repositories on one registry pings it once,
// not a hundred times, and each image is a round trip shorter.
//
// For a registry that may be reached over plain HTTP (loopback, private
// addresses, -insecure-registry), go-containerregistry tries HTTPS first
// and plain HTTP once HTTPS has failed: two round trips in sequence. Here
// the plain-HTTP ping starts alongside the HTTPS one, so the fallback
// finds its answer waiting; HTTPS is still preferred when it answers.
type pings struct {
	mu sync.Mutex
	m  map[string]*pingEntry // by scheme://host
}

type pingEntry struct {
	done   chan struct{}
	code   int
	status string
	header http.Header
	body   []byte
	err    error
}

// pingCache is the transport side of pings.
type pingCache struct {
	next     http.RoundTripper
	pings    *pings
	insecure map[string]bool
}

func isPing(req *http.Request) bool {
	return req.Method == http.MethodGet && req.URL.Path == "/v2/" && req.URL.RawQuery == "" &&
		(req.Body == nil || req.Body == http.NoBody)
}

// plainHTTPAllowed reports whether go-containerregistry falls back to
// plain HTTP for host.
func (t *pingCache) plainHTTPAllowed(host string) bool {
	if t.insecure[host] {
		return true
	}
	reg, err := name.NewRegistry(host)
	return err == nil && reg.Scheme() == "http"
}

func (t *pingCache) RoundTrip(req *http.Request) (*http.Response, error) {
	if !isPing(req) {
		return t.next.RoundTrip(req)
	}
	if req.URL.Scheme == "https" && t.plainHTTPAllowed(req.URL.Host) {
		plain := req.Clone(context.WithoutCancel(req.Context()))
		plain.URL.Scheme = "http"
		go func() {
			if resp, err := t.answer(plain); err == nil {
				resp.Body.Close()
			}
		}()
	}
	return t.answer(req)
}

// answer returns the kept answer to the ping req, or makes the request
// when none is kept or under way. A failed ping is not kept, with one
// exception: an HTTPS failure of a registry that answered over plain HTTP
// (go-containerregistry falls back to plain HTTP there anyway).
func (t *pingCache) answer(req *http.Request) (*http.Response, error) {
	key := req.URL.Scheme + "://" + req.URL.Host
	t.pings.mu.Lock()
	if t.pings.m == nil {
		t.pings.m = map[string]*pingEntry{}
	}
	e, ok := t.pings.m[key]
	if !ok {
		e = &pingEntry{done: make(chan struct{})}
		t.pings.m[key] = e
	}
	t.pings.mu.Unlock()
	if !ok {
		t.ping(req, e)
		if e.err != nil && !t.keepFailure(req) {
			t.pings.mu.Lock()
			delete(t.pings.m, key)
			t.pings.mu.Unlock()
		}
		close(e.done)
	}
	select {
	case <-e.done:
	case <-req.Context().Done():
		return nil, req.Context().Err()
	}
	if e.err != nil {
		return nil, e.err
	}
	return &http.Response{
		Status:        e.status,
		StatusCode:    e.code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        e.header.Clone(),
		Body:          io.NopCloser(bytes.NewReader(e.body)),
		ContentLength: int64(len(e.body)),
		Request:       req,
	}, nil
}

// ping makes the request and keeps its answer in e.
func (t *pingCache) ping(req *http.Request, e *pingEntry) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		e.err = err
		return
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPingBody))
	if err != nil {
		e.err = err
		return
	}
	e.code, e.status, e.header, e.body = resp.StatusCode, resp.Status, resp.Header.Clone(), body
}

// keepFailure reports whether the failed ping req is kept: an HTTPS ping
// of a registry that may be reached over plain HTTP and has answered so.
func (t *pingCache) keepFailure(req *http.Request) bool {
	if req.URL.Scheme != "https" || !t.plainHTTPAllowed(req.URL.Host) {
		return false
	}
	t.pings.mu.Lock()
	plain, ok := t.pings.m["http://"+req.URL.Host]
	t.pings.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-plain.done:
		return plain.err == nil
	case <-req.Context().Done():
		return false
	}
}
