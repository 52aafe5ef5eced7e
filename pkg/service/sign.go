package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/ocistow/ocistow/pkg/attest"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/sign"
)

// SignRequest is the input of Service.Sign.
type SignRequest struct {
	// Image is the image to sign, by tag or digest.
	Image string `json:"image"`
	// Digests, when not empty, are the digests to sign in Image's
	// repository, as a Copy reported them: signing what was pushed, not
	// whatever the tag points at by now. With Recursive, the manifests
	// under those that are indexes are signed too.
	Digests []string `json:"digests,omitempty"`
	// Annotations go into each payload's optional section.
	Annotations map[string]string `json:"annotations,omitempty"`
	// Recursive signs every manifest an index lists too, at every depth:
	// the index Image names, or each of Digests that is an index. Only
	// indexes are read; the digests of images come from their parent
	// index.
	Recursive bool `json:"recursive,omitempty"`
	// Key signs.
	Key *keys.Key `json:"-"`
	// Format is how the signatures are stored: legacy (the default when
	// empty), bundle or both.
	Format sign.Format `json:"format,omitempty"`
}

// SignedDigest is what signing one digest did.
type SignedDigest struct {
	Digest string `json:"digest"`
	// Status is added when a signature was written in any format, present
	// when every format's was there already.
	Status sign.Status `json:"status"`
	// Formats says what each format written did.
	Formats map[sign.Format]sign.Status `json:"formats"`
}

// SignResult is the output of Service.Sign.
type SignResult struct {
	Image string `json:"image"`
	Key   string `json:"key"`
	// Formats are the signature formats written: legacy, bundle, or both.
	Formats []sign.Format  `json:"formats"`
	Digests []SignedDigest `json:"digests"`
	// Added and Present count signatures, one per digest and format.
	Added   int      `json:"added"`
	Present int      `json:"present"`
	Took    Duration `json:"tookSeconds"`
}

// VerifyRequest is the input of Service.Verify.
type VerifyRequest struct {
	Image string `json:"image"`
	// Annotations must all be in a signature's payload for it to count.
	Annotations map[string]string `json:"annotations,omitempty"`
	// Recursive checks every manifest an index lists too, at every depth.
	Recursive bool `json:"recursive,omitempty"`
	// Attestation checks promotion attestations instead of signatures;
	// Annotations must then be in each attestation's stamp.
	Attestation bool      `json:"attestation,omitempty"`
	Key         *keys.Key `json:"-"`
}

// VerifyResult is the output of Service.Verify.
type VerifyResult struct {
	Image    string          `json:"image"`
	Key      string          `json:"key"`
	Digests  []string        `json:"digests"`
	Verified []sign.Verified `json:"verified"`
	// Formats are the formats found among the verified signatures (or
	// attestations), legacy first.
	Formats []sign.Format `json:"formats"`
	// Attestations are the promotion attestations that passed, when
	// verifying attestations.
	Attestations []attest.Verified `json:"attestations,omitempty"`
	Took         Duration          `json:"tookSeconds"`
}

// FormatCounts counts the verified signatures, and promotion
// attestations, of each format.
func (r *VerifyResult) FormatCounts() map[sign.Format]int {
	out := map[sign.Format]int{}
	for _, v := range r.Verified {
		out[v.Format]++
	}
	for _, a := range r.Attestations {
		out[a.Format]++
	}
	return out
}

// setFormats lists the formats FormatCounts found, legacy first.
func (r *VerifyResult) setFormats() {
	counts := r.FormatCounts()
	for _, f := range []sign.Format{sign.Legacy, sign.Bundle} {
		if counts[f] > 0 {
			r.Formats = append(r.Formats, f)
		}
	}
}

// Duration is a time.Duration that marshals to JSON as seconds.
type Duration time.Duration

// MarshalJSON implements json.Marshaler.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).Seconds())
}

func (d Duration) String() string { return time.Duration(d).String() }

