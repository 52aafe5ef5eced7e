package promote

import (
	"bytes"
	"context"
	"fmt"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/sync/semaphore"

	"github.com/ocistow/ocistow/pkg/registry"
)

// A ReadAhead bounds the memory that promotions waiting for their turn to
// write (WithGate) may hold in small blobs made ready ahead: while a
// promotion waits, each small blob the destination lacks is read from the
// source into memory (its digest checked) and its upload opened, so that
// once writing starts each costs one round trip, the PUT with the bytes,
// instead of two. A blob that does not fit in what is left of the budget
// is read when written, as without a ReadAhead. A ReadAhead is shared by
// the promotions of a fleet and is safe for concurrent use.
type ReadAhead struct {
	sem *semaphore.Weighted
}

// NewReadAhead returns a ReadAhead of max bytes.
func NewReadAhead(max int64) *ReadAhead {
	return &ReadAhead{sem: semaphore.NewWeighted(max)}
}

// WithReadAhead has a gated Copy make small blobs ready while it waits,
// within r's budget. Without a gate it does nothing.
func WithReadAhead(r *ReadAhead) Option { return func(o *options) { o.readAhead = r } }

// ready is a blob made ready ahead: its bytes and an upload opened for
// them.
type ready struct {
	upload *registry.Upload
	data   []byte
}

// prepare makes the blob l (of digest d and size bytes), which the
// destination lacks, ready to send, if it is small, is not mounted, and
// fits in the budget. A failure leaves it to be read when written.
func (w *writer) prepare(ctx context.Context, dst *registry.Writer, l v1.Layer, d v1.Hash, size int64) {
	if w.readAhead == nil || size > smallBlob {
		return
	}
	if ml, ok := l.(*remote.MountableLayer); ok && ml.Reference.Context().RegistryStr() == w.repo.RegistryStr() {
		return // mounted, not sent
	}
	w.mu.Lock()
	_, claimed := w.ready[d] // a blob two children share is made ready once
	if !claimed {
		w.ready[d] = nil
	}
	w.mu.Unlock()
	if claimed {
		return
	}
	if !w.readAhead.sem.TryAcquire(size) {
		w.forget(d)
		return
	}
	type opened struct {
		up  *registry.Upload
		err error
	}
	ch := make(chan opened, 1)
	go func() {
		up, err := dst.Open(ctx)
		ch <- opened{up, err}
	}()
	data, rerr := readBlob(l, size)
	o := <-ch
	if rerr != nil || o.err != nil {
		if o.err == nil {
			o.up.Abandon()
		}
		w.readAhead.sem.Release(size)
		w.forget(d)
		return
	}
	w.mu.Lock()
	w.ready[d] = &ready{upload: o.up, data: data}
	w.mu.Unlock()
}

func (w *writer) forget(d v1.Hash) {
	w.mu.Lock()
	delete(w.ready, d)
	w.mu.Unlock()
}

// readBlob reads l's size bytes whole, to its end, which is where the
// source's reader checks the digest.
func readBlob(l v1.Layer, size int64) ([]byte, error) {
	rc, err := l.Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	data := make([]byte, size)
	if _, err := io.ReadFull(rc, data); err != nil {
		return nil, err
	}
	if n, err := io.Copy(io.Discard, rc); err != nil || n != 0 {
		if err == nil {
			err = fmt.Errorf("the blob is longer than the %d bytes its descriptor says", size)
		}
		return nil, err
	}
	return data, nil
}

// take returns the blob d made ready, if it was, and forgets it.
func (w *writer) take(d v1.Hash) *ready {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.ready[d]
	delete(w.ready, d)
	return r
}

// sendReady sends r, made ready ahead, as blob: its upload was opened and
// its bytes read, so one request. When the upload opened ahead fails (it
// may have expired), the bytes are sent again as any upload is, with
// retries, without reading the source again. It reports the blob Found
// when another upload of it made sending it needless (registry.Writer).
func (w *writer) sendReady(ctx context.Context, dst *registry.Writer, r *ready, blob registry.Blob) (registry.Stored, error) {
	defer w.readAhead.sem.Release(int64(len(r.data)))
	blob.Open = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(r.data)), nil }
	blob.Check, blob.MountFrom = false, nil
	if stored, err := r.upload.Send(ctx, blob); err == nil {
		return stored, nil
	}
	var stored registry.Stored
	err := w.reg.Retry(ctx, func(ctx context.Context, _ int) (err error) {
		stored, err = dst.Upload(ctx, blob)
		return err
	})
	return stored, err
}

// discard abandons what was made ready and not sent (the promotion failed
// before it), and gives its memory back.
func (w *writer) discard() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for d, r := range w.ready {
		if r != nil {
			r.upload.Abandon()
			w.readAhead.sem.Release(int64(len(r.data)))
		}
		delete(w.ready, d)
	}
}
