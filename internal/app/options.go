package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/policy"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/service"
	"github.com/ocistow/ocistow/pkg/sign"
)

// Options are ocistow's flags, shared by the CLI (flags, then environment)
// and the Lambda function (environment only), so that both read the same
// names the same way.
type Options struct {
	Settings      Settings
	Insecure, ECR Strings
	Annotations   KeyValues
	KMSKey, Key   string
	Output        string

	// Promotion only.
	Source, Destination string
	ManifestAnnotations KeyValues
	Labels              KeyValues
	Platforms           Strings
	Copy, Sign, XRay    bool
	Attest              bool
	Quiet               bool
	Immutable           bool
	Timeout             time.Duration
	// SignatureFormat is -signature-format: legacy, bundle or both.
	SignatureFormat string
	Referrers       bool
	ReferrersTypes  Strings
	// Source policy (-source-key, -source-identity, -source-issuer,
	// -source-annotations, -source-verify-children, -trusted-root).
	SourceKeys           Strings
	SourceIdentity       string
	SourceIssuer         string
	SourceAnnotations    KeyValues
	SourceVerifyChildren bool
	TrustedRoot          string

	logger *slog.Logger     // set by Build
	client *registry.Client // set by Build
}

// registerCommon defines the flags every command has.
func (o *Options) registerCommon(fs *flag.FlagSet) {
	o.Annotations = KeyValues{}
	fs.StringVar(&o.KMSKey, "aws-kms-key-arn", "", "AWS KMS key: key ARN, key id, alias/NAME, alias ARN or awskms:// reference")
	fs.StringVar(&o.Key, "key", "", "key to sign or verify with: an awskms:// reference, or a PEM key file (encrypted cosign keys read COSIGN_PASSWORD)")
	fs.StringVar(&o.Settings.AWSRegion, "aws-region", "", "AWS region for KMS and ECR (default: the AWS SDK's, e.g. AWS_REGION)")
	fs.BoolVar(&o.Settings.Debug, "debug", false, "debug logging: every registry request with its status and timing (never credentials)")
	fs.IntVar(&o.Settings.Jobs, "jobs", 0, "blobs over 1 MiB copied (smaller ones up to 4 times as many) and digests signed concurrently (default: number of CPUs, at least 4)")
	fs.Var(&o.Insecure, "insecure-registry", "allow plain HTTP or unverified TLS to this registry host[:port] (repeatable; loopback needs none)")
	fs.Var(&o.ECR, "ecr-registry", "treat this registry host as Amazon ECR for credentials, e.g. a VPC endpoint name (repeatable)")
	fs.StringVar(&o.Settings.LogFormat, "log-format", "text", "log format: text or json")
	fs.DurationVar(&o.Settings.StallTimeout, "stall-timeout", registry.DefaultStallTimeout, "abandon and retry a registry request that makes no progress for this long (a response that sends nothing, an upload not taken)")
	fs.StringVar(&o.Output, "output", "text", "result on stdout: text or json")
	fs.StringVar(&o.Output, "o", "text", "short for -output")
}

