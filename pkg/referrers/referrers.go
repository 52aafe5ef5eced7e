// Package referrers copies what describes an image alongside it: the OCI 1.1
// referrers of its manifests (SBOMs, in-toto attestations, Sigstore bundles,
// Notation signatures) and cosign's legacy digest tags (sha256-<hex>.sig,
// .att and .sbom), from a source repository to a destination repository.
//
// Referrers are read through the registry's referrers API, or, where the
// registry has none, through the referrers tag schema (the sha256-<hex>
// index tag): go-containerregistry's remote.Referrers does both. They are
// written with go-containerregistry too, whose manifest write keeps the
// destination's sha256-<hex> index tag up to date when the destination has no
// referrers API. Each artifact is copied with its blobs by the promote
// package (streamed, never to disk), by digest, so nothing is copied twice:
// what the destination already holds is skipped.
package referrers

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ocistow/ocistow/pkg/digesttag"
	"github.com/ocistow/ocistow/pkg/promote"
	"github.com/ocistow/ocistow/pkg/registry"
)

// LegacySuffixes are the suffixes of cosign's legacy digest tags: a
// signature, an attestation and an attached SBOM of the digest
// sha256:<hex> are stored under the tags sha256-<hex>.sig, .att and .sbom.
var LegacySuffixes = []string{".sig", ".att", ".sbom"}

// Request says whose referrers to copy where.
type Request struct {
	// Source and Destination are the repositories to read and write.
	Source, Destination name.Repository
	// Subjects are the source manifests whose referrers and legacy tags
	// travel, by digest. An index among them is walked: the referrers of
	// each manifest it lists, at every depth, travel too, and so do the
	// referrers of every referrer copied.
	Subjects []v1.Hash
	// WriteSubjects writes each subject (with the manifests it lists) at
	// the destination by digest, untagged, where the destination lacks it,
	// so that signatures that name the source digest verify there. Without
	// it, every subject must be at the destination already.
	WriteSubjects bool
	// ArtifactTypes, when not empty, copies only the referrers of these
	// artifact types, and only the legacy tags whose layers are of one of
	// them (cosign's .sig layers are
	// application/vnd.dev.cosign.simplesigning.v1+json, its .att layers
	// application/vnd.dsse.envelope.v1+json).
	ArtifactTypes []string
	// Merge names the legacy tags (by suffix, ".sig", ".att") whose
	// layers, signatures or attestations, are added to the destination's
	// tag when it points elsewhere, rather than written over it: the
	// destination's own signatures (ocistow's, made before this step)
	// stay beside the upstream's. Every layer of the source's tag is
	// added (by descriptor, its blob streamed); the kind bounds what is
	// read of the destination's. A merged tag is marked with MergedAnnotation, the source tag's
	// digest, so that a re-run finds it merged without reading the
	// source's manifest (a metered pull). Tags not named here are copied
	// over.
	Merge map[string]digesttag.Kind
}

// MergedAnnotation marks a destination legacy tag into which a source's
// tag was merged (Request.Merge): its value is the source tag's digest.
const MergedAnnotation = "dev.ocistow.merged.source.digest"

// Result counts what Copy did.
type Result struct {
	// Subjects lists the source digests whose referrers were looked up:
	// the subjects and the manifests under them.
	Subjects []string `json:"subjects"`
	// SubjectsWritten counts the source manifests written at the
	// destination by digest (WriteSubjects).
	SubjectsWritten int `json:"subjectsWritten"`
	// ReferrersCopied and ReferrersPresent count the referrers written and
	// those the destination already had.
	ReferrersCopied  int `json:"referrersCopied"`
	ReferrersPresent int `json:"referrersPresent"`
	// TagsCopied and TagsPresent count cosign's legacy tags written and
	// those that already pointed at the source's digest.
	TagsCopied  int `json:"tagsCopied"`
	TagsPresent int `json:"tagsPresent"`
	// TagsMerged counts the legacy tags whose source layers were added to
	// the destination's own (Request.Merge).
	TagsMerged int `json:"tagsMerged"`
	// Filtered counts the referrers and legacy tags left behind by
	// ArtifactTypes.
	Filtered int `json:"filtered"`
	// BlobsCopied and BytesCopied count the blobs uploaded for all of
	// the above.
	BlobsCopied int   `json:"blobsCopied"`
	BytesCopied int64 `json:"bytesCopied"`
	// SourcePulls counts the manifest GETs the source served (what
	// registries that meter pulls count): referrers tags and listings,
	// referrers and legacy tags read.
	SourcePulls int `json:"sourcePulls"`
}

