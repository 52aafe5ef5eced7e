package sign

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
)

// Verified is one signature that passed every check, with its payload:
// for a bundle, its in-toto statement in the shape of a simple-signing
// payload (the predicate type as the type, the subject's annotations as
// the optional section), as cosign v3 prints it.
type Verified struct {
	Digest  string                       `json:"digest"`
	Format  Format                       `json:"format"`
	Payload payload.SimpleContainerImage `json:"payload"`
}

// VerifyError says why a digest has no valid signature.
type VerifyError struct {
	Digest string
	Reason string
}

func (e *VerifyError) Error() string { return fmt.Sprintf("%s: %s", e.Digest, e.Reason) }

// VerifyDigest checks the signatures stored for digest in both formats:
// the legacy .sig tag and Sigstore bundles among its referrers. Each must
// verify with key, name this digest and be a cosign container image
// signature (for a bundle, an in-toto statement of cosign's sign predicate
// type), and carry every one of the required annotations. It returns the
// signatures that pass, each with its format, or a *VerifyError when none
// does. It reads through st.
func VerifyDigest(ctx context.Context, st *Store, digest name.Digest, key *keys.Key, required map[string]string) ([]Verified, error) {
	c, err := st.Candidates(ctx, digest)
	if err != nil {
		return nil, err
	}
	return c.Verify(ctx, key, required)
}

// Candidates are the signatures stored for one digest in both formats,
// read once so that they can be checked against several keys (a source
// policy's).
type Candidates struct {
	// Digest is the signed digest.
	Digest name.Digest
	legacy []stored
	// Bundles are the Sigstore bundles among the digest's referrers.
	Bundles []bundle.Stored
	// BundlesErr is why the referrers could not be listed, when they
	// could not: a registry that fails there does not fail a digest with
	// a valid legacy signature.
	BundlesErr error
}

// Len is the number of signatures found, in both formats.
func (c *Candidates) Len() int { return len(c.legacy) + len(c.Bundles) }

// LegacyKeyless is one keyless signature in the legacy .sig format, as
// cosign v2 stores it: the layer's payload and its descriptor's
// annotations, none of them checked.
type LegacyKeyless struct {
	// Payload is the simple-signing payload the signature is over.
	Payload []byte
	// Signature is the base64 signature (SignatureAnnotation).
	Signature string
	// Certificate is the PEM signing certificate (CertificateAnnotation),
	// Chain its PEM chain (ChainAnnotation).
	Certificate, Chain string
	// RekorBundle is the JSON transparency-log entry with its signed entry
	// timestamp (RekorBundleAnnotation); empty when the signature was not
	// logged.
	RekorBundle string
}

// LegacyKeyless returns the legacy signatures that carry a certificate:
// cosign v2's keyless signatures.
func (c *Candidates) LegacyKeyless() []LegacyKeyless {
	var out []LegacyKeyless
	for _, s := range c.legacy {
		if s.cert != "" {
			out = append(out, LegacyKeyless{Payload: s.payload, Signature: s.b64, Certificate: s.cert, Chain: s.chain, RekorBundle: s.rekor})
		}
	}
	return out
}

// Candidates reads the signatures stored for digest: the .sig tag's, and
// the bundles among its referrers.
func (s *Store) Candidates(ctx context.Context, digest name.Digest) (*Candidates, error) {
	tag := SignatureTag(digest)
	_, list, err := s.readSignatures(ctx, tag)
	if err != nil {
		return nil, fmt.Errorf("reading signatures %s: %s", tag, registry.Describe(err))
	}
	c := &Candidates{Digest: digest, legacy: list}
	c.Bundles, c.BundlesErr = s.bundles.Find(ctx, digest)
	return c, nil
}

// Verify checks the candidates with key, as VerifyDigest does.
func (c *Candidates) Verify(ctx context.Context, key *keys.Key, required map[string]string) ([]Verified, error) {
	digest := c.Digest
	var ok []Verified
	reasons := map[string]bool{}
	for _, s := range c.legacy {
		p := s.payload
		if s.b64 == "" {
			reasons["no signature annotation"] = true
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s.b64)
		if err != nil {
			reasons["signature is not base64"] = true
			continue
		}
		if err := key.VerifySignature(bytes.NewReader(raw), bytes.NewReader(p), options.WithContext(ctx)); err != nil {
			reasons["signature does not verify with "+key.Ref] = true
			continue
		}
		sci, reason := CheckPayload(p, digest.DigestStr(), required)
		if reason != "" {
			reasons[reason] = true
			continue
		}
		ok = append(ok, Verified{Digest: digest.DigestStr(), Format: Legacy, Payload: sci})
	}
	if c.BundlesErr != nil && len(ok) == 0 {
		return nil, c.BundlesErr
	}
	// A registry whose referrers cannot be listed does not fail a digest
	// with a valid legacy signature.
	bok, breasons := verifyBundles(ctx, c.Bundles, digest, key, required)
	ok = append(ok, bok...)
	for _, r := range breasons {
		reasons[r] = true
	}
	total := c.Len()
	if total == 0 {
		return nil, &VerifyError{Digest: digest.DigestStr(), Reason: "no signatures found (neither a .sig tag nor a Sigstore bundle referrer)"}
	}
	if len(ok) == 0 {
		var rs []string
		for r := range reasons {
			rs = append(rs, r)
		}
		return nil, &VerifyError{Digest: digest.DigestStr(), Reason: fmt.Sprintf("none of %d signatures is valid: %s", total, strings.Join(sorted(rs), "; "))}
	}
	return ok, nil
}

// CheckPayload checks a verified signature's payload: a cosign container
// image signature naming digest and carrying every required annotation. It
// returns the parsed payload, or why it does not pass.
func CheckPayload(p []byte, digest string, required map[string]string) (payload.SimpleContainerImage, string) {
	var sci payload.SimpleContainerImage
	if err := json.Unmarshal(p, &sci); err != nil {
		return sci, "payload is not a simple-signing payload"
	}
	if sci.Critical.Type != payload.CosignSignatureType {
		return sci, fmt.Sprintf("payload type %q", sci.Critical.Type)
	}
	if sci.Critical.Image.DockerManifestDigest != digest {
		return sci, "payload names another digest, " + sci.Critical.Image.DockerManifestDigest
	}
	if missing := missingAnnotations(sci.Optional, required); missing != "" {
		return sci, "annotation " + missing + " missing or different"
	}
	return sci, ""
}

func missingAnnotations(have map[string]any, want map[string]string) string {
	for _, k := range sorted(keysOf(want)) {
		if v, ok := have[k]; !ok || fmt.Sprint(v) != want[k] {
			return k + "=" + want[k]
		}
	}
	return ""
}

func keysOf(m map[string]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
