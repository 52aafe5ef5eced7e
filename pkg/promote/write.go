package promote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ocistow/ocistow/pkg/registry"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/sync/errgroup"
)

// Outcome is what happened to one blob at the destination.
type Outcome string

// The outcomes of a blob.
const (
	Uploaded Outcome = "uploaded"
	Skipped  Outcome = "skipped" // the destination had it
	Mounted  Outcome = "mounted" // mounted from another repository of the same registry
	Failed   Outcome = "failed"
)

// Progress receives what happens to each blob while a promotion runs, for
// a progress display. Implementations must be safe for concurrent use.
type Progress interface {
	// BlobStarted: the blob's turn came (existence check, then mount or
	// upload).
	BlobStarted(digest string, size int64)
	// BlobBytes: n more bytes of the blob streamed from the source.
	BlobBytes(digest string, n int64)
	// BlobDone: the blob is settled.
	BlobDone(digest string, outcome Outcome)
	// Finish: the promotion ended; nothing more will be reported.
	Finish()
}

type noProgress struct{}

func (noProgress) BlobStarted(string, int64) {}
func (noProgress) BlobBytes(string, int64)   {}
func (noProgress) BlobDone(string, Outcome)  {}
func (noProgress) Finish()                   {}

// Option configures Copy.
type Option func(*options)

type options struct {
	tracer   trace.Tracer
	progress Progress
}

// WithTracerProvider records spans: one for the copy, one per blob
// (digest, size, outcome, attempts), one per manifest written. The default
// records nothing.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracer = tp.Tracer("github.com/ocistow/ocistow/pkg/promote") }
}

// WithProgress reports each blob's progress to p.
func WithProgress(p Progress) Option { return func(o *options) { o.progress = p } }

func makeOptions(opts []Option) options {
	o := options{tracer: noop.NewTracerProvider().Tracer(""), progress: noProgress{}}
	for _, opt := range opts {
		opt(&o)
	}
	return o
}

// writer writes an image or index to one destination repository: blobs
// first (each once, at most jobs at a time), then child manifests, then the
// manifest the reference names. It uses the promotion's Pusher and Puller,
// so the registry is pinged and a token fetched once, not per blob. It
// records what it did to each blob and manifest itself, from what it asked
// go-containerregistry to do and what that did with the source.
type writer struct {
	src      name.Reference // for attributing read failures to the source
	pusher   *remote.Pusher
	reg      *registry.Client // for its retry schedule
	puller   *remote.Puller
	repo     name.Repository
	sem      chan struct{}
	jobs     int
	tracer   trace.Tracer
	progress Progress

	mu       sync.Mutex
	blobs    map[v1.Hash]*blobOnce
	outcomes map[v1.Hash]Outcome
	sizes    map[v1.Hash]int64
	written  int // manifests and indexes
	skipped  int // child manifests the destination had
}

type blobOnce struct {
	once sync.Once
	err  error
}

func newWriter(p *promotion) *writer {
	return &writer{
		src: p.req.Source, pusher: p.pusher, reg: p.reg, puller: p.puller, repo: p.req.Destination.Context(),
		sem: make(chan struct{}, p.jobs), jobs: p.jobs, tracer: p.o.tracer, progress: p.o.progress,
		blobs: map[v1.Hash]*blobOnce{}, outcomes: map[v1.Hash]Outcome{}, sizes: map[v1.Hash]int64{},
	}
}

// fill adds what the writer did to res.
func (w *writer) fill(res *Result) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for d, o := range w.outcomes {
		switch o {
		case Uploaded:
			res.BlobsCopied++
			res.BytesCopied += w.sizes[d]
		case Mounted:
			res.BlobsMounted++
		case Skipped:
			res.BlobsSkipped++
		}
	}
	res.ManifestsWritten, res.ManifestsSkipped = w.written, w.skipped
}