// Option configures Copy.
type Option func(*options)

type options struct {
	tp trace.TracerProvider
}

// WithTracerProvider records the spans of each artifact's copy.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tp = tp }
}

// Copy copies the referrers and legacy tags of req.Subjects from
// req.Source to req.Destination with the registry client c. The result
// counts what was done until an error stopped it.
func Copy(ctx context.Context, c *registry.Client, req Request, opts ...Option) (*Result, error) {
	o := options{tp: noop.NewTracerProvider()}
	for _, opt := range opts {
		opt(&o)
	}
	puller, err := c.Puller()
	if err != nil {
		return nil, err
	}
	meter := registry.NewPullMeter(req.Source)
	ctx, cancel := context.WithCancel(registry.WithObserver(ctx, meter.Observe))
	defer cancel()
	cp := &copier{reg: c, req: req, puller: puller, o: o, res: &Result{}, seen: map[v1.Hash]bool{},
		sem: make(chan struct{}, c.Jobs()), cancel: cancel}
	defer func() { cp.res.SourcePulls = meter.Pulls() }()
	if req.WriteSubjects {
		for _, d := range req.Subjects {
			if err := cp.writeSubject(ctx, d); err != nil {
				return cp.res, err
			}
		}
	}
	for _, d := range req.Subjects {
		cp.visit(ctx, d, true)
	}
	cp.wg.Wait()
	slices.Sort(cp.res.Subjects)
	return cp.res, cp.err
}

// copier is one Copy under way.
type copier struct {
	reg    *registry.Client
	req    Request
	puller *remote.Puller
	o      options
	// sem holds a slot per manifest worked on at once; wg waits for them.
	sem    chan struct{}
	wg     sync.WaitGroup
	cancel context.CancelFunc

	mu   sync.Mutex
	res  *Result
	seen map[v1.Hash]bool
	err  error // the first
}

// visit schedules the work for the manifest d of the source (a subject or
// a manifest under one, when walk, or a referrer): its children, its
// referrers and its legacy tags. Each manifest is visited once.
func (cp *copier) visit(ctx context.Context, d v1.Hash, walk bool) {
	cp.mu.Lock()
	if cp.seen[d] {
		cp.mu.Unlock()
		return
	}
	cp.seen[d] = true
	if walk {
		cp.res.Subjects = append(cp.res.Subjects, d.String())
	}
	cp.mu.Unlock()
	// Without a free slot the caller does the work itself: workers
	// schedule work, and waiting for a slot could wait for ever.
	select {
	case cp.sem <- struct{}{}:
		cp.wg.Add(1)
		go func() {
			defer cp.wg.Done()
			defer func() { <-cp.sem }()
			cp.fail(cp.node(ctx, d, walk))
		}()
	default:
		cp.fail(cp.node(ctx, d, walk))
	}
}

// fail records the first error and stops the rest of the work.
func (cp *copier) fail(err error) {
	if err == nil {
		return
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if cp.err == nil {
		cp.err = err
		cp.cancel()
	}
}

// node does the work of one manifest: its children (when walk), then its
// referrers, one after the other (on a registry without the referrers API
// each write rewrites the subject's one index tag), then its legacy tags.
func (cp *copier) node(ctx context.Context, d v1.Hash, walk bool) error {
	if walk {
		children, err := cp.children(ctx, d)
		if err != nil {
			return err
		}
		for _, ch := range children {
			cp.visit(ctx, ch, true)
		}
	}
	subject := cp.req.Source.Digest(d.String())
	im, err := cp.list(ctx, subject)
	if err != nil {
		return fmt.Errorf("listing the referrers of %s: %s", subject, registry.Describe(err))
	}
	for _, r := range im.Manifests {
		if !cp.wanted(r.ArtifactType) {
			cp.count(func(res *Result) { res.Filtered++ })
			continue
		}
		if err := cp.copyReferrer(ctx, r); err != nil {
			return err
		}
		cp.visit(ctx, r.Digest, false)
	}
	for _, suffix := range LegacySuffixes {
		if err := cp.copyTag(ctx, d, suffix); err != nil {
			return err
		}
	}
	return nil
}

// list lists the referrers of subject at the source: through its referrers
// API, or, where it has none, from the referrers tag schema's sha256-<hex>
// index, looked for with a HEAD first (registry.WithHeadFirst), so that a
// source that meters pulls (Docker Hub counts manifest GETs) is pulled only
// for a subject that has referrers.
func (cp *copier) list(ctx context.Context, subject name.Digest) (*v1.IndexManifest, error) {
	idx, err := remote.Referrers(subject, remote.Reuse(cp.puller), remote.WithContext(registry.WithHeadFirst(ctx)))
	if err != nil {
		return nil, err
	}
	return idx.IndexManifest()
}

// children lists the manifests the index d lists, read at the destination
// (which holds d byte for byte, and does not meter pulls); none when d is
// an image.
func (cp *copier) children(ctx context.Context, d v1.Hash) ([]v1.Hash, error) {
	ref := cp.req.Destination.Digest(d.String())
	desc, err := cp.puller.Get(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %s", ref, registry.Describe(err))
	}
	if !desc.MediaType.IsIndex() {
		return nil, nil
	}
	idx, err := desc.ImageIndex()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", ref, err)
	}
	out := make([]v1.Hash, len(im.Manifests))
	for i, m := range im.Manifests {
		out[i] = m.Digest
	}
	return out, nil
}

