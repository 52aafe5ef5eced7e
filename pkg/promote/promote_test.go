package promote_test

import (
	"context"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/promote"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/stamp"
)

// These unit tests run against go-containerregistry's in-process registry,
// for a quick inner loop; cmd/ocistow's end-to-end tests hold the same
// behaviours against the real Distribution registry.

// server is an in-process registry that records the requests it answers
// and lets a test change them.
type server struct {
	Host string
	mu   sync.Mutex
	log  []string // "METHOD /path"
	// edit, if set, may answer a request itself.
	edit func(w http.ResponseWriter, r *http.Request, next http.Handler) bool
}

func newServer(t *testing.T) *server {
	s := &server{}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.log = append(s.log, r.Method+" "+r.URL.Path)
		edit := s.edit
		s.mu.Unlock()
		if edit == nil || !edit(w, r, reg) {
			reg.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	s.Host = strings.TrimPrefix(srv.URL, "http://")
	return s
}

// count returns how many requests had method and a path containing part.
func (s *server) count(method, part string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.log {
		m, p, _ := strings.Cut(l, " ")
		if m == method && strings.Contains(p, part) {
			n++
		}
	}
	return n
}

func (s *server) reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.log = nil
}

func newClient() *registry.Client {
	return registry.New(registry.WithKeychain(authn.NewMultiKeychain()), registry.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 2}))
}

