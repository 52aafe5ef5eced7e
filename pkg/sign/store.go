package sign

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
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
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
func SignatureTag(digest name.Digest) name.Tag {
	return digest.Context().Tag(strings.Replace(digest.DigestStr(), ":", "-", 1) + ".sig")
}

// stored is one signature read from a .sig manifest.
type stored struct {
	payload []byte
	b64     string
}

// readSignatures returns the .sig image at tag (nil when there is none)
// and the signatures it holds.
func (s *Store) readSignatures(ctx context.Context, tag name.Tag) (v1.Image, []stored, error) {
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
	if len(m.Layers) > maxSignatures {
		return nil, nil, fmt.Errorf("%s holds %d signatures, over the %d cosign reads", tag, len(m.Layers), maxSignatures)
	}
	var total int64
	for _, d := range m.Layers {
		if d.MediaType == SimpleSigningMediaType && d.Size <= maxPayload {
			total += d.Size
		}
	}
	if total > maxPayloads {
		return nil, nil, fmt.Errorf("%s declares %d bytes of signature payloads, over the %d-byte limit", tag, total, maxPayloads)
	}
	out := make([]stored, 0, len(m.Layers))
	for _, d := range m.Layers {
		if d.MediaType != SimpleSigningMediaType || d.Size > maxPayload {
			continue // not a signature, or one no verifier reads
		}
		l, err := img.LayerByDigest(d.Digest)
		if err != nil {
			return nil, nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return nil, nil, err
		}
		p, err := io.ReadAll(io.LimitReader(rc, maxPayload+1))
		rc.Close()
		if err != nil {
			return nil, nil, err
		}
		if len(p) > maxPayload {
			continue
		}
		out = append(out, stored{payload: p, b64: d.Annotations[SignatureAnnotation]})
	}
	return img, out, nil
}

// appendSignature returns base (or an empty signature image) with one more
// signature layer.
func appendSignature(base v1.Image, payload []byte, b64 string) (v1.Image, error) {
	if base == nil {
		base = mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	}
	return mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(bytes.Clone(payload), SimpleSigningMediaType),
		Annotations: map[string]string{SignatureAnnotation: b64},
	})
}
