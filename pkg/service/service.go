// Package service is ocistow's core: one Service whose methods are the steps
// of a promotion (Copy, then Sign; Verify to check). Transports (the CLI, the
// Lambda handler) translate their input into requests; cross-cutting
// concerns (canonical log lines, tracing) wrap a Service as middleware.
package service

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ocistow/ocistow/pkg/ecrauth"
	"github.com/ocistow/ocistow/pkg/keychain"
	"github.com/ocistow/ocistow/pkg/policy"
	"github.com/ocistow/ocistow/pkg/promote"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/sign"
	"github.com/ocistow/ocistow/pkg/stamp"
)

// Service is what ocistow does. Implementations are safe for concurrent use.
type Service interface {
	// Copy promotes an image or index from a source to a destination
	// registry, stamping it with annotations and labels on the way.
	Copy(ctx context.Context, req CopyRequest) (*CopyResult, error)
	// Sign signs digests of an image in cosign's format.
	Sign(ctx context.Context, req SignRequest) (*SignResult, error)
	// Referrers copies the OCI 1.1 referrers and cosign legacy tags of
	// promoted source digests to the destination repository.
	Referrers(ctx context.Context, req ReferrersRequest) (*ReferrersResult, error)
	// Attest records a promotion as a signed in-toto attestation of each
	// promoted digest, stored as cosign stores attestations.
	Attest(ctx context.Context, req AttestRequest) (*AttestResult, error)
	// Verify checks an image's cosign signatures, or with
	// VerifyRequest.Attestation its promotion attestations.
	Verify(ctx context.Context, req VerifyRequest) (*VerifyResult, error)
	// Check tells what Copy would find, writing nothing: whether the
	// destination is up to date, or where its tag points now. It costs the
	// source a HEAD, not a pull (and, with a Policy, the reads of the
	// source digest's signatures).
	Check(ctx context.Context, req CopyRequest) (*CheckResult, error)
}

// CheckResult is the output of Service.Check.
type CheckResult struct {
	// Source and Destination are the fully qualified references.
	Source      string `json:"source"`
	Destination string `json:"destination"`
	promote.State
	// Policy says which signature satisfied the source policy on the
	// source digest (a check does not read an index, so its children are
	// left to the copy); absent without a policy.
	Policy *policy.Result `json:"policy,omitempty"`
}

// CopyRequest is the input of Service.Copy.
type CopyRequest struct {
	// Source and Destination are image references, by tag or digest.
	Source      string `json:"source"`
	Destination string `json:"destination"`
	// Annotations are added to every manifest and index as OCI annotations
	// and to every image config as labels.
	Annotations map[string]string `json:"annotations,omitempty"`
	// ManifestAnnotations are added to manifests and indexes only.
	ManifestAnnotations map[string]string `json:"manifestAnnotations,omitempty"`
	// Labels are added to image configs only.
	Labels map[string]string `json:"labels,omitempty"`
	// Platforms keeps only these platforms (os/arch[/variant]) of a
	// multi-platform source.
	Platforms []string `json:"platforms,omitempty"`
	// Immutable refuses to move a destination tag that points at another
	// digest.
	Immutable bool `json:"immutable,omitempty"`
	// Checked, when set, is a Check of this same request made just
	// before: Copy starts from what it found rather than asking the
	// registries again (a fleet checks every image at once first).
	Checked *CheckResult `json:"-"`
	// Gate, when set, is passed once the source is read and before
	// anything is written (promote.WithGate).
	Gate promote.Gate `json:"-"`
	// ReadAhead, with a Gate, is the memory the promotion may hold in
	// small blobs made ready while it waits (promote.WithReadAhead).
	ReadAhead *promote.ReadAhead `json:"-"`
	// Policy, when it asks for anything, is what the source must carry:
	// checked before anything is written (also when the destination is up
	// to date), from the digests the copy reads anyway; a source it
	// refuses fails with KindPolicyRefused.
	Policy *policy.Policy `json:"-"`
}

// CopyResult is the output of Service.Copy.
type CopyResult struct {
	// Source and Destination are the fully qualified references.
	Source      string `json:"source"`
	Destination string `json:"destination"`
	promote.Result
	// Policy says which signature satisfied the source policy, per digest
	// checked; absent without a policy.
	Policy *policy.Result `json:"policy,omitempty"`
	// Took is how long the copy took.
	Took Duration `json:"tookSeconds"`
}

