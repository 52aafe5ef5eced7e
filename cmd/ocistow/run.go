package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ocistow/ocistow/internal/app"
	"github.com/ocistow/ocistow/pkg/service"
)

// Exit codes. Scripts may rely on them.
const (
	exitOK      = 0
	exitFailed  = 1 // the promotion failed; the destination tag is as it was
	exitInvalid = 2 // bad flags or input; nothing was attempted
)

const usageHead = `ocistow promotes a container image into your registry, stamps it with your
metadata and signs it.

Usage:
  ocistow -source IMAGE -destination IMAGE [flags]

Example: copy busybox into ECR with two annotations, without signing:
  ocistow -source busybox:1.36 \
      -destination 111111111111.dkr.ecr.us-east-1.amazonaws.com/base/busybox:1.36 \
      -annotations team=platform -annotations owner=martin -sign=false

Every flag can also be set by the environment variable of the same name in
upper snake case (-aws-kms-key-arn: AWS_KMS_KEY_ARN); repeatable flags take a
comma-separated list there (ANNOTATIONS=team=platform,owner=martin).
Command-line flags win over the environment.

Flags:
`

// promoteFlags holds the promote command's flags.
type promoteFlags struct {
	source, destination string
	annotations         app.KeyValues
	manifestAnnotations app.KeyValues
	labels              app.KeyValues
	platforms           app.Strings
	copy, sign          bool
	kmsKey              string
	xray                bool
	output              string
	settings            app.Settings
	insecure, ecr       app.Strings
	version             bool
}

func newFlagSet(f *promoteFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("ocistow", flag.ContinueOnError)
	f.annotations, f.manifestAnnotations, f.labels = app.KeyValues{}, app.KeyValues{}, app.KeyValues{}
	fs.StringVar(&f.source, "source", "", "source image (tag or digest); short Docker names work: busybox")
	fs.StringVar(&f.destination, "destination", "", "destination image (tag or digest)")
	fs.Var(f.annotations, "annotations", "destination image annotations and config labels (key=value, repeatable)")
	fs.Var(f.manifestAnnotations, "manifest-annotation", "add an annotation to manifests and indexes only (key=value, repeatable)")
	fs.Var(f.labels, "label", "add a label to image configs only (key=value, repeatable)")
	fs.Var(&f.platforms, "platform", "copy only this platform of a multi-platform image: os/arch[/variant] (repeatable)")
	fs.BoolVar(&f.copy, "copy", true, "whether to copy the image")
	fs.BoolVar(&f.sign, "sign", true, "whether to sign the image")
	fs.StringVar(&f.kmsKey, "aws-kms-key-arn", "", "AWS KMS key to sign with: key ARN, key id, alias/NAME, alias ARN or awskms:// reference")
	fs.StringVar(&f.settings.AWSRegion, "aws-region", "", "AWS region for KMS and ECR (default: the AWS SDK's, e.g. AWS_REGION)")
	fs.BoolVar(&f.xray, "aws-xray", false, "whether to enable AWS X-Ray tracing")
	fs.BoolVar(&f.settings.Debug, "debug", false, "debug logging: every registry request with its status and timing (never credentials)")
	fs.IntVar(&f.settings.Jobs, "jobs", 0, "blobs copied concurrently (default: number of CPUs, at least 4)")
	fs.Var(&f.insecure, "insecure-registry", "allow plain HTTP or unverified TLS to this registry host[:port] (repeatable; loopback needs none)")
	fs.Var(&f.ecr, "ecr-registry", "treat this registry host as Amazon ECR for credentials, e.g. a VPC endpoint name (repeatable)")
	fs.StringVar(&f.settings.LogFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&f.output, "output", "text", "result on stdout: text (one summary line) or json")
	fs.BoolVar(&f.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	return fs
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	var f promoteFlags
	fs := newFlagSet(&f)
	// The flag package would print the whole usage after a bad flag; one
	// line says more.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK
		}
		return fail(stderr, exitInvalid, fmt.Errorf("%w (see ocistow -h)", err))
	}
	if err := app.ApplyEnv(fs, getenv); err != nil {
		return fail(stderr, exitInvalid, err)
	}
	if f.version {
		fmt.Fprintln(stdout, "ocistow", app.Version)
		return exitOK
	}
	if fs.NArg() > 0 {
		return fail(stderr, exitInvalid, fmt.Errorf("unexpected argument %q (flags take -name=value)", fs.Arg(0)))
	}
	if f.output != "text" && f.output != "json" {
		return fail(stderr, exitInvalid, fmt.Errorf("invalid -output %q: want text or json", f.output))
	}
	if !f.copy && !f.sign {
		return fail(stderr, exitInvalid, errors.New("nothing to do: both -copy and -sign are false"))
	}
	if f.sign && f.kmsKey == "" {
		return fail(stderr, exitInvalid, errors.New("signing needs a key: give -aws-kms-key-arn, or -sign=false to only copy"))
	}
	if f.sign {
		return fail(stderr, exitInvalid, errors.New("signing is not available in this build yet: use -sign=false"))
	}
	f.settings.InsecureRegistries, f.settings.ECRRegistries = f.insecure, f.ecr

	logger, err := app.NewLogger(f.settings, stderr)
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	svc := app.NewService(f.settings, logger)

	res, err := svc.Copy(ctx, service.CopyRequest{
		Source:              f.source,
		Destination:         f.destination,
		Annotations:         f.annotations,
		ManifestAnnotations: f.manifestAnnotations,
		Labels:              f.labels,
		Platforms:           f.platforms,
	})
	if err != nil {
		code := exitFailed
		if service.KindOf(err) == service.KindInvalidRequest {
			code = exitInvalid
		}
		return fail(stderr, code, fmt.Errorf("copy failed: %w", err))
	}
	if f.output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			return fail(stderr, exitFailed, err)
		}
		return exitOK
	}
	fmt.Fprintln(stdout, summary(res))
	return exitOK
}

// summary is the one-line human result.
func summary(r *service.CopyResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "promoted %s@%s to %s@%s: ", r.Source, r.SourceDigest, r.Destination, r.DestinationDigest)
	if n := len(r.Manifests); n > 0 {
		fmt.Fprintf(&b, "%d platforms, ", n)
	}
	if r.ManifestsWritten == 0 {
		fmt.Fprintf(&b, "destination already up to date in %s", r.Took.Round(time.Millisecond))
		return b.String()
	}
	fmt.Fprintf(&b, "%d blobs copied (%s), %d skipped, %d mounted in %s",
		r.BlobsCopied, humanBytes(r.BytesCopied), r.BlobsSkipped, r.BlobsMounted, r.Took.Round(time.Millisecond))
	return b.String()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// fail prints err as the one line a user needs and returns code.
func fail(stderr io.Writer, code int, err error) int {
	fmt.Fprintf(stderr, "ocistow: %s\n", strings.Join(strings.Fields(err.Error()), " "))
	return code
}
