package registry

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"
)

// maxPingBody bounds the body of a ping answer that is kept and replayed.
// Registries answer /v2/ with "{}" or a short error document.
const maxPingBody = 64 << 10

// keptAnswer is a registry's answer kept to be given again: to a ping,
// or to a request sent early (see early.go).
type keptAnswer struct {
	code   int
	status string
	header http.Header
	body   []byte
	length int64 // Content-Length as answered (a HEAD's has no body)
}

// keep reads resp's body, at most limit bytes of it, and closes it.
func keep(resp *http.Response, limit int64) (*keptAnswer, error) {
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return nil, err
	}
	return &keptAnswer{code: resp.StatusCode, status: resp.Status, header: resp.Header.Clone(), body: body, length: resp.ContentLength}, nil
}

// response returns the kept answer as the response to req.
func (a *keptAnswer) response(req *http.Request) *http.Response {
	length := int64(len(a.body))
	if req.Method == http.MethodHead {
		length = a.length
	}
	return &http.Response{
		Status:        a.status,
		StatusCode:    a.code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        a.header.Clone(),
		Body:          io.NopCloser(bytes.NewReader(a.body)),
		ContentLength: length,
		Request:       req,
	}
}

// pingCache answers a Client's registry pings (GET /v2/) once per registry
// and scheme (Client.pings), for every transport the Client makes.
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
// and plain HTTP once HTTPS has failed (or 300 ms have passed): two round
// trips in sequence. Here
// the plain-HTTP ping starts alongside the HTTPS one, so the fallback
// finds its answer waiting; HTTPS is still preferred when it answers.
//
// A call that is about to read a manifest can have its read sent
// alongside the ping (WithEarlyRead, early.go).
type pingCache struct {
	next     http.RoundTripper
	pings    *onceMap[*keptAnswer]
	insecure map[string]bool
	keychain authn.Keychain
	// earlyHosts holds the registries an early read has been sent to.
	earlyHosts *sync.Map
	// userAgent is the Client's, for early reads (as go-containerregistry
	// sends it).
	userAgent string
}

func isPing(req *http.Request) bool {
	return req.Method == http.MethodGet && req.URL.Path == "/v2/" && req.URL.RawQuery == "" &&
		(req.Body == nil || req.Body == http.NoBody)
}

// plainHTTPAllowed reports whether plain HTTP may reach host: loopback, or
// a host named insecure, the hosts plainHTTPGuard lets through.
// (go-containerregistry would also fall back to plain HTTP for RFC 1918
// addresses, which the guard refuses, so no plain ping is raced there.)
func (t *pingCache) plainHTTPAllowed(host string) bool {
	if t.insecure[host] || IsLoopback(host) {
		return true
	}
	h, _, err := net.SplitHostPort(host)
	return err == nil && t.insecure[h]
}

func (t *pingCache) RoundTrip(req *http.Request) (*http.Response, error) {
	early, _ := req.Context().Value(earlyKey{}).(*earlyRead)
	if !isPing(req) {
		if taken, resp, err := early.take(req); taken {
			return resp, err
		}
		return t.next.RoundTrip(req)
	}
	if early != nil && !t.answered(req.URL.Host) {
		t.sendEarly(req, early)
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
	keepFailure := func(error) bool { return t.keepFailure(req) }
	a, err := t.pings.get(req.Context(), req.URL.Scheme+"://"+req.URL.Host, func() (*keptAnswer, error) { return t.ping(req) }, keepFailure)
	if err != nil {
		return nil, err
	}
	return a.response(req), nil
}

// answered reports whether a ping of host has an answer kept, on a scheme
// go-containerregistry goes on with at once.
func (t *pingCache) answered(host string) bool {
	return t.pings.ready("https://"+host) || (t.plainHTTPAllowed(host) && t.pings.ready("http://"+host))
}

// ping makes the request and keeps its answer.
func (t *pingCache) ping(req *http.Request) (*keptAnswer, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	return keep(resp, maxPingBody)
}

// keepFailure reports whether the failed ping req is kept: an HTTPS ping
// of a registry that may be reached over plain HTTP and has answered so.
func (t *pingCache) keepFailure(req *http.Request) bool {
	if req.URL.Scheme != "https" || !t.plainHTTPAllowed(req.URL.Host) {
		return false
	}
	return t.pings.made(req.Context(), "http://"+req.URL.Host)
}
