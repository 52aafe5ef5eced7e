package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/aws/aws-lambda-go/lambda/messages"
	"github.com/aws/aws-lambda-go/lambdacontext"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	lambdapayload "github.com/ocistow/ocistow/cmd/ocistow-lambda/internal/payload"
	"github.com/ocistow/ocistow/internal/app"
	"github.com/ocistow/ocistow/internal/oneline"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/policy"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/service"
	"github.com/ocistow/ocistow/pkg/sign"
	"github.com/ocistow/ocistow/pkg/tracing"
)

// handler holds what every invocation shares: the service (with its
// connection pool and credential caches, which expire on their own), the
// signing key, and the settings read at init. It holds nothing about any
// one invocation.
type handler struct {
	svc    service.Service
	client *registry.Client
	opts   app.Options
	key    *keys.Key
	// keyRef is the signing key's reference ("" when the function does
	// not sign): a payload's Key must name it.
	keyRef string
	// policy is the function's source policy (SOURCE_KEY, …; nil: none),
	// and loader loads a payload's Verify, each key and root once.
	policy  *policy.Policy
	loader  *policy.Loader
	logger  *slog.Logger
	tracing *tracing.Tracing
	tracer  trace.Tracer
}

// newHandler reads the function's configuration from its environment,
// with the CLI's variable names, and checks it: an invalid configuration or
// an unusable key fails here, at init, not at every invocation.
func newHandler(ctx context.Context, lookupEnv func(string) (string, bool), logOut io.Writer) (*handler, error) {
	getenv := func(k string) string { v, _ := lookupEnv(k); return v }
	h := &handler{}
	fs := flag.NewFlagSet("ocistow-lambda", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	h.opts.RegisterPromote(fs)
	if err := fs.Parse(nil); err != nil {
		return nil, err
	}
	// Source and destination come with each invocation; the log format is
	// always JSON in Lambda.
	if err := app.ApplyEnv(fs, getenv, "source", "destination", "log-format", "output", "o", "quiet"); err != nil {
		return nil, err
	}
	h.opts.Settings.LogFormat = "json"
	on := tracing.Enabled(h.opts.XRay, getenv)
	tr, err := tracing.New(ctx, on, "ocistow-lambda", app.Version, getenv)
	if err != nil {
		return nil, err
	}
	h.tracing = tr
	if on {
		h.opts.Settings.TracerProvider = h.tracing.Provider
	}
	h.tracer = h.tracing.Provider.Tracer("github.com/ocistow/ocistow/cmd/ocistow-lambda")

	memMB, _ := strconv.Atoi(getenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"))
	if memMB > 0 {
		// Keep the heap well inside the function's memory unless the user
		// chose GOMEMLIMIT, and bound concurrency by memory: each blob in
		// flight costs buffers, and the smallest functions have 128 MB.
		if getenv("GOMEMLIMIT") == "" {
			debug.SetMemoryLimit(int64(memMB) * (1 << 20) * 3 / 4)
		}
		if h.opts.Settings.Jobs == 0 {
			h.opts.Settings.Jobs = min(registry.DefaultJobs(), max(2, memMB/64))
		}
	}
	keyRef, err := h.opts.CheckPromote()
	if err != nil {
		return nil, err
	}
	h.keyRef = keyRef
	h.opts.Settings.InsecureRegistries, h.opts.Settings.ECRRegistries = h.opts.Insecure, h.opts.ECR
	level := slog.LevelInfo
	if h.opts.Settings.Debug {
		level = slog.LevelDebug
	}
	h.logger = slog.New(requestIDHandler{slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: level})})
	h.client = app.NewClient(h.opts.Settings, h.logger)
	h.svc = app.ServiceFor(h.client, h.opts.Settings, h.logger)
	if keyRef != "" {
		kopts := h.opts.KeyOptions(lookupEnv)
		kopts.AWSLoadOptions = app.KeyLoadOptions(h.opts.Settings, h.logger)
		if h.key, err = keys.LoadSigner(ctx, keyRef, kopts); err != nil {
			return nil, err
		}
	}
	h.loader = h.opts.PolicyLoader(lookupEnv)
	if h.policy, err = h.loader.Load(ctx, h.opts.SourcePolicySpec()); err != nil {
		return nil, err
	}
	return h, nil
}

