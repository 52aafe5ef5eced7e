package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ocistow/ocistow/internal/testenv"
)

// holdPings has f hold each registry ping (GET /v2/) until a manifest
// request has reached f, or five seconds have passed: a manifest read sent
// alongside the ping arrives during the hold, one sent after the ping's
// answer arrives after it.
func holdPings(f *testenv.Front) {
	manifest := make(chan struct{}, 64)
	f.SetHook(func(_ http.ResponseWriter, r *http.Request) bool {
		switch {
		case r.URL.Path == "/v2/":
			select {
			case <-manifest:
			case <-time.After(5 * time.Second):
			}
		case strings.Contains(r.URL.Path, "/manifests/"):
			manifest <- struct{}{}
		}
		return false
	})
}

// TestFirstReadsAlongsidePing checks, through the binary, that a
// promotion's first read at each registry that asks for no credentials
// (the source's HEAD, the destination tag's GET) goes out alongside the
// registry's ping and is not sent again after it: one round trip fewer on
// the way to each registry's first answer.
func TestFirstReadsAlongsidePing(t *testing.T) {
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 4 << 10, Seed: 41})
	if err != nil {
		t.Fatal(err)
	}
	repo := testenv.RepoName(t.Name())
	if err := testenv.Push(t.Context(), e2e.src.Host+"/"+repo+":v1", img); err != nil {
		t.Fatal(err)
	}
	src, dst := testenv.NewFront(e2e.src.Host), testenv.NewFront(e2e.dst.Host)
	defer src.Close()
	defer dst.Close()
	holdPings(src)
	holdPings(dst)
	ocistow(t, nil, "-source", src.Host+"/"+repo+":v1", "-destination", dst.Host+"/"+repo+":v1", "-sign=false").mustSucceed(t)

	for _, tc := range []struct {
		front  *testenv.Front
		method string
		path   string
	}{
		{src, http.MethodHead, "/v2/" + repo + "/manifests/v1"},
		{dst, http.MethodGet, "/v2/" + repo + "/manifests/v1"},
	} {
		var ping, read []testenv.Request
		for _, r := range tc.front.Requests() {
			switch {
			case r.Method == http.MethodGet && r.Path == "/v2/":
				ping = append(ping, r)
			case r.Method == tc.method && r.Path == tc.path:
				read = append(read, r)
			}
		}
		if len(ping) != 1 || len(read) != 1 {
			t.Errorf("%s %s: %d pings and %d reads, want one of each", tc.method, tc.path, len(ping), len(read))
			continue
		}
		if !read[0].Start.Before(ping[0].End) {
			t.Errorf("%s %s sent after the ping was answered, not alongside it", tc.method, tc.path)
		}
	}
}
