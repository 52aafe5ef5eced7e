// Package promote copies an image or a multi-platform index from one
// registry to another, optionally stamping it on the way.
//
// Blobs stream straight from the source's response body into the
// destination's upload request: nothing is written to disk and no blob is
// held in memory. Only blobs the destination lacks are sent; blobs on the same
// registry are mounted across repositories. Child manifests are written
// before the index that lists them, and the destination tag last, so a failed
// promotion never leaves the tag on a partial image.
package promote

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"

	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/stamp"
)

// Request says what to promote where.
type Request struct {
	// Source is the image or index to read, by tag or digest.
	Source name.Reference
	// Destination is where to write it. A tag is moved only once the whole
	// image is in place; a digest must match what is written.
	Destination name.Reference
	// Stamp is applied on the way; empty means a byte-for-byte copy.
	Stamp stamp.Stamp
	// Platforms, when not empty, keeps only the children of a multi-platform
	// source that satisfy one of them (os/arch[/variant]); the destination
	// gets an index of just those.
	Platforms []v1.Platform
	// Immutable refuses, before writing anything, to move a destination tag
	// that already points at another digest.
	Immutable bool
}

// ErrTagWouldMove is returned (wrapped) when Immutable refuses a promotion
// because the tag points at another digest; ErrTagUnknown when it refuses
// because the registry would not say where the tag points.
var (
	ErrTagWouldMove = errors.New("destination tag already points at another digest")
	ErrTagUnknown   = errors.New("cannot tell where the destination tag points")
)

// Manifest describes one image of a promoted index.
type Manifest struct {
	Platform          string `json:"platform,omitempty"`
	MediaType         string `json:"mediaType"`
	SourceDigest      string `json:"sourceDigest"`
	DestinationDigest string `json:"destinationDigest"`
}

// Result reports what a promotion did.
type Result struct {
	// SourceDigest is the digest the source reference resolved to.
	SourceDigest string `json:"sourceDigest"`
	// DestinationDigest is the digest of what the destination now holds.
	DestinationDigest string `json:"destinationDigest"`
	// MediaType is the media type of the promoted manifest or index.
	MediaType string `json:"mediaType"`
	// Manifests lists the children of a promoted index, in index order.
	Manifests []Manifest `json:"manifests,omitempty"`
	// BlobsCopied, BlobsSkipped and BlobsMounted count the distinct blobs
	// (layers and configs) uploaded, found already present, and mounted from
	// another repository of the same registry.
	BlobsCopied  int `json:"blobsCopied"`
	BlobsSkipped int `json:"blobsSkipped"`
	BlobsMounted int `json:"blobsMounted"`
	// PreviousDigest is what the destination tag pointed at before, when the
	// promotion moved it to another digest.
	PreviousDigest string `json:"previousDigest,omitempty"`
	// BytesCopied is the size of the blobs uploaded.
	BytesCopied int64 `json:"bytesCopied"`
	// ManifestsWritten counts manifest and index uploads; ManifestsSkipped
	// the child manifests the destination already had (whose blobs were
	// then not looked at).
	ManifestsWritten int `json:"manifestsWritten"`
	ManifestsSkipped int `json:"manifestsSkipped"`
}

