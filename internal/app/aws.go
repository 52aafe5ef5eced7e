package app

import (
	"context"
	"log/slog"
	"time"

	awsmiddleware "github.com/aws/aws-sdk-go-v2/aws/middleware"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"go.opentelemetry.io/contrib/instrumentation/github.com/aws/aws-sdk-go-v2/otelaws"
	"go.opentelemetry.io/otel/trace"
)

// awsLoadOptions returns the AWS SDK options every AWS client of ocistow
// gets: a span per call when tracing, and at debug level one log line per
// call with service, operation, status and timing (never headers, so never
// the SigV4 Authorization header or a session token).
func awsLoadOptions(tp trace.TracerProvider, logger *slog.Logger) []func(*config.LoadOptions) error {
	var api []func(*middleware.Stack) error
	if tp != nil {
		otelaws.AppendMiddlewares(&api, otelaws.WithTracerProvider(tp))
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
