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
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

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
// because the tag points at another digest.
var ErrTagWouldMove = errors.New("destination tag already points at another digest")

// ErrUnsupported is returned (wrapped) for a source ocistow cannot promote
// whatever the registries do: a Docker schema 1 manifest, a config over
// MaxConfigSize, an index child that is neither an image nor an index.
var ErrUnsupported = errors.New("cannot be promoted")

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
	// (layers and configs) uploaded, found already present (or uploaded
	// meanwhile by another promotion of the process into the same
	// repository), and mounted from another repository of the same registry.
	BlobsCopied  int `json:"blobsCopied"`
	BlobsSkipped int `json:"blobsSkipped"`
	BlobsMounted int `json:"blobsMounted"`
	// PreviousDigest is what the destination tag pointed at before, when the
	// promotion moved it to another digest.
	PreviousDigest string `json:"previousDigest,omitempty"`
	// BytesCopied is the size of the blobs uploaded.
	BytesCopied int64 `json:"bytesCopied"`
	// ManifestsWritten counts the manifests and indexes written;
	// ManifestsSkipped the child manifests the destination already had
	// (whose blobs were then not looked at).
	ManifestsWritten int `json:"manifestsWritten"`
	ManifestsSkipped int `json:"manifestsSkipped"`
	// UpToDate is true when the destination already held what the source
	// becomes, so nothing was read from the source but its digest and
	// nothing was written.
	UpToDate bool `json:"upToDate"`
	// SourcePulls counts the manifest GETs the source served: what
	// registries such as Docker Hub meter as pulls (HEADs are free). An
	// up-to-date destination costs none.
	SourcePulls int `json:"sourcePulls"`
}

// Copy promotes req.Source to req.Destination with the registry client c.
//
// It resolves the source with a HEAD (free on registries that meter pulls,
// such as Docker Hub) and reads the destination; when the destination
// already holds what the source becomes, it stops there, having pulled no
// manifest from the source. Otherwise it reads the source, selects
// platforms, stamps, and writes blobs, child manifests and finally the
// manifest req.Destination names.
func Copy(ctx context.Context, c *registry.Client, req Request, opts ...Option) (*Result, error) {
	o := makeOptions(opts)
	defer o.progress.Finish()
	ctx, span := o.tracer.Start(ctx, "promote.Copy", trace.WithAttributes(
		attribute.String("ocistow.source", req.Source.String()),
		attribute.String("ocistow.destination", req.Destination.String()),
	))
	defer span.End()

	p, err := newPromotion(c, req, o)
	if err != nil {
		return nil, err
	}
	res, err := p.run(registry.WithObserver(ctx, p.meter.Observe))
	span.SetAttributes(
		attribute.String("ocistow.source_digest", res.SourceDigest),
		attribute.String("ocistow.destination_digest", res.DestinationDigest),
		attribute.Int("ocistow.source_pulls", res.SourcePulls),
		attribute.Bool("ocistow.up_to_date", res.UpToDate),
	)
	if err != nil {
		span.RecordError(errors.New(registry.Describe(err)))
		span.SetStatus(codes.Error, registry.Describe(err))
	}
	return res, err
}

// promotion is one Copy under way.
type promotion struct {
	reg    *registry.Client
	req    Request
	o      options
	jobs   int
	puller *remote.Puller
	pusher *remote.Pusher
	meter  *registry.PullMeter
	// fetched is the source manifest when resolving it took a GET, so
	// that planning does not pull it again.
	fetched *remote.Descriptor
	// seen is what check found, for Check's State.
	seen *look
}

func newPromotion(c *registry.Client, req Request, o options) (*promotion, error) {
	meter := registry.NewPullMeter(req.Source.Context())
	puller, err := c.Puller()
	if err != nil {
		return nil, err
	}
	pusher, err := c.Pusher()
	if err != nil {
		return nil, err
	}
	return &promotion{reg: c, req: req, o: o, jobs: c.Jobs(), puller: puller, pusher: pusher, meter: meter}, nil
}

