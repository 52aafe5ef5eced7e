package service

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/attest"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/sign"
)

// PromoteRequest is one whole promotion: copy, then sign what was pushed,
// then attest it. Both transports (CLI and Lambda) run it through Promote.
type PromoteRequest struct {
	CopyRequest
	// Copy and Sign say which steps run; with Copy false, Sign signs what
	// the destination already holds (and its children).
	Copy, Sign bool
	// Attest records the promotion as a signed in-toto attestation of
	// every digest signed (the pushed digest and, for an index, every
	// manifest under it), stored in SignatureFormat's formats; it needs
	// Copy, which says what was promoted.
	Attest bool
	// Key signs and attests; required when Sign or Attest is set.
	Key *keys.Key
	// SignatureFormat is how signatures and attestations are stored:
	// legacy (when empty), bundle or both.
	SignatureFormat sign.Format
	// Referrers copies, after the copy and signing, the OCI 1.1 referrers
	// and cosign legacy tags of every source digest promoted (see
	// ReferrersFor); ReferrersTypes keeps only these artifact types.
	Referrers      bool
	ReferrersTypes []string
}

// PromoteResult is the machine-readable result of a promotion: what the
// CLI prints with -output json and what the Lambda function returns.
type PromoteResult struct {
	*CopyResult
	Signatures   *SignResult      `json:"signatures,omitempty"`
	Attestations *AttestResult    `json:"attestations,omitempty"`
	Referrers    *ReferrersResult `json:"referrers,omitempty"`
}

// CopySucceededError wraps the failure of a step that followed a
// successful copy (signing, attesting, or copying the referrers), so that
// callers can tell the user the image is in place.
type CopySucceededError struct {
	Image string
	// Step is the step that failed: "signing" (when empty), "attesting"
	// or StepReferrers.
	Step string
	// Signed is set when signing succeeded before Step failed.
	Signed bool
	Err    error
}

// StepReferrers is the Step of a CopySucceededError whose referrers could
// not be copied: the image is in place (and signed, if asked), which a
// caller may report differently from an image left unsigned.
const StepReferrers = "copying the referrers"

func (e *CopySucceededError) Error() string {
	step := e.Step
	if step == "" {
		step = "signing"
	}
	done := "copy"
	if e.Signed {
		done = "copy and signing"
	}
	msg := e.Err.Error()
	if step == StepReferrers {
		msg = strings.TrimPrefix(msg, "copying referrers: ") // the Referrers step's own words
	}
	return fmt.Sprintf("%s succeeded (%s) but %s failed: %s", done, e.Image, step, msg)
}

func (e *CopySucceededError) Unwrap() error { return e.Err }

// Promote runs the steps req asks for through svc, so that every step gets
// svc's middleware (canonical log lines, tracing).
func Promote(ctx context.Context, svc Service, req PromoteRequest) (*PromoteResult, error) {
	// A manifest read by digest is read once in the promotion (the
	// referrers step writes the manifests the copy read), and no longer.
	ctx = registry.WithManifestCache(ctx, registry.DefaultManifestCacheSize)
	if !req.Copy && !req.Sign {
		return nil, Errorf(KindInvalidRequest, "nothing to do: both copy and sign are off")
	}
	if req.Sign && req.Key == nil {
		return nil, Errorf(KindInvalidRequest, "signing needs a key")
	}
	if req.Referrers && !req.Copy {
		return nil, Errorf(KindInvalidRequest, "referrers travel with a copy: turn copying on, or referrers off")
	}
	if !req.Copy && !req.Policy.Empty() {
		return nil, Errorf(KindInvalidRequest, "a source policy checks the source of a copy: -copy=false has none")
	}
	if req.Attest && req.Key == nil {
		return nil, Errorf(KindInvalidRequest, "attesting needs a key")
	}
	if req.Attest && !req.Copy {
		return nil, Errorf(KindInvalidRequest, "attesting needs the copy, which says what was promoted: -attest with -copy=false")
	}
	res := &PromoteResult{}
	sreq := SignRequest{Image: req.Destination, Annotations: req.Annotations, Key: req.Key, Recursive: true, Format: req.SignatureFormat}
	if req.Copy {
		cres, err := svc.Copy(ctx, req.CopyRequest)
		res.CopyResult = cres
		if err != nil {
			return res, err
		}
		// Sign what was pushed, by digest. An index is walked at the
		// destination for its children at every depth (a child may be an
		// index itself, which Manifests does not look into); only indexes
		// are read, and an image is not read at all.
		sreq.Digests = append(sreq.Digests, cres.DestinationDigest)
		for _, m := range cres.Manifests {
			sreq.Digests = append(sreq.Digests, m.DestinationDigest)
		}
		sreq.Recursive = types.MediaType(cres.MediaType).IsIndex()
	} else if err := ValidateKeyValues("annotation", req.Annotations); err != nil {
		return nil, err
	}
	if req.Sign {
		sres, err := svc.Sign(ctx, sreq)
		res.Signatures = sres
		if err != nil {
			return res, copySucceeded(res, "signing", err)
		}
	}
	if req.Attest {
		if err := attestStep(ctx, svc, req, sreq, res); err != nil {
			return res, err
		}
	}
	if !req.Referrers {
		return res, nil
	}
	// Its own step, after signing: what travels with the image is not
	// what makes it usable, and a failure here leaves it in place, signed.
	rres, err := svc.Referrers(ctx, ReferrersFor(req.CopyRequest, res.CopyResult, req.ReferrersTypes))
	res.Referrers = rres
	if err != nil {
		return res, &Error{Kind: KindOf(err), Err: &CopySucceededError{
			Image: res.CopyResult.Destination + "@" + res.CopyResult.DestinationDigest,
			Step:  StepReferrers, Signed: req.Sign, Err: err,
		}}
	}
	return res, nil
}

