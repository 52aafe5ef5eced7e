// Package digesttag keeps cosign's digest tags: the image at
// sha256-<hex>.sig (signatures) or sha256-<hex>.att (attestations) beside
// the manifest they are about, one layer per signature or attestation.
//
// Such a tag is a read-modify-write of one manifest, which registries
// cannot do atomically, and several writers (promotions of the same image,
// cosign) may add to it at once. Ensure adds a layer so that concurrent
// writers do not drop each other's: it reads the tag back after writing,
// and again after a pause long enough for a writer that read before its
// write to have written too, and writes again, up to a bound, until the
// layer stays. Merge adds another tag's layers (an upstream's signatures)
// the same way. Read bounds what a tag's manifest makes it read, so that
// memory does not grow with what a registry declares.
package digesttag

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/registry"
)

// Tag returns cosign's tag for digest with suffix ("sig" or "att"):
// sha256-<hex>.<suffix> in the digest's repository.
func Tag(digest name.Digest, suffix string) name.Tag {
	return digest.Context().Tag(strings.Replace(digest.DigestStr(), ":", "-", 1) + "." + suffix)
}

// Kind says what a digest tag holds and how much of it to read.
type Kind struct {
	// Noun names one entry in messages: "signature", "attestation".
	Noun string
	// MediaType is the media type of the layers read; other layers are
	// kept but not read.
	MediaType types.MediaType
	// MaxLayers bounds the layers of a manifest (a tag with more is an
	// error); MaxLayer the size of a layer read (larger ones are passed
	// over); MaxTotal the declared size of the layers read, together.
	MaxLayers int
	MaxLayer  int64
	MaxTotal  int64
}

// Layer is one layer read from a digest tag: its bytes and its
// descriptor's annotations.
type Layer struct {
	Data        []byte
	Annotations map[string]string
}

// Read returns the image at tag (nil when there is none) and its layers of
// k's media type, within k's bounds. tag may be a digest too.
func (k Kind) Read(ctx context.Context, p *remote.Puller, tag name.Reference) (v1.Image, []Layer, error) {
	desc, err := p.Get(ctx, tag)
	if registry.StatusCode(err) == http.StatusNotFound {
		return nil, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	img, err := desc.Image()
	if err != nil {
		return nil, nil, err
	}
	m, err := img.Manifest()
	if err != nil {
		return nil, nil, err
	}
	if len(m.Layers) > k.MaxLayers {
		return nil, nil, fmt.Errorf("%s holds %d %ss, over the %d read", tag, len(m.Layers), k.Noun, k.MaxLayers)
	}
	var total int64
	for _, d := range m.Layers {
		if d.MediaType == k.MediaType && d.Size <= k.MaxLayer {
			total += d.Size
		}
	}
	if total > k.MaxTotal {
		return nil, nil, fmt.Errorf("%s declares %d bytes of %ss, over the %d-byte limit", tag, total, k.Noun, k.MaxTotal)
	}
	var out []Layer
	for _, d := range m.Layers {
		if d.MediaType != k.MediaType || d.Size > k.MaxLayer {
			continue // not ours, or one no verifier reads
		}
		l, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return nil, nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, nil, err
		}
		b, err := io.ReadAll(io.LimitReader(rc, k.MaxLayer+1))
		rc.Close()
		if err != nil {
			return nil, nil, err
		}
		if int64(len(b)) <= k.MaxLayer {
			out = append(out, Layer{Data: b, Annotations: d.Annotations})
		}
	}
	return img, out, nil
}

// Append returns base (or an empty image, as cosign starts one) with one
// more layer of k's media type.
func (k Kind) Append(base v1.Image, l Layer) (v1.Image, error) {
	if base == nil {
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	return mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(bytes.Clone(l.Data), k.MediaType),
		Annotations: l.Annotations,
	})
}

// maxAttempts bounds the read-modify-write rounds of one tag.
const maxAttempts = 10

// Ensure makes sure the tag holds a layer that has finds: when it does
// already, nothing is written and added is false; otherwise make's layer is
// appended, and written again as long as concurrent writers drop it, up to
// a bound. make is called at most once: what it returns (an ECDSA
// signature differs each time) is written as it is on every attempt.
// Writes go through c.Retry.
func (k Kind) Ensure(ctx context.Context, c *registry.Client, p *remote.Puller, w *remote.Pusher, tag name.Tag,
	has func([]Layer) bool, make func(context.Context) (Layer, error)) (added bool, err error) {
	var mine *Layer
	holds := func(_ v1.Image, layers []Layer) bool { return has(layers) }
	return k.ensure(ctx, c, p, w, tag, holds, func(ctx context.Context, base v1.Image, layers []Layer) (v1.Image, error) {
		if has(layers) {
			return nil, nil
		}
		if mine == nil {
			l, err := make(ctx)
			if err != nil {
				return nil, err
			}
			mine = &l
		}
		return k.Append(base, *mine)
	})
}

