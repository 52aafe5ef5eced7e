// Package promofile reads promotion files: the list of images and
// repositories that `ocistow sync` promotes, with defaults, in YAML or JSON:
//
//	defaults:
//	  annotations: {team: platform}
//	  key: awskms:///alias/ocistow
//	promotions:
//	  - source: docker.io/library/busybox:1.36
//	    destination: 111111111111.dkr.ecr.us-east-1.amazonaws.com/base/busybox:1.36
//	  - source: docker.io/library/alpine
//	    destination: 111111111111.dkr.ecr.us-east-1.amazonaws.com/base/alpine
//	    tags: {allow: ['3\.\d+'], semver: '>=3.19', latest: 3}
//
// The keys are the JSON names of File, Options, Entry and tags.Selector;
// docs/promotion-file.schema.json is the format's JSON Schema.
package promofile

import (
	"cmp"
	"maps"
	"slices"

	"github.com/ocistow/ocistow/pkg/tags"
)

// File is a parsed promotion file.
type File struct {
	// Defaults apply to every entry; an entry's own keys win (maps merge
	// key by key).
	Defaults Options `json:"defaults,omitempty"`
	// Promotions are the entries, in file order.
	Promotions []Entry `json:"promotions"`
}

// Options are what a single promotion can be asked to do, as the CLI's
// flags and the Lambda payload say it. Pointers are unset when nil, so that
// an entry can turn off what the defaults turned on.
type Options struct {
	// Annotations go on every manifest and index as annotations, in every
	// image config as labels, and in every signature payload.
	Annotations map[string]string `json:"annotations,omitempty"`
	// ManifestAnnotations go on manifests and indexes only.
	ManifestAnnotations map[string]string `json:"manifestAnnotations,omitempty"`
	// Labels go in image configs only.
	Labels map[string]string `json:"labels,omitempty"`
	// Platforms (os/arch[/variant]) keeps only these platforms.
	Platforms []string `json:"platforms,omitempty"`
	// Key signs: an awskms:// reference, a key ARN, id or alias, or a key
	// file, as -key and -aws-kms-key-arn take it.
	Key string `json:"key,omitempty"`
	// Sign, when false, turns signing off.
	Sign *bool `json:"sign,omitempty"`
	// Immutable refuses to move a destination tag.
	Immutable *bool `json:"immutable,omitempty"`
	// SignatureFormat is how signatures are stored, as -signature-format
	// takes it: legacy, bundle or both.
	SignatureFormat string `json:"signatureFormat,omitempty"`
	// Referrers, when false, leaves the source's referrers and cosign
	// tags behind; a sync copies them unless told not to.
	Referrers *bool `json:"referrers,omitempty"`
	// ReferrersTypes keeps only referrers of these artifact types.
	ReferrersTypes []string `json:"referrersTypes,omitempty"`
	// Attest, when true, records each promotion as a signed in-toto
	// attestation (as -attest), with the signing key.
	Attest *bool `json:"attest,omitempty"`
	// Verify is the source policy: what the upstream image must carry
	// before it is promoted (as -source-key, -source-identity, …).
	Verify *Verify `json:"verify,omitempty"`
}

// Verify is a source policy, as the promotion file writes it.
type Verify struct {
	// Keys: a signature by any one of them passes (public key files,
	// private key files, KMS keys).
	Keys []string `json:"keys,omitempty"`
	// Identity is a regular expression the keyless signer's certificate
	// identity must match, Issuer the OIDC issuer it must name.
	Identity string `json:"identity,omitempty"`
	Issuer   string `json:"issuer,omitempty"`
	// Annotations must be in the upstream signature's payload.
	Annotations map[string]string `json:"annotations,omitempty"`
	// TrustedRoot is a Sigstore trusted root file for keyless signatures
	// (default: the sync's -trusted-root, else the public-good root).
	TrustedRoot string `json:"trustedRoot,omitempty"`
	// Children: an index's children must be signed too.
	Children *bool `json:"children,omitempty"`
}

