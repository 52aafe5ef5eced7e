// Package canonlog is Service middleware that writes one canonical log line
// per service method call: what was asked, what happened, how long it took,
// and the error if any. One line per step is what an operator greps for and
// what a log pipeline turns into metrics.
package canonlog

import (
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"github.com/ocistow/ocistow/pkg/service"
	"github.com/ocistow/ocistow/pkg/sign"
	"github.com/ocistow/ocistow/pkg/tracing"
)

// New wraps next so that each call logs one line to logger at info level
// (error level when the call failed).
func New(next service.Service, logger *slog.Logger) service.Service {
	return &middleware{next: next, logger: logger}
}

type middleware struct {
	next   service.Service
	logger *slog.Logger
}

func (m *middleware) Copy(ctx context.Context, req service.CopyRequest) (*service.CopyResult, error) {
	start := time.Now()
	res, err := m.next.Copy(ctx, req)
	attrs := []slog.Attr{
		slog.String("component", "service"),
		slog.String("method", "Copy"),
		slog.String("src", req.Source),
		slog.String("dst", req.Destination),
		slog.String("annotations", jsonString(req.Annotations)),
	}
	if len(req.ManifestAnnotations) > 0 {
		attrs = append(attrs, slog.String("manifest_annotations", jsonString(req.ManifestAnnotations)))
	}
	if len(req.Labels) > 0 {
		attrs = append(attrs, slog.String("labels", jsonString(req.Labels)))
	}
	if len(req.Platforms) > 0 {
		attrs = append(attrs, slog.Any("platforms", req.Platforms))
	}
	if res != nil {
		attrs = append(attrs,
			slog.String("src_digest", res.SourceDigest),
			slog.String("dst_digest", res.DestinationDigest),
			slog.Int("manifests", max(1, len(res.Manifests))),
			slog.Int("blobs_copied", res.BlobsCopied),
			slog.Int("blobs_skipped", res.BlobsSkipped),
			slog.Int("blobs_mounted", res.BlobsMounted),
			slog.Int64("bytes", res.BytesCopied),
			slog.Bool("up_to_date", res.UpToDate),
			slog.Int("src_pulls", res.SourcePulls),
		)
		if res.PreviousDigest != "" {
			attrs = append(attrs, slog.String("tag_moved_from", res.PreviousDigest))
		}
		if res.Policy != nil {
			// Which signature satisfied the source policy: key or
			// identity, and format.
			attrs = append(attrs, slog.String("policy", res.Policy.Summary()), slog.Int("policy_digests", len(res.Policy.Digests)))
		}
	}
	m.log(ctx, "Copy", start, err, attrs)
	return res, err
}

func (m *middleware) Sign(ctx context.Context, req service.SignRequest) (*service.SignResult, error) {
	start := time.Now()
	res, err := m.next.Sign(ctx, req)
	attrs := []slog.Attr{
		slog.String("component", "service"),
		slog.String("method", "Sign"),
		slog.String("dst", req.Image),
		slog.String("annotations", jsonString(req.Annotations)),
	}
	if req.Key != nil {
		attrs = append(attrs, slog.String("key", req.Key.Ref))
	}
	if res != nil {
		digests := make([]string, 0, len(res.Digests))
		for _, d := range res.Digests {
			if d.Digest != "" {
				digests = append(digests, d.Digest)
			}
		}
		formats := sign.Names(res.Formats)
		attrs = append(attrs,
			slog.Any("digests", digests),
			slog.String("formats", strings.Join(formats, ",")),
			slog.Int("signatures_added", res.Added),
			slog.Int("signatures_present", res.Present),
		)
	}
	m.log(ctx, "Sign", start, err, attrs)
	return res, err
}

func (m *middleware) Referrers(ctx context.Context, req service.ReferrersRequest) (*service.ReferrersResult, error) {
	start := time.Now()
	res, err := m.next.Referrers(ctx, req)
	attrs := []slog.Attr{
		slog.String("component", "service"),
		slog.String("method", "Referrers"),
		slog.String("src", req.Source),
		slog.String("dst", req.Destination),
		slog.Any("digests", req.Digests),
		slog.Bool("write_subjects", req.WriteSubjects),
	}
	if len(req.ArtifactTypes) > 0 {
		attrs = append(attrs, slog.Any("artifact_types", req.ArtifactTypes))
	}
	if res != nil {
		attrs = append(attrs,
			slog.Int("subjects", len(res.Subjects)),
			slog.Int("subjects_written", res.SubjectsWritten),
			slog.Int("referrers_copied", res.ReferrersCopied),
			slog.Int("referrers_present", res.ReferrersPresent),
			slog.Int("tags_copied", res.TagsCopied),
			slog.Int("tags_present", res.TagsPresent),
			slog.Int("tags_merged", res.TagsMerged),
			slog.Int("filtered", res.Filtered),
			slog.Int("blobs_copied", res.BlobsCopied),
			slog.Int64("bytes", res.BytesCopied),
			slog.Int("src_pulls", res.SourcePulls),
		)
	}
	m.log(ctx, "Referrers", start, err, attrs)
	return res, err
}