// attestStep attests the digests just signed (or that signing would have),
// with what the copy reports: the same whether it copied or found the
// destination up to date, so that a re-run finds its attestation.
func attestStep(ctx context.Context, svc Service, req PromoteRequest, sreq SignRequest, res *PromoteResult) error {
	areq := AttestRequest{
		Image:     req.Destination,
		Digests:   sreq.Digests,
		Recursive: sreq.Recursive,
		Key:       req.Key,
		Format:    req.SignatureFormat,
		Predicate: attest.Predicate{
			Source:      attest.Image{Reference: qualified(res.CopyResult.Source), Digest: res.CopyResult.SourceDigest},
			Destination: attest.Image{Reference: qualified(res.CopyResult.Destination), Digest: res.CopyResult.DestinationDigest},
			Stamp:       attest.Stamp{Annotations: req.Annotations, ManifestAnnotations: req.ManifestAnnotations, Labels: req.Labels},
			Platforms:   keptPlatforms(req.CopyRequest, res.CopyResult),
		},
	}
	if res.Signatures != nil {
		// Signing has walked the indexes already: no need to read them
		// again.
		areq.Digests, areq.Recursive = nil, false
		for _, d := range res.Signatures.Digests {
			areq.Digests = append(areq.Digests, d.Digest)
		}
	}
	ares, err := svc.Attest(ctx, areq)
	res.Attestations = ares
	if err != nil {
		return copySucceeded(res, "attesting", err)
	}
	return nil
}

// qualified is ref fully qualified, as the promotion predicate records it
// (busybox:1.36 is index.docker.io/library/busybox:1.36); a reference that
// does not parse (the copy parsed it already) is returned as it is.
func qualified(ref string) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		return ref
	}
	return r.Name()
}

// keptPlatforms are the platforms a promotion with -platform kept of a
// multi-platform source, as the promoted index lists them (a platform asked
// for that the source lacks is not among them, and linux/arm64 keeps
// linux/arm64/v8): what the copy did, not what it was asked. None without
// -platform, nor for a single-platform source, which is kept whole.
func keptPlatforms(req CopyRequest, res *CopyResult) []string {
	if len(req.Platforms) == 0 || !types.MediaType(res.MediaType).IsIndex() {
		return nil
	}
	var out []string
	for _, m := range res.Manifests {
		if m.Platform != "" {
			out = append(out, m.Platform)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// copySucceeded wraps err, the failure of step after a copy, so that the
// caller can say the image is in place; without a copy, err is returned as
// it is.
func copySucceeded(res *PromoteResult, step string, err error) error {
	if res.CopyResult == nil {
		return err
	}
	var e *Error
	kind := KindSigningFailed
	if errors.As(err, &e) {
		kind = e.Kind
	}
	return &Error{Kind: kind, Err: &CopySucceededError{Image: res.CopyResult.Destination + "@" + res.CopyResult.DestinationDigest, Step: step, Err: err}}
}
