package referrers

import (
	"io"
	"log"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

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
	"github.com/ocistow/ocistow/pkg/digesttag"
	"github.com/ocistow/ocistow/pkg/registry"
)

// The artifact types of the test's referrers.
const (
	sbomType      = "application/spdx+json"
	sigType       = "application/vnd.example.signature"
	simpleSigning = "application/vnd.dev.cosign.simplesigning.v1+json"
)

// startRegistry starts go-containerregistry's in-process registry, with or
// without the referrers API.
func startRegistry(t *testing.T, referrersAPI bool) string {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(referrersAPI)))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

// artifact builds a referrer of subject with one layer of content.
func artifact(t *testing.T, artifactType, content string, subject v1.Descriptor) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.MediaType(artifactType))
	img, err := mutate.AppendLayers(img, static.NewLayer([]byte(content), types.MediaType(artifactType)))
	if err != nil {
		t.Fatal(err)
	}
	return mutate.Subject(img, subject).(v1.Image)
}

func descriptor(t *testing.T, m interface {
	Digest() (v1.Hash, error)
	Size() (int64, error)
	MediaType() (types.MediaType, error)
}) v1.Descriptor {
	t.Helper()
	d, err := m.Digest()
	if err != nil {
		t.Fatal(err)
	}
	sz, _ := m.Size()
	mt, _ := m.MediaType()
	return v1.Descriptor{Digest: d, Size: sz, MediaType: mt}
}

// fixture is a source repository holding a two-platform index with an SBOM
// on the index, a signature on that SBOM, an SBOM on the first child and a
// cosign .sig tag on the second child.
type fixture struct {
	repo                     name.Repository
	index                    v1.Hash
	children                 []v1.Hash
	sbom, sbomSig, childSBOM v1.Hash
	sigTag                   string
}

