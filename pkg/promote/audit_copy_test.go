package promote_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/promote"
	"github.com/ocistow/ocistow/pkg/stamp"
)

// TestAnotherSpellingOfTheSourceIsUpToDate holds the README's "a
// re-promotion of an unchanged image costs no pull" and "recorded as
// given, compared by what it names": a stamped promotion of host/lib/app,
// repeated as host/lib/app:latest (the same reference, spelled out), is up
// to date with no source GET, and the destination keeps the first
// spelling, so no digest stamped before changes. Another repository with
// the same content is another source, and promotes again.
func TestAnotherSpellingOfTheSourceIsUpToDate(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 512, Seed: 41})
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:latest", img)
	push(t, src.Host+"/lib/copy:latest", img)
	st := stamp.Stamp{Annotations: map[string]string{"team": "platform"}}
	req := promote.Request{Source: ref(t, src.Host+"/lib/app"), Destination: ref(t, dst.Host+"/app:1"), Stamp: st}
	first := copyOK(t, req)
	if got := annotationsAt(t, dst.Host+"/app:1")[promote.AnnotationSourceReference]; got != src.Host+"/lib/app" {
		t.Fatalf("recorded source %q, want it as given: %s", got, src.Host+"/lib/app")
	}

	src.reset()
	req.Source = ref(t, src.Host+"/lib/app:latest")
	again := copyOK(t, req)
	if !again.UpToDate || again.SourcePulls != 0 || again.ManifestsWritten != 0 || again.DestinationDigest != first.DestinationDigest {
		t.Errorf("another spelling of the source: %+v, want up to date at %s with no pull", again, first.DestinationDigest)
	}
	if n := src.count(http.MethodGet, "/manifests/"); n != 0 {
		t.Errorf("source served %d manifest GETs to another spelling of an unchanged source", n)
	}

	src.reset()
	req.Source = ref(t, src.Host+"/lib/copy:latest")
	other := copyOK(t, req)
	if other.UpToDate || other.SourcePulls == 0 || other.DestinationDigest == first.DestinationDigest {
		t.Errorf("another repository of the same content: %+v, want promoted again (another source recorded)", other)
	}
}

// TestManifestIsReadByTheDigestTheHeadGave holds the README's "reads the
// source manifest (by the digest the HEAD gave, so a tag that moves
// meanwhile cannot mix two images)": the source tag moves from A to B
// right after the HEAD that resolved it to A; the copy reads A by digest
// and promotes A, whole.
func TestManifestIsReadByTheDigestTheHeadGave(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	a, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 512, Seed: 51})
	if err != nil {
		t.Fatal(err)
	}
	b, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 512, Seed: 52})
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	push(t, src.Host+"/lib/app:1", a)
	var moved atomic.Bool
	src.edit = func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if r.Method != http.MethodHead || r.URL.Path != "/v2/lib/app/manifests/1" || moved.Swap(true) {
			return false
		}
		next.ServeHTTP(w, r) // A's digest, then the tag moves to B
		if err := testenv.Push(r.Context(), src.Host+"/lib/app:1", b); err != nil {
			t.Errorf("moving the source tag: %v", err)
		}
		return true
	}
	res := copyOK(t, promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1")})
	if !moved.Load() {
		t.Fatal("the source tag was never resolved with a HEAD")
	}
	if res.SourceDigest != da.String() || res.DestinationDigest != da.String() {
		t.Errorf("promoted %s from %s, want A %s (the tag moved to B %s after the HEAD)", res.DestinationDigest, res.SourceDigest, da, db)
	}
	if n := src.count(http.MethodGet, "/manifests/1"); n != 0 {
		t.Errorf("%d manifest GETs by tag at the source, want the manifest read by digest only", n)
	}
	if got := digestAt(t, src.Host+"/lib/app:1"); got != db.String() {
		t.Errorf("the source tag is at %s, want it moved to B %s", got, db)
	}
	if got := digestAt(t, dst.Host+"/app:1"); got != da.String() {
		t.Errorf("destination holds %s, want A %s", got, da)
	}
}

// digestAt returns the digest of what r holds.
func digestAt(t *testing.T, r string) string {
	t.Helper()
	d, err := testenv.Get(t.Context(), r)
	if err != nil {
		t.Fatal(err)
	}
	return d.Digest.String()
}

