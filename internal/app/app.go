// Package app assembles ocistow from its settings: the logger, the registry
// client with its credentials, and the Service wrapped in its middleware.
// Both transports (the CLI and the Lambda handler) build through it, so they
// cannot drift apart.
package app

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/ocistow/ocistow/pkg/canonlog"
	"github.com/ocistow/ocistow/pkg/ecrauth"
	"github.com/ocistow/ocistow/pkg/keychain"
	"github.com/ocistow/ocistow/pkg/promote"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/service"
	"github.com/ocistow/ocistow/pkg/tracing"
)

// Version is ocistow's version, set at build time with
// -ldflags "-X github.com/ocistow/ocistow/internal/app.Version=…".
var Version = "dev"

// Settings are ocistow's process-wide settings, shared by every request.
type Settings struct {
	AWSRegion          string
	Debug              bool
	Jobs               int
	InsecureRegistries []string
	ECRRegistries      []string
	// LogFormat is "text" or "json".
	LogFormat string
	// StallTimeout abandons (and retries) a response that delivers nothing
	// for this long; 0 means registry.DefaultStallTimeout.
	StallTimeout time.Duration
	// TracerProvider records spans; nil records none.
	TracerProvider trace.TracerProvider
	// Progress shows each blob of a copy; nil shows nothing.
	Progress promote.Progress
	// MaxRequestsPerRegistry caps the requests in flight to one registry
	// host (0: no cap).
	MaxRequestsPerRegistry int
}

// NewLogger returns the logger for s, writing to w.
func NewLogger(s Settings, w io.Writer) (*slog.Logger, error) {
	level := slog.LevelInfo
	if s.Debug {
		level = slog.LevelDebug
	}
	opts := &slog.HandlerOptions{Level: level}
	switch s.LogFormat {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("invalid log format %q: want text or json", s.LogFormat)
	}
}

// AWSConfigLoader returns a loader of the AWS SDK's default configuration
// (environment, shared config and credentials files, SSO, web identity,
// container and instance roles), with the region forced to s.AWSRegion when
// set, and to the region a caller asks for (an ECR hostname's) otherwise.
func AWSConfigLoader(s Settings, logger *slog.Logger) ecrauth.ConfigLoader {
	return func(ctx context.Context, region string) (aws.Config, error) {
		opts := awsLoadOptions(s.TracerProvider, logger)
		if region == "" {
			region = s.AWSRegion
		}
		if region != "" {
			opts = append(opts, config.WithRegion(region))
		}
		cfg, err := config.LoadDefaultConfig(ctx, opts...)
		if err != nil {
			return aws.Config{}, fmt.Errorf("loading AWS configuration: %w", err)
		}
		return cfg, nil
	}
}

// KeyLoadOptions are the AWS options for KMS clients: tracing and debug
// logging, as every AWS client of ocistow has.
func KeyLoadOptions(s Settings, logger *slog.Logger) []func(*config.LoadOptions) error {
	return awsLoadOptions(s.TracerProvider, logger)
}

// NewService builds the Service for s, logging through logger: the core
// wrapped in canonical log lines, wrapped in tracing (so that each log line
// carries its span's trace id).
func NewService(s Settings, logger *slog.Logger) service.Service {
	return ServiceFor(NewClient(s, logger), s, logger)
}

// NewClient builds the registry client for s: credentials (ECR tokens,
// the Docker config), insecure hosts, concurrency, logging and tracing.
func NewClient(s Settings, logger *slog.Logger) *registry.Client {
	kc := keychain.New(
		ecrauth.New(AWSConfigLoader(s, logger), ecrauth.WithRegistries(s.ECRRegistries...)),
		keychain.NewDocker(logger),
		logger,
	)
	ropts := []registry.Option{
		registry.WithKeychain(kc),
		registry.WithInsecureRegistries(s.InsecureRegistries...),
		registry.WithJobs(s.Jobs),
		registry.WithLogger(logger),
		registry.WithUserAgent("ocistow/" + Version),
		registry.WithMaxRequestsPerRegistry(s.MaxRequestsPerRegistry),
	}
	if s.StallTimeout > 0 {
		ropts = append(ropts, registry.WithStallTimeout(s.StallTimeout))
	}
	if s.TracerProvider != nil {
		ropts = append(ropts, registry.WithTracerProvider(s.TracerProvider))
	}
	return registry.New(ropts...)
}

// ServiceFor builds the Service around the registry client c, as
// NewService does.
func ServiceFor(c *registry.Client, s Settings, logger *slog.Logger) service.Service {
	sopts := []service.Option{service.WithVersion(Version)}
	tp := s.TracerProvider
	if tp != nil {
		sopts = append(sopts, service.WithTracerProvider(tp))
	} else {
		tp = noop.NewTracerProvider()
	}
	if s.Progress != nil {
		sopts = append(sopts, service.WithProgress(s.Progress))
	}
	return tracing.NewService(canonlog.New(service.New(c, sopts...), logger), tp)
}