// Option configures the Service.
type Option func(*service)

// WithTracerProvider records spans for each blob, manifest and signature.
func WithTracerProvider(tp trace.TracerProvider) Option {
	return func(s *service) { s.tp = tp }
}

// WithProgress reports each blob of every Copy to p (a terminal display).
func WithProgress(p promote.Progress) Option {
	return func(s *service) { s.progress = p }
}

// New returns the Service that talks to registries through c.
func New(c *registry.Client, opts ...Option) Service {
	s := &service{registry: c, tp: noop.NewTracerProvider()}
	for _, o := range opts {
		o(s)
	}
	s.tracer = s.tp.Tracer("github.com/ocistow/ocistow/pkg/service")
	return s
}

type service struct {
	registry *registry.Client
	tp       trace.TracerProvider
	tracer   trace.Tracer
	progress promote.Progress
	version  string
}

func (s *service) Copy(ctx context.Context, req CopyRequest) (*CopyResult, error) {
	start := time.Now()
	preq, err := s.copyRequest(req)
	if err != nil {
		return nil, err
	}
	popts := []promote.Option{promote.WithTracerProvider(s.tp)}
	if req.Checked != nil {
		popts = append(popts, promote.FromCheck(&req.Checked.State))
	}
	if req.Gate != nil {
		popts = append(popts, promote.WithGate(req.Gate), promote.WithReadAhead(req.ReadAhead))
	}
	if s.progress != nil {
		popts = append(popts, promote.WithProgress(s.progress))
	}
	var checked *policy.Result
	if !req.Policy.Empty() {
		if err := req.Policy.Validate(); err != nil {
			return nil, &Error{Kind: KindInvalidRequest, Err: err}
		}
		approve := func(ctx context.Context, src name.Digest, children []name.Digest) error {
			r, err := s.checkPolicy(ctx, req.Policy, preq.Source, src, children)
			checked = r
			return err
		}
		// A policy that checks the source digest alone is asked before
		// the source's manifest is read: a refused source costs no pull.
		if req.Policy.Children {
			popts = append(popts, promote.WithApproval(approve))
		} else {
			popts = append(popts, promote.WithSourceApproval(approve))
		}
	}
	res, err := promote.Copy(ctx, s.registry, *preq, popts...)
	out := &CopyResult{Source: preq.Source.String(), Destination: preq.Destination.String(), Took: Duration(time.Since(start)), Policy: checked}
	if res != nil {
		out.Result = *res
	}
	if err != nil {
		return out, classifyCopy(err)
	}
	return out, nil
}

// checkPolicy checks the source digests against p, reading their signature
// artifacts through the service's registry client. A failure to read them
// is the source's (SourceError), a refusal the policy's.
func (s *service) checkPolicy(ctx context.Context, p *policy.Policy, ref name.Reference, src name.Digest, children []name.Digest) (*policy.Result, error) {
	st, err := sign.NewStore(ctx, s.registry)
	if err != nil {
		return nil, err
	}
	r, err := policy.Check(ctx, st, p, src, children)
	var re *policy.RefusedError
	if err != nil && !errors.As(err, &re) {
		return nil, &promote.SourceError{Ref: ref, Err: fmt.Errorf("checking the source policy: %w", err)}
	}
	return r, err
}

func (s *service) Check(ctx context.Context, req CopyRequest) (*CheckResult, error) {
	preq, err := s.copyRequest(req)
	if err != nil {
		return nil, err
	}
	st, err := promote.Check(ctx, s.registry, *preq)
	out := &CheckResult{Source: preq.Source.String(), Destination: preq.Destination.String()}
	if st != nil {
		out.State = *st
	}
	if err != nil {
		return out, classifyCopy(err)
	}
	if !req.Policy.Empty() {
		if err := req.Policy.Validate(); err != nil {
			return out, &Error{Kind: KindInvalidRequest, Err: err}
		}
		// The source digest only: its children are known once the copy
		// reads the index, which a check does not.
		p := *req.Policy
		p.Children = false
		r, err := s.checkPolicy(ctx, &p, preq.Source, preq.Source.Context().Digest(st.SourceDigest), nil)
		out.Policy = r
		if err != nil {
			return out, classifyCopy(err)
		}
	}
	return out, nil
}

