// Package tracing sets up OpenTelemetry tracing the way AWS X-Ray reads it
// (X-Ray trace ids, the X-Ray propagator, OTLP export to the ADOT collector
// or Lambda layer), and wraps a Service so that each method is a span.
//
// Tracing is off unless asked for (ocistow's -aws-xray, or the standard
// OTEL_* variables); off, every tracer is a no-op and nothing is exported.
//
// The X-Ray id generator and propagator come from
// go.opentelemetry.io/contrib/propagators/aws, deprecated in September 2026
// for want of an owner; it still works and is pinned, and replacing it is
// tracked in the README.
package tracing

import (
	"context"
	"fmt"
	"strings"

	"go.opentelemetry.io/contrib/propagators/aws/xray"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Tracing is a configured tracer provider with what it needs to end.
type Tracing struct {
	// Provider makes tracers; a no-op provider when tracing is off.
	Provider trace.TracerProvider
	// Propagator reads and writes X-Ray trace headers.
	Propagator propagation.TextMapPropagator
	sdk        *sdktrace.TracerProvider
}

// Enabled reports whether tracing is on: asked for with xray (-aws-xray,
// AWS_XRAY), or by the OpenTelemetry variables OTEL_TRACES_EXPORTER=otlp,
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; and
// not switched off with OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none.
func Enabled(xray bool, getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") || getenv("OTEL_TRACES_EXPORTER") == "none" {
		return false
	}
	return xray || getenv("OTEL_TRACES_EXPORTER") == "otlp" ||
		getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// New returns tracing for a process named service at version, exporting
// over OTLP/HTTP when on: where the OTEL_EXPORTER_OTLP_* variables say
// (the exporter reads them; getenv tells New whether they name an
// endpoint), by default http://localhost:4318, plain HTTP, where the ADOT
// collector and the Lambda layer listen.
func New(ctx context.Context, on bool, service, version string, getenv func(string) string) (*Tracing, error) {
	t := &Tracing{Propagator: xray.Propagator{}}
	if !on {
		t.Provider = noop.NewTracerProvider()
		return t, nil
	}
	exp, err := otlptracehttp.New(ctx, defaultEndpoint(getenv)...)
	if err != nil {
		return nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName(service), semconv.ServiceVersion(version)))
	if err != nil {
		return nil, fmt.Errorf("tracing: resource: %w", err)
	}
	t.sdk = sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithIDGenerator(xray.NewIDGenerator()),
		sdktrace.WithResource(res),
	)
	t.Provider = t.sdk
	return t, nil
}

// defaultEndpoint returns the exporter options that make its default
// http://localhost:4318, plain HTTP, where the ADOT collector and the ADOT
// Lambda layer listen: the OTLP exporter's own default is HTTPS, which
// they do not speak. Where an OTEL_EXPORTER_OTLP_* variable names an
// endpoint or says whether it is insecure, the variables decide.
func defaultEndpoint(getenv func(string) string) []otlptracehttp.Option {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_INSECURE", "OTEL_EXPORTER_OTLP_TRACES_INSECURE"} {
		if getenv(k) != "" {
			return nil
		}
	}
	return []otlptracehttp.Option{otlptracehttp.WithEndpoint("localhost:4318"), otlptracehttp.WithInsecure()}
}

// Flush exports every finished span now. Lambda freezes the process after
// each invocation, so the handler flushes before it returns.
func (t *Tracing) Flush(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	return t.sdk.ForceFlush(ctx)
}

// Shutdown flushes and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t.sdk == nil {
		return nil
	}
	return t.sdk.Shutdown(ctx)
}

// XRayTraceID renders the trace id of ctx's span in X-Ray's form,
// 1-<8 hex>-<24 hex>, or "" when ctx has no valid span.
func XRayTraceID(ctx context.Context) string {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return ""
	}
	id := sc.TraceID().String()
	return "1-" + id[:8] + "-" + id[8:]
}

// End records err (if any) on span and ends it.
func End(span trace.Span, err error) {
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