// RegisterPromote defines the promotion flags on fs.
func (o *Options) RegisterPromote(fs *flag.FlagSet) {
	fs.StringVar(&o.Source, "source", "", "source image (tag or digest); short Docker names work: busybox")
	fs.StringVar(&o.Destination, "destination", "", "destination image (tag or digest)")
	o.registerCommon(fs)
	o.ManifestAnnotations, o.Labels = KeyValues{}, KeyValues{}
	fs.Var(o.Annotations, "annotations", "destination image annotations and config labels, also put in the signature payload (key=value, repeatable)")
	fs.Var(o.ManifestAnnotations, "manifest-annotation", "add an annotation to manifests and indexes only (key=value, repeatable)")
	fs.Var(o.Labels, "label", "add a label to image configs only (key=value, repeatable)")
	fs.Var(&o.Platforms, "platform", "copy only this platform of a multi-platform image: os/arch[/variant] (repeatable)")
	fs.BoolVar(&o.Copy, "copy", true, "whether to copy the image")
	fs.BoolVar(&o.Sign, "sign", true, "whether to sign the image")
	fs.BoolVar(&o.Attest, "attest", false, "record the promotion as a signed in-toto attestation of every promoted digest, with the signing key, stored as -signature-format says")
	fs.BoolVar(&o.XRay, "aws-xray", false, "whether to enable AWS X-Ray tracing (OpenTelemetry over OTLP to localhost:4318, the ADOT collector; OTEL_* variables apply)")
	fs.DurationVar(&o.Timeout, "timeout", 0, "give up on the whole promotion (signing and referrers included) after this long; cut short during the copy, the destination tag stays as it was (0: no limit)")
	fs.BoolVar(&o.Immutable, "immutable", false, "refuse, before writing anything, to move a destination tag that points at another digest")
	fs.BoolVar(&o.Referrers, "referrers", false, "also copy the source's OCI 1.1 referrers (SBOMs, attestations, signatures; recursively) and cosign's .sig/.att/.sbom tags; when stamping, the unstamped source manifests too, by digest, so that upstream signatures verify")
	fs.Var(&o.ReferrersTypes, "referrers-type", "with -referrers, copy only referrers of this artifact type (repeatable; default: all)")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress bars, only the canonical log lines (progress shows only on a terminal anyway)")
	o.registerSignatureFormat(fs)
	o.SourceAnnotations = KeyValues{}
	fs.Var(&o.SourceKeys, "source-key", "source policy: promote only a source signed by this key (public key PEM, key file or KMS key; repeatable: any one of them), legacy or bundle format")
	fs.StringVar(&o.SourceIdentity, "source-identity", "", "source policy: promote only a source signed keyless by a certificate whose identity matches this regular expression (with -source-issuer)")
	fs.StringVar(&o.SourceIssuer, "source-issuer", "", "source policy: the OIDC issuer of -source-identity's certificate, e.g. https://token.actions.githubusercontent.com")
	fs.Var(o.SourceAnnotations, "source-annotations", "source policy: annotation the upstream signature's payload must carry (key=value, repeatable)")
	fs.BoolVar(&o.SourceVerifyChildren, "source-verify-children", false, "source policy: for an index, every manifest promoted under it must be signed too, not only the index")
	o.registerTrustedRoot(fs)
}

// registerTrustedRoot defines -trusted-root on fs.
func (o *Options) registerTrustedRoot(fs *flag.FlagSet) {
	fs.StringVar(&o.TrustedRoot, "trusted-root", "", "Sigstore trusted root file for keyless source signatures (default: the public-good root, fetched through TUF and cached)")
}

// SourcePolicySpec is the source policy the flags name.
func (o *Options) SourcePolicySpec() *policy.Spec {
	return &policy.Spec{Keys: o.SourceKeys, Identity: o.SourceIdentity, Issuer: o.SourceIssuer, TrustedRoot: o.TrustedRoot, Annotations: o.SourceAnnotations, Children: o.SourceVerifyChildren}
}

// PolicyLoader returns the loader of source policies: keys as verifiers,
// the public-good root cached under policy.DefaultCacheDir (only when a
// keyless policy names no trusted root file).
func (o *Options) PolicyLoader(lookupEnv func(string) (string, bool)) *policy.Loader {
	kopts := o.KeyOptions(lookupEnv)
	return policy.NewLoader(func(ctx context.Context, ref string) (*keys.Key, error) {
		return keys.LoadVerifier(ctx, ref, kopts)
	}, "")
}

// registerSignatureFormat defines -signature-format on fs.
func (o *Options) registerSignatureFormat(fs *flag.FlagSet) {
	fs.StringVar(&o.SignatureFormat, "signature-format", string(sign.Legacy), "how signatures (and -attest's attestations) are stored: legacy (cosign's .sig and .att tags), bundle (a Sigstore bundle referrer, cosign v3's format) or both")
}

// Format returns the -signature-format asked for, checked.
func (o *Options) Format() (sign.Format, error) {
	f, err := sign.ParseFormat(o.SignatureFormat)
	if err != nil {
		return "", fmt.Errorf("-signature-format: %w", err)
	}
	return f, nil
}

// RegisterSync defines the flags the sync command shares with the others
// on fs (-key, -aws-kms-key-arn and -signature-format apply to entries
// that name no key or format).
func (o *Options) RegisterSync(fs *flag.FlagSet) {
	o.registerCommon(fs)
	o.registerSignatureFormat(fs)
	o.registerTrustedRoot(fs)
}

// RegisterVerify defines the verify command's flags on fs.
func (o *Options) RegisterVerify(fs *flag.FlagSet) {
	o.registerCommon(fs)
	fs.Var(o.Annotations, "annotations", "require this annotation in the signature payload (key=value, repeatable)")
}