// TestOnlyMissingChildrenAreRead holds the README's "for an index each
// child manifest the destination lacks (… only the missing ones read)" and
// "manifestsSkipped counts child manifests the destination already had":
// the destination has one of an index's two children by digest; the
// source serves the index and the missing child only, and the result
// counts one child skipped, two manifests written and two pulls.
func TestOnlyMissingChildrenAreRead(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	idx, err := testenv.MixedIndex(53, 1024)
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", idx)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	have, missing := im.Manifests[0].Digest, im.Manifests[1].Digest
	child, err := idx.Image(have)
	if err != nil {
		t.Fatal(err)
	}
	push(t, dst.Host+"/app@"+have.String(), child)
	res := copyOK(t, promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1")})
	if res.ManifestsSkipped != 1 || res.ManifestsWritten != 2 || res.SourcePulls != 2 {
		t.Errorf("manifestsSkipped %d, manifestsWritten %d, sourcePulls %d; want 1, 2 (the missing child and the index), 2", res.ManifestsSkipped, res.ManifestsWritten, res.SourcePulls)
	}
	if n := src.count(http.MethodGet, "/manifests/"+have.String()); n != 0 {
		t.Errorf("the child the destination had was read %d times at the source", n)
	}
	if n := src.count(http.MethodGet, "/manifests/"+missing.String()); n != 1 {
		t.Errorf("the missing child was read %d times at the source, want 1", n)
	}
	if n := src.count(http.MethodGet, "/manifests/"); n != 2 {
		t.Errorf("the source served %d manifest GETs, want 2 (the index and the missing child)", n)
	}
}

// TestStampedIndexNamesEachChildsSourceDigest holds the README's "A
// stamped index also names each child's source digest in that child's
// descriptor": every descriptor of the stamped index carries
// dev.ocistow.source.digest with the digest of the source child it was
// made from (found by platform), which its own digest no longer is.
func TestStampedIndexNamesEachChildsSourceDigest(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	idx, err := testenv.MixedIndex(54, 1024)
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:1", idx)
	srcIM, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{} // platform -> source digest
	for _, d := range srcIM.Manifests {
		want[promote.FormatPlatform(d.Platform)] = d.Digest.String()
	}
	copyOK(t, promote.Request{Source: ref(t, src.Host+"/lib/app:1"), Destination: ref(t, dst.Host+"/app:1"), Stamp: stamp.Stamp{Annotations: map[string]string{"team": "platform"}}})
	d, err := testenv.Get(t.Context(), dst.Host+"/app:1")
	if err != nil {
		t.Fatal(err)
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(d.Manifest))
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != len(want) {
		t.Fatalf("stamped index lists %d children, want %d", len(im.Manifests), len(want))
	}
	for _, c := range im.Manifests {
		p := promote.FormatPlatform(c.Platform)
		if got := c.Annotations[promote.AnnotationSourceDigest]; got != want[p] || got == "" {
			t.Errorf("child %s: descriptor annotation %s = %q, want its source digest %s", p, promote.AnnotationSourceDigest, got, want[p])
		}
		if c.Digest.String() == want[p] {
			t.Errorf("child %s kept its source digest: it was not stamped", p)
		}
	}
}

// schema1 is a Docker schema 1 signed manifest, as old registries serve it.
const schema1 = `{"schemaVersion":1,"name":"lib/s1","tag":"1","architecture":"amd64",` +
	`"fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],` +
	`"history":[{"v1Compatibility":"{\"id\":\"0\"}"}],"signatures":[]}`

// serveSchema1 returns a server edit that answers HEAD and GET of the
// manifests under prefix (by tag or digest) with schema1.
func serveSchema1(prefix string) func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
	sum := sha256.Sum256([]byte(schema1))
	digest := "sha256:" + hex.EncodeToString(sum[:])
	return func(w http.ResponseWriter, r *http.Request, next http.Handler) bool {
		if !strings.HasPrefix(r.URL.Path, prefix) || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			return false
		}
		w.Header().Set("Content-Type", string(types.DockerManifestSchema1Signed))
		w.Header().Set("Docker-Content-Digest", digest)
		w.Header().Set("Content-Length", strconv.Itoa(len(schema1)))
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte(schema1))
		}
		return true
	}
}