// Invoke implements lambda.Handler: it decodes the payload strictly and,
// by its shape, runs the promotion, plans the promotion file or sums up a
// fan-out's results, before the function's deadline; it returns the
// result object, or a function error with a stable errorType.
func (h *handler) Invoke(ctx context.Context, raw []byte) (out []byte, err error) {
	defer func() {
		// Never a stack trace in a response: a panic is a bug, reported as
		// one line.
		if r := recover(); r != nil {
			h.logger.ErrorContext(ctx, "panic", "err", fmt.Sprint(r))
			out, err = nil, messages.InvokeResponse_Error{Type: string(service.KindInternal), Message: oneline.String(fmt.Sprintf("internal error: %v", r))}
		}
	}()
	p, err := lambdapayload.Decode(raw)
	if err != nil {
		return nil, invokeError(service.KindInvalidRequest, err)
	}
	mode, _ := p.Mode() // Decode checked it
	var req service.PromoteRequest
	switch mode {
	case lambdapayload.Summarize:
		return json.Marshal(summarize(p.Plan, p.Results))
	case lambdapayload.Promote:
		if req, err = h.promoteRequest(ctx, p); err != nil {
			return nil, invokeError(service.KindInvalidRequest, err)
		}
	}

	// The invocation's span joins the trace Lambda started for it (the
	// X-Ray header it hands the runtime), so that ocistow's spans show
	// under the function's segment.
	if header, ok := ctx.Value("x-amzn-trace-id").(string); ok && header != "" {
		ctx = h.tracing.Propagator.Extract(ctx, propagation.MapCarrier{"X-Amzn-Trace-Id": header})
	}
	ctx, span := h.tracer.Start(ctx, "ocistow-lambda", trace.WithSpanKind(trace.SpanKindServer))
	defer func() {
		tracing.End(span, err)
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = h.tracing.Flush(fctx) // Lambda freezes the process once we return
	}()

	wctx, cancel, margin := workContext(ctx)
	defer cancel()
	var res any
	if mode == lambdapayload.Plan {
		res, err = h.plan(wctx, *p.PromotionFile)
	} else {
		res, err = service.Promote(wctx, h.svc, req)
	}
	if err != nil {
		if wctx.Err() != nil && ctx.Err() == nil {
			var cs *service.CopySucceededError
			switch {
			case errors.As(err, &cs):
				// The tag has moved: the error says which step was cut short.
				return nil, invokeError(service.KindTimeout, fmt.Errorf("cancelled %s before the function's timeout: %w", margin, err))
			case mode == lambdapayload.Plan:
				return nil, invokeError(service.KindTimeout, fmt.Errorf("plan cancelled %s before the function's timeout: %w", margin, err))
			}
			return nil, invokeError(service.KindTimeout, fmt.Errorf("cancelled %s before the function's timeout; the destination tag was not moved: %w", margin, err))
		}
		kind := service.KindOf(err)
		if kind == "" {
			kind = service.KindInternal
		}
		return nil, invokeError(kind, err)
	}
	return json.Marshal(res)
}

