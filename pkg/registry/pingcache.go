package registry

import (
	"bytes"
	"context"
	"io"
	"net/http"

	"github.com/google/go-containerregistry/pkg/name"
)

// maxPingBody bounds the body of a ping answer that is kept and replayed.
// Registries answer /v2/ with "{}" or a short error document.
const maxPingBody = 64 << 10

// pingAnswer is a kept answer to a ping.
type pingAnswer struct {
	code   int
	status string
	header http.Header
	body   []byte
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
// and plain HTTP once HTTPS has failed: two round trips in sequence. Here
// the plain-HTTP ping starts alongside the HTTPS one, so the fallback
// finds its answer waiting; HTTPS is still preferred when it answers.
type pingCache struct {
	next     http.RoundTripper
	pings    *onceMap[*pingAnswer]
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
	keep := func(error) bool { return t.keepFailure(req) }
	a, err := t.pings.get(req.Context(), req.URL.Scheme+"://"+req.URL.Host, func() (*pingAnswer, error) { return t.ping(req) }, keep)
	if err != nil {
		return nil, err
	}
	return &http.Response{
		Status:        a.status,
		StatusCode:    a.code,
		Proto:         "HTTP/1.1",
		ProtoMajor:    1,
		ProtoMinor:    1,
		Header:        a.header.Clone(),
		Body:          io.NopCloser(bytes.NewReader(a.body)),
		ContentLength: int64(len(a.body)),
		Request:       req,
	}, nil
}

// ping makes the request and keeps its answer.
func (t *pingCache) ping(req *http.Request) (*pingAnswer, error) {
	resp, err := t.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxPingBody))
	if err != nil {
		return nil, err
	}
	return &pingAnswer{code: resp.StatusCode, status: resp.Status, header: resp.Header.Clone(), body: body}, nil
}

// keepFailure reports whether the failed ping req is kept: an HTTPS ping
// of a registry that may be reached over plain HTTP and has answered so.
func (t *pingCache) keepFailure(req *http.Request) bool {
	if req.URL.Scheme != "https" || !t.plainHTTPAllowed(req.URL.Host) {
		return false
	}
	return t.pings.made(req.Context(), "http://"+req.URL.Host)
}
