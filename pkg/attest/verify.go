package attest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/sign"
)

// Verified is one promotion attestation that passed every check.
type Verified struct {
	// Digest is the attested digest.
	Digest        string    `json:"digest"`
	PredicateType string    `json:"predicateType"`
	Predicate     Predicate `json:"predicate"`
	// Format is where it was found: cosign's .att tag (legacy) or a
	// Sigstore bundle referrer (bundle).
	Format sign.Format `json:"format"`
}

// VerifyError says why a digest has no valid promotion attestation.
type VerifyError struct {
	Digest string
	Reason string
}

func (e *VerifyError) Error() string { return fmt.Sprintf("%s: %s", e.Digest, e.Reason) }

// VerifyDigest checks the promotion attestations stored for digest, in
// both forms: the envelopes in cosign's .att tag and the Sigstore bundles
// among the digest's referrers. Each must be a DSSE envelope of an in-toto
// statement that verifies with key, whose predicate type is PredicateType,
// whose subject names digest, and whose stamp carries every one of the
// required annotations. Attestations of other predicate types, and
// signature bundles, are passed over. It returns the attestations that
// pass, legacy first, or a *VerifyError saying why none does.
func VerifyDigest(ctx context.Context, st *Store, digest name.Digest, key *keys.Key, required map[string]string) ([]Verified, error) {
	tag := AttestationTag(digest)
	_, envs, err := st.read(ctx, tag)
	if err != nil {
		return nil, fmt.Errorf("reading attestations %s: %s", tag, registry.Describe(err))
	}
	found, err := st.bundles.Find(ctx, digest)
	if err != nil {
		return nil, err
	}
	type candidate struct {
		format sign.Format
		open   func() (*Attestation, error)
	}
	var candidates []candidate
	for _, e := range envs {
		if peekPredicateType(e) == PredicateType {
			candidates = append(candidates, candidate{sign.Legacy, func() (*Attestation, error) { return Open(e, key) }})
		}
	}
	for _, b := range found {
		if bundlePredicateType(b) == PredicateType {
			candidates = append(candidates, candidate{sign.Bundle, func() (*Attestation, error) { return openBundle(ctx, b, key) }})
		}
	}
	var ok []Verified
	reasons := map[string]bool{}
	for _, c := range candidates {
		a, err := c.open()
		switch {
		case errors.Is(err, ErrSignature):
			reasons[fmt.Sprintf("signature does not verify with %s", key.Ref)] = true
		case err != nil:
			reasons[err.Error()] = true
		case !a.Names(digest.DigestStr()):
			reasons["attestation names another subject, "+strings.Join(a.Subjects, ", ")] = true
		default:
			if missing := missingAnnotation(a.Predicate.Stamp.Annotations, required); missing != "" {
				reasons["annotation "+missing+" missing or different"] = true
				continue
			}
			ok = append(ok, Verified{Digest: digest.DigestStr(), PredicateType: a.PredicateType, Predicate: a.Predicate, Format: c.format})
		}
	}
	if len(candidates) == 0 {
		return nil, &VerifyError{Digest: digest.DigestStr(), Reason: "no promotion attestation found (" + PredicateType + ")"}
	}
	if len(ok) == 0 {
		return nil, &VerifyError{Digest: digest.DigestStr(), Reason: fmt.Sprintf("none of %d promotion attestations is valid: %s", len(candidates), strings.Join(slices.Sorted(maps.Keys(reasons)), "; "))}
	}
	return ok, nil
}

func missingAnnotation(have, want map[string]string) string {
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if v, ok := have[k]; !ok || v != want[k] {
			return k + "=" + want[k]
		}
	}
	return ""
}