// Copy promotes req.Source to req.Destination with the registry client c.
func Copy(ctx context.Context, c *registry.Client, req Request, opts ...Option) (*Result, error) {
	o := makeOptions(opts)
	defer o.progress.Finish()
	ctx, span := o.tracer.Start(ctx, "promote.Copy")
	defer span.End()

	obs := newObserver(req.Destination.Context().RepositoryStr())
	ropts := c.RemoteOptions(ctx, obs.wrap)
	puller, err := remote.NewPuller(ropts...)
	if err != nil {
		return nil, err
	}
	pusher, err := remote.NewPusher(ropts...)
	if err != nil {
		return nil, err
	}

	desc, err := puller.Get(ctx, req.Source)
	if err != nil {
		return nil, &SourceError{Ref: req.Source, Err: err}
	}
	res := &Result{SourceDigest: desc.Digest.String()}
	src := source{ref: req.Source, progress: o.progress}

	var pushed partial.Describable
	switch {
	case desc.MediaType.IsIndex():
		base, err := desc.ImageIndex()
		if err == nil {
			_, err = base.IndexManifest()
		}
		if err != nil {
			return res, &SourceError{Ref: req.Source, Err: fmt.Errorf("reading index: %w", err)}
		}
		var idx v1.ImageIndex = &sourceIndex{base: base, src: src}
		if len(req.Platforms) > 0 {
			if idx, err = filterPlatforms(idx, req.Platforms); err != nil {
				return res, err
			}
		}
		unstamped := idx
		if idx, err = stamp.Index(idx, req.Stamp); err != nil {
			return res, &SourceError{Ref: req.Source, Err: fmt.Errorf("stamping: %w", err)}
		}
		if res.Manifests, err = describeChildren(unstamped, idx); err != nil {
			return res, &SourceError{Ref: req.Source, Err: err}
		}
		pushed = idx
	case desc.MediaType.IsImage():
		base, err := desc.Image()
		if err == nil {
			_, err = base.Manifest()
		}
		if err != nil {
			return res, &SourceError{Ref: req.Source, Err: fmt.Errorf("reading manifest: %w", err)}
		}
		var img v1.Image = &sourceImage{Image: base, src: src}
		if len(req.Platforms) > 0 {
			if err := checkPlatform(req.Source, img, req.Platforms); err != nil {
				return res, err
			}
		}
		if img, err = stamp.Image(img, req.Stamp); err != nil {
			return res, &SourceError{Ref: req.Source, Err: fmt.Errorf("stamping: %w", err)}
		}
		pushed = img
	case desc.MediaType.IsSchema1():
		return res, fmt.Errorf("source %s is a Docker schema 1 manifest, which registries no longer accept; rebuild or convert it", req.Source)
	default:
		return res, fmt.Errorf("source %s has media type %q, which is neither an image nor an index", req.Source, desc.MediaType)
	}
	if err := checkDigest(req.Destination, pushed); err != nil {
		return res, err
	}
	d, err := pushed.Digest()
	if err != nil {
		return res, err
	}
	mt, err := pushed.MediaType()
	if err != nil {
		return res, err
	}
	res.DestinationDigest, res.MediaType = d.String(), string(mt)
	span.SetAttributes(
		attribute.String("ocistow.source", req.Source.String()),
		attribute.String("ocistow.destination", req.Destination.String()),
		attribute.String("ocistow.source_digest", res.SourceDigest),
		attribute.String("ocistow.destination_digest", res.DestinationDigest),
	)

	w := &writer{
		src:    req.Source,
		pusher: pusher, reg: c, puller: puller, repo: req.Destination.Context(),
		sem: make(chan struct{}, c.Jobs()), jobs: c.Jobs(),
		tracer: o.tracer, progress: o.progress, obs: obs,
		blobs: map[v1.Hash]*blobOnce{}, sizes: map[string]int64{},
	}
	// A destination that already holds exactly this manifest is done: one
	// HEAD instead of one per blob. A tag that points elsewhere is about to
	// move: say so, or refuse.
	current, err := w.current(ctx, req.Destination)
	if err != nil && req.Immutable {
		// -immutable fails closed: a registry that will not say where the
		// tag points (403, 429, 5xx) does not get it moved.
		return res, fmt.Errorf("%w: %s (%s), so -immutable leaves it alone", ErrTagUnknown, req.Destination, registry.Describe(err))
	}
	if current != "" && current != d.String() {
		res.PreviousDigest = current
		if req.Immutable {
			return res, fmt.Errorf("%w: %s is %s, the promotion would make it %s (-immutable)", ErrTagWouldMove, req.Destination, current, d)
		}
	}
	if current != d.String() {
		if err := w.write(ctx, pushed, req.Destination); err != nil {
			span.RecordError(errors.New(registry.Describe(err)))
			span.SetStatus(codes.Error, registry.Describe(err))
			var se *SourceError
			if errors.As(err, &se) {
				return res, err
			}
			return res, &DestinationError{Ref: req.Destination, Err: err}
		}
	}
	obs.fill(res, w.blobSizes())
	res.ManifestsSkipped = w.manifestsSkipped()
	return res, nil
}