func (s *service) copyRequest(req CopyRequest) (*promote.Request, error) {
	if req.Source == "" {
		return nil, Errorf(KindInvalidRequest, "no source image given")
	}
	if req.Destination == "" {
		return nil, Errorf(KindInvalidRequest, "no destination image given")
	}
	src, err := s.registry.ParseReference(req.Source)
	if err != nil {
		return nil, &Error{Kind: KindInvalidRequest, Err: fmt.Errorf("source: %w", err)}
	}
	dst, err := s.registry.ParseReference(req.Destination)
	if err != nil {
		return nil, &Error{Kind: KindInvalidRequest, Err: fmt.Errorf("destination: %w", err)}
	}
	for what, m := range map[string]map[string]string{"annotation": req.Annotations, "manifest annotation": req.ManifestAnnotations, "label": req.Labels} {
		if err := ValidateKeyValues(what, m); err != nil {
			return nil, err
		}
	}
	st := stamp.Stamp{Annotations: merge(req.Annotations, req.ManifestAnnotations), Labels: merge(req.Annotations, req.Labels)}
	var platforms []v1.Platform
	for _, p := range req.Platforms {
		pl, err := ParsePlatform(p)
		if err != nil {
			return nil, err
		}
		platforms = append(platforms, *pl)
	}
	return &promote.Request{Source: src, Destination: dst, Stamp: st, Platforms: platforms, Immutable: req.Immutable}, nil
}

// ParsePlatform parses os/arch[/variant], as -platform takes it.
func ParsePlatform(s string) (*v1.Platform, error) {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || slices.Contains(parts, "") || strings.ContainsAny(s, " :") {
		return nil, Errorf(KindInvalidRequest, "invalid platform %q: want os/arch or os/arch/variant", s)
	}
	p := &v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// ValidateKeyValues checks annotation or label keys and values: keys must be
// non-empty and free of whitespace and '=', and both must be valid UTF-8.
func ValidateKeyValues(what string, m map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		v := m[k]
		switch {
		case k == "":
			return Errorf(KindInvalidRequest, "%s with an empty key", what)
		case !utf8.ValidString(k) || !utf8.ValidString(v):
			return Errorf(KindInvalidRequest, "%s %q is not valid UTF-8", what, k)
		case strings.ContainsAny(k, "= \t\r\n"):
			return Errorf(KindInvalidRequest, "%s key %q contains '=' or whitespace", what, k)
		}
	}
	return nil
}

func merge(a, b map[string]string) map[string]string {
	if len(a) == 0 && len(b) == 0 {
		return nil
	}
	out := maps.Clone(a)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, b)
	return out
}

// classifyCopy gives a promotion error its Kind, from what the registry
// answered where one did.
func classifyCopy(err error) error {
	var se *promote.SourceError
	var de *promote.DestinationError
	var be *promote.BlobError
	var re *policy.RefusedError
	code := registry.StatusCode(err)
	switch {
	case errors.As(err, &re):
		return &Error{Kind: KindPolicyRefused, Err: err}
	case errors.Is(err, promote.ErrTagWouldMove):
		return &Error{Kind: KindTagImmutable, Err: err}
	case errors.Is(err, promote.ErrUnsupported):
		return &Error{Kind: KindInvalidRequest, Err: err}
	case errors.As(err, &be):
		return &Error{Kind: KindSourceFailed, Err: err}
	case code == 401 || code == 403 || noCredentials(err):
		return &Error{Kind: KindUnauthorized, Err: err}
	case errors.As(err, &se) && code == 404:
		return &Error{Kind: KindSourceNotFound, Err: err}
	case errors.As(err, &se):
		return &Error{Kind: KindSourceFailed, Err: err}
	case errors.As(err, &de):
		return &Error{Kind: KindCopyFailed, Err: err}
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled):
		return &Error{Kind: KindCopyFailed, Err: fmt.Errorf("copy cancelled: %w", err)}
	default:
		return &Error{Kind: KindInvalidRequest, Err: err}
	}
}

// noCredentials reports whether err is a registry's credentials that could
// not be had at all: a failing credential helper, or no AWS credentials for
// an ECR registry. Retrying does not help; fixing the credentials does.
func noCredentials(err error) bool {
	var he *keychain.HelperError
	return errors.As(err, &he) || errors.Is(err, ecrauth.ErrNoCredentials)
}
