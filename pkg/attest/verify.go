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
)

// Verified is one promotion attestation that passed every check.
type Verified struct {
	// Digest is the attested digest.
	Digest        string    `json:"digest"`
	PredicateType string    `json:"predicateType"`
	Predicate     Predicate `json:"predicate"`
}

// VerifyError says why a digest has no valid promotion attestation.
type VerifyError struct {
	Digest string
	Reason string
}

func (e *VerifyError) Error() string { return fmt.Sprintf("%s: %s", e.Digest, e.Reason) }

// VerifyDigest checks the promotion attestations stored for digest: each
// must be a DSSE envelope of an in-toto statement that verifies with key,
// whose predicate type is PredicateType, whose subject names digest, and
// whose stamp carries every one of the required annotations. Attestations
// of other predicate types in the same tag are passed over. It returns the
// attestations that pass, or a *VerifyError saying why none does.
func VerifyDigest(ctx context.Context, st *Store, digest name.Digest, key *keys.Key, required map[string]string) ([]Verified, error) {
	tag := AttestationTag(digest)
	_, envs, err := st.read(ctx, tag)
	if err != nil {
		return nil, fmt.Errorf("reading attestations %s: %s", tag, registry.Describe(err))
	}
	var ok []Verified
	reasons := map[string]bool{}
	n := 0
	for _, e := range envs {
		if peekPredicateType(e) != PredicateType {
			continue
		}
		n++
		a, err := Open(e, key)
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
			ok = append(ok, Verified{Digest: digest.DigestStr(), PredicateType: a.PredicateType, Predicate: a.Predicate})
		}
	}
	if n == 0 {
		return nil, &VerifyError{Digest: digest.DigestStr(), Reason: "no promotion attestation found (" + PredicateType + ")"}
	}
	if len(ok) == 0 {
		return nil, &VerifyError{Digest: digest.DigestStr(), Reason: fmt.Sprintf("none of %d promotion attestations is valid: %s", n, strings.Join(slices.Sorted(maps.Keys(reasons)), "; "))}
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