func ref(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func push(t *testing.T, r string, m any) {
	t.Helper()
	if err := testenv.Push(t.Context(), r, m); err != nil {
		t.Fatal(err)
	}
}

func copyOK(t *testing.T, req promote.Request) *promote.Result {
	t.Helper()
	res, err := promote.Copy(t.Context(), newClient(), req)
	if err != nil {
		t.Fatalf("Copy: %v", err)
	}
	return res
}

func annotationsAt(t *testing.T, r string) map[string]string {
	t.Helper()
	d, err := testenv.Get(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	anns, err := testenv.Annotations(d)
	if err != nil {
		t.Fatal(err)
	}
	return anns
}

func TestUpToDateCostsNoSourcePull(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	idx, err := testenv.MixedIndex(1, 1024)
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", idx)
	for _, tc := range []struct {
		name      string
		stamp     stamp.Stamp
		platforms []v1.Platform
	}{
		{"byte for byte", stamp.Stamp{}, nil},
		{"stamped", stamp.Stamp{Annotations: map[string]string{"team": "platform"}, Labels: map[string]string{"team": "platform"}}, nil},
		{"one platform", stamp.Stamp{}, []v1.Platform{{OS: "linux", Architecture: "amd64"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/"+strings.ReplaceAll(tc.name, " ", "-")+"/app:1"), Stamp: tc.stamp, Platforms: tc.platforms}
			first := copyOK(t, req)
			if first.UpToDate || first.SourcePulls == 0 || first.ManifestsWritten == 0 {
				t.Fatalf("first run: %+v", first)
			}
			src.reset()
			again := copyOK(t, req)
			if !again.UpToDate || again.SourcePulls != 0 || again.ManifestsWritten != 0 || again.BlobsCopied != 0 {
				t.Errorf("second run: %+v, want up to date with no pull and nothing written", again)
			}
			if n := src.count(http.MethodGet, "/manifests/"); n != 0 {
				t.Errorf("source served %d manifest GETs on an up-to-date run", n)
			}
			if n := src.count(http.MethodHead, "/manifests/"); n != 1 {
				t.Errorf("source served %d manifest HEADs, want 1", n)
			}
			if again.DestinationDigest != first.DestinationDigest || again.SourceDigest != first.SourceDigest {
				t.Errorf("digests %s/%s, first run %s/%s", again.SourceDigest, again.DestinationDigest, first.SourceDigest, first.DestinationDigest)
			}
			if len(again.Manifests) != len(first.Manifests) {
				t.Fatalf("children %v, first run %v", again.Manifests, first.Manifests)
			}
			for i := range first.Manifests {
				if again.Manifests[i] != first.Manifests[i] {
					t.Errorf("child %d: %+v, first run %+v", i, again.Manifests[i], first.Manifests[i])
				}
			}
		})
	}
}

func TestProvenanceIsRecordedAndKeepsSourceAnnotations(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	base, err := testenv.MixedIndex(2, 1024)
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.Annotations(base, map[string]string{"org.opencontainers.image.base.name": "docker.io/library/alpine:3"}).(v1.ImageIndex)
	push(t, src.Host+"/lib/app:1", idx)
	srcDigest, _ := idx.Digest()
	req := promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1"), Stamp: stamp.Stamp{Annotations: map[string]string{"team": "platform"}}}
	res := copyOK(t, req)
	got := annotationsAt(t, dst.Host+"/app:1")
	for k, v := range map[string]string{
		"org.opencontainers.image.base.name": "docker.io/library/alpine:3",
		"team":                               "platform",
		promote.AnnotationSourceDigest:       srcDigest.String(),
		promote.AnnotationSourceReference:    src.Host + "/lib/app:1",
	} {
		if got[k] != v {
			t.Errorf("annotation %s = %q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	if got[promote.AnnotationStamp] == "" {
		t.Errorf("no %s annotation: %v", promote.AnnotationStamp, got)
	}

	// The same source and stamp into another repository: the same digest.
	req2 := req
	req2.Destination = ref(t, dst.Host+"/other:1")
	if again := copyOK(t, req2); again.DestinationDigest != res.DestinationDigest {
		t.Errorf("stamping is not deterministic: %s then %s", res.DestinationDigest, again.DestinationDigest)
	}

	// Another stamp promotes again, and moves the tag.
	req3 := req
	req3.Stamp = stamp.Stamp{Annotations: map[string]string{"team": "security"}}
	src.reset()
	changed := copyOK(t, req3)
	if changed.UpToDate || changed.DestinationDigest == res.DestinationDigest || changed.PreviousDigest != res.DestinationDigest {
		t.Errorf("a new stamp: %+v", changed)
	}
	if changed.SourcePulls == 0 || changed.SourcePulls != src.count(http.MethodGet, "/manifests/") {
		t.Errorf("sourcePulls %d, the source served %d manifest GETs", changed.SourcePulls, src.count(http.MethodGet, "/manifests/"))
	}
}

func TestHeadWithoutDigestFallsBackToACountedGet(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 512, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", img)
	src.edit = func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != http.MethodHead || !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			if k != "Docker-Content-Digest" {
				w.Header()[k] = v
			}
		}
		w.WriteHeader(rec.Code)
		return true
	}
	req := promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1")}
	if first := copyOK(t, req); first.SourcePulls != 1 || src.count(http.MethodGet, "/manifests/") != 1 {
		t.Errorf("first copy: %d pulls counted, %d served; want the one GET, not a second to plan", first.SourcePulls, src.count(http.MethodGet, "/manifests/"))
	}
	src.reset()
	again := copyOK(t, req)
	if !again.UpToDate || again.SourcePulls != 1 || src.count(http.MethodGet, "/manifests/") != 1 {
		t.Errorf("up to date %v with %d pulls counted, %d served; want the one GET counted", again.UpToDate, again.SourcePulls, src.count(http.MethodGet, "/manifests/"))
	}
}

func TestManifestsWrittenCountsEverySuccessStatus(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	idx, err := testenv.MixedIndex(4, 1024)
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", idx)
	// A registry that answers manifest PUTs 200 and 202 rather than 201.
	var n atomic.Int32
	dst.edit = func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != http.MethodPut || !strings.Contains(r.URL.Path, "/manifests/") {
			return false
		}
		rec := httptest.NewRecorder()
		next.ServeHTTP(rec, r)
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(map[bool]int{true: http.StatusOK, false: http.StatusAccepted}[n.Add(1)%2 == 0])
		return true
	}
	res := copyOK(t, promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1")})
	if res.ManifestsWritten != 3 || res.UpToDate {
		t.Errorf("manifestsWritten %d (up to date %v), want 3", res.ManifestsWritten, res.UpToDate)
	}
	if res.BlobsCopied != 6 || res.BlobsSkipped != 0 || res.BlobsMounted != 0 || res.BytesCopied == 0 {
		t.Errorf("blobs %+v", res)
	}
}

func TestBlobOutcomes(t *testing.T) {
	for _, tc := range []struct {
		name      string
		layerSize int64
		// blob GETs at the source for the stamped copy, whose layers the
		// destination has: the config, read to stamp it, and the small
		// layers, opened while they are looked for and then closed.
		stampedGets int
	}{
		{"small", 512, 3},
		{"large", 1<<20 + 1, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src, dst := newServer(t), newServer(t)
			img, err := testenv.Image(testenv.ImageOptions{Layers: 2, LayerSize: tc.layerSize, Seed: 5})
			if err != nil {
				t.Fatal(err)
			}
			push(t, src.Host+"/lib/app:1", img)
			res := copyOK(t, promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1")})
			if res.BlobsCopied != 3 || res.BlobsSkipped != 0 || res.BlobsMounted != 0 || res.ManifestsWritten != 1 {
				t.Errorf("first copy: %+v, want 3 copied", res)
			}
			if n := dst.count(http.MethodPut, "/blobs/uploads/"); n != 3 {
				t.Errorf("destination saw %d blob PUTs, want 3 (the bytes go with the PUT)", n)
			}
			if n := dst.count(http.MethodPatch, ""); n != 0 {
				t.Errorf("destination saw %d PATCHes, want none", n)
			}
			// Stamped labels: a new config uploaded, the layers found. (Mounts
			// need a registry that keeps blobs per repository: the end-to-end
			// tests check them against Distribution.)
			gets, puts := src.count(http.MethodGet, "/blobs/"), dst.count(http.MethodPut, "/blobs/uploads/")
			res = copyOK(t, promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:2"), Stamp: stamp.Stamp{Labels: map[string]string{"a": "b"}}})
			if res.BlobsCopied != 1 || res.BlobsSkipped != 2 || res.BlobsMounted != 0 || res.ManifestsWritten != 1 {
				t.Errorf("stamped: %+v, want 1 copied, 2 skipped", res)
			}
			if n := src.count(http.MethodGet, "/blobs/") - gets; n != tc.stampedGets {
				t.Errorf("source served %d blob GETs for the stamped copy, want %d", n, tc.stampedGets)
			}
			if n := dst.count(http.MethodPut, "/blobs/uploads/") - puts; n != 1 {
				t.Errorf("destination saw %d blob PUTs for the stamped copy, want 1 (the new config)", n)
			}
		})
	}
}

// TestRefusesWhatItCannotPromote holds the README's sources refused by
// design (exit 2, InvalidRequest, nothing written): "a Docker schema 1
// manifest, an index child that is neither an image nor an index, an image
// config over 8 MiB that would have to be read" — the last one "checked
// before reading", so the source serves no GET of that blob.
func TestRefusesWhatItCannotPromote(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	// An index with a child that is neither an image nor an index.
	odd := static.NewLayer([]byte(`{"hello":"world"}`), "application/vnd.example.thing+json")
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img}, mutate.IndexAddendum{Add: odd, Descriptor: v1.Descriptor{MediaType: "application/vnd.example.thing+json"}})
	push(t, src.Host+"/lib/odd:1", idx)
	// The same child a level down, beside an image that would be written
	// first if the check came late.
	other, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: 8})
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/nested:1", mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: other}, mutate.IndexAddendum{Add: idx}))
	// An image whose config is over the limit, stamped with labels.
	big := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	big, err = mutate.Config(big, v1.Config{Labels: map[string]string{"pad": strings.Repeat("x", promote.MaxConfigSize)}})
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/big:1", big)
	// A Docker schema 1 manifest, which the in-process registry cannot
	// store: the source serves it itself.
	src.edit = serveSchema1("/v2/lib/s1/manifests/")
	for _, tc := range []struct {
		src, want string
		stamp     stamp.Stamp
	}{
		{"odd", `media type "application/vnd.example.thing+json", which is neither an image nor an index`, stamp.Stamp{}},
		{"nested", `media type "application/vnd.example.thing+json", which is neither an image nor an index`, stamp.Stamp{}},
		{"big", "over the 8388608-byte limit on configs read into memory", stamp.Stamp{Labels: map[string]string{"a": "b"}}},
		{"s1", "a Docker schema 1 manifest", stamp.Stamp{}},
	} {
		dst.reset()
		src.reset()
		_, err := promote.Copy(t.Context(), newClient(), promote.Request{Source: ref(t, src.Host+"/lib/"+tc.src+":1"), Destination: ref(t, dst.Host+"/"+tc.src+":1"), Stamp: tc.stamp})
		if n := src.count(http.MethodGet, "/blobs/"); n != 0 {
			t.Errorf("%s: the source served %d blob GETs before the refusal", tc.src, n)
		}
		if !errors.Is(err, promote.ErrUnsupported) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want ErrUnsupported saying %q", tc.src, err, tc.want)
		}
		if n := dst.count(http.MethodPut, "") + dst.count(http.MethodPost, "") + dst.count(http.MethodPatch, ""); n != 0 {
			t.Errorf("%s: %d writes at the destination", tc.src, n)
		}
	}
}

