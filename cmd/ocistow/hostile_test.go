package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/testenv"
)

// endless is a body that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

// hostile runs ocistow against a source front that misbehaves, with a
// safety bound so that a hang fails the test instead of the suite.
func hostile(t *testing.T, env []string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, e2e.bin, args...)
	cmd.Env = append([]string{"PATH=/usr/bin:/bin", "HOME=" + t.TempDir(), "DOCKER_CONFIG=" + t.TempDir(), "AWS_EC2_METADATA_DISABLED=true"}, env...)
	r := runCmd(t, cmd)
	if ctx.Err() != nil {
		t.Fatalf("ocistow hung on a hostile registry:\n%s", r.stderr)
	}
	return r
}

func isBlobGet(r *http.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:")
}

func isManifestGet(r *http.Request, suffix string) bool {
	return r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") && strings.HasSuffix(r.URL.Path, suffix)
}

// isFixtureManifestGet matches a GET of a fixture's manifest, by tag or by
// digest (ocistow resolves a tag with HEAD, then GETs by digest).
func isFixtureManifestGet(r *http.Request, fixture string) bool {
	return r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/v2/src/"+fixture+"/manifests/")
}

func TestHostileRegistries(t *testing.T) {
	singleBody := get(t, srcRef("single"), nil).Manifest
	multiIdx := get(t, srcRef("multi"), nil).Manifest
	var firstChild string
	if i := strings.Index(string(multiIdx), `"digest":"`); i >= 0 {
		firstChild = string(multiIdx[i+10 : i+10+71])
	}
	cases := []struct {
		name   string
		image  string // fixture
		hook   func(w http.ResponseWriter, r *http.Request) bool
		modify func(*http.Response) error
		want   []string
		extra  []string
		kind   string // the canonical line's error_type; SourceFailed when empty
	}{
		{name: "truncated blob", image: "single", modify: func(resp *http.Response) error {
			if !isBlobGet(resp.Request) || resp.ContentLength < 1000 {
				return nil
			}
			half := resp.ContentLength / 2
			b, _ := io.ReadAll(io.LimitReader(resp.Body, half))
			resp.Body.Close()
			resp.Body, resp.ContentLength = io.NopCloser(bytes.NewReader(b)), half
			resp.Header.Set("Content-Length", strconv.FormatInt(half, 10))
			return nil
		}, want: []string{"source", "blob sha256:"}},
		{name: "endless blob", image: "single", modify: func(resp *http.Response) error {
			if !isBlobGet(resp.Request) || resp.ContentLength < 1000 {
				return nil
			}
			resp.Body.Close()
			resp.Body, resp.ContentLength = io.NopCloser(endless{}), -1
			resp.Header.Del("Content-Length")
			return nil
		}, want: []string{"source", "blob sha256:"}},
		{name: "manifest over 4 MiB", image: "single", hook: func(w http.ResponseWriter, r *http.Request) bool {
			if !isFixtureManifestGet(r, "single") {
				return false
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Content-Length", strconv.Itoa(5<<20))
			_, _ = io.Copy(w, io.LimitReader(endless{}, 5<<20))
			return true
		}, want: []string{"source", "over the 4194304-byte limit"}},
		{name: "manifest over 4 MiB undeclared", image: "single", hook: func(w http.ResponseWriter, r *http.Request) bool {
			if !isFixtureManifestGet(r, "single") {
				return false
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.(http.Flusher).Flush() // chunked: no Content-Length
			_, _ = io.Copy(w, io.LimitReader(endless{}, 5<<20))
			return true
		}, want: []string{"source", "over the 4194304-byte limit"}},
		{name: "malformed manifest", image: "single", hook: func(w http.ResponseWriter, r *http.Request) bool {
			if !isFixtureManifestGet(r, "single") {
				return false
			}
			w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v2+json")
			_, _ = w.Write([]byte(`{"schemaVersion":2,"config":{"digest":`))
			return true
		}, want: []string{"source"}},
		{name: "wrong content type", image: "single", hook: func(w http.ResponseWriter, r *http.Request) bool {
			if !isFixtureManifestGet(r, "single") {
				return false
			}
			w.Header().Set("Content-Type", "text/html")
			_, _ = w.Write(singleBody)
			return true
		}, want: []string{"source", "text/html"}},
		{name: "missing content type", image: "single", hook: func(w http.ResponseWriter, r *http.Request) bool {
			if !isFixtureManifestGet(r, "single") {
				return false
			}
			w.Header()["Content-Type"] = nil // no sniffing either
			_, _ = w.Write(singleBody)
			return true
		}, want: []string{"source"}},
		{name: "index that points at itself", image: "multi", hook: func(w http.ResponseWriter, r *http.Request) bool {
			if firstChild == "" || !isManifestGet(r, firstChild) {
				return false
			}
			w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.list.v2+json")
			_, _ = w.Write(multiIdx)
			return true
		}, want: []string{"source"}},
		{name: "endless 401", image: "single", hook: func(w http.ResponseWriter, r *http.Request) bool {
			w.Header().Set("WWW-Authenticate", `Basic realm="forever"`)
			http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"no"}]}`, http.StatusUnauthorized)
			return true
		}, want: []string{"source", "401"}, kind: "Unauthorized"},
		{name: "blob redirected in a circle", image: "single", hook: func(w http.ResponseWriter, r *http.Request) bool {
			if !isBlobGet(r) {
				return false
			}
			http.Redirect(w, r, r.URL.Path+"?hop=again", http.StatusTemporaryRedirect)
			return true
		}, want: []string{"source", "gave up after 10 redirects"}},
		{name: "stalled blob", image: "big", hook: func(w http.ResponseWriter, r *http.Request) bool {
			if !isBlobGet(r) {
				return false
			}
			_, _ = w.Write(make([]byte, 100)) // chunked: the size is not announced
			w.(http.Flusher).Flush()
			<-r.Context().Done() // then nothing, until the client gives up
			return true
		}, want: []string{"sent nothing for 300ms", "stalled"}, extra: []string{"-stall-timeout", "300ms"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			front := testenv.NewFront(e2e.src.Host)
			defer front.Close()
			front.SetHook(c.hook)
			front.SetModify(c.modify)
			repo := dstRepo(t, e2e.dstFront.Host)
			args := append([]string{"-source", front.Host + "/src/" + c.image + ":v1", "-destination", repo + ":v1", "-sign=false"}, c.extra...)
			r := hostile(t, nil, args...)
			if r.code != exitFailed {
				t.Fatalf("exit %d against a hostile registry, want %d\n%s", r.code, exitFailed, r.stderr)
			}
			kind := c.kind
			if kind == "" {
				kind = "SourceFailed"
			}
			if !strings.Contains(r.stderr, "error_type="+kind) {
				t.Errorf("canonical line lacks error_type=%s:\n%s", kind, r.stderr)
			}
			r.refused(t, c.want, repo)
		})
	}
}

// A registry may redirect blob downloads to storage on another host: follow
// it, but never send that host the registry's credentials.
func TestBlobRedirectKeepsCredentialsHome(t *testing.T) {
	// The fixture on the authenticated registry, pushed by the test.
	auth := basic(aliceUser, alicePass)
	src := e2e.auth.Host + "/private/single:v1"
	ref, err := name.ParseReference(src)
	if err != nil {
		t.Fatal(err)
	}
	img, err := get(t, srcRef("single"), nil).Image()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(auth), remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	var leaked, served atomic.Int32
	storage := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Add(1)
		}
		served.Add(1)
		// Serve the blob from the registry, as object storage would.
		d, err := name.NewDigest(e2e.auth.Host + "/private/single@" + strings.TrimPrefix(r.URL.Path, "/"))
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		l, err := remote.Layer(d, remote.WithAuth(auth))
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		rc, err := l.Compressed()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer rc.Close()
		_, _ = io.Copy(w, rc)
	}))
	defer storage.Close()
	front := testenv.NewFront(e2e.auth.Host)
	defer front.Close()
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !isBlobGet(r) {
			return false
		}
		http.Redirect(w, r, storage.URL+"/"+r.URL.Path[strings.LastIndex(r.URL.Path, "/")+1:], http.StatusTemporaryRedirect)
		return true
	})
	cfg := dockerConfig(t, front.Host, aliceUser, alicePass)
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	ocistow(t, []string{"DOCKER_CONFIG=" + cfg}, "-source", front.Host+"/private/single:v1", "-destination", dst, "-sign=false").mustSucceed(t)
	if served.Load() == 0 {
		t.Fatal("no blob was fetched through the redirect")
	}
	if leaked.Load() != 0 {
		t.Errorf("%d redirected requests carried the registry's Authorization header", leaked.Load())
	}
	if get(t, dst, nil).Digest.String() != e2e.fixtures["single"] {
		t.Error("copy through the redirect has another digest")
	}
}
