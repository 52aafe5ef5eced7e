package attest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/registry"
)

// cosign's storage of attestations, as cosign v2's `attest --key` writes
// it and `verify-attestation` reads it: an OCI image at the tag
// sha256-<hex>.att beside the attested manifest, one layer per
// attestation, the layer a DSSE envelope of media type EnvelopeMediaType,
// its descriptor annotated with an empty cosign signature (the signature
// is inside the envelope) and the predicate type. Written with
// go-containerregistry, as pkg/sign writes .sig tags, rather than through
// cosign's pkg/oci packages, which link Rekor's models and their
// validators (see pkg/sign/store.go).
const (
	// EnvelopeMediaType is the media type of an attestation layer.
	EnvelopeMediaType types.MediaType = "application/vnd.dsse.envelope.v1+json"
	// SignatureAnnotation is cosign's signature annotation, empty on an
	// attestation layer.
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// PredicateTypeAnnotation names a layer's predicate type.
	PredicateTypeAnnotation = "predicateType"
	// maxLayers bounds the layers read from one .att manifest.
	maxLayers = 1000
	// maxEnvelope bounds one envelope's size.
	maxEnvelope = 1 << 20
	// maxEnvelopes bounds the envelopes read from one .att manifest
	// together.
	maxEnvelopes = 16 << 20
)

// AttestationTag is cosign's tag for the attestations of digest.
func AttestationTag(digest name.Digest) name.Tag {
	return digest.Context().Tag(strings.Replace(digest.DigestStr(), ":", "-", 1) + ".att")
}

// Store reads and writes .att tags, and bundle referrers, through a registry client's shared
// transports, so that attesting shares pings and tokens with the copy and
// the signing.
type Store struct {
	rc     *registry.Client
	puller *remote.Puller
	pusher *remote.Pusher
	// bundles stores and finds attestations as Sigstore bundle
	// referrers.
	bundles *bundle.Store
}

// NewStore returns a Store that talks to registries through rc.
func NewStore(rc *registry.Client) (*Store, error) {
	puller, err := rc.Puller()
	if err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	pusher, err := rc.Pusher()
	if err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	return &Store{rc: rc, puller: puller, pusher: pusher, bundles: bundle.NewStore(puller, pusher, bundle.WithRetry(rc.Retry))}, nil
}

// read returns the .att image at tag (nil when there is none) and the
// envelopes it holds: the layers of EnvelopeMediaType, other layers left
// alone.
func (s *Store) read(ctx context.Context, tag name.Tag) (v1.Image, [][]byte, error) {
	desc, err := s.puller.Get(ctx, tag)
	var terr *transport.Error
	if errors.As(err, &terr) && terr.StatusCode == http.StatusNotFound {
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
	if len(m.Layers) > maxLayers {
		return nil, nil, fmt.Errorf("%s holds %d attestations, over the %d read", tag, len(m.Layers), maxLayers)
	}
	var total int64
	for _, d := range m.Layers {
		if d.MediaType == EnvelopeMediaType && d.Size <= maxEnvelope {
			total += d.Size
		}
	}
	if total > maxEnvelopes {
		return nil, nil, fmt.Errorf("%s declares %d bytes of attestations, over the %d-byte limit", tag, total, maxEnvelopes)
	}
	var out [][]byte
	for _, d := range m.Layers {
		if d.MediaType != EnvelopeMediaType || d.Size > maxEnvelope {
			continue
		}
		l, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return nil, nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, nil, err
		}
		b, err := io.ReadAll(io.LimitReader(rc, maxEnvelope+1))
		rc.Close()
		if err != nil {
			return nil, nil, err
		}
		if len(b) <= maxEnvelope {
			out = append(out, b)
		}
	}
	return img, out, nil
}

// write stores base (or an empty attestation image) with one more layer,
// envelope, at tag, retrying as the registry client retries.
func (s *Store) write(ctx context.Context, tag name.Tag, base v1.Image, envelope []byte) error {
	if base == nil {
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(bytes.Clone(envelope), EnvelopeMediaType),
		Annotations: map[string]string{SignatureAnnotation: "", PredicateTypeAnnotation: PredicateType},
	})
	if err != nil {
		return err
	}
	// The transport retries what it can replay; a blob upload that fails
	// part-way is started over here.
	return s.rc.Retry(ctx, func(ctx context.Context, _ int) error { return s.pusher.Push(ctx, tag, img) })
}