func TestImmutable(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	for i, seed := range []int64{10, 11} {
		img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		push(t, src.Host+"/lib/app:"+string(rune('1'+i)), img)
	}
	copyOK(t, promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1")})
	// The same image again is no move.
	if res := copyOK(t, promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1"), Immutable: true}); !res.UpToDate {
		t.Errorf("same image with -immutable: %+v", res)
	}
	dst.reset()
	_, err := promote.Copy(t.Context(), newClient(), promote.Request{Source: ref(t, src.Host+"/lib/app:2"), Destination: ref(t, dst.Host+"/app:1"), Immutable: true})
	if !errors.Is(err, promote.ErrTagWouldMove) {
		t.Errorf("err %v, want ErrTagWouldMove", err)
	}
	if n := dst.count(http.MethodPut, "") + dst.count(http.MethodPost, "") + dst.count(http.MethodPatch, ""); n != 0 {
		t.Errorf("%d writes at the destination", n)
	}
	// A destination that will not say where the tag points is a
	// destination failure with its status, not a refusal.
	dst.edit = func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if strings.Contains(r.URL.Path, "/manifests/") {
			w.WriteHeader(http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	_, err = promote.Copy(t.Context(), newClient(), promote.Request{Source: ref(t, src.Host+"/lib/app:2"), Destination: ref(t, dst.Host+"/app:1"), Immutable: true})
	var de *promote.DestinationError
	if !errors.As(err, &de) || errors.Is(err, promote.ErrTagWouldMove) || registry.StatusCode(err) != http.StatusServiceUnavailable {
		t.Errorf("err %v (%T), want a DestinationError carrying the 503", err, err)
	}
}

func TestConfigCutMidBodyIsRetried(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: 12})
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", img)
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var cut sync.Once
	src.edit = func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+cfg.String()) {
			return false
		}
		done := false
		cut.Do(func() {
			// The headers, half the body, then the connection is gone.
			w.Header().Set("Content-Length", strconv.Itoa(len(raw)))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(raw[:len(raw)/2])
			w.(http.Flusher).Flush()
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
			done = true
		})
		return done
	}
	res := copyOK(t, promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1"), Stamp: stamp.Stamp{Labels: map[string]string{"team": "platform"}}})
	if res.BlobsCopied != 2 {
		t.Errorf("%+v", res)
	}
	if n := src.count(http.MethodGet, "/blobs/"+cfg.String()); n != 2 {
		t.Errorf("config read %d times, want 2 (cut, then whole)", n)
	}
}