func newFixture(t *testing.T, host string) fixture {
	t.Helper()
	ctx := t.Context()
	f := fixture{repo: mustRepo(t, host+"/src/app")}
	amd, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 100, Seed: 1, OCI: true})
	if err != nil {
		t.Fatal(err)
	}
	arm, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 100, Seed: 2, OCI: true, Platform: v1.Platform{OS: "linux", Architecture: "arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := testenv.Index(false, amd, arm)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(f.repo.Tag("v1"), idx, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	idxDesc := descriptor(t, idx)
	f.index = idxDesc.Digest
	for _, img := range []v1.Image{amd, arm} {
		f.children = append(f.children, descriptor(t, img).Digest)
	}
	push := func(img v1.Image) v1.Hash {
		d := descriptor(t, img)
		if err := remote.Write(f.repo.Digest(d.Digest.String()), img, remote.WithContext(ctx)); err != nil {
			t.Fatal(err)
		}
		return d.Digest
	}
	sbom := artifact(t, sbomType, `{"spdxVersion":"SPDX-2.3"}`, idxDesc)
	f.sbom = push(sbom)
	f.sbomSig = push(artifact(t, sigType, "signature of the sbom", descriptor(t, sbom)))
	f.childSBOM = push(artifact(t, sbomType, `{"spdxVersion":"SPDX-2.3","name":"amd64"}`, descriptor(t, amd)))
	// A cosign-shaped .sig tag: an image whose layer is a simple-signing
	// payload.
	sig := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	sig, err = mutate.AppendLayers(sig, static.NewLayer([]byte(`{"critical":{}}`), simpleSigning))
	if err != nil {
		t.Fatal(err)
	}
	f.sigTag = strings.Replace(f.children[1].String(), ":", "-", 1) + ".sig"
	if err := remote.Write(f.repo.Tag(f.sigTag), sig, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	return f
}

func mustRepo(t *testing.T, s string) name.Repository {
	t.Helper()
	r, err := name.NewRepository(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func client() *registry.Client {
	return registry.New(registry.WithKeychain(authn.NewMultiKeychain()))
}

// listed returns the digests the destination lists as referrers of d,
// through remote.Referrers (the API, or the fallback tag).
func listed(t *testing.T, repo name.Repository, d v1.Hash) []v1.Hash {
	t.Helper()
	idx, err := remote.Referrers(repo.Digest(d.String()), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Hash
	for _, m := range im.Manifests {
		out = append(out, m.Digest)
	}
	return out
}

func hasManifest(t *testing.T, ref name.Reference) bool {
	t.Helper()
	_, err := remote.Head(ref, remote.WithContext(t.Context()))
	return err == nil
}

func TestCopyReferrers(t *testing.T) {
	for _, api := range []struct {
		name     string
		src, dst bool
	}{
		{"api", true, true},
		{"fallback", false, false},
		{"api-to-fallback", true, false},
		{"fallback-to-api", false, true},
	} {
		t.Run(api.name, func(t *testing.T) {
			f := newFixture(t, startRegistry(t, api.src))
			dst := mustRepo(t, startRegistry(t, api.dst)+"/dst/app")
			req := Request{Source: f.repo, Destination: dst, Subjects: []v1.Hash{f.index}, WriteSubjects: true}
			res, err := Copy(t.Context(), client(), req)
			if err != nil {
				t.Fatal(err)
			}
			// The index and both children, by digest; three referrers and
			// the .sig tag.
			if res.SubjectsWritten != 3 || res.ReferrersCopied != 3 || res.ReferrersPresent != 0 || res.TagsCopied != 1 || res.BlobsCopied == 0 {
				t.Errorf("first copy: %+v, want 3 subjects written, 3 referrers and 1 tag copied", res)
			}
			if want := []string{f.index.String(), f.children[0].String(), f.children[1].String()}; !sameSet(res.Subjects, want) {
				t.Errorf("subjects %v, want %v", res.Subjects, want)
			}
			for _, c := range []struct {
				subject v1.Hash
				want    []v1.Hash
			}{
				{f.index, []v1.Hash{f.sbom}},
				{f.sbom, []v1.Hash{f.sbomSig}},
				{f.children[0], []v1.Hash{f.childSBOM}},
				{f.children[1], nil},
			} {
				if got := listed(t, dst, c.subject); !slices.Equal(got, c.want) {
					t.Errorf("destination lists %v as referrers of %s, want %v", got, c.subject, c.want)
				}
			}
			// Without the API the destination keeps the fallback tag.
			fallback := dst.Tag(strings.Replace(f.index.String(), ":", "-", 1))
			if got := hasManifest(t, fallback); got != !api.dst {
				t.Errorf("fallback tag %s present: %v, want %v", fallback, got, !api.dst)
			}
			if !hasManifest(t, dst.Tag(f.sigTag)) {
				t.Errorf("the .sig tag was not copied")
			}
			// A re-run copies nothing.
			again, err := Copy(t.Context(), client(), req)
			if err != nil {
				t.Fatal(err)
			}
			if again.SubjectsWritten != 0 || again.ReferrersCopied != 0 || again.ReferrersPresent != 3 || again.TagsCopied != 0 || again.TagsPresent != 1 || again.BlobsCopied != 0 {
				t.Errorf("re-run: %+v, want nothing copied, 3 referrers and 1 tag present", again)
			}
		})
	}
}

func TestCopyFiltersArtifactTypes(t *testing.T) {
	f := newFixture(t, startRegistry(t, true))
	dst := mustRepo(t, startRegistry(t, true)+"/dst/app")
	res, err := Copy(t.Context(), client(), Request{Source: f.repo, Destination: dst, Subjects: []v1.Hash{f.index}, WriteSubjects: true, ArtifactTypes: []string{sbomType}})
	if err != nil {
		t.Fatal(err)
	}
	// Both SBOMs; the SBOM's signature and the .sig tag are left behind.
	if res.ReferrersCopied != 2 || res.TagsCopied != 0 || res.Filtered != 2 {
		t.Errorf("%+v, want 2 referrers copied and 2 filtered", res)
	}
	if got := listed(t, dst, f.sbom); len(got) != 0 {
		t.Errorf("the SBOM's signature was copied: %v", got)
	}
	if hasManifest(t, dst.Tag(f.sigTag)) {
		t.Errorf("the .sig tag was copied")
	}
	// The .sig tag passes a filter naming its layers' type.
	res, err = Copy(t.Context(), client(), Request{Source: f.repo, Destination: dst, Subjects: []v1.Hash{f.index}, ArtifactTypes: []string{simpleSigning}})
	if err != nil {
		t.Fatal(err)
	}
	if res.TagsCopied != 1 || res.ReferrersCopied != 0 {
		t.Errorf("%+v, want the .sig tag copied and no referrer", res)
	}
}

func TestCopyNeedsSubjectsAtTheDestination(t *testing.T) {
	f := newFixture(t, startRegistry(t, true))
	dst := mustRepo(t, startRegistry(t, true)+"/dst/app")
	_, err := Copy(t.Context(), client(), Request{Source: f.repo, Destination: dst, Subjects: []v1.Hash{f.index}})
	if err == nil || !strings.Contains(err.Error(), f.index.String()) {
		t.Fatalf("got %v, want an error naming %s, which the destination lacks", err, f.index)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestMergeTakesEveryLayer: a source .sig tag merged into the
// destination's own brings every layer along, one of another media type
// included (its blob copied), and keeps the destination's.
func TestMergeTakesEveryLayer(t *testing.T) {
	f := newFixture(t, startRegistry(t, true))
	ctx := t.Context()
	// The source's .sig tag gains a layer of another media type.
	sig, err := remote.Image(f.repo.Tag(f.sigTag), remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	note := static.NewLayer([]byte("a note"), "application/vnd.example.note")
	if sig, err = mutate.AppendLayers(sig, note); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(f.repo.Tag(f.sigTag), sig, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	dst := mustRepo(t, startRegistry(t, true)+"/dst/app")
	// The destination holds the image and its own signature of the child.
	if _, err := Copy(ctx, client(), Request{Source: f.repo, Destination: dst, Subjects: []v1.Hash{f.index}, WriteSubjects: true, ArtifactTypes: []string{sbomType}}); err != nil {
		t.Fatal(err)
	}
	ours := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	if ours, err = mutate.AppendLayers(ours, static.NewLayer([]byte(`{"critical":{"ours":true}}`), simpleSigning)); err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(dst.Tag(f.sigTag), ours, remote.WithContext(ctx)); err != nil {
		t.Fatal(err)
	}
	kind := digesttag.Kind{Noun: "signature", MediaType: simpleSigning, MaxLayers: 10, MaxLayer: 1 << 10, MaxTotal: 1 << 12}
	res, err := Copy(ctx, client(), Request{Source: f.repo, Destination: dst, Subjects: []v1.Hash{f.index}, Merge: map[string]digesttag.Kind{".sig": kind}})
	if err != nil || res.TagsMerged != 1 || res.TagsCopied != 0 {
		t.Fatalf("Copy: %+v, %v; want the .sig tag merged", res, err)
	}
	merged, err := remote.Image(dst.Tag(f.sigTag), remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	m, err := merged.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var types []string
	for _, l := range m.Layers {
		types = append(types, string(l.MediaType))
	}
	if strings.Join(types, ",") != simpleSigning+","+simpleSigning+",application/vnd.example.note" {
		t.Errorf("merged layers %v: want ours, the upstream's signature and its note", types)
	}
	nd, _ := note.Digest()
	l, err := remote.Layer(dst.Digest(nd.String()), remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatalf("the note's blob is not at the destination: %v", err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || string(b) != "a note" {
		t.Errorf("the note's blob at the destination: %q, %v", b, err)
	}
	if m.Annotations[MergedAnnotation] == "" {
		t.Errorf("the merged tag is not marked: %v", m.Annotations)
	}
}