// promoteRequest is the promotion p asks for, on top of the function's
// configuration: the payload's annotations, manifest annotations and
// labels win over the environment's, key by key; its platforms replace the
// environment's; Immutable adds to IMMUTABLE; Sign and Attest, when
// present, say whether to sign and attest, and a Key must name the
// function's own key; Referrers, when present, says whether the source's
// referrers travel, and ReferrersTypes replaces REFERRERS_TYPE; Verify,
// when present, is the source policy instead of the function's (with the
// function's TRUSTED_ROOT when it names none).
func (h *handler) promoteRequest(ctx context.Context, p lambdapayload.Payload) (service.PromoteRequest, error) {
	req := h.opts.PromoteRequest(h.key, h.policy)
	if p.Verify != nil {
		v := *p.Verify
		if v.Identity != "" && v.TrustedRoot == "" {
			v.TrustedRoot = h.opts.TrustedRoot // the function's TRUSTED_ROOT
		}
		pol, err := h.loader.Load(ctx, &v)
		if err != nil {
			return req, fmt.Errorf("Verify: %w", err)
		}
		req.Policy = pol
	}
	req.Source, req.Destination = p.SrcImageRef, p.DstImageRef
	req.Annotations = merged(h.opts.Annotations, p.Annotations)
	req.ManifestAnnotations = merged(h.opts.ManifestAnnotations, p.ManifestAnnotations)
	req.Labels = merged(h.opts.Labels, p.Labels)
	if len(p.Platforms) > 0 {
		req.Platforms = p.Platforms
	}
	req.Immutable = req.Immutable || p.Immutable
	if p.Sign != nil {
		req.Sign = *p.Sign
	}
	if p.SignatureFormat != "" {
		f, err := sign.ParseFormat(p.SignatureFormat)
		if err != nil {
			return req, fmt.Errorf("SignatureFormat: %w", err)
		}
		req.SignatureFormat = f
	}
	if p.Referrers != nil {
		req.Referrers = *p.Referrers
	}
	if len(p.ReferrersTypes) > 0 {
		req.ReferrersTypes = p.ReferrersTypes
	}
	if p.Attest != nil {
		req.Attest = *p.Attest
	}
	wantsKey := p.Key != "" && (p.Sign == nil || *p.Sign || req.Attest)
	switch {
	case p.Sign != nil && *p.Sign && !h.opts.Sign:
		// The key may be there to attest with; SIGN=false still says the
		// function does not sign.
		return req, errors.New("this function does not sign (SIGN=false): send \"Sign\": false, or configure it to sign")
	case req.Attest && h.key == nil:
		return req, errors.New("this function has no key to attest with: send \"Attest\": false, or configure its key")
	case (req.Sign || wantsKey) && h.key == nil:
		return req, errors.New("this function does not sign (SIGN=false): send \"Sign\": false, or configure its key")
	case (req.Sign || req.Attest) && p.Key != "" && normalKey(p.Key) != normalKey(h.keyRef):
		return req, fmt.Errorf("Key %q: this function signs with %s", p.Key, h.keyRef)
	case !req.Copy && !req.Sign:
		return req, errors.New("nothing to do: the function does not copy (COPY=false) and the payload says \"Sign\": false")
	case !req.Copy && !req.Policy.Empty():
		return req, errors.New("a source policy checks the source of a copy: this function does not copy (COPY=false)")
	case req.Copy && p.SrcImageRef == "":
		return req, errors.New("SrcImageRef is required")
	case p.DstImageRef == "":
		return req, errors.New("DstImageRef is required")
	}
	return req, nil
}

// merged returns defaults with over's keys on top, never nil.
func merged(defaults, over map[string]string) map[string]string {
	out := maps.Clone(defaults)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, over)
	return out
}

// normalKey is a key reference in one spelling: a KMS key as an
// awskms:// reference (alias/NAME is awskms:///alias/NAME), a file as a
// clean path.
func normalKey(ref string) string {
	if r, ok := keys.KMSReference(ref); ok {
		return r
	}
	return filepath.Clean(ref)
}

// workContext returns a context that ends a margin before the invocation's
// deadline, so that ocistow stops cleanly, and says so, before Lambda kills
// the function: a tenth of the time left, between 250 ms and 10 s.
func workContext(ctx context.Context) (context.Context, context.CancelFunc, time.Duration) {
	deadline, ok := ctx.Deadline()
	if !ok {
		c, cancel := context.WithCancel(ctx)
		return c, cancel, 0
	}
	margin := min(max(time.Until(deadline)/10, 250*time.Millisecond), 10*time.Second)
	c, cancel := context.WithDeadline(ctx, deadline.Add(-margin))
	return c, cancel, margin
}

func invokeError(kind service.Kind, err error) error {
	return messages.InvokeResponse_Error{Type: string(kind), Message: oneline.Error(err)}
}

// requestIDHandler adds the invocation's aws_request_id to every record
// logged with its context.
type requestIDHandler struct{ slog.Handler }

func (h requestIDHandler) Handle(ctx context.Context, r slog.Record) error {
	if lc, ok := lambdacontext.FromContext(ctx); ok {
		r.AddAttrs(slog.String("aws_request_id", lc.AwsRequestID))
	}
	return h.Handler.Handle(ctx, r)
}

func (h requestIDHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return requestIDHandler{h.Handler.WithAttrs(as)}
}

func (h requestIDHandler) WithGroup(name string) slog.Handler {
	return requestIDHandler{h.Handler.WithGroup(name)}
}
