package promote

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

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
	checked  *look
	gate     Gate
	approval Approval
	// approveEarly: approval needs no children (WithSourceApproval).
	approveEarly bool
	readAhead    *ReadAhead
}

// A Gate is passed before anything is written: it returns once writing may
// start (or fails when ctx ends), and release is called when the writing is
// over.
type Gate func(ctx context.Context) (release func(), err error)

// WithGate has Copy pass g after it has read what it will write from the
// source and looked at the destination, and before it writes anything. A
// fleet bounds the images written at once with it, while the next ones are
// read meanwhile: reading is round trips, writing is bandwidth.
func WithGate(g Gate) Option { return func(o *options) { o.gate = g } }

// An Approval decides, before anything is written, whether the source may
// be promoted: source is the digest the source reference resolved to, and
// children the source digests of the manifests an index promotion writes
// under it (after -platform's selection; none for an image). A non-nil
// error stops the promotion as it is, with nothing written.
type Approval func(ctx context.Context, source name.Digest, children []name.Digest) error

// WithApproval has Copy ask a before it writes anything, and also when
// the destination is found up to date, once the source's digests are known
// from what the copy reads anyway: the source's HEAD, the index the copy
// plans from, or, when up to date, the destination's index (whose
// descriptors name their source digests). It adds no read of the source's
// image manifests of its own; what a reads is its own business, under
// Copy's context (so that manifest GETs it makes at the source count in
// Result.SourcePulls).
func WithApproval(a Approval) Option {
	return func(o *options) { o.approval, o.approveEarly = a, false }
}

// WithSourceApproval is WithApproval for an Approval that decides on the
// source's digest alone (it is given no children): Copy asks it as soon as
// the source is resolved, before the source's manifest is read, so that a
// source it refuses costs no pull.
func WithSourceApproval(a Approval) Option {
	return func(o *options) { o.approval, o.approveEarly = a, true }
}

// WithTracerProvider records spans: one for the copy, one per blob
// (digest, size, outcome, attempts), one per manifest written. The default
// records nothing.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracer = tp.Tracer("github.com/ocistow/ocistow/pkg/promote") }
}

