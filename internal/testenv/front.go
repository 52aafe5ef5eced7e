package testenv

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Front is an HTTP reverse proxy in front of a registry that records every
// request and lets a test inject faults: refuse, delay, or corrupt answers.
type Front struct {
	// Host is the front's host:port; use it in image references.
	Host string

	srv *httptest.Server
	mu  sync.Mutex
	log []Request
	// hook, if set, may answer a request itself (returning true) instead of
	// passing it to the registry.
	hook func(w http.ResponseWriter, r *http.Request) bool
	// modify, if set, may change the registry's answer.
	modify func(*http.Response) error
}

// Request is one request seen by a Front, with the status it was answered,
// the size of its body, when it arrived and when its answer was done.
type Request struct {
	Method, Path, Query string
	Status              int
	BodyBytes           int64
	Start, End          time.Time
}

// NewFront starts a Front before the registry at host.
func NewFront(host string) *Front {
	f := &Front{}
	target := &url.URL{Scheme: "http", Host: host}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.ModifyResponse = func(resp *http.Response) error {
		f.mu.Lock()
		m := f.modify
		f.mu.Unlock()
		if m != nil {
			return m(resp)
		}
		return nil
	}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &statusRecorder{ResponseWriter: w, status: 200}
		body := &countingBody{ReadCloser: r.Body}
		r.Body = body
		f.mu.Lock()
		hook := f.hook
		f.mu.Unlock()
		if hook == nil || !hook(rec, r) {
			rp.ServeHTTP(rec, r)
		}
		f.mu.Lock()
		f.log = append(f.log, Request{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Status: rec.status, BodyBytes: body.n, Start: start, End: time.Now()})
		f.mu.Unlock()
	}))
	f.Host = strings.TrimPrefix(f.srv.URL, "http://")
	return f
}

// SetHook installs h; see Front.hook.
func (f *Front) SetHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = h
}

// SetModify installs m; see Front.modify.
func (f *Front) SetModify(m func(*http.Response) error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.modify = m
}

// Requests returns the requests seen so far.
func (f *Front) Requests() []Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Request(nil), f.log...)
}

// Count returns how many requests matched.
func (f *Front) Count(match func(Request) bool) int {
	n := 0
	for _, r := range f.Requests() {
		if match(r) {
			n++
		}
	}
	return n
}

// Close stops the front.
func (f *Front) Close() { f.srv.Close() }

type countingBody struct {
	io.ReadCloser
	n int64
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.n += int64(n)
	return n, err
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (s *statusRecorder) Flush() {
	if f, ok := s.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (s *statusRecorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	h, ok := s.ResponseWriter.(http.Hijacker)
	if !ok {
		return nil, nil, errors.New("not a hijacker")
	}
	return h.Hijack()
}

// IsUpload reports whether r sends blob data to an upload location: a
// PATCH, or a PUT with a body (a monolithic upload, or its last chunk).
func IsUpload(r *http.Request) bool {
	return strings.Contains(r.URL.Path, "/blobs/uploads/") &&
		(r.Method == http.MethodPatch || (r.Method == http.MethodPut && r.ContentLength != 0))
}
