package attest

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/digesttag"
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
func AttestationTag(digest name.Digest) name.Tag { return digesttag.Tag(digest, "att") }

// Attestations is what a .att tag holds (DSSE envelope layers) and how
// much of it is read.
func Attestations() digesttag.Kind {
	return digesttag.Kind{Noun: "attestation", MediaType: EnvelopeMediaType, MaxLayers: maxLayers, MaxLayer: maxEnvelope, MaxTotal: maxEnvelopes}
}

// envelopeLayer is an attestation layer as cosign writes it.
func envelopeLayer(envelope []byte) digesttag.Layer {
	return digesttag.Layer{Data: envelope, Annotations: map[string]string{SignatureAnnotation: "", PredicateTypeAnnotation: PredicateType}}
}

func envelopesOf(layers []digesttag.Layer) [][]byte {
	out := make([][]byte, len(layers))
	for i, l := range layers {
		out[i] = l.Data
	}
	return out
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
	img, layers, err := Attestations().Read(ctx, s.puller, tag)
	return img, envelopesOf(layers), err
}

// write stores base (or an empty attestation image) with one more layer,
// envelope, at tag, retrying as the registry client retries.
func (s *Store) write(ctx context.Context, tag name.Tag, base v1.Image, envelope []byte) error {
	img, err := Attestations().Append(base, envelopeLayer(envelope))
	if err != nil {
		return err
	}
	return s.rc.Retry(ctx, func(ctx context.Context, _ int) error { return s.pusher.Push(ctx, tag, img) })
}