// A Copy that starts from a Check of the same request asks the registries
// nothing more to find that it is up to date; a Check of another request
// is not used.
func TestCopyStartsFromItsCheck(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", img)
	req := promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1")}
	copyOK(t, req)
	c := registry.New()
	st, err := promote.Check(t.Context(), c, req)
	if err != nil || !st.UpToDate {
		t.Fatalf("check: %+v, %v", st, err)
	}
	heads, gets := src.count(http.MethodHead, "/manifests/"), dst.count(http.MethodGet, "/manifests/")
	res, err := promote.Copy(t.Context(), c, req, promote.FromCheck(st))
	if err != nil || !res.UpToDate || res.SourceDigest != st.SourceDigest {
		t.Fatalf("copy from the check: %+v, %v", res, err)
	}
	if n, m := src.count(http.MethodHead, "/manifests/")-heads, dst.count(http.MethodGet, "/manifests/")-gets; n != 0 || m != 0 {
		t.Errorf("copy from the check asked the source %d HEADs and the destination %d GETs, want none", n, m)
	}
	other := req
	other.Destination = ref(t, dst.Host+"/app:2")
	res, err = promote.Copy(t.Context(), c, other, promote.FromCheck(st))
	if err != nil || res.UpToDate || res.ManifestsWritten != 1 {
		t.Errorf("copy to another tag with the first one's check: %+v, %v; want it written", res, err)
	}
}

