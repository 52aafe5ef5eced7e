package app

import (
	"context"
	"log/slog"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/ocistow/ocistow/pkg/tracing"
)

// awsLoadOptions returns the AWS SDK options every AWS client of ocistow
// gets: a span per call when tracing, and at debug level one log line per
// call with service, operation, status and timing (never headers, so never
// the SigV4 Authorization header or a session token).
func awsLoadOptions(tp trace.TracerProvider, logger *slog.Logger) []func(*config.LoadOptions) error {
	var api []func(*middleware.Stack) error
	if tp != nil {
		api = append(api, awsTracing(tp.Tracer("github.com/ocistow/ocistow/internal/app/aws")))
	}
	if logger != nil && logger.Enabled(context.Background(), slog.LevelDebug) {
		api = append(api, func(s *middleware.Stack) error {
			return s.Finalize.Add(middleware.FinalizeMiddlewareFunc("ocistow-debug-log",
				func(ctx context.Context, in middleware.FinalizeInput, next middleware.FinalizeHandler) (middleware.FinalizeOutput, middleware.Metadata, error) {
					start := time.Now()
					out, md, err := next.HandleFinalize(ctx, in)
					attrs := []slog.Attr{
						slog.String("service", awsmiddleware.GetServiceID(ctx)),
						slog.String("operation", awsmiddleware.GetOperationName(ctx)),
						slog.Duration("took", time.Since(start)),
					}
					if resp, ok := out.Result.(*smithyhttp.Response); ok && resp != nil {
						attrs = append(attrs, slog.Int("status", resp.StatusCode))
					} else if raw, ok := awsmiddleware.GetRawResponse(md).(*smithyhttp.Response); ok && raw != nil {
						attrs = append(attrs, slog.Int("status", raw.StatusCode))
					}
					if err != nil {
						attrs = append(attrs, slog.String("err", err.Error()))
					}
					logger.LogAttrs(ctx, slog.LevelDebug, "aws", attrs...)
					return out, md, err
				}), middleware.After)
		})
	}
	if len(api) == 0 {
		return nil
	}
	return []func(*config.LoadOptions) error{config.WithAPIOptions(api)}
}

// awsTracing makes one client span per AWS call, named Service.Operation
// (KMS.Sign), covering its retries. It stands in for contrib's otelaws,
// which was deprecated without an owner and links the schemas of services
// ocistow never calls (DynamoDB, SQS) into the binary.
func awsTracing(tracer trace.Tracer) func(*middleware.Stack) error {
	return func(s *middleware.Stack) error {
		return s.Initialize.Add(middleware.InitializeMiddlewareFunc("ocistow-tracing",
			func(ctx context.Context, in middleware.InitializeInput, next middleware.InitializeHandler) (middleware.InitializeOutput, middleware.Metadata, error) {
				service, op := awsmiddleware.GetServiceID(ctx), awsmiddleware.GetOperationName(ctx)
				ctx, span := tracer.Start(ctx, service+"."+op, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
					attribute.String("rpc.system", "aws-api"),
					attribute.String("rpc.service", service),
					attribute.String("rpc.method", op),
					attribute.String("cloud.region", awsmiddleware.GetRegion(ctx)),
				))
				out, md, err := next.HandleInitialize(ctx, in)
				if id, ok := awsmiddleware.GetRequestIDMetadata(md); ok {
					span.SetAttributes(attribute.String("aws.request_id", id))
				}
				tracing.End(span, err)
				return out, md, err
			}), middleware.After)
	}
}