func (m *middleware) Attest(ctx context.Context, req service.AttestRequest) (*service.AttestResult, error) {
	start := time.Now()
	res, err := m.next.Attest(ctx, req)
	attrs := []slog.Attr{
		slog.String("component", "service"),
		slog.String("method", "Attest"),
		slog.String("dst", req.Image),
		slog.String("src", req.Predicate.Source.Reference),
		slog.String("src_digest", req.Predicate.Source.Digest),
	}
	if req.Key != nil {
		attrs = append(attrs, slog.String("key", req.Key.Ref))
	}
	if res != nil {
		digests := make([]string, 0, len(res.Digests))
		for _, d := range res.Digests {
			if d.Digest != "" {
				digests = append(digests, d.Digest)
			}
		}
		formats := sign.Names(res.Formats)
		attrs = append(attrs,
			slog.String("predicate_type", res.PredicateType),
			slog.Any("digests", digests),
			slog.String("formats", strings.Join(formats, ",")),
			slog.Int("attestations_added", res.Added),
			slog.Int("attestations_present", res.Present),
		)
	}
	m.log(ctx, "Attest", start, err, attrs)
	return res, err
}

func (m *middleware) Verify(ctx context.Context, req service.VerifyRequest) (*service.VerifyResult, error) {
	start := time.Now()
	res, err := m.next.Verify(ctx, req)
	attrs := []slog.Attr{
		slog.String("component", "service"),
		slog.String("method", "Verify"),
		slog.String("image", req.Image),
		slog.String("annotations", jsonString(req.Annotations)),
		slog.Bool("recursive", req.Recursive),
	}
	if req.Attestation {
		attrs = append(attrs, slog.Bool("attestation", true))
	}
	if req.Key != nil {
		attrs = append(attrs, slog.String("key", req.Key.Ref))
	}
	if res != nil {
		attrs = append(attrs, slog.Any("digests", res.Digests), slog.Int("verified", len(res.Verified)+len(res.Attestations)))
		counts := res.FormatCounts()
		attrs = append(attrs, slog.Int("verified_legacy", counts[sign.Legacy]), slog.Int("verified_bundle", counts[sign.Bundle]))
	}
	m.log(ctx, "Verify", start, err, attrs)
	return res, err
}

func (m *middleware) Check(ctx context.Context, req service.CopyRequest) (*service.CheckResult, error) {
	start := time.Now()
	res, err := m.next.Check(ctx, req)
	attrs := []slog.Attr{
		slog.String("component", "service"),
		slog.String("method", "Check"),
		slog.String("src", req.Source),
		slog.String("dst", req.Destination),
	}
	if res != nil {
		attrs = append(attrs,
			slog.String("src_digest", res.SourceDigest),
			slog.Bool("up_to_date", res.UpToDate),
			slog.Int("src_pulls", res.SourcePulls),
		)
		if res.PreviousDigest != "" {
			attrs = append(attrs, slog.String("tag_moves_from", res.PreviousDigest))
		}
		if res.Policy != nil {
			attrs = append(attrs, slog.String("policy", res.Policy.Summary()))
		}
	}
	m.log(ctx, "Check", start, err, attrs)
	return res, err
}

func (m *middleware) log(ctx context.Context, method string, start time.Time, err error, attrs []slog.Attr) {
	attrs = append(attrs, slog.Duration("took", time.Since(start)))
	if id := tracing.XRayTraceID(ctx); id != "" {
		attrs = append(attrs, slog.String("trace_id", id))
	}
	level := slog.LevelInfo
	if err != nil {
		level = slog.LevelError
		attrs = append(attrs, slog.String("err", err.Error()))
		if k := service.KindOf(err); k != "" {
			attrs = append(attrs, slog.String("error_type", string(k)))
		}
	}
	m.logger.LogAttrs(ctx, level, method, attrs...)
}

// jsonString renders m as compact JSON with sorted keys, as the original
// ocistow logged annotations; "{}" when empty.
func jsonString(m map[string]string) string {
	if len(m) == 0 {
		return "{}"
	}
	b, err := json.Marshal(m)
	if err != nil {
		return "{}"
	}
	return string(b)
}
