// Package policy is the source policy: what an upstream image must carry
// before ocistow promotes it. A source digest passes when at least one of
// its signatures, in cosign's legacy format (the .sig tag) or as a Sigstore
// bundle among its OCI 1.1 referrers, was made by one of the policy's keys,
// or, keyless, by a Fulcio certificate for the policy's identity and OIDC
// issuer, logged in a transparency log the trusted root names; and names
// the digest with every required annotation.
//
// The policy reads the signature artifacts only (the .sig tag, the
// referrers and the bundles they list), never the image's own manifests:
// the digests it checks come from what the copy reads anyway (see
// promote.WithApproval).
//
// Key signatures are checked with the keys themselves, through pkg/sign
// (the code that checks ocistow's own signatures). Keyless signatures,
// bundles and cosign v2's keyless .sig signatures (turned into the bundles
// they amount to, see legacyBundle), are checked with sigstore-go's verify
// package against the trusted root:
// certificate chain, transparency-log entry (inclusion proof and signed
// entry timestamp), SCTs when the root names certificate-transparency logs,
// and the certificate's identity and issuer. ocistow does not verify
// certificates or logs itself.
package policy

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strings"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"golang.org/x/sync/errgroup"

	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/sign"
)

// Policy is what a source must carry to be promoted. The zero Policy asks
// for nothing (see Empty).
type Policy struct {
	// Keys: a signature by any one of them passes (public key files,
	// private key files or KMS keys).
	Keys []*keys.Key
	// Identity is a regular expression (Go syntax, unanchored as cosign's
	// --certificate-identity-regexp) the certificate's subject alternative
	// name must match, and Issuer the OIDC issuer it must name exactly, for
	// a keyless signature to pass. They go together.
	Identity string
	Issuer   string
	// TrustedRoot holds the certificate authorities, transparency logs and
	// CT logs keyless signatures are checked against; needed with
	// Identity.
	TrustedRoot root.TrustedMaterial
	// Annotations must all be in the signature's payload (the optional
	// section of a legacy payload, the subject's annotations of a bundle's
	// statement).
	Annotations map[string]string
	// Children: for an index, every manifest it lists that is promoted
	// must pass too, not only the index.
	Children bool
}

// Empty reports whether the policy asks for nothing: no key and no
// identity.
func (p *Policy) Empty() bool {
	return p == nil || (len(p.Keys) == 0 && p.Identity == "" && p.Issuer == "")
}

// Validate checks that the policy can be applied: an identity goes with an
// issuer and a trusted root, and compiles; annotations and children need
// keys or an identity to check them with.
func (p *Policy) Validate() error {
	if p == nil {
		return nil
	}
	switch {
	case p.Identity != "" && p.Issuer == "":
		return errors.New("a source identity needs its OIDC issuer (-source-issuer)")
	case p.Issuer != "" && p.Identity == "":
		return errors.New("a source issuer needs the identity it issued to (-source-identity)")
	case p.Empty() && (len(p.Annotations) > 0 || p.Children):
		return errors.New("source annotations and children are checked on signatures: give -source-key or -source-identity")
	}
	if p.Identity != "" {
		if _, err := regexp.Compile(p.Identity); err != nil {
			return fmt.Errorf("source identity %q is not a regular expression: %w", p.Identity, err)
		}
		if p.TrustedRoot == nil {
			return errors.New("a source identity needs a trusted root")
		}
	}
	return nil
}

// Satisfied says which signature satisfied the policy for one digest.
type Satisfied struct {
	Digest string `json:"digest"`
	// Format is the signature's: legacy or bundle.
	Format sign.Format `json:"format"`
	// Key is the key that verified it, for a key signature.
	Key string `json:"key,omitempty"`
	// Identity and Issuer are the certificate's, for a keyless signature.
	Identity string `json:"identity,omitempty"`
	Issuer   string `json:"issuer,omitempty"`
}

// By names what made the signature: "key REF" or "identity ID (issuer
// URL)".
func (s Satisfied) By() string {
	if s.Key != "" {
		return "key " + s.Key
	}
	return fmt.Sprintf("identity %s (issuer %s)", s.Identity, s.Issuer)
}

// Result is what a source passed with: one signature per digest checked,
// the source digest first.
type Result struct {
	Digests []Satisfied `json:"digests"`
}

