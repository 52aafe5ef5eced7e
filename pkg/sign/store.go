package sign

import (
	"context"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/digesttag"
)

// cosign's storage of signatures, as cosign v2 writes and reads it: an OCI
// image at the tag sha256-<hex>.sig beside the signed manifest, one layer
// per signature, the layer the simple-signing payload and its descriptor's
// annotation the base64 signature.
//
// These few lines stand in for cosign's pkg/oci packages, which link
// Rekor's models, go-openapi and their validators into the binary and made
// it larger and slower to start; docs/BENCHMARKS.md (Gains) has the
// figures and the command that measures them. The tests hold the two to
// the same bytes: the real cosign verifies what ocistow writes, and ocistow
// verifies what cosign writes.
const (
	// SimpleSigningMediaType is the media type of a signature layer.
	SimpleSigningMediaType types.MediaType = "application/vnd.dev.cosign.simplesigning.v1+json"
	// SignatureAnnotation holds the base64 signature on the layer's
	// descriptor.
	SignatureAnnotation = "dev.cosignproject.cosign/signature"
	// CertificateAnnotation holds, for a keyless signature, the PEM
	// certificate the signature was made with (cosign's Fulcio leaf).
	CertificateAnnotation = "dev.sigstore.cosign/certificate"
	// ChainAnnotation holds the PEM chain of that certificate, up to its
	// root.
	ChainAnnotation = "dev.sigstore.cosign/chain"
	// RekorBundleAnnotation holds the transparency-log entry of the
	// signature as cosign v2 records it: the entry's body, integrated
	// time, log index and log id, and the log's signed entry timestamp
	// over them.
	RekorBundleAnnotation = "dev.sigstore.cosign/bundle"
	// maxSignatures bounds the layers read from one .sig manifest, as
	// cosign bounds them.
	maxSignatures = 1000
	// maxPayload bounds one payload's size.
	maxPayload = 1 << 20
	// maxPayloads bounds the payloads read from one .sig manifest
	// together, so that memory does not grow with what a registry
	// declares.
	maxPayloads = 16 << 20
)

// SignatureTag is cosign's tag for the signatures of digest.
func SignatureTag(digest name.Digest) name.Tag { return digesttag.Tag(digest, "sig") }

// Signatures is what a .sig tag holds (cosign's simple-signing layers)
// and how much of it is read.
func Signatures() digesttag.Kind {
	return digesttag.Kind{Noun: "signature", MediaType: SimpleSigningMediaType, MaxLayers: maxSignatures, MaxLayer: maxPayload, MaxTotal: maxPayloads}
}

// stored is one signature read from a .sig manifest.
type stored struct {
	payload []byte
	b64     string
	// cert, chain and rekor are the keyless annotations, when present.
	cert, chain, rekor string
}

// readSignatures returns the .sig image at tag (nil when there is none)
// and the signatures it holds.
func (s *Store) readSignatures(ctx context.Context, tag name.Tag) (v1.Image, []stored, error) {
	img, layers, err := Signatures().Read(ctx, s.puller, tag)
	return img, storedOf(layers), err
}

func storedOf(layers []digesttag.Layer) []stored {
	out := make([]stored, len(layers))
	for i, l := range layers {
		a := l.Annotations
		out[i] = stored{payload: l.Data, b64: a[SignatureAnnotation], cert: a[CertificateAnnotation], chain: a[ChainAnnotation], rekor: a[RekorBundleAnnotation]}
	}
	return out
}

// appendSignature returns base (or an empty signature image) with one more
// signature layer.
func appendSignature(base v1.Image, payload []byte, b64 string) (v1.Image, error) {
	return Signatures().Append(base, signatureLayer(payload, b64))
}

func signatureLayer(payload []byte, b64 string) digesttag.Layer {
	return digesttag.Layer{Data: payload, Annotations: map[string]string{SignatureAnnotation: b64}}
}