// checkDigest refuses a destination given by digest that the promoted
// manifest would not match.
func checkDigest(dst name.Reference, m partial.Describable) error {
	want, ok := dst.(name.Digest)
	if !ok {
		return nil
	}
	got, err := m.Digest()
	if err != nil {
		return err
	}
	if got.String() != want.DigestStr() {
		return fmt.Errorf("destination %s names digest %s but the promoted manifest is %s", dst, want.DigestStr(), got)
	}
	return nil
}

// FormatPlatform renders p as os/arch[/variant].
func FormatPlatform(p *v1.Platform) string {
	if p == nil {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func matchesAny(p *v1.Platform, specs []v1.Platform) bool {
	if p == nil {
		return false
	}
	for _, s := range specs {
		if p.Satisfies(s) {
			return true
		}
	}
	return false
}

func filterPlatforms(idx v1.ImageIndex, specs []v1.Platform) (v1.ImageIndex, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	var have []string
	kept := 0
	for _, d := range im.Manifests {
		if d.Platform != nil {
			have = append(have, FormatPlatform(d.Platform))
		}
		if matchesAny(d.Platform, specs) {
			kept++
		}
	}
	if kept == 0 {
		want := make([]string, len(specs))
		for i := range specs {
			want[i] = FormatPlatform(&specs[i])
		}
		return nil, fmt.Errorf("no image in the source index matches platform %s (it has %s)", strings.Join(want, ", "), strings.Join(slices.Compact(have), ", "))
	}
	return mutate.RemoveManifests(idx, func(d v1.Descriptor) bool { return !matchesAny(d.Platform, specs) }), nil
}

func checkPlatform(src name.Reference, img v1.Image, specs []v1.Platform) error {
	cf, err := img.ConfigFile()
	if err != nil {
		return &SourceError{Ref: src, Err: fmt.Errorf("reading config: %w", err)}
	}
	p := cf.Platform()
	if matchesAny(p, specs) {
		return nil
	}
	return fmt.Errorf("source is a single-platform image for %s, which matches no requested platform", FormatPlatform(p))
}

// describeChildren pairs the children of the source index with those of the
// index that is written (they differ in digest when stamped).
func describeChildren(src, dst v1.ImageIndex) ([]Manifest, error) {
	sm, err := src.IndexManifest()
	if err != nil {
		return nil, err
	}
	dm, err := dst.IndexManifest()
	if err != nil {
		return nil, err
	}
	if len(sm.Manifests) != len(dm.Manifests) {
		return nil, errors.New("stamped index lost children")
	}
	out := make([]Manifest, len(sm.Manifests))
	for i, d := range sm.Manifests {
		out[i] = Manifest{
			Platform:          FormatPlatform(d.Platform),
			MediaType:         string(d.MediaType),
			SourceDigest:      d.Digest.String(),
			DestinationDigest: dm.Manifests[i].Digest.String(),
		}
	}
	return out, nil
}

// SourceError is a failure to read the source.
type SourceError struct {
	Ref name.Reference
	Err error
}

func (e *SourceError) Error() string {
	return fmt.Sprintf("source %s: %s", e.Ref, registry.Describe(e.Err))
}
func (e *SourceError) Unwrap() error { return e.Err }

// DestinationError is a failure to write the destination.
type DestinationError struct {
	Ref name.Reference
	Err error
}

func (e *DestinationError) Error() string {
	var be *BlobError
	if errors.As(e.Err, &be) {
		return be.Error()
	}
	return fmt.Sprintf("destination %s: %s", e.Ref, registry.Describe(e.Err))
}
func (e *DestinationError) Unwrap() error { return e.Err }