// KeyRef returns the key named with -aws-kms-key-arn or -key.
func (o *Options) KeyRef() (string, error) {
	switch {
	case o.KMSKey != "" && o.Key != "":
		return "", errors.New("give -aws-kms-key-arn or -key, not both")
	case o.KMSKey != "":
		ref, ok := keys.KMSReference(o.KMSKey)
		if !ok {
			return "", fmt.Errorf("-aws-kms-key-arn %q is not a KMS key ARN, key id, alias/NAME or awskms:// reference", o.KMSKey)
		}
		return ref, nil
	}
	return o.Key, nil
}

// CheckPromote checks the promotion flags that can be checked without the
// network, and returns the signing key reference (empty when not signing).
func (o *Options) CheckPromote() (keyRef string, err error) {
	if !o.Copy && !o.Sign {
		return "", errors.New("nothing to do: both -copy and -sign are false")
	}
	if _, err := o.Format(); err != nil {
		return "", err
	}
	ref, err := o.KeyRef()
	if err != nil {
		return "", err
	}
	if o.Sign && ref == "" {
		return "", errors.New("signing needs a key: give -aws-kms-key-arn or -key, or -sign=false to only copy")
	}
	if o.Attest && ref == "" {
		return "", errors.New("-attest needs a key: give -aws-kms-key-arn or -key")
	}
	if o.Attest && !o.Copy {
		return "", errors.New("-attest needs the copy, which says what was promoted: drop -copy=false or -attest")
	}
	if !o.Sign && !o.Attest {
		ref = ""
	}
	if len(o.ReferrersTypes) > 0 && !o.Referrers {
		return "", errors.New("-referrers-type filters -referrers, which is off")
	}
	if o.Referrers && !o.Copy {
		return "", errors.New("-referrers travel with a copy: -copy=false copies none")
	}
	if !o.SourcePolicySpec().Empty() && !o.Copy {
		return "", errors.New("the source policy (-source-key, -source-identity) checks the source of a copy: -copy=false has none")
	}
	return ref, nil
}

// Build validates the shared flags and builds the logger and service,
// logging to w.
func (o *Options) Build(w io.Writer) (service.Service, *slog.Logger, error) {
	if o.Output != "text" && o.Output != "json" {
		return nil, nil, fmt.Errorf("invalid -output %q: want text or json", o.Output)
	}
	if o.Settings.Jobs < 0 {
		return nil, nil, fmt.Errorf("invalid -jobs %d: want a positive number (0: the default, the number of CPUs but at least %d)", o.Settings.Jobs, registry.MinDefaultJobs)
	}
	o.Settings.InsecureRegistries, o.Settings.ECRRegistries = o.Insecure, o.ECR
	logger, err := NewLogger(o.Settings, w)
	if err != nil {
		return nil, nil, err
	}
	o.logger = logger
	o.client = NewClient(o.Settings, logger)
	return ServiceFor(o.client, o.Settings, logger), logger, nil
}

// Client returns the registry client Build made, which the Service uses.
func (o *Options) Client() *registry.Client { return o.client }

// KeyOptions returns how to load keys, reading an encrypted key file's
// password from COSIGN_PASSWORD through lookupEnv.
func (o *Options) KeyOptions(lookupEnv func(string) (string, bool)) keys.Options {
	return keys.Options{
		AWSRegion:      o.Settings.AWSRegion,
		AWSLoadOptions: KeyLoadOptions(o.Settings, o.logger),
		Password: func() ([]byte, error) {
			p, ok := lookupEnv("COSIGN_PASSWORD")
			if !ok {
				return nil, errors.New("the key file is encrypted: set COSIGN_PASSWORD")
			}
			return []byte(p), nil
		},
	}
}

// PromoteRequest returns the promotion the flags ask for, with the source
// policy p (nil: none).
func (o *Options) PromoteRequest(key *keys.Key, p *policy.Policy) service.PromoteRequest {
	return service.PromoteRequest{
		CopyRequest: service.CopyRequest{
			Source:              o.Source,
			Destination:         o.Destination,
			Annotations:         o.Annotations,
			ManifestAnnotations: o.ManifestAnnotations,
			Labels:              o.Labels,
			Platforms:           o.Platforms,
			Immutable:           o.Immutable,
			Policy:              p,
		},
		Copy:            o.Copy,
		Sign:            o.Sign,
		Attest:          o.Attest,
		Key:             key,
		SignatureFormat: sign.Format(o.SignatureFormat),
		Referrers:       o.Referrers,
		ReferrersTypes:  o.ReferrersTypes,
	}
}
