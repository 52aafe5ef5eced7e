package tracing

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/ocistow/ocistow/pkg/service"
	"github.com/ocistow/ocistow/pkg/sign"
)

// NewService wraps next so that each method call is a span named for the
// method, with what was asked and what happened as attributes, and the
// error (with its kind) recorded on failure.
func NewService(next service.Service, tp trace.TracerProvider) service.Service {
	return &middleware{next: next, tracer: tp.Tracer("github.com/ocistow/ocistow/pkg/service")}
}

type middleware struct {
	next   service.Service
	tracer trace.Tracer
}

func (m *middleware) Copy(ctx context.Context, req service.CopyRequest) (res *service.CopyResult, err error) {
	ctx, span := m.tracer.Start(ctx, "Copy", trace.WithAttributes(
		attribute.String("ocistow.source", req.Source),
		attribute.String("ocistow.destination", req.Destination),
		attribute.StringSlice("ocistow.platforms", req.Platforms),
	))
	defer func() {
		if res != nil {
			span.SetAttributes(
				attribute.String("ocistow.source_digest", res.SourceDigest),
				attribute.String("ocistow.destination_digest", res.DestinationDigest),
				attribute.Int("ocistow.blobs_copied", res.BlobsCopied),
				attribute.Int("ocistow.blobs_skipped", res.BlobsSkipped),
				attribute.Int("ocistow.blobs_mounted", res.BlobsMounted),
				attribute.Int64("ocistow.bytes_copied", res.BytesCopied),
			)
		}
		end(span, err)
	}()
	return m.next.Copy(ctx, req)
}

func (m *middleware) Sign(ctx context.Context, req service.SignRequest) (res *service.SignResult, err error) {
	attrs := []attribute.KeyValue{attribute.String("ocistow.image", req.Image), attribute.StringSlice("ocistow.digests", req.Digests)}
	if req.Key != nil {
		attrs = append(attrs, attribute.String("ocistow.key", req.Key.Ref))
	}
	ctx, span := m.tracer.Start(ctx, "Sign", trace.WithAttributes(attrs...))
	defer func() {
		if res != nil {
			formats := sign.Names(res.Formats)
			span.SetAttributes(attribute.Int("ocistow.signatures_added", res.Added), attribute.Int("ocistow.signatures_present", res.Present),
				attribute.StringSlice("ocistow.signature_formats", formats))
		}
		end(span, err)
	}()
	return m.next.Sign(ctx, req)
}

func (m *middleware) Referrers(ctx context.Context, req service.ReferrersRequest) (res *service.ReferrersResult, err error) {
	ctx, span := m.tracer.Start(ctx, "Referrers", trace.WithAttributes(
		attribute.String("ocistow.source", req.Source),
		attribute.String("ocistow.destination", req.Destination),
		attribute.StringSlice("ocistow.digests", req.Digests),
	))
	defer func() {
		if res != nil {
			span.SetAttributes(
				attribute.Int("ocistow.referrers_copied", res.ReferrersCopied),
				attribute.Int("ocistow.referrers_present", res.ReferrersPresent),
				attribute.Int("ocistow.tags_copied", res.TagsCopied),
				attribute.Int("ocistow.subjects_written", res.SubjectsWritten),
			)
		}
		end(span, err)
	}()
	return m.next.Referrers(ctx, req)
}

func (m *middleware) Attest(ctx context.Context, req service.AttestRequest) (res *service.AttestResult, err error) {
	attrs := []attribute.KeyValue{attribute.String("ocistow.image", req.Image), attribute.StringSlice("ocistow.digests", req.Digests)}
	if req.Key != nil {
		attrs = append(attrs, attribute.String("ocistow.key", req.Key.Ref))
	}
	ctx, span := m.tracer.Start(ctx, "Attest", trace.WithAttributes(attrs...))
	defer func() {
		if res != nil {
			formats := sign.Names(res.Formats)
			span.SetAttributes(attribute.Int("ocistow.attestations_added", res.Added), attribute.Int("ocistow.attestations_present", res.Present),
				attribute.StringSlice("ocistow.attestation_formats", formats))
		}
		end(span, err)
	}()
	return m.next.Attest(ctx, req)
}

func (m *middleware) Verify(ctx context.Context, req service.VerifyRequest) (res *service.VerifyResult, err error) {
	ctx, span := m.tracer.Start(ctx, "Verify", trace.WithAttributes(attribute.String("ocistow.image", req.Image), attribute.Bool("ocistow.recursive", req.Recursive)))
	defer func() {
		if res != nil {
			span.SetAttributes(attribute.Int("ocistow.verified", len(res.Verified)+len(res.Attestations)))
		}
		end(span, err)
	}()
	return m.next.Verify(ctx, req)
}

func (m *middleware) Check(ctx context.Context, req service.CopyRequest) (res *service.CheckResult, err error) {
	ctx, span := m.tracer.Start(ctx, "Check", trace.WithAttributes(
		attribute.String("ocistow.source", req.Source),
		attribute.String("ocistow.destination", req.Destination),
	))
	defer func() {
		if res != nil {
			span.SetAttributes(
				attribute.String("ocistow.source_digest", res.SourceDigest),
				attribute.Bool("ocistow.up_to_date", res.UpToDate),
				attribute.Int("ocistow.source_pulls", res.SourcePulls),
			)
		}
		end(span, err)
	}()
	return m.next.Check(ctx, req)
}

func end(span trace.Span, err error) {
	if k := service.KindOf(err); k != "" {
		span.SetAttributes(attribute.String("ocistow.error_type", string(k)))
	}
	End(span, err)
}
