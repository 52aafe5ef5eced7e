package sign

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/keys"
)

// DigestBundle signs one digest with key in cosign v3's bundle format: the
// in-toto statement cosign v3 signs for an image (Statement), in a DSSE
// envelope, in a v0.3 Sigstore bundle with the key's hint and no
// transparency-log entry, stored as an OCI 1.1 referrer of the digest (the
// referrers tag on registries without the referrers API). It is idempotent
// as Digest is: a bundle by the same key for the same digest and
// annotations is found first, with the key's public half, and the key signs
// only when there is none; concurrent writers are confirmed as
// bundle.Store.Ensure does.
func DigestBundle(ctx context.Context, st *Store, digest name.Digest, annotations map[string]string, key *keys.Key) (Status, error) {
	if key.Signer == nil {
		return "", fmt.Errorf("the key cannot sign")
	}
	match := func(s bundle.Stored) bool {
		ann, reason := verifyBundle(ctx, s, digest, key, nil)
		return reason == "" && sameAnnotations(ann, annotations)
	}
	make := func(ctx context.Context) ([]byte, map[string]string, error) {
		stmt, err := Statement(digest, annotations)
		if err != nil {
			return nil, nil, err
		}
		b, err := bundle.SignDSSE(ctx, key.Signer, bundle.InTotoPayloadType, stmt)
		if err != nil {
			return nil, nil, fmt.Errorf("signing with %s: %s", key.Ref, keys.DescribeAWSError(err))
		}
		return b, map[string]string{bundle.AnnotationPredicateType: SignPredicateType}, nil
	}
	added, err := st.bundles.Ensure(ctx, digest, match, make)
	if err != nil {
		return "", err
	}
	if added {
		return Added, nil
	}
	return Present, nil
}

// verifyBundle checks one stored bundle: a v0.3 bundle whose DSSE
// signature verifies with key, over an in-toto statement of cosign's sign
// predicate type naming digest with every required annotation. It returns
// the statement's subject annotations, or why the bundle does not pass.
func verifyBundle(ctx context.Context, s bundle.Stored, digest name.Digest, key *keys.Key, required map[string]string) (map[string]any, string) {
	b, err := bundle.Parse(s.JSON)
	if err != nil {
		return nil, err.Error()
	}
	pt, p, err := bundle.VerifyDSSE(ctx, b, key)
	if err != nil {
		if err == bundle.ErrNotDSSE {
			return nil, err.Error()
		}
		return nil, "bundle signature does not verify with " + key.Ref
	}
	if pt != bundle.InTotoPayloadType {
		return nil, fmt.Sprintf("bundle payload type %q", pt)
	}
	return CheckStatement(p, digest.DigestStr(), required)
}

// verifyBundles checks the bundles found for digest and returns those
// that pass, with the reasons of those that do not.
func verifyBundles(ctx context.Context, found []bundle.Stored, digest name.Digest, key *keys.Key, required map[string]string) (ok []Verified, reasons []string) {
	for _, s := range found {
		ann, reason := verifyBundle(ctx, s, digest, key, required)
		if reason != "" {
			reasons = append(reasons, reason)
			continue
		}
		// As cosign v3 prints a verified bundle: the statement in the
		// shape of a simple-signing payload.
		ok = append(ok, Verified{Digest: digest.DigestStr(), Format: Bundle, Payload: payload.SimpleContainerImage{
			Critical: payload.Critical{
				Identity: payload.Identity{DockerReference: digest.Name()},
				Image:    payload.Image{DockerManifestDigest: digest.DigestStr()},
				Type:     SignPredicateType,
			},
			Optional: ann,
		}})
	}
	return ok, reasons
}