// run does the promotion's steps in order: resolve the source, look at the
// destination, stop if it is up to date, plan what to write, check the tag
// may move, write.
func (p *promotion) run(ctx context.Context) (*Result, error) {
	res := &Result{}
	defer func() { res.SourcePulls = p.meter.Pulls() }()

	src, dst, err := p.check(ctx, res)
	if err != nil {
		return res, err
	}
	if res.UpToDate || p.o.approveEarly {
		if err := p.approve(ctx, res); err != nil || res.UpToDate {
			return res, err
		}
	}
	// The destination's push token is fetched while the source is read.
	warmed := make(chan struct{})
	go func() {
		defer close(warmed)
		_, _ = p.reg.Writer(ctx, p.req.Destination.Context()) // a failure shows when writing
	}()
	defer func() { <-warmed }()
	pushed, err := p.plan(ctx, src, res)
	if err != nil {
		return res, err
	}
	if !p.o.approveEarly {
		if err := p.approve(ctx, res); err != nil {
			return res, err
		}
	}
	if dst != nil && dst.Digest.String() == res.DestinationDigest {
		res.PreviousDigest = ""
		p.fillFromDestination(dst, res)
		res.UpToDate = true
		return res, nil
	}
	if dst != nil && p.req.Immutable {
		return res, fmt.Errorf("%w: %s is %s, the promotion would make it %s (-immutable)", ErrTagWouldMove, p.req.Destination, dst.Digest, res.DestinationDigest)
	}
	w := newWriter(p)
	defer w.discard()
	// Blobs are looked for ahead only by a promotion that will wait for
	// its turn to write: without one, a small blob is looked for while its
	// upload opens, which is a round trip sooner.
	ahead := p.o.gate != nil
	switch m := pushed.(type) {
	case v1.ImageIndex:
		w.lookAhead(ctx, m, ahead)
	case v1.Image:
		if ahead {
			w.lookAheadBlobs(ctx, m, false)
		}
	}
	if p.o.gate != nil {
		release, err := p.o.gate(ctx)
		if err != nil {
			return res, err
		}
		defer release()
	}
	err = w.write(ctx, pushed, p.req.Destination)
	w.fill(res)
	if err != nil {
		var se *SourceError
		if errors.As(err, &se) {
			return res, err
		}
		return res, &DestinationError{Ref: p.req.Destination, Err: err}
	}
	return res, nil
}

// approve asks the Approval, when there is one, about the source digests
// res names.
func (p *promotion) approve(ctx context.Context, res *Result) error {
	if p.o.approval == nil {
		return nil
	}
	repo := p.req.Source.Context()
	var children []name.Digest // none for WithSourceApproval
	if !p.o.approveEarly {
		children = make([]name.Digest, 0, len(res.Manifests))
		for _, m := range res.Manifests {
			children = append(children, repo.Digest(m.SourceDigest))
		}
	}
	return p.o.approval(ctx, repo.Digest(res.SourceDigest), children)
}

// check resolves the source and reads the destination, and says in res
// whether the destination is up to date. A Check of the same request made
// before (FromCheck) stands in for asking the registries again.
func (p *promotion) check(ctx context.Context, res *Result) (*v1.Descriptor, *remote.Descriptor, error) {
	var l *look
	if c := p.o.checked; c != nil && reflect.DeepEqual(c.req, p.req) {
		l = c
		p.fetched = l.fetched
	} else {
		l = p.lookUp(ctx)
		p.seen = l
	}
	src, dst, err, dstErr := l.src, l.dst, l.srcErr, l.dstErr
	if err != nil {
		return nil, nil, err
	}
	res.SourceDigest = src.Digest.String()
	err = dstErr
	if err != nil && p.req.Immutable {
		// -immutable fails closed: a registry that will not say where the
		// tag points does not get it moved. What it answered decides the
		// error's kind (401/403, 429, 5xx).
		return nil, nil, &DestinationError{Ref: p.req.Destination, Err: fmt.Errorf("cannot tell where the tag points, so -immutable leaves it alone: %w", err)}
	}
	if err != nil {
		dst = nil // written over, as a missing tag would be
	}
	p.upToDate(src, dst, res)
	if dst != nil && !res.UpToDate {
		res.PreviousDigest = dst.Digest.String()
	}
	return src, dst, nil
}

// look is what resolving the source and reading the destination found.
type look struct {
	req     Request
	src     *v1.Descriptor
	srcErr  error
	dst     *remote.Descriptor
	dstErr  error
	fetched *remote.Descriptor
}

// lookUp resolves the source and reads the destination, at once: one
// round trip of latency, not two.
func (p *promotion) lookUp(ctx context.Context) *look {
	l := &look{req: p.req}
	done := make(chan struct{})
	go func() {
		defer close(done)
		l.dst, l.dstErr = p.destination(ctx)
	}()
	l.src, l.srcErr = p.resolveSource(ctx)
	<-done
	l.fetched = p.fetched
	return l
}