// under returns v (the defaults') with e (an entry's) over it: keys,
// identity, issuer, trustedRoot and children are the entry's when it sets
// them, annotations merge key by key; nil when both are nil.
func (v *Verify) under(e *Verify) *Verify {
	if v == nil && e == nil {
		return nil
	}
	var d, o Verify
	if v != nil {
		d = *v
	}
	if e != nil {
		o = *e
	}
	r := &Verify{
		Keys:        slices.Clone(d.Keys),
		Identity:    cmp.Or(o.Identity, d.Identity),
		Issuer:      cmp.Or(o.Issuer, d.Issuer),
		Annotations: mergeMaps(d.Annotations, o.Annotations),
		TrustedRoot: cmp.Or(o.TrustedRoot, d.TrustedRoot),
		Children:    copyBool(cmp.Or(o.Children, d.Children)),
	}
	if o.Keys != nil {
		r.Keys = slices.Clone(o.Keys)
	}
	return r
}

// Entry is one promotion of the file: one image (Tags nil), or the tags of
// a repository that Tags selects.
type Entry struct {
	// Source is an image (by tag or digest) or, with Tags, a repository.
	Source string `json:"source"`
	// Destination is an image by tag (never by digest), or a repository:
	// then the image keeps the tag the source names (":latest" when it
	// names none; a source by digest needs a destination tag), and with
	// Tags each selected tag is promoted to the same tag.
	Destination string `json:"destination"`
	// Tags selects the tags of a source repository.
	Tags *tags.Selector `json:"tags,omitempty"`
	Options
	// Line is the line of the file the entry starts on (1-based), for
	// messages.
	Line int `json:"-"`
}

// Resolve returns the entries of f with the defaults merged in: annotations,
// manifest annotations and labels merge key by key (the entry's value wins);
// platforms, key, sign, immutable, signatureFormat, referrers,
// referrersTypes and attest are the entry's when it sets them (verify
// merges as Verify.under says) (an empty
// platforms list is set, and means every platform), else the defaults'.
// Each entry keeps its Line. The result shares nothing with f.
func (f *File) Resolve() []Entry {
	out := make([]Entry, len(f.Promotions))
	for i, e := range f.Promotions {
		out[i] = e
		out[i].Options = f.Defaults.under(e.Options)
		if e.Tags != nil {
			out[i].Tags = &tags.Selector{
				List:   slices.Clone(e.Tags.List),
				Allow:  slices.Clone(e.Tags.Allow),
				Deny:   slices.Clone(e.Tags.Deny),
				Semver: e.Tags.Semver,
				Latest: e.Tags.Latest,
			}
		}
	}
	return out
}

// under returns o (the defaults) with e (an entry's options) over it.
func (o Options) under(e Options) Options {
	r := Options{
		Annotations:         mergeMaps(o.Annotations, e.Annotations),
		ManifestAnnotations: mergeMaps(o.ManifestAnnotations, e.ManifestAnnotations),
		Labels:              mergeMaps(o.Labels, e.Labels),
		Platforms:           slices.Clone(o.Platforms),
		Key:                 cmp.Or(e.Key, o.Key),
		Sign:                copyBool(cmp.Or(e.Sign, o.Sign)),
		Immutable:           copyBool(cmp.Or(e.Immutable, o.Immutable)),
		SignatureFormat:     cmp.Or(e.SignatureFormat, o.SignatureFormat),
		Referrers:           copyBool(cmp.Or(e.Referrers, o.Referrers)),
		ReferrersTypes:      slices.Clone(o.ReferrersTypes),
		Attest:              copyBool(cmp.Or(e.Attest, o.Attest)),
		Verify:              o.Verify.under(e.Verify),
	}
	if e.Platforms != nil {
		r.Platforms = slices.Clone(e.Platforms)
	}
	if e.ReferrersTypes != nil {
		r.ReferrersTypes = slices.Clone(e.ReferrersTypes)
	}
	return r
}

// mergeMaps returns a copy of base with over's keys set; nil when both are
// empty.
func mergeMaps(base, over map[string]string) map[string]string {
	if len(base) == 0 && len(over) == 0 {
		return nil
	}
	out := make(map[string]string, len(base)+len(over))
	maps.Copy(out, base)
	maps.Copy(out, over)
	return out
}

// copyBool returns a new pointer to *b, or nil.
func copyBool(b *bool) *bool {
	if b == nil {
		return nil
	}
	v := *b
	return &v
}
