package registry

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

type recorder struct{ called bool }

func (r *recorder) RoundTrip(*http.Request) (*http.Response, error) {
	r.called = true
	return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
}

func TestPlainHTTPGuard(t *testing.T) {
	cases := []struct {
		url     string
		allowed bool
	}{
		{"http://10.1.2.3:5000/v2/", false},            // RFC 1918: go-containerregistry would use HTTP
		{"http://registry.example.com/v2/", false},     // remote
		{"http://insecure.example.com:5000/v2/", true}, // named with -insecure-registry
		{"http://127.0.0.1:5000/v2/", true},
		{"http://localhost:5000/v2/", true},
		{"http://[::1]:5000/v2/", true},
		{"https://registry.example.com/v2/", true},
	}
	for _, c := range cases {
		next := &recorder{}
		g := &plainHTTPGuard{next: next, hosts: map[string]bool{"insecure.example.com:5000": true}}
		req, err := http.NewRequest(http.MethodGet, c.url, nil)
		if err != nil {
			t.Fatal(err)
		}
		_, err = g.RoundTrip(req)
		if c.allowed != (err == nil) || c.allowed != next.called {
			t.Errorf("%s: err=%v sent=%v, want allowed=%v", c.url, err, next.called, c.allowed)
		}
		if err != nil && !strings.Contains(err.Error(), "-insecure-registry") {
			t.Errorf("%s: error %q does not say how to allow it", c.url, err)
		}
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"3", 3 * time.Second, true},
		{"0", 0, true},
		{"-1", 0, false},
		{"", 0, false},
		{"soon", 0, false},
		{now.Add(10 * time.Second).Format(http.TimeFormat), 10 * time.Second, true},
		{now.Add(-10 * time.Second).Format(http.TimeFormat), 0, true},
	}
	for _, c := range cases {
		got, ok := parseRetryAfter(c.in, now)
		if got != c.want || ok != c.ok {
			t.Errorf("parseRetryAfter(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestRedactURL(t *testing.T) {
	u, err := url.Parse("https://user:pw@bucket.s3.amazonaws.com/blob?X-Amz-Signature=abc&X-Amz-Credential=AKID&digest=sha256:1&_state=xyz")
	if err != nil {
		t.Fatal(err)
	}
	got := RedactURL(u)
	for _, secret := range []string{"pw", "abc", "AKID", "xyz", "user"} {
		if strings.Contains(got, secret) {
			t.Errorf("RedactURL kept %q: %s", secret, got)
		}
	}
	if !strings.Contains(got, "digest=sha256%3A1") {
		t.Errorf("RedactURL dropped the digest: %s", got)
	}
}

func TestIsLoopback(t *testing.T) {
	for host, want := range map[string]bool{
		"127.0.0.1:5000": true, "127.1.2.3": true, "localhost": true, "reg.localhost:80": true, "[::1]:5000": true,
		"10.0.0.1:5000": false, "example.com": false, "localhost.example.com": false,
	} {
		if got := IsLoopback(host); got != want {
			t.Errorf("IsLoopback(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestManifestPath(t *testing.T) {
	for path, want := range map[string]bool{
		"/v2/library/busybox/manifests/latest":     true,
		"/v2/org/manifests/app/manifests/sha256:x": true,
		"/v2/org/manifests/app/blobs/sha256:x":     false, // a repository named manifests
		"/v2/":                                     false,
	} {
		if got := isManifestPath(path); got != want {
			t.Errorf("isManifestPath(%q) = %v, want %v", path, got, want)
		}
	}
}

func TestNoRedirectFromARemoteRegistryToThisMachine(t *testing.T) {
	next := &recorder{}
	g := &plainHTTPGuard{next: next, hosts: map[string]bool{}}
	from, _ := http.NewRequest(http.MethodGet, "https://registry.example.com/v2/r/blobs/sha256:x", nil)
	to, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:9001/2018-06-01/runtime/invocation/next", nil)
	to.Response = &http.Response{Request: from}
	if _, err := g.RoundTrip(to); err == nil || next.called {
		t.Errorf("a redirect from a remote registry to loopback was followed")
	}
	// A loopback registry redirecting to loopback is fine.
	local, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:5000/v2/r/blobs/sha256:x", nil)
	to.Response = &http.Response{Request: local}
	if _, err := g.RoundTrip(to); err != nil {
		t.Errorf("loopback to loopback refused: %v", err)
	}
}
