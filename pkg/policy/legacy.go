package policy

import (
	"crypto"
	_ "crypto/sha256" // the hashes hashOf names
	_ "crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"

	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/ocistow/ocistow/pkg/sign"
)

// cosign v2's keyless signatures in the legacy .sig format carry what a
// Sigstore bundle carries, spread over the signature layer's annotations:
// the signature over the simple-signing payload, the Fulcio certificate,
// and the Rekor entry with its signed entry timestamp. legacyBundle puts
// them into the v0.1 bundle they correspond to (a message signature, the
// certificate, a transparency-log entry with its inclusion promise), so
// that sigstore-go verifies them exactly as it verifies bundles: the
// mapping below is field for field and checks nothing; the certificate
// chain, the signed entry timestamp, the entry's agreement with the
// signature, certificate and payload, and the identity are sigstore-go's.
// cosign's own conversion (pkg/cosign) links Rekor's generated client and
// go-openapi into the binary (see pkg/sign/store.go).

// bundleV01 is the media type of a v0.1 Sigstore bundle, the version whose
// log entries carry an inclusion promise (a signed entry timestamp) rather
// than an inclusion proof, as cosign v2's Rekor bundles do.
const bundleV01 = "application/vnd.dev.sigstore.bundle+json;version=0.1"

// rekorBundle is the JSON of the dev.sigstore.cosign/bundle annotation
// (cosign's pkg/cosign/bundle.RekorBundle): the log's signed entry
// timestamp over the payload, and the payload (the base64 canonicalized
// entry body, its integrated time, log index and hex log id).
type rekorBundle struct {
	SignedEntryTimestamp []byte            `json:"SignedEntryTimestamp"`
	Payload              tlog.RekorPayload `json:"Payload"`
}

// entryHeader is what legacyBundle reads of a Rekor entry body: its kind
// and version, and, for a hashedrekord, the hash algorithm of the signed
// data.
type entryHeader struct {
	Kind       string `json:"kind"`
	APIVersion string `json:"apiVersion"`
	Spec       struct {
		Data struct {
			Hash struct {
				Algorithm string `json:"algorithm"`
			} `json:"hash"`
		} `json:"data"`
	} `json:"spec"`
}

// legacyBundle returns the Sigstore bundle that holds s's signature,
// certificate and transparency-log entry, or why s cannot be one.
func legacyBundle(s sign.LegacyKeyless) (*sgbundle.Bundle, error) {
	if s.Signature == "" {
		return nil, errors.New("no signature annotation")
	}
	sig, err := base64.StdEncoding.DecodeString(s.Signature)
	if err != nil {
		return nil, errors.New("the signature is not base64")
	}
	certs, err := cryptoutils.UnmarshalCertificatesFromPEM([]byte(s.Certificate))
	if err != nil || len(certs) == 0 {
		return nil, errors.New("the certificate annotation is not a PEM certificate")
	}
	if s.RekorBundle == "" {
		return nil, errors.New("no transparency-log entry (no " + sign.RekorBundleAnnotation + " annotation: signed without uploading to Rekor)")
	}
	var rb rekorBundle
	if err := json.Unmarshal([]byte(s.RekorBundle), &rb); err != nil {
		return nil, errors.New("the Rekor bundle annotation is not cosign's JSON")
	}
	if len(rb.SignedEntryTimestamp) == 0 {
		return nil, errors.New("the Rekor bundle has no signed entry timestamp")
	}
	b64, ok := rb.Payload.Body.(string)
	if !ok {
		return nil, errors.New("the Rekor bundle's body is not a string")
	}
	body, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, errors.New("the Rekor bundle's body is not base64")
	}
	logID, err := hex.DecodeString(rb.Payload.LogID)
	if err != nil || len(logID) == 0 {
		return nil, errors.New("the Rekor bundle's log id is not hex")
	}
	var h entryHeader
	if err := json.Unmarshal(body, &h); err != nil || h.Kind == "" || h.APIVersion == "" {
		return nil, errors.New("the Rekor bundle's body is not a Rekor entry")
	}
	alg, hash, err := hashOf(h.Spec.Data.Hash.Algorithm)
	if err != nil {
		return nil, err
	}
	hasher := hash.New()
	hasher.Write(s.Payload)
	pb := &protobundle.Bundle{
		MediaType: bundleV01,
		VerificationMaterial: &protobundle.VerificationMaterial{
			// v0.1 names the signing certificate as a chain; its leaf is
			// all sigstore-go reads, the intermediates come from the
			// trusted root, so the chain annotation is not read.
			Content: &protobundle.VerificationMaterial_X509CertificateChain{X509CertificateChain: &protocommon.X509CertificateChain{
				Certificates: []*protocommon.X509Certificate{{RawBytes: certs[0].Raw}},
			}},
			TlogEntries: []*protorekor.TransparencyLogEntry{{
				LogIndex:          rb.Payload.LogIndex,
				LogId:             &protocommon.LogId{KeyId: logID},
				KindVersion:       &protorekor.KindVersion{Kind: h.Kind, Version: h.APIVersion},
				IntegratedTime:    rb.Payload.IntegratedTime,
				InclusionPromise:  &protorekor.InclusionPromise{SignedEntryTimestamp: rb.SignedEntryTimestamp},
				CanonicalizedBody: body,
			}},
		},
		Content: &protobundle.Bundle_MessageSignature{MessageSignature: &protocommon.MessageSignature{
			MessageDigest: &protocommon.HashOutput{Algorithm: alg, Digest: hasher.Sum(nil)},
			Signature:     sig,
		}},
	}
	b, err := sgbundle.NewBundle(pb)
	if err != nil {
		return nil, fmt.Errorf("not a valid bundle: %w", err)
	}
	return b, nil
}

// hashOf maps a Rekor entry's hash algorithm name to the bundle's and
// Go's; an entry that names none (not a hashedrekord) is taken as SHA-256
// and left to sigstore-go to refuse.
func hashOf(name string) (protocommon.HashAlgorithm, crypto.Hash, error) {
	switch name {
	case "", "sha256":
		return protocommon.HashAlgorithm_SHA2_256, crypto.SHA256, nil
	case "sha384":
		return protocommon.HashAlgorithm_SHA2_384, crypto.SHA384, nil
	case "sha512":
		return protocommon.HashAlgorithm_SHA2_512, crypto.SHA512, nil
	}
	return 0, 0, fmt.Errorf("the Rekor entry's hash algorithm %q is not supported", name)
}