// exists reports whether the destination holds ref: false with a nil error
// when it answers 404.
func (w *writer) exists(ctx context.Context, ref name.Digest) (bool, error) {
	got, err := w.puller.Head(ctx, ref)
	if registry.StatusCode(err) == http.StatusNotFound {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return got.Digest.String() == ref.DigestStr(), nil
}

func (w *writer) write(ctx context.Context, m partial.Describable, ref name.Reference) error {
	switch m := m.(type) {
	case v1.ImageIndex:
		return w.writeIndex(ctx, m, ref)
	case v1.Image:
		return w.writeImage(ctx, m, ref)
	default:
		return fmt.Errorf("cannot write %T", m)
	}
}

// sourceErr attributes a failure to read the source's manifests.
func (w *writer) sourceErr(what string, err error) error {
	return &SourceError{Ref: w.src, Err: fmt.Errorf("%s: %w", what, err)}
}

func (w *writer) writeIndex(ctx context.Context, idx v1.ImageIndex, ref name.Reference) error {
	children, err := partial.Manifests(idx)
	if err != nil {
		return w.sourceErr("reading the manifests an index lists", err)
	}
	// Everything that can fail is read before any work starts, so that no
	// worker outlives an early return.
	digests := make([]v1.Hash, len(children))
	for i, child := range children {
		c, ok := child.(partial.Describable)
		if !ok {
			return w.sourceErr("reading the manifests an index lists", fmt.Errorf("child %d is a %T", i, child))
		}
		d, err := c.Digest()
		if err != nil {
			return w.sourceErr("reading a child manifest", err)
		}
		digests[i] = d
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.jobs)
	for i, child := range children {
		childRef := w.repo.Digest(digests[i].String())
		g.Go(func() error {
			if ok, _ := w.exists(gctx, childRef); ok {
				w.mu.Lock()
				w.skipped++
				w.mu.Unlock()
				return nil
			}
			return w.write(gctx, child.(partial.Describable), childRef)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return w.putManifest(ctx, ref, idx)
}

func (w *writer) writeImage(ctx context.Context, img v1.Image, ref name.Reference) error {
	layers, err := img.Layers()
	if err != nil {
		return w.sourceErr("reading manifest", err)
	}
	cl, err := partial.ConfigLayer(img)
	if err != nil {
		return w.sourceErr("reading config", err)
	}
	// A copy: the image may hand out its own slice. Media types are read
	// before any work starts, so that no worker outlives an early return.
	var blobs []v1.Layer
	for _, l := range append(slices.Clone(layers), cl) {
		mt, err := l.MediaType()
		if err != nil {
			return w.sourceErr("reading a layer's media type", err)
		}
		if mt.IsDistributable() { // foreign layers stay where they are
			blobs = append(blobs, l)
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	for _, l := range blobs {
		g.Go(func() error { return w.writeBlob(gctx, l) })
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return w.putManifest(ctx, ref, img)
}

// writeBlob uploads (or finds, or mounts) one blob, once per promotion.
func (w *writer) writeBlob(ctx context.Context, l v1.Layer) error {
	d, err := l.Digest()
	if err != nil {
		return err
	}
	w.mu.Lock()
	b, ok := w.blobs[d]
	if !ok {
		b = &blobOnce{}
		w.blobs[d] = b
	}
	w.mu.Unlock()
	b.once.Do(func() { b.err = w.uploadBlob(ctx, l, d) })
	return b.err
}

func (w *writer) uploadBlob(ctx context.Context, l v1.Layer, d v1.Hash) error {
	select {
	case w.sem <- struct{}{}:
		defer func() { <-w.sem }()
	case <-ctx.Done():
		return ctx.Err()
	}
	size, err := l.Size()
	if err != nil {
		return err
	}
	mt, _ := l.MediaType()
	ctx, span := w.tracer.Start(ctx, "blob "+d.String(), trace.WithAttributes(
		attribute.String("oci.blob.digest", d.String()),
		attribute.Int64("oci.blob.size", size),
		attribute.String("oci.blob.media_type", string(mt)),
	))
	defer span.End()
	w.progress.BlobStarted(d.String(), size)

	outcome, opens, err := w.put(ctx, l, d)
	if err != nil {
		outcome = Failed
		span.RecordError(errors.New(registry.Describe(err)))
		span.SetStatus(codes.Error, registry.Describe(err))
	}
	span.SetAttributes(attribute.String("oci.blob.outcome", string(outcome)), attribute.Int("oci.blob.retries", max(0, opens-1)))
	w.progress.BlobDone(d.String(), outcome)
	w.mu.Lock()
	w.outcomes[d], w.sizes[d] = outcome, size
	w.mu.Unlock()
	if err != nil {
		var be *BlobError
		if errors.As(err, &be) {
			return err
		}
		return fmt.Errorf("blob %s: %w", d, err)
	}
	return nil
}

// blobExists asks the destination whether it has blob d.
func (w *writer) blobExists(ctx context.Context, d v1.Hash) (bool, error) {
	l, err := w.puller.Layer(ctx, w.repo.Digest(d.String()))
	if err != nil {
		return false, err
	}
	if ml, ok := l.(*remote.MountableLayer); ok {
		l = ml.Layer // partial.Exists finds the remote layer's HEAD under it
	}
	return partial.Exists(l)
}

// put has go-containerregistry upload l unless the destination has it, and
// tells what happened: the source was read (uploaded), or it was not
// (skipped, or mounted when the blob can come from a repository of the same
// registry), and how many times the source was opened.
func (w *writer) put(ctx context.Context, l v1.Layer, d v1.Hash) (Outcome, int, error) {
	counted := &openCounter{Layer: l}
	var up v1.Layer = counted
	sameRegistry := false
	if ml, ok := l.(*remote.MountableLayer); ok {
		counted.Layer = ml.Layer
		up = &remote.MountableLayer{Layer: counted, Reference: ml.Reference}
		sameRegistry = ml.Reference.Context().RegistryStr() == w.repo.RegistryStr()
	}
	if sameRegistry {
		// The pusher both checks and mounts without reading the source;
		// only a check of our own tells a blob found from one mounted.
		ok, err := w.blobExists(ctx, d)
		if err != nil {
			return Failed, 0, err
		}
		if ok {
			return Skipped, 0, nil
		}
	}
	// Each attempt starts the upload over, re-opening the source: a
	// streamed body cannot be replayed by the transport.
	upload := func(ctx context.Context, _ int) error { return w.pusher.Upload(ctx, w.repo, up) }
	if err := w.reg.Retry(ctx, upload); err != nil {
		return Failed, counted.opens(), err
	}
	switch {
	case counted.opens() > 0:
		return Uploaded, counted.opens(), nil
	case sameRegistry:
		return Mounted, 0, nil
	}
	return Skipped, 0, nil
}

// openCounter counts how often a blob's bytes were asked for: once per
// upload attempt, never for a blob the destination had or mounted.
type openCounter struct {
	v1.Layer
	n atomic.Int32
}

func (c *openCounter) Compressed() (io.ReadCloser, error) {
	c.n.Add(1)
	return c.Layer.Compressed()
}

func (c *openCounter) opens() int { return int(c.n.Load()) }

func (w *writer) putManifest(ctx context.Context, ref name.Reference, m remote.Taggable) error {
	ctx, span := w.tracer.Start(ctx, "manifest "+ref.Identifier(), trace.WithAttributes(attribute.String("oci.reference", ref.String())))
	defer span.End()
	if d, ok := m.(partial.Describable); ok {
		if dg, err := d.Digest(); err == nil {
			span.SetAttributes(attribute.String("oci.manifest.digest", dg.String()))
		}
		if mt, err := d.MediaType(); err == nil {
			span.SetAttributes(attribute.String("oci.manifest.media_type", string(mt)))
		}
	}
	if err := w.pusher.Put(ctx, ref, m); err != nil {
		span.RecordError(errors.New(registry.Describe(err)))
		span.SetStatus(codes.Error, registry.Describe(err))
		return err
	}
	w.mu.Lock()
	w.written++
	w.mu.Unlock()
	return nil
}