func (s *service) Sign(ctx context.Context, req SignRequest) (*SignResult, error) {
	start := time.Now()
	if req.Key == nil || req.Key.Signer == nil {
		return nil, Errorf(KindInvalidRequest, "no signing key given")
	}
	formats := req.Format.Formats()
	if len(formats) == 0 {
		return nil, Errorf(KindInvalidRequest, "invalid signature format %q: want legacy, bundle or both", req.Format)
	}
	res := &SignResult{Image: req.Image, Key: req.Key.Ref, Formats: formats}
	// One store for the whole call: one ping and token per repository.
	st, err := sign.NewStore(ctx, s.registry)
	if err != nil {
		return res, &Error{Kind: KindSigningFailed, Err: err}
	}
	digests, err := s.targets(ctx, st, req.Image, req.Digests, req.Recursive)
	if err != nil {
		return res, err
	}
	res.Digests = make([]SignedDigest, len(digests))
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(s.registry.Jobs())
	for i, d := range digests {
		g.Go(func() error {
			sctx, span := s.tracer.Start(gctx, "sign "+d.DigestStr(), trace.WithAttributes(attribute.String("oci.manifest.digest", d.DigestStr())))
			sd := SignedDigest{Digest: d.DigestStr(), Status: sign.Present, Formats: make(map[sign.Format]sign.Status, len(formats))}
			for _, f := range formats {
				var status sign.Status
				var err error
				if f == sign.Bundle {
					status, err = sign.DigestBundle(sctx, st, d, req.Annotations, req.Key)
				} else {
					status, err = sign.Digest(sctx, st, d, req.Annotations, req.Key)
				}
				span.SetAttributes(attribute.String("ocistow.signature."+string(f), string(status)))
				if err != nil {
					span.RecordError(err)
					span.SetStatus(codes.Error, err.Error())
					span.End()
					return fmt.Errorf("signing %s (%s format): %w", d, f, err)
				}
				sd.Formats[f] = status
				if status == sign.Added {
					sd.Status = sign.Added
				}
			}
			span.SetAttributes(attribute.String("ocistow.signature", string(sd.Status)))
			span.End()
			mu.Lock()
			defer mu.Unlock()
			res.Digests[i] = sd
			for _, st := range sd.Formats {
				if st == sign.Added {
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

func (s *service) Verify(ctx context.Context, req VerifyRequest) (*VerifyResult, error) {
	start := time.Now()
	if req.Key == nil {
		return nil, Errorf(KindInvalidRequest, "no verification key given")
	}
	if err := ValidateKeyValues("annotation", req.Annotations); err != nil {
		return nil, err
	}
	res := &VerifyResult{Image: req.Image, Key: req.Key.Ref}
	if req.Attestation {
		return s.verifyAttestations(ctx, req, res, start)
	}
	st, err := sign.NewStore(ctx, s.registry)
	if err != nil {
		return res, &Error{Kind: KindVerificationFailed, Err: err}
	}
	digests, err := s.targets(ctx, st, req.Image, nil, req.Recursive)
	if err != nil {
		return res, err
	}
	var failures []error
	for _, d := range digests {
		res.Digests = append(res.Digests, d.DigestStr())
		v, err := sign.VerifyDigest(ctx, st, d, req.Key, req.Annotations)
		if err != nil {
			failures = append(failures, err)
			continue
		}
		res.Verified = append(res.Verified, v...)
	}
	res.setFormats()
	res.Took = Duration(time.Since(start))
	if len(failures) > 0 {
		return res, &Error{Kind: KindVerificationFailed, Err: fmt.Errorf("%s: %w", req.Image, errors.Join(failures...))}
	}
	return res, nil
}

// targets lists the digests to sign or verify: the given ones, or image
// resolved to its digest; when recursive, with every manifest an index
// among them lists, at every depth. It reads through st, and reads only
// what it must: the image (unless its digest is given and recursive is
// off) and the indexes under it, never an image manifest an index lists.
func (s *service) targets(ctx context.Context, st *sign.Store, image string, given []string, recursive bool) ([]name.Digest, error) {
	ref, err := s.registry.ParseReference(image)
	if err != nil {
		return nil, &Error{Kind: KindInvalidRequest, Err: err}
	}
	repo := ref.Context()
	roots := []name.Reference{ref}
	if len(given) > 0 {
		roots = make([]name.Reference, len(given))
		for i, d := range given {
			// repo.Digest keeps the repository's registry as parsed (an
			// -insecure-registry host stays insecure).
			if _, err := v1.NewHash(d); err != nil {
				return nil, &Error{Kind: KindInvalidRequest, Err: fmt.Errorf("invalid digest %q: %w", d, err)}
			}
			roots[i] = repo.Digest(d)
		}
		if !recursive {
			out := make([]name.Digest, len(roots))
			for i, r := range roots {
				out[i] = r.(name.Digest)
			}
			return out, nil
		}
	}
	var out []name.Digest
	seen := map[string]bool{}
	add := func(d string) bool {
		if seen[d] {
			return false
		}
		seen[d] = true
		out = append(out, repo.Digest(d))
		return true
	}
	var walk func(v1.ImageIndex) error
	walk = func(idx v1.ImageIndex) error {
		im, err := idx.IndexManifest()
		if err != nil {
			return err
		}
		for _, m := range im.Manifests {
			if !add(m.Digest.String()) || !m.MediaType.IsIndex() {
				continue
			}
			child, err := idx.ImageIndex(m.Digest)
			if err != nil {
				return err
			}
			if err := walk(child); err != nil {
				return err
			}
		}
		return nil
	}
	for _, root := range roots {
		label := image
		if len(given) > 0 {
			label = root.String()
		}
		if d, ok := root.(name.Digest); ok && seen[d.DigestStr()] {
			// Listed by an index already walked (and walked itself if
			// it is an index).
			continue
		}
		desc, err := st.Get(ctx, root)
		if err != nil {
			kind := KindSigningFailed
			if c := registry.StatusCode(err); c == 401 || c == 403 {
				kind = KindUnauthorized
			}
			return nil, &Error{Kind: kind, Err: fmt.Errorf("%s: %s", label, registry.Describe(err))}
		}
		if !add(desc.Digest.String()) || !recursive || !desc.MediaType.IsIndex() {
			continue
		}
		idx, err := desc.ImageIndex()
		if err == nil {
			err = walk(idx)
		}
		if err != nil {
			return nil, fmt.Errorf("%s: reading index: %s", label, registry.Describe(err))
		}
	}
	return out, nil
}
