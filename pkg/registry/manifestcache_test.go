package registry_test

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/pkg/registry"
)

// countingRegistry is an in-process registry that counts the manifest
// requests it answers, by method and path, and may corrupt the bodies it
// sends.
type countingRegistry struct {
	host    string
	mu      sync.Mutex
	seen    map[string]int
	corrupt bool
}

func newCountingRegistry(t *testing.T) *countingRegistry {
	r := &countingRegistry{seen: map[string]int{}}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.seen[req.Method+" "+req.URL.Path]++
		corrupt := r.corrupt
		r.mu.Unlock()
		if corrupt && strings.Contains(req.URL.Path, "/manifests/") && req.Method == http.MethodGet {
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			_, _ = w.Write([]byte(`{"schemaVersion":2}`))
			return
		}
		reg.ServeHTTP(w, req)
	}))
	t.Cleanup(srv.Close)
	r.host = strings.TrimPrefix(srv.URL, "http://")
	return r
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	ref, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return ref
}

func (r *countingRegistry) count(method, path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[method+" "+path]
}

// TestManifestsByDigestAreReadOnce holds the README's "a manifest read by
// digest is read once in a promotion": within one operation's context
// (WithManifestCache), a second GET of the same manifest by digest in the
// same repository is answered from memory, and is not counted as a pull; a
// HEAD still asks the registry; another repository holding the same digest
// is asked; a body that does not match its digest is not kept; and outside
// such a context, or in another operation's, every GET asks.
func TestManifestsByDigestAreReadOnce(t *testing.T) {
	reg := newCountingRegistry(t)
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"a/app", "b/app"} {
		if err := remote.Write(mustRef(t, reg.host+"/"+repo+":1"), img); err != nil {
			t.Fatal(err)
		}
	}
	op := registry.WithManifestCache(t.Context(), registry.DefaultManifestCacheSize)
	get := func(c *registry.Client, ctx context.Context, repo string) int {
		t.Helper()
		ref := mustRef(t, reg.host+"/"+repo+"@"+d.String())
		meter := registry.NewPullMeter(ref.Context())
		desc, err := remote.Get(ref, c.RemoteOptions(registry.WithObserver(ctx, meter.Observe))...)
		if err != nil {
			t.Fatalf("GET %s: %v", ref, err)
		}
		if desc.Digest != d {
			t.Fatalf("GET %s: digest %s", ref, desc.Digest)
		}
		return meter.Pulls()
	}
	path := func(repo string) string { return "/v2/" + repo + "/manifests/" + d.String() }

	c := registry.New(registry.WithKeychain(authn.NewMultiKeychain()))
	if pulls := get(c, op, "a/app"); pulls != 1 {
		t.Errorf("first GET counted %d pulls, want 1", pulls)
	}
	if pulls := get(c, op, "a/app"); pulls != 0 {
		t.Errorf("second GET counted %d pulls, want 0", pulls)
	}
	if n := reg.count(http.MethodGet, path("a/app")); n != 1 {
		t.Errorf("the registry answered %d GETs of the manifest, want 1", n)
	}
	if _, err := remote.Head(mustRef(t, reg.host+"/a/app@"+d.String()), c.RemoteOptions(op)...); err != nil {
		t.Fatal(err)
	}
	if n := reg.count(http.MethodHead, path("a/app")); n != 1 {
		t.Errorf("the registry answered %d HEADs, want 1: a HEAD is not answered from memory", n)
	}
	get(c, op, "b/app")
	if n := reg.count(http.MethodGet, path("b/app")); n != 1 {
		t.Errorf("another repository's GET reached the registry %d times, want 1", n)
	}

	// A body that does not match its digest is refused, and not kept.
	fresh := registry.WithManifestCache(t.Context(), registry.DefaultManifestCacheSize)
	reg.mu.Lock()
	reg.corrupt = true
	reg.mu.Unlock()
	ref := mustRef(t, reg.host+"/a/app@"+d.String())
	if _, err := remote.Get(ref, c.RemoteOptions(fresh)...); err == nil {
		t.Error("a corrupted manifest was accepted")
	}
	reg.mu.Lock()
	reg.corrupt = false
	reg.mu.Unlock()
	before := reg.count(http.MethodGet, path("a/app"))
	get(c, fresh, "a/app")
	if n := reg.count(http.MethodGet, path("a/app")) - before; n != 1 {
		t.Errorf("after a corrupted answer, %d GETs reached the registry, want 1", n)
	}

	// Outside an operation's cache, every GET asks: a manifest deleted
	// since is not found in memory.
	before = reg.count(http.MethodGet, path("a/app"))
	get(c, t.Context(), "a/app")
	get(c, t.Context(), "a/app")
	if n := reg.count(http.MethodGet, path("a/app")) - before; n != 2 {
		t.Errorf("without a cache, %d GETs reached the registry, want 2", n)
	}
	gone := mustRef(t, reg.host+"/b/app@"+d.String())
	if err := remote.Delete(gone, c.RemoteOptions(t.Context())...); err != nil {
		t.Fatal(err)
	}
	if _, err := remote.Get(gone, c.RemoteOptions(registry.WithManifestCache(t.Context(), registry.DefaultManifestCacheSize))...); err == nil {
		t.Error("a manifest deleted after another operation read it was found")
	}
}

// TestManifestCacheIsBounded: past its size, the least recently used
// manifest is dropped and read again.
func TestManifestCacheIsBounded(t *testing.T) {
	reg := newCountingRegistry(t)
	var digests []string
	var size int64
	for i := range 3 {
		img, err := random.Image(256, 1)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := img.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		size = max(size, int64(len(raw)))
		ref := mustRef(t, reg.host+"/app:"+string(rune('a'+i)))
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		digests = append(digests, d.String())
	}
	// Room for two manifests.
	c := registry.New(registry.WithKeychain(authn.NewMultiKeychain()))
	op := registry.WithManifestCache(t.Context(), 2*size)
	get := func(d string) {
		t.Helper()
		if _, err := remote.Get(mustRef(t, reg.host+"/app@"+d), c.RemoteOptions(op)...); err != nil {
			t.Fatal(err)
		}
	}
	get(digests[0])
	get(digests[1])
	get(digests[0]) // the most recently used now
	get(digests[2]) // drops digests[1]
	get(digests[0])
	get(digests[1])
	for i, want := range []int{1, 2, 1} {
		if n := reg.count(http.MethodGet, "/v2/app/manifests/"+digests[i]); n != want {
			t.Errorf("manifest %d read %d times, want %d", i, n, want)
		}
	}
}
