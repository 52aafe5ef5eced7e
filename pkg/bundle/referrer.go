package bundle

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/registry"
)

// The layout of a bundle in a registry, as cosign's specs/BUNDLE_SPEC.md
// gives it: an OCI image manifest whose artifactType is the bundle media
// type, whose config is the empty descriptor and whose one layer is the
// bundle, with the signed manifest as its subject and the annotations
// below; the registry lists it among the subject's referrers, or, without
// the referrers API, the writer adds it to the index at the referrers tag
// (go-containerregistry's remote package does that when the registry has no
// referrers API, and reads the tag when listing).
const (
	// EmptyMediaType is the media type of the OCI empty descriptor, the
	// config of a bundle's manifest.
	EmptyMediaType types.MediaType = "application/vnd.oci.empty.v1+json"
	// AnnotationContent says what the bundle holds (ContentDSSE).
	AnnotationContent = "dev.sigstore.bundle.content"
	// AnnotationPredicateType is the predicate type of the in-toto
	// statement a DSSE bundle holds.
	AnnotationPredicateType = "dev.sigstore.bundle.predicateType"
	// AnnotationCreated is when the bundle was made (RFC 3339).
	AnnotationCreated = "org.opencontainers.image.created"

	// maxReferrers bounds the bundles read for one subject.
	maxReferrers = 1000
	// maxAttempts bounds the write-and-confirm rounds of Ensure.
	maxAttempts = 10
)

// emptyJSON is the content of the OCI empty descriptor.
var emptyJSON = []byte("{}")

// Store reads and writes bundle referrers through go-containerregistry's
// puller and pusher (one ping and token per repository, shared with the
// caller's other requests).
type Store struct {
	puller *remote.Puller
	pusher *remote.Pusher
	retry  func(ctx context.Context, f func(ctx context.Context, attempt int) error) error
	now    func() time.Time
}

// StoreOption configures a Store.
type StoreOption func(*Store)

// WithRetry retries each write with retry (a registry client's schedule):
// an upload the transport cannot replay is started over.
func WithRetry(retry func(ctx context.Context, f func(ctx context.Context, attempt int) error) error) StoreOption {
	return func(s *Store) { s.retry = retry }
}

// WithClock sets the clock for the created annotation (tests).
func WithClock(now func() time.Time) StoreOption {
	return func(s *Store) { s.now = now }
}

// NewStore returns a Store that reads through puller and writes through
// pusher.
func NewStore(puller *remote.Puller, pusher *remote.Pusher, opts ...StoreOption) *Store {
	s := &Store{
		puller: puller,
		pusher: pusher,
		retry:  func(ctx context.Context, f func(context.Context, int) error) error { return f(ctx, 0) },
		now:    time.Now,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Stored is one bundle found among a subject's referrers.
type Stored struct {
	// Manifest is the referrer manifest, by digest.
	Manifest name.Digest
	// Annotations are the manifest's annotations.
	Annotations map[string]string
	// JSON is the bundle.
	JSON []byte
}

// Attach stores bundleJSON as a referrer of subject, in subject's
// repository: the blobs, then the manifest (by digest), then, on a registry
// without the referrers API, the referrers tag. annotations are added to
// the manifest's (AnnotationContent, AnnotationCreated); give
// AnnotationPredicateType for an attestation. It returns the manifest's
// digest. Writing the same bundle again writes the same manifest.
func (s *Store) Attach(ctx context.Context, subject name.Digest, bundleJSON []byte, annotations map[string]string) (name.Digest, error) {
	desc, err := s.puller.Head(ctx, subject)
	if err != nil {
		return name.Digest{}, fmt.Errorf("reading %s: %s", subject, registry.Describe(err))
	}
	repo := subject.Context()
	layer := static.NewLayer(bytes.Clone(bundleJSON), MediaType)
	config := static.NewLayer(emptyJSON, types.MediaType(EmptyMediaType))
	ann := map[string]string{
		AnnotationContent: ContentDSSE,
		AnnotationCreated: s.now().UTC().Format(time.RFC3339),
	}
	maps.Copy(ann, annotations)
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		ArtifactType:  MediaType,
		Config:        descriptorOf(config, EmptyMediaType),
		Layers:        []v1.Descriptor{descriptorOf(layer, MediaType)},
		Subject:       &v1.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size},
		Annotations:   ann,
	}
	raw, err := json.Marshal(m)
	if err != nil {
		return name.Digest{}, err
	}
	h, _, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return name.Digest{}, err
	}
	ref := repo.Digest(h.String())
	write := func(ctx context.Context, _ int) error {
		for _, l := range []v1.Layer{config, layer} {
			if err := s.pusher.Upload(ctx, repo, l); err != nil {
				return err
			}
		}
		// The pusher writes the referrers tag after the manifest when
		// the registry has no referrers API.
		return s.pusher.Push(ctx, ref, rawManifest{raw: raw})
	}
	if err := s.retry(ctx, write); err != nil {
		return name.Digest{}, fmt.Errorf("writing bundle %s for %s: %s", ref.DigestStr(), subject.DigestStr(), registry.Describe(err))
	}
	return ref, nil
}

