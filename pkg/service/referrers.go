package service

import (
	"context"
	"fmt"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/attest"
	"github.com/ocistow/ocistow/pkg/digesttag"
	"github.com/ocistow/ocistow/pkg/referrers"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/sign"
)

// ReferrersRequest is the input of Service.Referrers: what travels with a
// promoted image.
type ReferrersRequest struct {
	// Source and Destination are image references; their repositories are
	// read and written.
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// Digests are the source digests whose OCI 1.1 referrers and cosign
	// legacy tags travel: each index among them with the manifests it
	// lists, at every depth, and every referrer with its own referrers.
	Digests []string `json:"digests"`
	// WriteSubjects writes each of Digests (and what it lists) at the
	// destination by digest, untagged, where it lacks it: what a stamped
	// promotion does so that upstream signatures verify there.
	WriteSubjects bool `json:"writeSubjects,omitempty"`
	// ArtifactTypes, when not empty, keeps only referrers of these
	// artifact types (and legacy tags whose layers are of one of them).
	ArtifactTypes []string `json:"artifactTypes,omitempty"`
}

// ReferrersResult is the output of Service.Referrers.
type ReferrersResult struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	referrers.Result
	Took Duration `json:"tookSeconds"`
}

// ReferrersFor is the Referrers step that follows the copy res of req: the
// source digests it promoted, at every depth. A copy byte for byte leaves
// the source's digests at the destination; one that rewrote the top-level
// manifest (stamping, -platform) writes the source's manifests there by
// digest too. With -platform, the source index is left out (it lists
// platforms that were not copied): the platforms kept are the subjects.
func ReferrersFor(req CopyRequest, res *CopyResult, artifactTypes []string) ReferrersRequest {
	out := ReferrersRequest{Source: res.Source, Destination: res.Destination, ArtifactTypes: artifactTypes}
	out.WriteSubjects = res.SourceDigest != res.DestinationDigest
	if len(req.Platforms) > 0 && types.MediaType(res.MediaType).IsIndex() {
		for _, m := range res.Manifests {
			out.Digests = append(out.Digests, m.SourceDigest)
		}
		return out
	}
	out.Digests = []string{res.SourceDigest}
	return out
}

func (s *service) Referrers(ctx context.Context, req ReferrersRequest) (*ReferrersResult, error) {
	start := time.Now()
	src, err := s.registry.ParseReference(req.Source)
	if err != nil {
		return nil, &Error{Kind: KindInvalidRequest, Err: fmt.Errorf("source: %w", err)}
	}
	dst, err := s.registry.ParseReference(req.Destination)
	if err != nil {
		return nil, &Error{Kind: KindInvalidRequest, Err: fmt.Errorf("destination: %w", err)}
	}
	rreq := referrers.Request{Source: src.Context(), Destination: dst.Context(), WriteSubjects: req.WriteSubjects, ArtifactTypes: req.ArtifactTypes,
		// The destination's signatures and attestations (ocistow's own,
		// written before this step) stay beside the upstream's.
		Merge: map[string]digesttag.Kind{".sig": sign.Signatures(), ".att": attest.Attestations()}}
	for _, d := range req.Digests {
		h, err := v1.NewHash(d)
		if err != nil {
			return nil, &Error{Kind: KindInvalidRequest, Err: fmt.Errorf("invalid digest %q: %w", d, err)}
		}
		rreq.Subjects = append(rreq.Subjects, h)
	}
	res, err := referrers.Copy(ctx, s.registry, rreq, referrers.WithTracerProvider(s.tp))
	out := &ReferrersResult{Source: src.String(), Destination: dst.String(), Took: Duration(time.Since(start))}
	if res != nil {
		out.Result = *res
	}
	if err != nil {
		kind := KindReferrersFailed
		if c := registry.StatusCode(err); c == 401 || c == 403 || noCredentials(err) {
			kind = KindUnauthorized
		}
		return out, &Error{Kind: kind, Err: fmt.Errorf("copying referrers: %w", err)}
	}
	return out, nil
}
