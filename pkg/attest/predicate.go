// Package attest records each promotion as a signed in-toto attestation:
// an in-toto v1 statement whose subject is a promoted digest and whose
// predicate (PredicateType) says where it came from, how it was stamped and
// by which ocistow, signed with the promotion's key as a DSSE envelope and
// stored beside the image as cosign stores attestations: cosign v2's
// sha256-<hex>.att tag (Promotion.Legacy) and/or cosign v3's Sigstore
// bundle referrer (Promotion.Bundle), so that `cosign verify-attestation
// --type https://github.com/ocistow/ocistow/promotion/v1 --key …` verifies
// it.
//
// Making the signed envelope (Envelope, Promotion.Envelope) is separate
// from storing it, so that both forms hold the same envelope, signed once.
package attest

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
)

// PredicateType is the in-toto predicate type of a promotion attestation.
const PredicateType = "https://github.com/ocistow/ocistow/promotion/v1"

// Predicate is what a promotion attestation says about its subject;
// docs/promotion-predicate.md describes each field.
type Predicate struct {
	// Source is the image promoted: its reference as ocistow resolved it
	// and the digest it resolved to.
	Source Image `json:"source"`
	// Destination is where it was promoted to: the destination reference
	// and the digest that reference points at after the promotion (for a
	// multi-platform image, the index; the subject may be one of its
	// manifests).
	Destination Image `json:"destination"`
	// Stamp is what ocistow was asked to stamp the image with.
	Stamp Stamp `json:"stamp"`
	// Platforms are the platforms the promotion kept (-platform), as the
	// promoted index lists them; absent without -platform and for a
	// single-platform source, which is kept whole.
	Platforms []string `json:"platforms,omitempty"`
	// Ocistow is the program that promoted the image.
	Ocistow Program `json:"ocistow"`
	// PromotedAt is when the attestation was made, in UTC, RFC 3339.
	PromotedAt string `json:"promotedAt"`
}

// Image is an image reference and the digest it resolved to.
type Image struct {
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
}

// Stamp is the stamp a promotion was asked for: Annotations went on every
// manifest and index and, as labels, into every image config;
// ManifestAnnotations on manifests and indexes only; Labels into image
// configs only.
type Stamp struct {
	Annotations         map[string]string `json:"annotations,omitempty"`
	ManifestAnnotations map[string]string `json:"manifestAnnotations,omitempty"`
	Labels              map[string]string `json:"labels,omitempty"`
}

// Program names the ocistow that made an attestation.
type Program struct {
	// Version is what `ocistow -version` prints.
	Version string `json:"version"`
}

// Same reports whether p and q record the same promotion: the same
// source, destination, stamp and platforms. When they were recorded and by
// which version of ocistow are not compared, so that re-running a
// promotion (with this or another version) finds its attestation present
// rather than adding another.
func (p Predicate) Same(q Predicate) bool {
	return bytes.Equal(p.identity(), q.identity())
}

// identity is p without the time and version, as canonical JSON: empty
// and absent maps and lists alike, map keys sorted.
func (p Predicate) identity() []byte {
	p.PromotedAt, p.Ocistow = "", Program{}
	p.Stamp = Stamp{Annotations: nonEmpty(p.Stamp.Annotations), ManifestAnnotations: nonEmpty(p.Stamp.ManifestAnnotations), Labels: nonEmpty(p.Stamp.Labels)}
	if len(p.Platforms) == 0 {
		p.Platforms = nil
	} else {
		p.Platforms = slices.Sorted(slices.Values(p.Platforms))
	}
	b, err := json.Marshal(p)
	if err != nil {
		return nil // a struct of strings always marshals
	}
	return b
}

func nonEmpty(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	return maps.Clone(m)
}
