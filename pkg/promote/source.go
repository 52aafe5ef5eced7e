package promote

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/registry"
)

// BlobError is a failure to read one blob from the source: the registry
// refused it, the connection broke, or its bytes did not match its digest.
// It is told apart from destination failures even though it surfaces while
// the blob streams into the destination's upload request.
type BlobError struct {
	Source name.Reference
	Digest v1.Hash
	Err    error
}

func (e *BlobError) Error() string {
	return fmt.Sprintf("source %s: blob %s: %s", e.Source.Context(), e.Digest, registry.Describe(e.Err))
}

func (e *BlobError) Unwrap() error { return e.Err }

// Temporary reports whether the failure is worth retrying (a reset or
// stalled connection, not a digest mismatch), so that go-containerregistry
// retries the blob.
func (e *BlobError) Temporary() bool {
	var t interface{ Temporary() bool }
	return errors.As(e.Err, &t) && t.Temporary()
}

// source is what every wrapped source object shares.
type source struct {
	// ctx is the promotion's: go-containerregistry binds the source's
	// image and index objects to it too.
	ctx      context.Context
	ref      name.Reference
	reg      *registry.Client // for its retry schedule
	progress Progress
}

// sourceImage wraps an image read from the source so that its blobs report
// read failures as *BlobError and the bytes they stream to the progress.
// Its manifest and config are the source's, so digests are unchanged.
type sourceImage struct {
	v1.Image
	src source

	mu     sync.Mutex
	config []byte // read once by RawConfigFile
}

func (s *sourceImage) Layers() ([]v1.Layer, error) {
	ls, err := s.Image.Layers()
	if err != nil {
		return nil, err
	}
	out := make([]v1.Layer, len(ls))
	for i, l := range ls {
		out[i] = s.wrap(l)
	}
	return out, nil
}

func (s *sourceImage) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	l, err := s.Image.LayerByDigest(h)
	if err != nil {
		return nil, err
	}
	return s.wrap(l), nil
}

func (s *sourceImage) ConfigLayer() (v1.Layer, error) {
	l, err := partial.ConfigLayer(s.Image)
	if err != nil {
		return nil, err
	}
	return s.wrap(l), nil
}

// Descriptor keeps the descriptor the source index gave this image.
func (s *sourceImage) Descriptor() (*v1.Descriptor, error) { return partial.Descriptor(s.Image) }

// MaxConfigSize is the largest image config ocistow reads into memory (to
// stamp labels, or to check a platform): 8 MiB, over a hundred times the
// largest configs seen in practice. Configs are otherwise streamed like
// layers, whatever their size.
const MaxConfigSize = 8 << 20

// RawConfigFile reads the config once, refusing one that declares more
// than MaxConfigSize before reading any of it; no more than the declared
// size is read, and the bytes are checked against the digest.
//
// A body that breaks off after the headers fails the read, not the
// request, so the transport cannot retry it: the config is read again
// here. (go-containerregistry's remote image would keep the partial bytes
// of a failed read, so it is read as a blob instead.) An answer the
// registry gave was retried by the transport already and is final here,
// so that retries do not multiply.
func (s *sourceImage) RawConfigFile() ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.config != nil {
		return s.config, nil
	}
	m, err := s.Image.Manifest()
	if err != nil {
		return nil, err
	}
	if m.Config.Size > MaxConfigSize {
		return nil, fmt.Errorf("%w: config %s is %d bytes, over the %d-byte limit on configs read into memory", ErrUnsupported, m.Config.Digest, m.Config.Size, MaxConfigSize)
	}
	if m.Config.Data != nil {
		return s.Image.RawConfigFile() // embedded, and checked against its digest
	}
	cl, err := partial.ConfigLayer(s.Image)
	if err != nil {
		return nil, err
	}
	var raw []byte
	var answered error
	err = s.src.reg.Retry(s.src.ctx, func(context.Context, int) error {
		rc, err := cl.Compressed()
		if registry.StatusCode(err) != 0 {
			answered = err
			return nil
		}
		if err != nil {
			return err
		}
		defer rc.Close()
		raw, err = io.ReadAll(rc)
		return err
	})
	if answered != nil {
		return nil, answered
	}
	if err != nil {
		return nil, err
	}
	s.config = raw
	return raw, nil
}

// ConfigFile parses what RawConfigFile read.
func (s *sourceImage) ConfigFile() (*v1.ConfigFile, error) { return partial.ConfigFile(s) }

// wrap keeps a mountable layer mountable: go-containerregistry mounts only
// *remote.MountableLayer.
func (s *sourceImage) wrap(l v1.Layer) v1.Layer {
	if ml, ok := l.(*remote.MountableLayer); ok {
		return &remote.MountableLayer{Layer: &sourceLayer{Layer: ml.Layer, src: s.src}, Reference: ml.Reference}
	}
	return &sourceLayer{Layer: l, src: s.src}
}