// A Restarter is a Progress that is told when a blob's upload starts over
// (a retry re-opens the source): the bytes of the attempt that failed were
// reported by BlobBytes, and the next attempt's are reported from zero.
type Restarter interface {
	BlobRestarted(digest string)
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
// first (each once; at most jobs large ones at a time), then child
// manifests, then the manifest the reference names. It writes through the
// Client's Writer for the repository and reads through the promotion's
// Puller, so the registry is pinged and a token fetched once, not per blob.
// It records what it did to each blob and manifest itself.
type writer struct {
	src      name.Reference // for attributing read failures to the source
	pusher   *remote.Pusher
	reg      *registry.Client // for its retry schedule
	puller   *remote.Puller
	repo     name.Repository
	sem      chan struct{} // large blobs moving at once: jobs
	small    chan struct{} // small blobs moving at once: smallJobs
	jobs     int
	tracer   trace.Tracer
	progress Progress

	mu        sync.Mutex
	present   map[v1.Hash]bool    // child manifests looked for ahead (lookAhead)
	found     map[v1.Hash]foundAt // blobs looked for ahead (lookAheadBlobs)
	ready     map[v1.Hash]*ready  // blobs made ready ahead (prepare); nil while being made
	readAhead *ReadAhead
	blobs     map[v1.Hash]*blobOnce
	outcomes  map[v1.Hash]Outcome
	sizes     map[v1.Hash]int64
	written   int // manifests and indexes
	skipped   int // child manifests the destination had
}

type blobOnce struct {
	once sync.Once
	err  error
}

func newWriter(p *promotion) *writer {
	return &writer{
		src: p.req.Source, pusher: p.pusher, reg: p.reg, puller: p.puller, repo: p.req.Destination.Context(),
		sem: make(chan struct{}, p.jobs), small: make(chan struct{}, smallJobs*p.jobs), jobs: p.jobs, tracer: p.o.tracer, progress: p.o.progress,
		present: map[v1.Hash]bool{}, found: map[v1.Hash]foundAt{}, ready: map[v1.Hash]*ready{}, readAhead: p.o.readAhead, blobs: map[v1.Hash]*blobOnce{}, outcomes: map[v1.Hash]Outcome{}, sizes: map[v1.Hash]int64{},
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
	im, err := idx.IndexManifest()
	if err != nil {
		return w.sourceErr("reading the manifests an index lists", err)
	}
	// Each child is looked for at the destination first, and read from the
	// source only when missing there (reading a manifest is a metered
	// pull); the children go at once.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(w.jobs)
	for _, desc := range im.Manifests {
		childRef := w.repo.Digest(desc.Digest.String())
		g.Go(func() error {
			if ok := w.has(gctx, childRef); ok {
				w.mu.Lock()
				w.skipped++
				w.mu.Unlock()
				return nil
			}
			child, err := childOf(idx, desc)
			if err != nil {
				return w.sourceErr("reading a child manifest", err)
			}
			return w.write(gctx, child, childRef)
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	return w.putManifest(ctx, ref, idx)
}

// has reports whether the destination has the child manifest ref, as
// lookAhead found or by asking now. A failure to tell counts as missing:
// the child is then written.
func (w *writer) has(ctx context.Context, ref name.Digest) bool {
	w.mu.Lock()
	ok, known := w.present[mustHash(ref)]
	w.mu.Unlock()
	if known {
		return ok
	}
	ok, _ = w.exists(ctx, ref)
	return ok
}

func mustHash(ref name.Digest) v1.Hash {
	h, _ := v1.NewHash(ref.DigestStr())
	return h
}

// lookAhead asks the destination for every child manifest of idx (at any
// depth) at once, and reads from the source the ones it lacks, so that
// writing can start with its blobs; with blobs, it also asks for the blobs
// of those (lookAheadBlobs). What it cannot tell is asked again when
// writing.
func (w *writer) lookAhead(ctx context.Context, idx v1.ImageIndex, blobs bool) {
	im, err := idx.IndexManifest()
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	for _, desc := range im.Manifests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok, err := w.exists(ctx, w.repo.Digest(desc.Digest.String()))
			if err != nil {
				return
			}
			w.mu.Lock()
			w.present[desc.Digest] = ok
			w.mu.Unlock()
			if ok {
				return
			}
			child, err := childOf(idx, desc)
			if err != nil {
				return
			}
			if ci, ok := child.(v1.ImageIndex); ok {
				w.lookAhead(ctx, ci, blobs)
			} else if img, ok := child.(v1.Image); ok {
				if _, err := img.Manifest(); err == nil && blobs { // read now, not when writing
					w.lookAheadBlobs(ctx, img, true)
				}
			}
		}()
	}
	wg.Wait()
}

// lookAheadBlobs asks the destination for every blob of img at once (HEADs,
// which no registry meters), and makes the small ones it lacks ready to
// send, within the ReadAhead's budget (prepare). A promotion that waits
// for its turn to write (WithGate) does this while it waits: writing then
// uploads the missing blobs without asking again, and fewer requests
// compete for each registry's places while images are written. What it
// cannot tell is asked again when writing.
//
// When the destination is known to lack img's manifest (absent, a child
// the destination answered 404 for), its config (if small) is taken to be
// missing without asking: a config belongs to one image (it names the
// image's layers and history), so it is there only if the image is or a
// copy of it was cut short, and sending one that is there after all costs
// a few KiB, where asking costs a request on every image a fleet writes.
func (w *writer) lookAheadBlobs(ctx context.Context, img v1.Image, absent bool) {
	m, err := img.Manifest()
	if err != nil {
		return
	}
	dst, err := w.reg.Writer(ctx, w.repo)
	if err != nil {
		return
	}
	var wg sync.WaitGroup
	for _, desc := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if !desc.MediaType.IsDistributable() {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ok := false
			if !absent || desc.Digest != m.Config.Digest || desc.Size > smallBlob {
				has, err := dst.HasBlob(ctx, desc.Digest)
				if err != nil {
					return
				}
				ok = has
			}
			w.mu.Lock()
			w.found[desc.Digest] = foundAt{has: ok, at: time.Now()}
			w.mu.Unlock()
			if ok {
				return
			}
			if l, err := blobOf(img, m.Config.Digest, desc.Digest); err == nil {
				w.prepare(ctx, dst, l, desc.Digest, desc.Size)
			}
		}()
	}
	wg.Wait()
}

// blobOf returns img's blob d: its config when d is config, else a layer.
func blobOf(img v1.Image, config, d v1.Hash) (v1.Layer, error) {
	if d == config {
		return partial.ConfigLayer(img)
	}
	return img.LayerByDigest(d)
}

// foundAt is what lookAheadBlobs learnt of a blob: whether the
// destination has it, and when it learnt so.
type foundAt struct {
	has bool
	at  time.Time
}

// foundAhead reports what lookAheadBlobs learnt of blob d, and whether it
// was asked at all.
func (w *writer) foundAhead(d v1.Hash) (f foundAt, known bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	f, known = w.found[d]
	return f, known
}

// warmChildren reads every child of idx (at any depth) from the source,
// jobs at a time, and with configs their configs, so that stamping, which
// reads them one after another, finds them read. Failures are left for
// stamping to report.
func warmChildren(idx v1.ImageIndex, configs bool, jobs int) {
	im, err := idx.IndexManifest()
	if err != nil {
		return
	}
	var g errgroup.Group
	g.SetLimit(max(1, jobs))
	for _, desc := range im.Manifests {
		g.Go(func() error {
			child, err := childOf(idx, desc)
			switch c := child.(type) {
			case v1.ImageIndex:
				warmChildren(c, configs, jobs)
			case v1.Image:
				if _, err = c.Manifest(); err == nil && configs {
					_, _ = c.RawConfigFile()
				}
			}
			return nil
		})
	}
	_ = g.Wait()
}

// childOf reads the child of idx that desc describes.
func childOf(idx v1.ImageIndex, desc v1.Descriptor) (partial.Describable, error) {
	switch {
	case desc.MediaType.IsIndex():
		return idx.ImageIndex(desc.Digest)
	case desc.MediaType.IsImage():
		return idx.Image(desc.Digest)
	}
	return nil, fmt.Errorf("child %s has media type %q, which is neither an image nor an index", desc.Digest, desc.MediaType)
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

// smallBlob is the size up to which a blob counts as small: its upload is
// bound by round trips rather than bandwidth, so small blobs do not wait
// for the jobs that large ones hold.
const smallBlob = 1 << 20

// smallJobs is how many small blobs move at once, per job.
const smallJobs = 4

func (w *writer) uploadBlob(ctx context.Context, l v1.Layer, d v1.Hash) error {
	size, err := l.Size()
	if err != nil {
		return err
	}
	sem := w.sem
	if size <= smallBlob {
		sem = w.small
	}
	select {
	case sem <- struct{}{}:
		defer func() { <-sem }()
	case <-ctx.Done():
		return ctx.Err()
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

// put uploads l unless the destination has it, and tells what happened:
// the source was read (uploaded), or it was not (skipped, or mounted from
// a repository of the same registry), and how many times the source was
// opened.
//
// A small blob is looked for (HEAD) while its upload is opened and the
// source is opened, all at once: two round trips instead of three, at the
// price of an upload opened and a read started for nothing when the
// destination has it. A large one is looked for first.
func (w *writer) put(ctx context.Context, l v1.Layer, d v1.Hash) (Outcome, int, error) {
	counted := &openCounter{Layer: l}
	var from *name.Repository
	if ml, ok := l.(*remote.MountableLayer); ok {
		counted.Layer = ml.Layer
		if repo := ml.Reference.Context(); repo.RegistryStr() == w.repo.RegistryStr() {
			from = &repo
		}
	}
	size, err := l.Size()
	if err != nil {
		return Failed, 0, err
	}
	dst, err := w.reg.Writer(ctx, w.repo)
	if err != nil {
		return Failed, 0, err
	}
	blob := registry.Blob{Digest: d, Size: size, Open: counted.Compressed, MountFrom: from}
	found, known := w.foundAhead(d)
	if known {
		blob.MissingAt = found.at // another image's upload since then spares this one
	}
	if r := w.take(d); r != nil {
		stored, err := w.sendReady(ctx, dst, r, blob)
		switch {
		case err != nil:
			return Failed, 1, err
		case stored == registry.Found:
			return Skipped, 0, nil
		}
		return Uploaded, 1, nil
	}
	if known {
		if found.has {
			return Skipped, 0, nil
		}
	} else if from == nil && size <= smallBlob {
		blob.Check = true
	} else if ok, err := dst.HasBlob(ctx, d); err != nil || ok {
		if err != nil {
			return Failed, 0, err
		}
		return Skipped, 0, nil
	} else {
		blob.MissingAt = time.Now()
	}
	// Each attempt starts the upload over, re-opening the source: a
	// streamed body cannot be replayed by the transport.
	var stored registry.Stored
	upload := func(ctx context.Context, attempt int) (err error) {
		if r, ok := w.progress.(Restarter); ok && attempt > 1 {
			r.BlobRestarted(d.String())
		}
		stored, err = dst.Upload(ctx, blob)
		return err
	}
	if err := w.reg.Retry(ctx, upload); err != nil {
		return Failed, counted.opens(), err
	}
	switch stored {
	case registry.Mounted:
		return Mounted, 0, nil
	case registry.Found:
		return Skipped, 0, nil
	}
	return Uploaded, counted.opens(), nil
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
	if err := w.putRaw(ctx, ref, m); err != nil {
		span.RecordError(errors.New(registry.Describe(err)))
		span.SetStatus(codes.Error, registry.Describe(err))
		return err
	}
	w.mu.Lock()
	w.written++
	w.mu.Unlock()
	return nil
}

// putRaw writes m's manifest as ref. A manifest with a subject goes through
// go-containerregistry's Pusher, which also keeps the referrers tag of a
// registry without the referrers API; any other in one PUT over the
// destination's Writer.
func (w *writer) putRaw(ctx context.Context, ref name.Reference, m remote.Taggable) error {
	raw, err := m.RawManifest()
	if err != nil {
		return err
	}
	d, ok := m.(partial.Describable)
	if !ok || hasSubject(raw) {
		return w.pusher.Put(ctx, ref, m)
	}
	mt, err := d.MediaType()
	if err != nil {
		return err
	}
	dst, err := w.reg.Writer(ctx, w.repo)
	if err != nil {
		return err
	}
	return dst.PutManifest(ctx, ref, mt, raw)
}

// hasSubject reports whether a manifest names a subject (OCI 1.1).
func hasSubject(raw []byte) bool {
	var m struct {
		Subject *v1.Descriptor `json:"subject"`
	}
	return json.Unmarshal(raw, &m) == nil && m.Subject != nil
}