// Small blobs are bound by round trips, not bandwidth: they do not wait
// for the -jobs slots that large blobs hold. With -jobs 1, the three
// small blobs of an image upload at once.
func TestSmallBlobsDoNotWaitForJobs(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	img, err := testenv.Image(testenv.ImageOptions{Layers: 2, LayerSize: 1024, Seed: 31})
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", img)
	var inFlight, most atomic.Int32
	together := make(chan struct{})
	var once sync.Once
	dst.edit = func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !testenv.IsUpload(r) {
			return false
		}
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		if n == 3 {
			once.Do(func() { close(together) })
		}
		select { // hold each upload until all three are in flight, or give up
		case <-together:
		case <-time.After(5 * time.Second):
		}
		next.ServeHTTP(w, r)
		return true
	}
	c := registry.New(registry.WithKeychain(authn.NewMultiKeychain()), registry.WithJobs(1))
	res, err := promote.Copy(t.Context(), c, promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1")})
	if err != nil || res.BlobsCopied != 3 {
		t.Fatalf("copy: %+v, %v", res, err)
	}
	if m := most.Load(); m != 3 {
		t.Errorf("at most %d small blob uploads at once with -jobs 1, want all 3", m)
	}
}

// A promotion that waits for its turn to write (WithGate) looks for its
// blobs while it waits, and writing asks no more: the blobs of an index's
// missing children, and of a single image. A blob found then is not
// uploaded.
func TestGatedCopyLooksForBlobsWhileWaiting(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	a, err := testenv.Image(testenv.ImageOptions{Layers: 2, LayerSize: 512, Seed: 41})
	if err != nil {
		t.Fatal(err)
	}
	b, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 512, Seed: 42})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := testenv.Index(false, a, b)
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:idx", idx)
	push(t, src.Host+"/lib/app:one", b)
	// The destination has one of a's layers already.
	la, err := a.Layers()
	if err != nil {
		t.Fatal(err)
	}
	dstRepo, err := name.NewRepository(dst.Host + "/app")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(dstRepo, la[0]); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tag             string
		heads, up, skip int
	}{
		{"idx", 3, 4, 1}, // a's 2 layers, b's layer: a missing child's config is not asked for
		{"one", 2, 0, 2}, // b's blobs, written by the index before
	} {
		t.Run(tc.tag, func(t *testing.T) {
			dst.reset()
			var before int
			gate := func(context.Context) (func(), error) {
				before = dst.count(http.MethodHead, "/blobs/")
				return func() {}, nil
			}
			req := promote.Request{Source: ref(t, src.Host+"/lib/app:"+tc.tag), Destination: ref(t, dst.Host+"/app:"+tc.tag)}
			res, err := promote.Copy(t.Context(), newClient(), req, promote.WithGate(gate))
			if err != nil {
				t.Fatalf("copy: %v", err)
			}
			if before != tc.heads {
				t.Errorf("blobs looked for before the gate: %d, want %d", before, tc.heads)
			}
			if after := dst.count(http.MethodHead, "/blobs/"); after != before {
				t.Errorf("blobs looked for after the gate: %d, want none", after-before)
			}
			if res.BlobsCopied != tc.up || res.BlobsSkipped != tc.skip {
				t.Errorf("copied %d blobs and skipped %d, want %d and %d", res.BlobsCopied, res.BlobsSkipped, tc.up, tc.skip)
			}
		})
	}
	// Without a gate, small blobs are looked for while their uploads open.
	dst.reset()
	req := promote.Request{Source: ref(t, src.Host+"/lib/app:one"), Destination: ref(t, dst.Host+"/app:two")}
	if _, err := promote.Copy(t.Context(), newClient(), req); err != nil {
		t.Fatal(err)
	}
	if n := dst.count(http.MethodHead, "/blobs/"); n != 2 {
		t.Errorf("ungated copy looked for %d blobs, want 2", n)
	}
}