// Merge adds to the tag the layers of from that it lacks (the same
// digest, media type and annotations: two signatures of one payload differ
// only in their annotations), as Ensure adds one: read back, and written
// again as long as concurrent writers drop them. The layers' blobs are
// pushed from from's own (streamed, whatever their type or size), and the
// manifest is marked with the annotations mark. It returns how many layers
// it added: 0 when the tag held them all (then only a missing mark is
// written, and a tag that carries it already is not written at all). A tag
// that does not exist is left alone: there is nothing to merge into.
func (k Kind) Merge(ctx context.Context, c *registry.Client, p *remote.Puller, w *remote.Pusher, tag name.Tag,
	from v1.Image, mark map[string]string) (added int, err error) {
	fm, err := from.Manifest()
	if err != nil {
		return 0, err
	}
	holds := func(img v1.Image, _ []Layer) bool { return img != nil && len(lacking(img, fm.Layers)) == 0 }
	_, err = k.ensure(ctx, c, p, w, tag, holds, func(_ context.Context, base v1.Image, _ []Layer) (v1.Image, error) {
		if base == nil {
			return nil, nil
		}
		missing := lacking(base, fm.Layers)
		added = max(added, len(missing)) // a write a concurrent writer dropped is written again
		if len(missing) == 0 && marked(base, mark) {
			return nil, nil
		}
		img := base
		for _, d := range missing {
			l, err := from.LayerByDigest(d.Digest)
			if err != nil {
				return nil, err
			}
			if img, err = mutate.Append(img, mutate.Addendum{Layer: l, MediaType: d.MediaType, Annotations: d.Annotations}); err != nil {
				return nil, err
			}
		}
		return mutate.Annotations(img, mark).(v1.Image), nil
	})
	if err != nil {
		return 0, err
	}
	return added, nil
}

// lacking returns the descriptors of want that img's layers do not hold.
func lacking(img v1.Image, want []v1.Descriptor) []v1.Descriptor {
	m, err := img.Manifest()
	if err != nil {
		return want
	}
	var out []v1.Descriptor
	for _, w := range want {
		if !slices.ContainsFunc(m.Layers, func(l v1.Descriptor) bool {
			return l.Digest == w.Digest && l.MediaType == w.MediaType && maps.Equal(l.Annotations, w.Annotations)
		}) {
			out = append(out, w)
		}
	}
	return out
}

// marked reports whether img's manifest carries every annotation of mark.
func marked(img v1.Image, mark map[string]string) bool {
	m, err := img.Manifest()
	if err != nil {
		return false
	}
	for k, v := range mark {
		if m.Annotations[k] != v {
			return false
		}
	}
	return true
}

// ensure is Ensure's and Merge's loop: next returns the image to write
// given what the tag holds (base, nil when there is no tag, and its
// layers), or nil when it holds what it should; has says whether a
// read-back still holds it.
func (k Kind) ensure(ctx context.Context, c *registry.Client, p *remote.Puller, w *remote.Pusher, tag name.Tag,
	has func(v1.Image, []Layer) bool, next func(context.Context, v1.Image, []Layer) (v1.Image, error)) (added bool, err error) {
	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := registry.Sleep(ctx, backoff(attempt)); err != nil {
				return false, err
			}
		}
		start := time.Now()
		base, layers, err := k.Read(ctx, p, tag)
		if err != nil {
			return false, fmt.Errorf("reading %ss %s: %s", k.Noun, tag, registry.Describe(err))
		}
		img, err := next(ctx, base, layers)
		if err != nil {
			return false, err
		}
		if img == nil && !added {
			// There before, by an earlier run or a concurrent writer;
			// whoever wrote it confirms it stays.
			return false, nil
		}
		if img != nil {
			// The transport retries what it can replay; a blob upload
			// that fails part-way is started over here.
			push := func(ctx context.Context, _ int) error { return w.Push(ctx, tag, img) }
			if err := c.Retry(ctx, push); err != nil {
				return false, k.writeError(tag, err)
			}
			added = true
		}
		// Confirm: read back now, and again after a pause of a few times
		// our own read-modify-write, by which a writer that read the tag
		// before our write has written too.
		ok, err := k.confirm(ctx, p, tag, has, max(20*time.Millisecond, 3*time.Since(start)))
		if err != nil {
			return false, err
		}
		if ok {
			return added, nil
		}
	}
	return false, fmt.Errorf("%s kept disappearing from %s after %d attempts: too many concurrent writers", k.Noun, tag, maxAttempts)
}

// confirm reports whether has finds its layer in the tag now and still
// after pause.
func (k Kind) confirm(ctx context.Context, p *remote.Puller, tag name.Tag, has func(v1.Image, []Layer) bool, pause time.Duration) (bool, error) {
	for i := range 2 {
		if i > 0 {
			if err := registry.Sleep(ctx, pause+time.Duration(rand.Int64N(int64(pause)))); err != nil {
				return false, err
			}
		}
		img, layers, err := k.Read(ctx, p, tag)
		if err != nil {
			return false, fmt.Errorf("reading back %ss %s: %s", k.Noun, tag, registry.Describe(err))
		}
		if !has(img, layers) {
			return false, nil
		}
	}
	return true, nil
}

// writeError explains a refused write of the tag: ECR's tag immutability
// in particular, and what to do about it.
func (k Kind) writeError(tag name.Tag, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusBadRequest || terr.StatusCode == http.StatusConflict || terr.StatusCode == http.StatusForbidden) {
		msg := strings.ToLower(err.Error())
		if strings.Contains(msg, "immutab") || strings.Contains(msg, "already exists") || strings.Contains(msg, "tag_invalid") {
			suffix := tag.TagStr()[strings.LastIndex(tag.TagStr(), "."):]
			return fmt.Errorf("registry refused to overwrite %s tag %s (tag immutability): make the repository's tags mutable, or exclude *%s with an ECR tag-mutability exclusion filter; %s", k.Noun, tag, suffix, registry.Describe(err))
		}
	}
	return fmt.Errorf("writing %s tag %s: %s", k.Noun, tag, registry.Describe(err))
}

// backoff is the pause before attempt: growing, with jitter, so that
// concurrent writers fall out of step.
func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 5)
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}