// Find returns the bundles among subject's referrers, through the
// referrers API or the referrers tag: every referrer manifest whose one
// layer is a bundle of at most 1 MiB (referrers of other artifact types,
// SBOMs and the like, are not read).
func (s *Store) Find(ctx context.Context, subject name.Digest) ([]Stored, error) {
	// No artifactType filter: a referrers API that reports the config's
	// media type instead of the manifest's artifactType (as
	// go-containerregistry's own registry does) lists a bundle as
	// application/vnd.oci.empty.v1+json, so those are read too, as cosign
	// reads every referrer.
	idx, err := remote.Referrers(subject, remote.Reuse(s.puller), remote.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("listing referrers of %s: %s", subject, registry.Describe(err))
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("listing referrers of %s: %s", subject, registry.Describe(err))
	}
	n := 0
	for _, d := range im.Manifests {
		if maybeBundle(d) {
			n++
		}
	}
	if n > maxReferrers {
		return nil, fmt.Errorf("%s has %d referrers that may be bundles, over the %d read", subject, n, maxReferrers)
	}
	repo := subject.Context()
	var out []Stored
	for _, d := range im.Manifests {
		if !maybeBundle(d) {
			continue
		}
		ref := repo.Digest(d.Digest.String())
		st, err := s.read(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("reading bundle %s of %s: %s", d.Digest, subject.DigestStr(), registry.Describe(err))
		}
		if st != nil {
			out = append(out, *st)
		}
	}
	return out, nil
}

// maybeBundle reports whether a referrer may be a bundle: an image
// manifest whose artifactType is the bundle's, the empty config's, or
// unset.
func maybeBundle(d v1.Descriptor) bool {
	if d.MediaType != types.OCIManifestSchema1 {
		return false
	}
	switch types.MediaType(d.ArtifactType) {
	case MediaType, EmptyMediaType, "":
		return true
	}
	return false
}

// read returns the bundle of the referrer manifest at ref, or nil when it
// holds none.
func (s *Store) read(ctx context.Context, ref name.Digest) (*Stored, error) {
	desc, err := s.puller.Get(ctx, ref)
	if err != nil {
		return nil, err
	}
	m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, err
	}
	if len(m.Layers) != 1 || m.Layers[0].MediaType != MediaType || m.Layers[0].Size > maxBundle {
		return nil, nil
	}
	l, err := s.puller.Layer(ctx, ref.Context().Digest(m.Layers[0].Digest.String()))
	if err != nil {
		return nil, err
	}
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, maxBundle+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxBundle {
		return nil, nil
	}
	return &Stored{Manifest: ref, Annotations: m.Annotations, JSON: b}, nil
}

// Ensure makes sure that subject has a bundle that match accepts,
// writing one made by make when it has none. It returns whether it wrote
// one. It is idempotent (a bundle found costs no call to make, so no KMS
// signature) and safe beside concurrent writers: the referrers tag is a
// read-modify-write that registries cannot make atomic, so after writing,
// Ensure reads the referrers back now and again after a pause of a few
// times its own round, and writes again, up to a bound, until the bundle
// stays listed. Two writers that find none at once may both write one.
func (s *Store) Ensure(ctx context.Context, subject name.Digest, match func(Stored) bool, make func(ctx context.Context) (bundleJSON []byte, annotations map[string]string, err error)) (added bool, err error) {
	var (
		ours []byte
		ann  map[string]string
	)
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if err := registry.Sleep(ctx, backoff(attempt)); err != nil {
				return added, err
			}
		}
		start := time.Now()
		found, err := s.Find(ctx, subject)
		if err != nil {
			return added, err
		}
		if has := matches(found, match); has && !added {
			return false, nil
		} else if !has {
			if ours == nil {
				if ours, ann, err = make(ctx); err != nil {
					return false, err
				}
			}
			if _, err := s.Attach(ctx, subject, ours, ann); err != nil {
				return added, err
			}
			added = true
		}
		ok, err := s.confirm(ctx, subject, match, max(20*time.Millisecond, 3*time.Since(start)))
		if err != nil || ok {
			return added, err
		}
	}
	return added, fmt.Errorf("bundle for %s kept disappearing from its referrers after %d attempts: too many concurrent writers", subject.DigestStr(), maxAttempts)
}

// confirm reports whether a matching bundle is listed now and still after
// pause.
func (s *Store) confirm(ctx context.Context, subject name.Digest, match func(Stored) bool, pause time.Duration) (bool, error) {
	for i := range 2 {
		if i > 0 {
			if err := registry.Sleep(ctx, pause+time.Duration(rand.Int64N(int64(pause)))); err != nil {
				return false, err
			}
		}
		found, err := s.Find(ctx, subject)
		if err != nil {
			return false, err
		}
		if !matches(found, match) {
			return false, nil
		}
	}
	return true, nil
}

func matches(found []Stored, match func(Stored) bool) bool {
	for _, f := range found {
		if match(f) {
			return true
		}
	}
	return false
}

func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 5)
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}

// descriptorOf is the descriptor of a static layer.
func descriptorOf(l v1.Layer, mt types.MediaType) v1.Descriptor {
	// Static layers compute these from bytes in memory: no error.
	d, _ := l.Digest()
	n, _ := l.Size()
	return v1.Descriptor{MediaType: mt, Digest: d, Size: n}
}

// rawManifest is a manifest to push as it is.
type rawManifest struct{ raw []byte }

func (r rawManifest) RawManifest() ([]byte, error)        { return r.raw, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return types.OCIManifestSchema1, nil }
