package policy

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	sgbundle "github.com/sigstore/sigstore-go/pkg/bundle"
	"github.com/sigstore/sigstore-go/pkg/verify"

	"github.com/ocistow/ocistow/internal/oneline"
	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/sign"
)

// bundleHint is the public-key hint s names, or "" (a keyless bundle, or
// not a bundle).
func bundleHint(s bundle.Stored) string {
	b, err := bundle.Parse(s.JSON)
	if err != nil {
		return ""
	}
	return b.GetVerificationMaterial().GetPublicKey().GetHint()
}

// verifier is sigstore-go's, configured as cosign verifies keyless
// signatures by default.
type verifier = *verify.Verifier

// newVerifier returns the verifier of keyless signatures against tm: a
// transparency-log entry is required (its inclusion proof or signed entry
// timestamp checked, and the log's integrated time or a signed timestamp
// used as the time of signing), and so are SCTs in the certificate when
// the trusted root names certificate-transparency logs (the public-good
// root does).
func newVerifier(p *Policy) (verifier, error) {
	opts := []verify.VerifierOption{verify.WithTransparencyLog(1), verify.WithObserverTimestamps(1)}
	if len(p.TrustedRoot.CTLogs()) > 0 {
		opts = append(opts, verify.WithSignedCertificateTimestamps(1))
	}
	v, err := verify.NewVerifier(p.TrustedRoot, opts...)
	if err != nil {
		return nil, fmt.Errorf("trusted root: %w", err)
	}
	return v, nil
}

// check looks among c's bundles and keyless legacy signatures for a
// keyless signature of c's digest by p's identity and issuer, carrying p's
// annotations. It returns the one that passes, or why none does.
func (kl *keyless) check(ctx context.Context, p *Policy, c *sign.Candidates) (*Satisfied, []string, error) {
	kl.once.Do(func() { kl.v, kl.err = newVerifier(p) })
	if kl.err != nil {
		return nil, nil, kl.err
	}
	digest := c.Digest.DigestStr()
	alg, hexDigest, _ := strings.Cut(digest, ":")
	raw, err := hex.DecodeString(hexDigest)
	if err != nil {
		return nil, nil, fmt.Errorf("invalid digest %s", digest)
	}
	id, err := verify.NewShortCertificateIdentity(p.Issuer, "", "", p.Identity)
	if err != nil {
		return nil, nil, fmt.Errorf("source identity: %w", err)
	}
	var reasons []string
	keyless := 0
	for _, s := range c.Bundles {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		var b sgbundle.Bundle
		if err := b.UnmarshalJSON(s.JSON); err != nil {
			reasons = append(reasons, "keyless: a bundle sigstore-go cannot read: "+oneline.String(err.Error()))
			continue
		}
		vc, err := b.VerificationContent()
		if err != nil || vc.Certificate() == nil {
			continue // signed by a key: the keys' business
		}
		keyless++
		res, err := kl.v.Verify(&b, verify.NewPolicy(verify.WithArtifactDigest(alg, raw), verify.WithCertificateIdentity(id)))
		if err != nil {
			reasons = append(reasons, keylessReason(err))
			continue
		}
		env, err := b.Envelope()
		if err != nil || env == nil {
			reasons = append(reasons, "keyless: the bundle holds no DSSE envelope")
			continue
		}
		payload, err := env.DecodeB64Payload()
		if err != nil {
			reasons = append(reasons, "keyless: the envelope's payload is not base64")
			continue
		}
		if _, reason := sign.CheckStatement(payload, digest, p.Annotations); reason != "" {
			reasons = append(reasons, payloadReason(reason))
			continue
		}
		return satisfied(digest, sign.Bundle, res), nil, nil
	}
	// cosign v2's keyless signatures in the .sig tag: the same verifier
	// and policy, over the simple-signing payload the signature is of.
	for _, s := range c.LegacyKeyless() {
		if ctx.Err() != nil {
			return nil, nil, ctx.Err()
		}
		keyless++
		b, err := legacyBundle(s)
		if err != nil {
			reasons = append(reasons, "keyless: a legacy .sig signature with a certificate: "+err.Error())
			continue
		}
		res, err := kl.v.Verify(b, verify.NewPolicy(verify.WithArtifact(bytes.NewReader(s.Payload)), verify.WithCertificateIdentity(id)))
		if err != nil {
			reasons = append(reasons, keylessReason(err))
			continue
		}
		if _, reason := sign.CheckPayload(s.Payload, digest, p.Annotations); reason != "" {
			reasons = append(reasons, payloadReason(reason))
			continue
		}
		return satisfied(digest, sign.Legacy, res), nil, nil
	}
	if keyless == 0 {
		reasons = append(reasons, "no keyless signature (neither a Sigstore bundle nor a .sig signature with a certificate)")
	}
	return nil, reasons, nil
}

// satisfied names the certificate identity and issuer sigstore-go verified
// for digest's signature in format.
func satisfied(digest string, format sign.Format, res *verify.VerificationResult) *Satisfied {
	sat := &Satisfied{Digest: digest, Format: format}
	if res.Signature != nil && res.Signature.Certificate != nil {
		sat.Identity = res.Signature.Certificate.SubjectAlternativeName
		sat.Issuer = res.Signature.Certificate.Issuer
	}
	return sat
}

// payloadReason words pkg/sign's reason a verified payload does not pass
// as the policy's.
func payloadReason(reason string) string {
	if strings.HasPrefix(reason, "annotation ") {
		return missingAnnotation(reason)
	}
	return reason
}

// keylessReason says why sigstore-go refused a keyless signature, in the
// policy's words.
func keylessReason(err error) string {
	var san *verify.ErrValueRegexMismatch
	var iss *verify.ErrValueMismatch
	msg := oneline.String(err.Error())
	switch {
	case errors.As(err, &san):
		return "identity mismatch: " + san.Error()
	case errors.As(err, &iss):
		return "issuer mismatch: " + iss.Error()
	case strings.HasPrefix(msg, "failed to verify signature"),
		strings.HasPrefix(msg, "failed to verify log inclusion") && strings.Contains(msg, "does not match"):
		return "tampered: " + msg
	case strings.HasPrefix(msg, "failed to verify log inclusion"):
		return "keyless: transparency log: " + msg
	}
	return "keyless: " + msg
}