// writeSubject writes the source manifest d at the destination by digest
// (its children first), unless the destination has it.
func (cp *copier) writeSubject(ctx context.Context, d v1.Hash) error {
	dst := cp.req.Destination.Digest(d.String())
	ok, err := cp.exists(ctx, dst)
	if err != nil || ok {
		return err
	}
	res, err := cp.copyManifest(ctx, cp.req.Source.Digest(d.String()), dst)
	if err != nil {
		return err
	}
	cp.count(func(r *Result) { r.SubjectsWritten += res.ManifestsWritten })
	return nil
}

// copyReferrer copies the referrer r by digest, unless the destination
// has it.
func (cp *copier) copyReferrer(ctx context.Context, r v1.Descriptor) error {
	dst := cp.req.Destination.Digest(r.Digest.String())
	ok, err := cp.exists(ctx, dst)
	if err != nil {
		return err
	}
	if ok {
		cp.count(func(res *Result) { res.ReferrersPresent++ })
		return nil
	}
	if _, err := cp.copyManifest(ctx, cp.req.Source.Digest(r.Digest.String()), dst); err != nil {
		return err
	}
	cp.count(func(res *Result) { res.ReferrersCopied++ })
	return nil
}

// copyTag copies cosign's legacy tag of d with suffix, when the source has
// one and the destination's does not point at the same digest.
func (cp *copier) copyTag(ctx context.Context, d v1.Hash, suffix string) error {
	tag := strings.Replace(d.String(), ":", "-", 1) + suffix
	src, dst := cp.req.Source.Tag(tag), cp.req.Destination.Tag(tag)
	have, err := cp.puller.Head(ctx, src)
	if registry.StatusCode(err) == http.StatusNotFound {
		return nil
	}
	if err != nil {
		return fmt.Errorf("looking for %s: %s", src, registry.Describe(err))
	}
	got, err := cp.puller.Head(ctx, dst)
	switch {
	case err == nil && got.Digest == have.Digest:
		cp.count(func(res *Result) { res.TagsPresent++ })
		return nil
	case err != nil && registry.StatusCode(err) != http.StatusNotFound:
		return fmt.Errorf("looking for %s: %s", dst, registry.Describe(err))
	}
	kind, merge := cp.req.Merge[suffix]
	merge = merge && err == nil // a destination tag to merge into
	if merge {
		if done, err := cp.merged(ctx, dst, have.Digest); err != nil || done {
			return err
		}
	}
	if len(cp.req.ArtifactTypes) > 0 {
		ok, err := cp.layersWanted(ctx, src.Context().Digest(have.Digest.String()))
		if err != nil {
			return err
		}
		if !ok {
			cp.count(func(res *Result) { res.Filtered++ })
			return nil
		}
	}
	// By digest from the source, so that a tag that moves meanwhile
	// cannot mix two manifests.
	from := src.Context().Digest(have.Digest.String())
	if merge {
		return cp.mergeTag(ctx, kind, from, dst)
	}
	if _, err := cp.copyManifest(ctx, from, dst); err != nil {
		return err
	}
	cp.count(func(res *Result) { res.TagsCopied++ })
	return nil
}