// State is what Check finds: the source's digest and whether the
// destination is up to date, or which digest its tag would move from.
type State struct {
	// SourceDigest is the digest the source reference resolves to.
	SourceDigest string `json:"sourceDigest"`
	// UpToDate is true when the destination already holds what the
	// source becomes; DestinationDigest is then what it holds.
	UpToDate          bool   `json:"upToDate"`
	DestinationDigest string `json:"destinationDigest,omitempty"`
	// PreviousDigest is where the destination tag points when the
	// promotion would move it; empty when there is no such tag.
	PreviousDigest string `json:"previousDigest,omitempty"`
	// SourcePulls counts the manifest GETs the check cost the source: 0
	// unless the source answers HEAD without a digest.
	SourcePulls int `json:"sourcePulls"`

	seen *look // for FromCheck
}

// FromCheck has Copy start from what st, a Check of the same request,
// found, instead of asking the registries again: a fleet checks all its
// images at once, then promotes those that need it. A State of another
// request is ignored. The pulls the Check cost are its own, not counted
// again by Copy.
func FromCheck(st *State) Option {
	return func(o *options) {
		if st != nil {
			o.checked = st.seen
		}
	}
}

// Check tells what Copy would find, without writing anything: it resolves
// the source with a HEAD and reads the destination, exactly as Copy does
// before deciding whether anything needs doing. A plan of many promotions
// is made of Checks.
func Check(ctx context.Context, c *registry.Client, req Request) (*State, error) {
	p, err := newPromotion(c, req, makeOptions(nil))
	if err != nil {
		return nil, err
	}
	res := &Result{}
	_, _, err = p.check(registry.WithObserver(ctx, p.meter.Observe), res)
	st := &State{SourceDigest: res.SourceDigest, UpToDate: res.UpToDate, PreviousDigest: res.PreviousDigest, SourcePulls: p.meter.Pulls(), seen: p.seen}
	if res.UpToDate {
		st.DestinationDigest = res.DestinationDigest
	}
	return st, err
}

// resolveSource finds the source's digest and media type with a HEAD, or
// with a GET when the registry answers HEAD without them. The HEAD goes
// out alongside the registry's ping when there is one to make
// (registry.WithEarlyRead).
func (p *promotion) resolveSource(ctx context.Context) (*v1.Descriptor, error) {
	early, release := registry.WithEarlyRead(ctx, http.MethodHead, p.req.Source)
	desc, err := p.puller.Head(early, p.req.Source)
	release()
	if err == nil {
		return desc, nil
	}
	var terr *transport.Error
	if errors.As(err, &terr) {
		return nil, &SourceError{Ref: p.req.Source, Err: err}
	}
	// No Docker-Content-Digest, Content-Type or Content-Length: only a GET
	// can tell (and is metered).
	got, gerr := p.puller.Get(ctx, p.req.Source)
	if gerr != nil {
		return nil, &SourceError{Ref: p.req.Source, Err: gerr}
	}
	p.fetched = got
	return &got.Descriptor, nil
}

// destination reads what the destination tag holds: nil, with a nil
// error, when it holds nothing (404). The GET goes out alongside the
// registry's ping when there is one to make (registry.WithEarlyRead).
func (p *promotion) destination(ctx context.Context) (*remote.Descriptor, error) {
	early, release := registry.WithEarlyRead(ctx, http.MethodGet, p.req.Destination)
	defer release()
	got, err := p.puller.Get(early, p.req.Destination)
	if registry.StatusCode(err) == http.StatusNotFound {
		return nil, nil
	}
	return got, err
}

// upToDate reports whether dst already holds what the source at src
// becomes, and if so fills res from it: the same digest for a copy byte
// for byte, and the same recorded source (however the reference was
// spelled) and stamp for one that rewrites.
func (p *promotion) upToDate(src *v1.Descriptor, dst *remote.Descriptor, res *Result) bool {
	if dst == nil {
		return false
	}
	if rewrites(p.req) {
		m, err := annotationsOf(dst)
		if err != nil || !sameProvenance(m, p.req, src.Digest.String()) {
			return false
		}
	} else if dst.Digest != src.Digest {
		return false
	}
	p.fillFromDestination(dst, res)
	res.UpToDate = true
	return true
}

