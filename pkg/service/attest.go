package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/ocistow/ocistow/pkg/attest"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/sign"
)

// AttestRequest is the input of Service.Attest.
type AttestRequest struct {
	// Image is the promoted image, by tag or digest.
	Image string `json:"image"`
	// Digests, when not empty, are the digests to attest in Image's
	// repository, as a Copy reported them. With Recursive, the manifests
	// under those that are indexes are attested too, as Sign signs them.
	Digests   []string `json:"digests,omitempty"`
	Recursive bool     `json:"recursive,omitempty"`
	// Predicate is what the attestation records. The service fills in
	// the time (PromotedAt) and its own version when they are empty.
	Predicate attest.Predicate `json:"predicate"`
	// Key signs.
	Key *keys.Key `json:"-"`
	// Format is how the attestations are stored, as signatures are:
	// cosign's .att tag (legacy, the default when empty), a Sigstore
	// bundle referrer (bundle) or both.
	Format sign.Format `json:"format,omitempty"`
}

// AttestedDigest is what attesting one digest did.
type AttestedDigest struct {
	Digest string `json:"digest"`
	// Status is added when an attestation was written in any format,
	// present when every format's was there already.
	Status attest.Status `json:"status"`
	// Formats says what each format written did.
	Formats map[sign.Format]attest.Status `json:"formats"`
}

// AttestResult is the output of Service.Attest.
type AttestResult struct {
	Image         string `json:"image"`
	Key           string `json:"key"`
	PredicateType string `json:"predicateType"`
	// Formats are the formats written: legacy, bundle, or both.
	Formats []sign.Format    `json:"formats"`
	Digests []AttestedDigest `json:"digests"`
	// Added and Present count attestations, one per digest and format.
	Added   int      `json:"added"`
	Present int      `json:"present"`
	Took    Duration `json:"tookSeconds"`
}

// WithVersion is the ocistow version promotion attestations record.
func WithVersion(v string) Option {
	return func(s *service) { s.version = v }
}

func (s *service) Attest(ctx context.Context, req AttestRequest) (*AttestResult, error) {
	start := time.Now()
	if req.Key == nil || req.Key.Signer == nil {
		return nil, Errorf(KindInvalidRequest, "no signing key given")
	}
	formats := req.Format.Formats()
	if len(formats) == 0 {
		return nil, Errorf(KindInvalidRequest, "invalid signature format %q: want legacy, bundle or both", req.Format)
	}
	p := req.Predicate
	if p.PromotedAt == "" {
		p.PromotedAt = time.Now().UTC().Format(time.RFC3339)
	}
	if p.Ocistow.Version == "" {
		p.Ocistow.Version = s.version
	}
	res := &AttestResult{Image: req.Image, Key: req.Key.Ref, PredicateType: attest.PredicateType, Formats: formats}
	sst, err := sign.NewStore(ctx, s.registry)
	if err != nil {
		return res, &Error{Kind: KindSigningFailed, Err: err}
	}
	ast, err := attest.NewStore(s.registry)
	if err != nil {
		return res, &Error{Kind: KindSigningFailed, Err: err}
	}
	digests, err := s.targets(ctx, sst, req.Image, req.Digests, req.Recursive)
	if err != nil {
		return res, err
	}
	res.Digests = make([]AttestedDigest, len(digests))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.registry.Jobs())
	for i, d := range digests {
		g.Go(func() error {
			actx, span := s.tracer.Start(gctx, "attest "+d.DigestStr(), trace.WithAttributes(attribute.String("oci.manifest.digest", d.DigestStr())))
			defer span.End()
			// One envelope, signed once, for every format.
			pr := attest.NewPromotion(d, p, req.Key)
			done := AttestedDigest{Digest: d.DigestStr(), Status: attest.Present, Formats: map[sign.Format]attest.Status{}}
			for _, f := range formats {
				var status attest.Status
				var err error
				if f == sign.Bundle {
					status, err = pr.Bundle(actx, ast)
				} else {
					status, err = pr.Legacy(actx, ast)
				}
				if err != nil {
					span.RecordError(err)
					span.SetStatus(codes.Error, err.Error())
					return fmt.Errorf("attesting %s: %w", d, err)
				}
				done.Formats[f] = status
				if status == attest.Added {
					done.Status = attest.Added
				}
			}
			span.SetAttributes(attribute.String("ocistow.attestation", string(done.Status)))
			mu.Lock()
			defer mu.Unlock()
			res.Digests[i] = done
			for _, status := range done.Formats {
				if status == attest.Added {
					res.Added++
				} else {
					res.Present++
				}
			}
			return nil
		})
	}
	err = g.Wait()
	res.Took = Duration(time.Since(start))
	if err != nil {
		return res, &Error{Kind: KindSigningFailed, Err: err}
	}
	return res, nil
}

// verifyAttestations is Verify for promotion attestations.
func (s *service) verifyAttestations(ctx context.Context, req VerifyRequest, res *VerifyResult, start time.Time) (*VerifyResult, error) {
	sst, err := sign.NewStore(ctx, s.registry)
	if err != nil {
		return res, &Error{Kind: KindVerificationFailed, Err: err}
	}
	ast, err := attest.NewStore(s.registry)
	if err != nil {
		return res, &Error{Kind: KindVerificationFailed, Err: err}
	}
	digests, err := s.targets(ctx, sst, req.Image, nil, req.Recursive)
	if err != nil {
		return res, err
	}
	var failures []error
	for _, d := range digests {
		res.Digests = append(res.Digests, d.DigestStr())
		v, err := attest.VerifyDigest(ctx, ast, d, req.Key, req.Annotations)
		if err != nil {
			failures = append(failures, err)
			continue
		}
		res.Attestations = append(res.Attestations, v...)
	}
	res.setFormats()
	res.Took = Duration(time.Since(start))
	if len(failures) > 0 {
		return res, &Error{Kind: KindVerificationFailed, Err: fmt.Errorf("%s: %w", req.Image, errors.Join(failures...))}
	}
	return res, nil
}