// sourceIndex wraps an index read from the source so that its images are
// sourceImages, and reads each child once however often it is asked for
// (looking ahead, checking, stamping, writing): each read is a metered
// pull.
type sourceIndex struct {
	base v1.ImageIndex
	src  source

	mu       sync.Mutex
	children map[v1.Hash]*child
}

// child is one child of a sourceIndex, read once.
type child struct {
	once sync.Once
	m    partial.Describable
	err  error
}

var _ v1.ImageIndex = (*sourceIndex)(nil)

func (s *sourceIndex) MediaType() (types.MediaType, error)       { return s.base.MediaType() }
func (s *sourceIndex) Digest() (v1.Hash, error)                  { return s.base.Digest() }
func (s *sourceIndex) Size() (int64, error)                      { return s.base.Size() }
func (s *sourceIndex) IndexManifest() (*v1.IndexManifest, error) { return s.base.IndexManifest() }
func (s *sourceIndex) RawManifest() ([]byte, error)              { return s.base.RawManifest() }

// Descriptor keeps the descriptor the parent index gave this index.
func (s *sourceIndex) Descriptor() (*v1.Descriptor, error) { return partial.Descriptor(s.base) }

// child reads the child h once with read; concurrent callers wait for the
// one read.
func (s *sourceIndex) child(h v1.Hash, read func() (partial.Describable, error)) (partial.Describable, error) {
	s.mu.Lock()
	if s.children == nil {
		s.children = map[v1.Hash]*child{}
	}
	c, ok := s.children[h]
	if !ok {
		c = &child{}
		s.children[h] = c
	}
	s.mu.Unlock()
	c.once.Do(func() { c.m, c.err = read() })
	return c.m, c.err
}

// Image returns a child image, read from the source once.
func (s *sourceIndex) Image(h v1.Hash) (v1.Image, error) {
	m, err := s.child(h, func() (partial.Describable, error) {
		img, err := s.base.Image(h)
		if err != nil {
			return nil, err
		}
		return &sourceImage{Image: img, src: s.src}, nil
	})
	if err != nil {
		return nil, err
	}
	img, ok := m.(v1.Image)
	if !ok {
		return nil, fmt.Errorf("child %s is not an image", h)
	}
	return img, nil
}

// ImageIndex returns a child index, read from the source once.
func (s *sourceIndex) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	m, err := s.child(h, func() (partial.Describable, error) {
		idx, err := s.base.ImageIndex(h)
		if err != nil {
			return nil, err
		}
		if _, err := idx.IndexManifest(); err != nil {
			return nil, err
		}
		return &sourceIndex{base: idx, src: s.src}, nil
	})
	if err != nil {
		return nil, err
	}
	idx, ok := m.(v1.ImageIndex)
	if !ok {
		return nil, fmt.Errorf("child %s is not an index", h)
	}
	return idx, nil
}

// checkChildren refuses, before anything is written, an index that lists
// (at any depth) a child that is neither an image nor an index.
func checkChildren(idx v1.ImageIndex) error {
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		switch {
		case d.MediaType.IsImage():
		case d.MediaType.IsIndex():
			child, err := idx.ImageIndex(d.Digest)
			if err != nil {
				return fmt.Errorf("reading child index %s: %w", d.Digest, err)
			}
			if err := checkChildren(child); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%w: index child %s has media type %q, which is neither an image nor an index; ocistow copies images and indexes only", ErrUnsupported, d.Digest, d.MediaType)
		}
	}
	return nil
}

type sourceLayer struct {
	v1.Layer
	src source
}

func (l *sourceLayer) Compressed() (io.ReadCloser, error) {
	rc, err := l.Layer.Compressed()
	if err != nil {
		return nil, l.blobError(err)
	}
	d, _ := l.Layer.Digest()
	return &sourceReader{rc: rc, l: l, digest: d.String()}, nil
}

func (l *sourceLayer) blobError(err error) error {
	d, _ := l.Layer.Digest()
	return &BlobError{Source: l.src.ref, Digest: d, Err: err}
}

// Descriptor keeps the layer's descriptor from the source manifest.
func (l *sourceLayer) Descriptor() (*v1.Descriptor, error) { return partial.Descriptor(l.Layer) }

// Exists is go-containerregistry's existence hint, passed through.
func (l *sourceLayer) Exists() (bool, error) { return partial.Exists(l.Layer) }

type sourceReader struct {
	rc     io.ReadCloser
	l      *sourceLayer
	digest string
}

func (r *sourceReader) Read(p []byte) (int, error) {
	n, err := r.rc.Read(p)
	if n > 0 {
		r.l.src.progress.BlobBytes(r.digest, int64(n))
	}
	if err != nil && err != io.EOF {
		err = r.l.blobError(err)
	}
	return n, err
}

func (r *sourceReader) Close() error { return r.rc.Close() }