// fillFromDestination describes what the destination holds in res.
func (p *promotion) fillFromDestination(dst *remote.Descriptor, res *Result) {
	res.DestinationDigest, res.MediaType = dst.Digest.String(), string(dst.MediaType)
	if !dst.MediaType.IsIndex() {
		return
	}
	im, err := v1.ParseIndexManifest(bytes.NewReader(dst.Manifest))
	if err != nil {
		return
	}
	res.Manifests = make([]Manifest, len(im.Manifests))
	for i, d := range im.Manifests {
		srcDigest := d.Digest.String()
		if s, ok := d.Annotations[AnnotationSourceDigest]; ok {
			srcDigest = s
		}
		res.Manifests[i] = Manifest{Platform: FormatPlatform(d.Platform), MediaType: string(d.MediaType), SourceDigest: srcDigest, DestinationDigest: d.Digest.String()}
	}
}

// annotationsOf returns the annotations of a manifest or index.
func annotationsOf(d *remote.Descriptor) (map[string]string, error) {
	var m struct {
		Annotations map[string]string `json:"annotations"`
	}
	err := json.Unmarshal(d.Manifest, &m)
	return m.Annotations, err
}

// plan reads the source at src and returns what is to be written: the
// source itself, or its platforms selected and stamped. It fills res with
// the destination's digests.
func (p *promotion) plan(ctx context.Context, src *v1.Descriptor, res *Result) (partial.Describable, error) {
	desc := p.fetched
	if desc == nil {
		var err error
		if desc, err = p.puller.Get(ctx, p.req.Source.Context().Digest(src.Digest.String())); err != nil {
			return nil, &SourceError{Ref: p.req.Source, Err: err}
		}
	}
	s := p.req.Stamp
	if rewrites(p.req) {
		s = withProvenance(p.req, desc.Digest)
	}
	source := source{ctx: ctx, ref: p.req.Source, reg: p.reg, progress: p.o.progress}
	var pushed partial.Describable
	switch {
	case desc.MediaType.IsIndex():
		base, err := desc.ImageIndex()
		if err != nil {
			return nil, &SourceError{Ref: p.req.Source, Err: fmt.Errorf("reading index: %w", err)}
		}
		var idx v1.ImageIndex = &sourceIndex{base: base, src: source}
		if len(p.req.Platforms) > 0 {
			if idx, err = filterPlatforms(idx, p.req.Platforms); err != nil {
				return nil, err
			}
		}
		if err := checkChildren(idx); err != nil {
			return nil, &SourceError{Ref: p.req.Source, Err: err}
		}
		unstamped := idx
		if rewrites(p.req) {
			warmChildren(idx, len(s.Labels) > 0, p.jobs)
		}
		if idx, err = stamp.Index(idx, s); err != nil {
			return nil, &SourceError{Ref: p.req.Source, Err: fmt.Errorf("stamping: %w", err)}
		}
		if res.Manifests, err = describeChildren(unstamped, idx); err != nil {
			return nil, &SourceError{Ref: p.req.Source, Err: err}
		}
		pushed = idx
	case desc.MediaType.IsImage():
		base, err := desc.Image()
		if err != nil {
			return nil, &SourceError{Ref: p.req.Source, Err: fmt.Errorf("reading manifest: %w", err)}
		}
		var img v1.Image = &sourceImage{Image: base, src: source}
		if len(p.req.Platforms) > 0 {
			if err := checkPlatform(p.req.Source, img, p.req.Platforms); err != nil {
				return nil, err
			}
		}
		if img, err = stamp.Image(img, s); err != nil {
			return nil, &SourceError{Ref: p.req.Source, Err: fmt.Errorf("stamping: %w", err)}
		}
		pushed = img
	case desc.MediaType.IsSchema1():
		return nil, &SourceError{Ref: p.req.Source, Err: fmt.Errorf("%w: a Docker schema 1 manifest, which registries no longer accept; rebuild or convert it", ErrUnsupported)}
	default:
		return nil, &SourceError{Ref: p.req.Source, Err: fmt.Errorf("media type %q, which is neither an image nor an index", desc.MediaType)}
	}
	if err := checkDigest(p.req.Destination, pushed); err != nil {
		return nil, err
	}
	d, err := pushed.Digest()
	if err != nil {
		return nil, err
	}
	mt, err := pushed.MediaType()
	if err != nil {
		return nil, err
	}
	res.DestinationDigest, res.MediaType = d.String(), string(mt)
	return pushed, nil
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
