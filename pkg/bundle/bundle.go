// Package bundle makes, reads and stores Sigstore bundles (v0.3) signed by
// an organisation's own key: a DSSE envelope, the key's hint as the
// verification material, and no transparency-log entry or timestamp, as
// `cosign sign --key … --tlog-upload=false` makes them with cosign v3.
//
// Bundles are stored as OCI 1.1 referrers of the manifest they are about,
// as cosign's specs/BUNDLE_SPEC.md lays it out (referrer.go), and found
// again through the referrers API or, on registries without it, the
// referrers tag (sha256-<hex>). What the envelope says (an image signature,
// a promotion attestation) is the caller's: this package signs and checks
// payloads, it does not read them.
//
// The bundle is the protocol buffer of sigstore's protobuf-specs, written
// and read with protojson, as cosign and sigstore-go do. Key-signed
// bundles without a log need none of sigstore-go's sign and verify
// machinery (transparency logs, certificates, TUF): a key's DSSE signature
// is checked here with the key itself. Keyless bundles (an upstream's,
// checked by a source policy) are sigstore-go's business, in pkg/policy.
package bundle

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/secure-systems-lab/go-securesystemslib/dsse"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"google.golang.org/protobuf/encoding/protojson"
)

const (
	// MediaType is the media type of a v0.3 bundle: the bundle's own
	// mediaType, the referrer's artifactType and its layer's media type.
	MediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"
	// InTotoPayloadType is the DSSE payload type of an in-toto statement.
	InTotoPayloadType = "application/vnd.in-toto+json"
	// ContentDSSE is the dev.sigstore.bundle.content annotation of a
	// bundle that holds a DSSE envelope.
	ContentDSSE = "dsse-envelope"

	// maxBundle bounds the size of one bundle read from a registry. A
	// key-signed bundle is a few kilobytes.
	maxBundle = 1 << 20
)

// Hint is the public-key hint of a bundle signed by pub: the base64 SHA-256
// of its DER (PKIX) encoding, as sigstore-go names a key.
func Hint(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("encoding the public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

// SignDSSE signs payload, of payloadType, with signer as a DSSE envelope
// (the signature is over DSSE's pre-authentication encoding) and returns
// the JSON of a v0.3 bundle holding it, with signer's public-key hint as
// its verification material and no transparency-log entry. A KMS signer
// is asked once.
func SignDSSE(ctx context.Context, signer signature.Signer, payloadType string, payload []byte) ([]byte, error) {
	pub, err := signer.PublicKey(options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("reading the public key: %w", err)
	}
	hint, err := Hint(pub)
	if err != nil {
		return nil, err
	}
	sig, err := signer.SignMessage(bytes.NewReader(dsse.PAE(payloadType, payload)), options.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	return marshal(hint, &protodsse.Envelope{Payload: payload, PayloadType: payloadType, Signatures: []*protodsse.Signature{{Sig: sig}}})
}

// FromDSSE returns the JSON of a v0.3 bundle holding envelope, a DSSE
// envelope already signed (its JSON, as DSSE and cosign's .att layers
// write it: base64 payload and signatures), with pub's hint as the
// verification material and no transparency-log entry: the same signed
// statement in the bundle format, without signing again. The signature is
// not checked here; VerifyDSSE checks it.
func FromDSSE(pub crypto.PublicKey, envelope []byte) ([]byte, error) {
	hint, err := Hint(pub)
	if err != nil {
		return nil, err
	}
	var env dsse.Envelope
	if err := json.Unmarshal(envelope, &env); err != nil {
		return nil, fmt.Errorf("not a DSSE envelope: %w", err)
	}
	payload, err := env.DecodeB64Payload()
	if err != nil {
		return nil, fmt.Errorf("DSSE envelope payload: %w", err)
	}
	if env.PayloadType == "" || len(env.Signatures) == 0 {
		return nil, errors.New("DSSE envelope without a payload type or a signature")
	}
	out := &protodsse.Envelope{Payload: payload, PayloadType: env.PayloadType}
	for _, s := range env.Signatures {
		sig, err := base64.StdEncoding.DecodeString(s.Sig)
		if err != nil {
			return nil, fmt.Errorf("DSSE envelope signature: %w", err)
		}
		out.Signatures = append(out.Signatures, &protodsse.Signature{Sig: sig, Keyid: s.KeyID})
	}
	return marshal(hint, out)
}

// marshal returns the JSON of a v0.3 bundle of env with a key's hint.
func marshal(hint string, env *protodsse.Envelope) ([]byte, error) {
	b := &protobundle.Bundle{
		MediaType: MediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_PublicKey{PublicKey: &protocommon.PublicKeyIdentifier{Hint: hint}},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: env},
	}
	out, err := protojson.Marshal(b)
	if err != nil {
		return nil, fmt.Errorf("encoding the bundle: %w", err)
	}
	return out, nil
}

// Parse reads a bundle's JSON. It accepts v0.3 bundles (under either name
// of the media type) and refuses older ones, as cosign v3 does.
func Parse(b []byte) (*protobundle.Bundle, error) {
	var pb protobundle.Bundle
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &pb); err != nil {
		return nil, fmt.Errorf("not a Sigstore bundle: %w", err)
	}
	switch pb.GetMediaType() {
	case MediaType, "application/vnd.dev.sigstore.bundle+json;version=0.3":
	default:
		return nil, fmt.Errorf("bundle media type %q, want %s", pb.GetMediaType(), MediaType)
	}
	return &pb, nil
}

// ErrNotDSSE is returned by VerifyDSSE for a bundle that holds no DSSE
// envelope (a message signature).
var ErrNotDSSE = errors.New("the bundle holds no DSSE envelope")

// VerifyDSSE checks the DSSE envelope of b with v: one of its signatures
// must verify over the envelope's pre-authentication encoding. It returns
// the envelope's payload type and payload. It makes no transparency-log or
// timestamp check: a key's signature is trusted as the key is.
func VerifyDSSE(ctx context.Context, b *protobundle.Bundle, v signature.Verifier) (payloadType string, payload []byte, err error) {
	env := b.GetDsseEnvelope()
	if env == nil {
		return "", nil, ErrNotDSSE
	}
	if len(env.GetSignatures()) == 0 {
		return "", nil, errors.New("the DSSE envelope has no signature")
	}
	pae := dsse.PAE(env.GetPayloadType(), env.GetPayload())
	for _, s := range env.GetSignatures() {
		if v.VerifySignature(bytes.NewReader(s.GetSig()), bytes.NewReader(pae), options.WithContext(ctx)) == nil {
			return env.GetPayloadType(), env.GetPayload(), nil
		}
	}
	return "", nil, errors.New("the DSSE signature does not verify with the key")
}
