package promote

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

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
// manifest the reference names. It uses one go-containerregistry Pusher,
// so the registry is pinged and a token fetched once, not per blob.
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
	obs      *observer

	mu      sync.Mutex
	blobs   map[v1.Hash]*blobOnce
	sizes   map[string]int64 // of every blob settled
	skipped int
}

type blobOnce struct {
	once sync.Once
	err  error
}

func (w *writer) manifestsSkipped() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.skipped
}

func (w *writer) blobSizes() map[string]int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.sizes
}

// current returns the digest the destination holds at ref: "" with a nil
// error when it holds nothing there (404), and the error when the registry
// would not say.
func (w *writer) current(ctx context.Context, ref name.Reference) (string, error) {
	got, err := w.puller.Head(ctx, ref)
	if err != nil {
		var terr *transport.Error
		if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
			return "", nil
		}
		return "", err
	}
	return got.Digest.String(), nil
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
		if c, ok := child.(partial.Describable); ok {
			if _, isLayer := child.(v1.Layer); isLayer {
				continue
			}
			d, err := c.Digest()
			if err != nil {
				return w.sourceErr("reading a child manifest", err)
			}
			digests[i] = d
		}
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.jobs)
	for i, child := range children {
		switch c := child.(type) {
		case v1.Image, v1.ImageIndex:
			d := digests[i]
			childRef := w.repo.Digest(d.String())
			g.Go(func() error {
				if cur, _ := w.current(gctx, childRef); cur == d.String() {
					w.mu.Lock()
					w.skipped++
					w.mu.Unlock()
					return nil
				}
				return w.write(gctx, c, childRef)
			})
		case v1.Layer:
			// A child that is neither image nor index travels as a blob,
			// as go-containerregistry writes it.
			g.Go(func() error { return w.writeBlob(gctx, c) })
		}
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
	w.mu.Lock()
	w.sizes[d.String()] = size
	w.mu.Unlock()
	mt, _ := l.MediaType()
	ctx, span := w.tracer.Start(ctx, "blob "+d.String(), trace.WithAttributes(
		attribute.String("oci.blob.digest", d.String()),
		attribute.Int64("oci.blob.size", size),
		attribute.String("oci.blob.media_type", string(mt)),
	))
	defer span.End()
	w.progress.BlobStarted(d.String(), size)

	// Each attempt starts the upload over, re-opening the source: a
	// streamed body cannot be replayed by the transport.
	err = w.reg.Retry(ctx, func(ctx context.Context, _ int) error { return w.pusher.Upload(ctx, w.repo, l) })
	outcome, attempts := w.obs.outcome(d.String())
	if err != nil {
		outcome = Failed
		span.RecordError(errors.New(registry.Describe(err)))
		span.SetStatus(codes.Error, registry.Describe(err))
	}
	span.SetAttributes(attribute.String("oci.blob.outcome", string(outcome)), attribute.Int("oci.blob.retries", max(0, attempts-1)))
	w.progress.BlobDone(d.String(), outcome)
	if err != nil {
		var be *BlobError
		if errors.As(err, &be) {
			return err
		}
		return fmt.Errorf("blob %s: %w", d, err)
	}
	return nil
}

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
	return nil
}
