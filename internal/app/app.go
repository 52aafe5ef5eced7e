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

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/ocistow/ocistow/pkg/canonlog"
	"github.com/ocistow/ocistow/pkg/ecrauth"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/service"
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
func AWSConfigLoader(s Settings) ecrauth.ConfigLoader {
	return func(ctx context.Context, region string) (aws.Config, error) {
		var opts []func(*config.LoadOptions) error
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

// NewService builds the Service for s, logging through logger.
func NewService(s Settings, logger *slog.Logger) service.Service {
	kc := authn.NewMultiKeychain(
		authn.DefaultKeychain,
		ecrauth.New(AWSConfigLoader(s), ecrauth.WithRegistries(s.ECRRegistries...)),
	)
	rc := registry.New(
		registry.WithKeychain(kc),
		registry.WithInsecureRegistries(s.InsecureRegistries...),
		registry.WithJobs(s.Jobs),
		registry.WithLogger(logger),
		registry.WithUserAgent("ocistow/"+Version),
	)
	return canonlog.New(service.New(rc), logger)
}
