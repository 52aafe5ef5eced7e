package registry

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

func TestHeadFirstSparesTheGetOfAMissingDigestTag(t *testing.T) {
	var mu sync.Mutex
	var seen []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Method+" "+r.URL.Path)
		mu.Unlock()
		if strings.HasSuffix(r.URL.Path, "/sha256-"+strings.Repeat("a", 64)) || strings.HasSuffix(r.URL.Path, "/sha256-"+strings.Repeat("a", 64)+".sig") {
			w.WriteHeader(http.StatusOK)
			return
		}
		w.WriteHeader(http.StatusNotFound)
	}))
	defer srv.Close()
	rt := &headFirst{next: http.DefaultTransport}
	get := func(ctxFirst bool, path string) int {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+path, nil)
		if ctxFirst {
			req = req.WithContext(WithHeadFirst(t.Context()))
		}
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	missing, present := "/v2/r/manifests/sha256-"+strings.Repeat("b", 64), "/v2/r/manifests/sha256-"+strings.Repeat("a", 64)
	for _, c := range []struct {
		first  bool
		path   string
		status int
		want   []string
	}{
		{true, missing, 404, []string{"HEAD " + missing}},
		{true, present, 200, []string{"HEAD " + present, "GET " + present}},
		{false, missing, 404, []string{"GET " + missing}},
		{true, "/v2/r/manifests/v1", 404, []string{"GET /v2/r/manifests/v1"}},
		{true, missing + ".sig", 404, []string{"HEAD " + missing + ".sig"}},
		{true, present + ".sig", 200, []string{"HEAD " + present + ".sig", "GET " + present + ".sig"}},
		{true, missing + ".att", 404, []string{"HEAD " + missing + ".att"}},
		{true, missing + ".other", 404, []string{"GET " + missing + ".other"}},
	} {
		mu.Lock()
		seen = nil
		mu.Unlock()
		if got := get(c.first, c.path); got != c.status {
			t.Errorf("%s: status %d, want %d", c.path, got, c.status)
		}
		mu.Lock()
		if strings.Join(seen, ",") != strings.Join(c.want, ",") {
			t.Errorf("head first %v, %s: requests %v, want %v", c.first, c.path, seen, c.want)
		}
		mu.Unlock()
	}
}