// merged reports whether the destination tag dst says it holds the source
// tag whose digest is from already (MergedAnnotation), counting it present.
// It reads the destination only.
func (cp *copier) merged(ctx context.Context, dst name.Tag, from v1.Hash) (bool, error) {
	desc, err := cp.puller.Get(ctx, dst)
	if err != nil {
		return false, fmt.Errorf("reading %s: %s", dst, registry.Describe(err))
	}
	var m struct {
		Annotations map[string]string `json:"annotations"`
	}
	if json.Unmarshal(desc.Manifest, &m) != nil || m.Annotations[MergedAnnotation] != from.String() {
		return false, nil
	}
	cp.count(func(res *Result) { res.TagsPresent++ })
	return true, nil
}

// mergeTag adds the layers of the source tag src to the destination tag
// dst, keeping those dst holds (digesttag.Kind.Merge: by descriptor, the
// blobs streamed from the source, whatever their type or size).
func (cp *copier) mergeTag(ctx context.Context, kind digesttag.Kind, src name.Digest, dst name.Tag) error {
	desc, err := cp.puller.Get(ctx, src)
	if err != nil {
		return fmt.Errorf("reading %s: %s", src, registry.Describe(err))
	}
	from, err := desc.Image()
	if err != nil {
		return fmt.Errorf("reading %s: %w", src, err)
	}
	pusher, err := cp.reg.Pusher()
	if err != nil {
		return err
	}
	added, err := kind.Merge(ctx, cp.reg, cp.puller, pusher, dst, from, map[string]string{MergedAnnotation: src.DigestStr()})
	if err != nil {
		return fmt.Errorf("merging %s into %s: %w", src, dst, err)
	}
	if added > 0 {
		cp.count(func(res *Result) { res.TagsMerged++ })
	} else {
		cp.count(func(res *Result) { res.TagsPresent++ })
	}
	return nil
}

// layersWanted reports whether the image ref has a layer of one of the
// wanted artifact types.
func (cp *copier) layersWanted(ctx context.Context, ref name.Digest) (bool, error) {
	desc, err := cp.puller.Get(ctx, ref)
	if err != nil {
		return false, fmt.Errorf("reading %s: %s", ref, registry.Describe(err))
	}
	if !desc.MediaType.IsImage() {
		return false, nil
	}
	m, err := v1.ParseManifest(strings.NewReader(string(desc.Manifest)))
	if err != nil {
		return false, fmt.Errorf("reading %s: %w", ref, err)
	}
	for _, l := range m.Layers {
		if cp.wanted(string(l.MediaType)) {
			return true, nil
		}
	}
	return false, nil
}

// wanted reports whether artifactType passes the filter.
func (cp *copier) wanted(artifactType string) bool {
	return len(cp.req.ArtifactTypes) == 0 || slices.Contains(cp.req.ArtifactTypes, artifactType)
}

// exists reports whether the destination holds ref.
func (cp *copier) exists(ctx context.Context, ref name.Digest) (bool, error) {
	got, err := cp.puller.Head(ctx, ref)
	switch {
	case registry.StatusCode(err) == http.StatusNotFound:
		return false, nil
	case err != nil:
		return false, fmt.Errorf("looking for %s: %s", ref, registry.Describe(err))
	}
	return got.Digest.String() == ref.DigestStr(), nil
}

// copyManifest copies src to dst byte for byte with its blobs (and, for an
// index, the manifests it lists), through promote.Copy: streamed, each blob
// only if the destination lacks it.
func (cp *copier) copyManifest(ctx context.Context, src name.Digest, dst name.Reference) (*promote.Result, error) {
	res, err := promote.Copy(ctx, cp.reg, promote.Request{Source: src, Destination: dst}, promote.WithTracerProvider(cp.o.tp))
	if res != nil {
		cp.count(func(r *Result) {
			r.BlobsCopied += res.BlobsCopied
			r.BytesCopied += res.BytesCopied
		})
	}
	if err != nil {
		var se *promote.SourceError
		if errors.As(err, &se) {
			return res, err
		}
		return res, fmt.Errorf("copying %s to %s: %w", src.DigestStr(), dst, err)
	}
	return res, nil
}

func (cp *copier) count(f func(*Result)) {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	f(cp.res)
}