// readAheadCase copies a 2-layer image with a gate and a ReadAhead of
// budget bytes, and reports the destination's requests before the gate
// and after it, and the source's blob reads.
type readAheadCase struct {
	src, dst *server
	req      promote.Request
}

func newReadAheadCase(t *testing.T, seed int64) *readAheadCase {
	src, dst := newServer(t), newServer(t)
	img, err := testenv.Image(testenv.ImageOptions{Layers: 2, LayerSize: 2048, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", img)
	src.reset()
	return &readAheadCase{src: src, dst: dst, req: promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1")}}
}

// copy runs the copy; before holds the destination's POSTs and PUTs of
// blobs counted when the gate was passed, and the source's blob GETs.
func (c *readAheadCase) copy(t *testing.T, ra *promote.ReadAhead, gateErr error) (res *promote.Result, err error, before [3]int) {
	gate := func(context.Context) (func(), error) {
		before = [3]int{c.dst.count(http.MethodPost, "/blobs/uploads/"), c.dst.count(http.MethodPut, "/blobs/uploads/"), c.src.count(http.MethodGet, "/blobs/")}
		return func() {}, gateErr
	}
	res, err = promote.Copy(t.Context(), newClient(), c.req, promote.WithGate(gate), promote.WithReadAhead(ra))
	return res, err, before
}

// A gated promotion with a ReadAhead reads its small missing blobs and
// opens their uploads while it waits: writing then sends each with one
// request, and reads nothing more from the source.
func TestReadAheadMakesBlobsReady(t *testing.T) {
	c := newReadAheadCase(t, 51)
	res, err, before := c.copy(t, promote.NewReadAhead(1<<20), nil)
	if err != nil || res.BlobsCopied != 3 {
		t.Fatalf("copy: %+v, %v", res, err)
	}
	if before != [3]int{3, 0, 3} {
		t.Errorf("before the gate: %d uploads opened, %d sent, %d source reads; want 3, 0, 3", before[0], before[1], before[2])
	}
	if posts, puts, gets := c.dst.count(http.MethodPost, "/blobs/uploads/"), c.dst.count(http.MethodPut, "/blobs/uploads/"), c.src.count(http.MethodGet, "/blobs/"); posts != 3 || puts != 3 || gets != 3 {
		t.Errorf("in all: %d uploads opened, %d sent, %d source reads; want 3 each", posts, puts, gets)
	}
	if _, err := testenv.Get(t.Context(), c.req.Destination.String()); err != nil {
		t.Errorf("the copy is not readable: %v", err)
	}
}

// Blobs that do not fit in the budget are read when written.
func TestReadAheadWithinBudget(t *testing.T) {
	c := newReadAheadCase(t, 52)
	res, err, before := c.copy(t, promote.NewReadAhead(100), nil)
	if err != nil || res.BlobsCopied != 3 {
		t.Fatalf("copy: %+v, %v", res, err)
	}
	// The config (a few hundred bytes) may fit; the 2 KiB layers do not.
	if before[0] > 1 || before[2] > 1 {
		t.Errorf("before the gate: %d uploads opened and %d source reads with a 100-byte budget, want at most the config's", before[0], before[2])
	}
}

// An upload opened ahead that the registry no longer knows (expired) is
// sent again in a fresh one, from memory: the source is not read again.
func TestReadAheadExpiredUpload(t *testing.T) {
	c := newReadAheadCase(t, 53)
	// The uploads opened ahead (the first three) are forgotten by the time
	// their bytes come; the ones opened again are not.
	var mu sync.Mutex
	opened, expired := 0, map[string]bool{}
	c.dst.edit = func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/blobs/uploads/"):
			opened++
			if opened > 3 {
				return false
			}
			next.ServeHTTP(w, r)
			if loc, err := url.Parse(w.Header().Get("Location")); err == nil {
				expired[loc.Path] = true
			}
			return true
		case testenv.IsUpload(r) && expired[r.URL.Path]:
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}`)
			return true
		}
		return false
	}
	res, err, _ := c.copy(t, promote.NewReadAhead(1<<20), nil)
	if err != nil || res.BlobsCopied != 3 {
		t.Fatalf("copy: %+v, %v", res, err)
	}
	if gets := c.src.count(http.MethodGet, "/blobs/"); gets != 3 {
		t.Errorf("source read %d times, want 3 (once per blob)", gets)
	}
	if posts := c.dst.count(http.MethodPost, "/blobs/uploads/"); posts != 6 {
		t.Errorf("%d uploads opened, want 6 (3 ahead, 3 again)", posts)
	}
}

// A promotion that ends before writing abandons the uploads it opened and
// gives the memory back: the next one can use the whole budget again.
func TestReadAheadDiscarded(t *testing.T) {
	c := newReadAheadCase(t, 54)
	ra := promote.NewReadAhead(8 << 10) // the blobs of one image, not two
	if _, err, _ := c.copy(t, ra, errors.New("no turn to write")); err == nil {
		t.Fatal("copy passed a gate that failed")
	}
	for deadline := time.Now().Add(5 * time.Second); c.dst.count(http.MethodDelete, "/blobs/uploads/") < 3 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	if n := c.dst.count(http.MethodDelete, "/blobs/uploads/"); n != 3 {
		t.Errorf("%d uploads abandoned, want the 3 opened", n)
	}
	c.dst.reset()
	c.src.reset()
	res, err, before := c.copy(t, ra, nil)
	if err != nil || res.BlobsCopied != 3 || before[0] != 3 {
		t.Errorf("second copy: %+v, %v, %d uploads opened before the gate; want 3 blobs, all made ready", res, err, before[0])
	}
}

// TestApprovalIsAskedBeforeAnythingIsWritten holds the Approval options'
// promises: WithApproval is asked with the source digest and the children
// the copy writes, after the index is read and before anything is written;
// WithSourceApproval is asked before the source's manifest is read, so that
// a source it refuses costs no pull; and either, refusing, leaves the
// destination untouched.
func TestApprovalIsAskedBeforeAnythingIsWritten(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	idx, err := testenv.MixedIndex(3, 1024)
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", idx)
	want, err := idx.Digest()
	if err != nil {
		t.Fatal(err)
	}
	refused := errors.New("refused by the test")
	for _, tc := range []struct {
		name         string
		option       func(promote.Approval) promote.Option
		pulls        int
		withChildren bool
	}{
		{"with its children", promote.WithApproval, 1, true},
		{"on the source digest", promote.WithSourceApproval, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src.reset()
			dst.reset()
			var asked []string
			var children int
			approve := func(_ context.Context, source name.Digest, ch []name.Digest) error {
				asked = append(asked, source.DigestStr())
				children = len(ch)
				return refused
			}
			req := promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/refused/app:1")}
			res, err := promote.Copy(t.Context(), newClient(), req, tc.option(approve))
			if !errors.Is(err, refused) {
				t.Fatalf("Copy: %v, want the approval's refusal", err)
			}
			if len(asked) != 1 || asked[0] != want.String() {
				t.Errorf("asked about %v, want once about %s", asked, want)
			}
			if (children > 0) != tc.withChildren {
				t.Errorf("asked with %d children", children)
			}
			if n := src.count(http.MethodGet, "/manifests/"); n != tc.pulls || res.SourcePulls != tc.pulls {
				t.Errorf("%d manifest GETs at the source, %d counted, want %d", n, res.SourcePulls, tc.pulls)
			}
			for _, m := range []string{http.MethodPut, http.MethodPost, http.MethodPatch} {
				if n := dst.count(m, "/"); n != 0 {
					t.Errorf("%d %s requests at the destination of a refused source", n, m)
				}
			}
		})
	}
}

// progressRecorder is a Progress and Restarter that keeps, per blob, the
// bytes reported since its last restart and how many restarts there were.
type progressRecorder struct {
	mu       sync.Mutex
	bytes    map[string]int64
	restarts map[string]int
}

func (p *progressRecorder) BlobStarted(string, int64)        {}
func (p *progressRecorder) BlobDone(string, promote.Outcome) {}
func (p *progressRecorder) Finish()                          {}
func (p *progressRecorder) BlobBytes(d string, n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytes[d] += n
}
func (p *progressRecorder) BlobRestarted(d string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.bytes[d] = 0
	p.restarts[d]++
}

// TestProgressIsToldOfARestartedUpload holds the Restarter's promise: a
// blob whose source body breaks off mid-upload is uploaded again, the
// Progress is told once that it starts over, and the bytes it is told of
// afterwards add up to the blob's size (a progress bar does not count the
// failed attempt's bytes on top of the blob's).
func TestProgressIsToldOfARestartedUpload(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 2 << 20, Seed: 14})
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", img)
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	ld, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	size, err := layers[0].Size()
	if err != nil {
		t.Fatal(err)
	}
	var cut sync.Once
	src.edit = func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != http.MethodGet || !strings.HasSuffix(r.URL.Path, "/blobs/"+ld.String()) {
			return false
		}
		done := false
		cut.Do(func() {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(make([]byte, size/2))
			w.(http.Flusher).Flush()
			if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
				conn.Close()
			}
			done = true
		})
		return done
	}
	rec := &progressRecorder{bytes: map[string]int64{}, restarts: map[string]int{}}
	req := promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1")}
	if _, err := promote.Copy(t.Context(), newClient(), req, promote.WithProgress(rec)); err != nil {
		t.Fatalf("Copy: %v", err)
	}
	if n := src.count(http.MethodGet, "/blobs/"+ld.String()); n != 2 {
		t.Fatalf("layer read %d times, want 2 (cut, then whole)", n)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if got := rec.restarts[ld.String()]; got != 1 {
		t.Errorf("told of %d restarts of the layer's upload, want 1", got)
	}
	if got := rec.bytes[ld.String()]; got != size {
		t.Errorf("%d bytes reported since the restart, want the layer's %d", got, size)
	}
}