// Summary is one line naming, per distinct signer and format, what
// satisfied the policy: "key cosign.pub (legacy)".
func (r *Result) Summary() string {
	if r == nil {
		return ""
	}
	var out []string
	for _, d := range r.Digests {
		s := d.By() + " (" + string(d.Format) + ")"
		if !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return strings.Join(out, ", ")
}

// RefusedError is a source the policy refuses: its digest and why.
type RefusedError struct {
	Digest string
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("source %s refused by the source policy: %s", e.Digest, e.Reason)
}

// maxParallel bounds the digests checked at once.
const maxParallel = 8

// Check checks source and, with Children, children against p, reading
// their signatures through st. It returns which signature satisfied the
// policy for each, or a *RefusedError naming the first digest that has
// none; any other error is a failure to read the signatures.
func Check(ctx context.Context, st *sign.Store, p *Policy, source name.Digest, children []name.Digest) (*Result, error) {
	digests := []name.Digest{source}
	if p.Children {
		digests = append(digests, children...)
	}
	out := make([]Satisfied, len(digests))
	errs := make([]error, len(digests))
	var kl keyless
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxParallel)
	for i, d := range digests {
		g.Go(func() error {
			s, err := p.check(gctx, st, &kl, d)
			if err != nil {
				errs[i] = err
				var re *RefusedError
				if !errors.As(err, &re) {
					return err // stop: the registry fails
				}
				return nil
			}
			out[i] = *s
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	// The first refused digest in order: the source's own before its
	// children's.
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	return &Result{Digests: out}, nil
}

// check finds a signature of digest that satisfies p. The signature
// artifacts are looked for with a HEAD first (registry.WithHeadFirst): a
// source without a .sig tag, or without a referrers tag, costs no pull
// for it on a registry that meters them.
func (p *Policy) check(ctx context.Context, st *sign.Store, kl *keyless, digest name.Digest) (*Satisfied, error) {
	c, err := st.Candidates(registry.WithHeadFirst(ctx), digest)
	if err != nil {
		return nil, err
	}
	d := digest.DigestStr()
	if c.Len() == 0 {
		if c.BundlesErr != nil {
			return nil, c.BundlesErr
		}
		return nil, &RefusedError{Digest: d, Reason: "no signatures (neither a .sig tag nor a Sigstore bundle referrer)"}
	}
	var reasons []string
	for _, k := range p.Keys {
		v, err := c.Verify(ctx, k, p.Annotations)
		if err == nil {
			return &Satisfied{Digest: d, Format: v[0].Format, Key: k.Ref}, nil
		}
		var ve *sign.VerifyError
		if !errors.As(err, &ve) {
			return nil, err
		}
		reasons = append(reasons, keyReasons(ctx, c, k, ve.Reason)...)
	}
	if p.Identity != "" {
		s, why, err := kl.check(ctx, p, c)
		if err != nil {
			return nil, err
		}
		if s != nil {
			return s, nil
		}
		if c.BundlesErr != nil {
			return nil, c.BundlesErr // the bundles that might pass could not be listed
		}
		reasons = append(reasons, why...)
	}
	return nil, &RefusedError{Digest: d, Reason: explain(c, p, reasons)}
}

// keyReasons turns sign's reasons for key into the policy's words: a
// signature that does not verify is another key's or tampered with, and a
// bundle that names key (by its hint) but does not verify is tampered.
func keyReasons(ctx context.Context, c *sign.Candidates, k *keys.Key, reason string) []string {
	_, list, _ := strings.Cut(reason, ": ")
	var out []string
	for _, r := range strings.Split(list, "; ") {
		switch {
		case r == "":
		case strings.HasPrefix(r, "bundle signature does not verify with "):
			if claimsKey(ctx, c, k) {
				out = append(out, "tampered: a bundle names "+k.Ref+" but its signature does not verify")
			} else {
				out = append(out, "none by these keys: a bundle signed by another key")
			}
		case strings.HasPrefix(r, "signature does not verify with "):
			out = append(out, "none by these keys: a .sig signature does not verify with "+k.Ref+" (another key's, or tampered)")
		case strings.HasPrefix(r, "annotation "):
			out = append(out, missingAnnotation(r))
		default:
			out = append(out, r)
		}
	}
	return out
}

// missingAnnotation words pkg/sign's "annotation k=v missing or
// different" as the policy's reason.
func missingAnnotation(r string) string {
	kv := strings.TrimSuffix(strings.TrimPrefix(r, "annotation "), " missing or different")
	return "missing annotation: " + kv + " (absent, or another value)"
}

// claimsKey reports whether a bundle among c names k by its public-key
// hint.
func claimsKey(ctx context.Context, c *sign.Candidates, k *keys.Key) bool {
	pub, err := k.PublicKey(options.WithContext(ctx))
	if err != nil {
		return false
	}
	return slices.ContainsFunc(c.Bundles, func(s bundle.Stored) bool { return bundleHint(s) == hintOf(pub) })
}

// explain is the one reason a digest is refused, most telling first.
func explain(c *sign.Candidates, p *Policy, reasons []string) string {
	seen := map[string]bool{}
	var uniq []string
	for _, r := range reasons {
		if !seen[r] {
			seen[r] = true
			uniq = append(uniq, r)
		}
	}
	// Tampered signatures and identity or issuer mismatches say more than
	// "another key's".
	rank := func(r string) int {
		for i, p := range []string{"tampered", "identity mismatch", "issuer mismatch", "missing annotation", "keyless"} {
			if strings.HasPrefix(r, p) {
				return i
			}
		}
		return 9
	}
	slices.SortStableFunc(uniq, func(a, b string) int { return rank(a) - rank(b) })
	return fmt.Sprintf("none of its %d signatures satisfies the policy (%s): %s", c.Len(), p.describe(), strings.Join(uniq, "; "))
}

// describe names what p asks for.
func (p *Policy) describe() string {
	var parts []string
	if len(p.Keys) > 0 {
		refs := make([]string, len(p.Keys))
		for i, k := range p.Keys {
			refs[i] = k.Ref
		}
		parts = append(parts, "keys "+strings.Join(refs, ", "))
	}
	if p.Identity != "" {
		parts = append(parts, fmt.Sprintf("identity %q issued by %s", p.Identity, p.Issuer))
	}
	if len(p.Annotations) > 0 {
		var kv []string
		for _, k := range slices.Sorted(maps.Keys(p.Annotations)) {
			kv = append(kv, k+"="+p.Annotations[k])
		}
		parts = append(parts, "annotations "+strings.Join(kv, ","))
	}
	return strings.Join(parts, "; ")
}

// keyless caches the sigstore-go verifier of one Check.
type keyless struct {
	once sync.Once
	v    verifier
	err  error
}

// hintOf is the bundle hint of a public key, or "" when it has none.
func hintOf(pub crypto.PublicKey) string {
	h, err := bundle.Hint(pub)
	if err != nil {
		return ""
	}
	return h
}
