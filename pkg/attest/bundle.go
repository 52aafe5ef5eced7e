package attest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/keys"
)

// Bundle stores the attestation as cosign v3's `attest --key` stores one:
// a Sigstore bundle (v0.3) holding the same signed DSSE envelope as the
// legacy form (Envelope), with the key's hint as its verification material
// and no transparency-log entry, as an OCI 1.1 referrer of the digest
// (artifact type application/vnd.dev.sigstore.bundle.v0.3+json, the
// annotations dev.sigstore.bundle.content=dsse-envelope,
// dev.sigstore.bundle.predicateType=PredicateType and
// org.opencontainers.image.created), through the referrers API or the
// referrers tag (pkg/bundle).
//
// It is idempotent as Legacy is: a bundle of the same promotion
// (Predicate.Same) that verifies with the key and names the digest, by
// ocistow or by cosign v3, is found first with the key's public half and
// nothing is written. Concurrent writers are confirmed as
// bundle.Store.Ensure does.
func (pr *Promotion) Bundle(ctx context.Context, st *Store) (Status, error) {
	if pr.key == nil || pr.key.Signer == nil {
		return "", errors.New("the key cannot sign")
	}
	match := func(s bundle.Stored) bool {
		if bundlePredicateType(s) != PredicateType {
			return false
		}
		a, err := openBundle(ctx, s, pr.key)
		return err == nil && a.Names(pr.digest.DigestStr()) && a.Predicate.Same(pr.predicate)
	}
	make := func(ctx context.Context) ([]byte, map[string]string, error) {
		env, err := pr.Envelope(ctx)
		if err != nil {
			return nil, nil, err
		}
		pub, err := pr.key.PublicKey(options.WithContext(ctx))
		if err != nil {
			return nil, nil, fmt.Errorf("reading the public key of %s: %s", pr.key.Ref, keys.DescribeAWSError(err))
		}
		b, err := bundle.FromDSSE(pub, env)
		if err != nil {
			return nil, nil, err
		}
		return b, map[string]string{bundle.AnnotationPredicateType: PredicateType}, nil
	}
	added, err := st.bundles.Ensure(ctx, pr.digest, match, make)
	if err != nil {
		return "", err
	}
	if added {
		return Added, nil
	}
	return Present, nil
}

// openBundle verifies a stored bundle's DSSE envelope with key and returns
// what its statement says, as Open does for a legacy envelope.
func openBundle(ctx context.Context, s bundle.Stored, key *keys.Key) (*Attestation, error) {
	b, err := bundle.Parse(s.JSON)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotStatement, err)
	}
	pt, payload, err := bundle.VerifyDSSE(ctx, b, key)
	if errors.Is(err, bundle.ErrNotDSSE) {
		return nil, fmt.Errorf("%w: %v", ErrNotStatement, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w with %s", ErrSignature, key.Ref)
	}
	if pt != PayloadType {
		return nil, fmt.Errorf("%w: payload type %q", ErrNotStatement, pt)
	}
	return parseStatement(payload)
}

// bundlePredicateType returns the predicate type a bundle's statement
// claims, without verifying anything: to tell promotion attestations from
// the signatures and other attestations among a digest's referrers.
func bundlePredicateType(s bundle.Stored) string {
	b, err := bundle.Parse(s.JSON)
	if err != nil || b.GetDsseEnvelope() == nil {
		return ""
	}
	var st struct {
		PredicateType string `json:"predicateType"`
	}
	if json.Unmarshal(b.GetDsseEnvelope().GetPayload(), &st) != nil {
		return ""
	}
	return st.PredicateType
}
