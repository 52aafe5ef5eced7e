// Package keys loads the keys ocistow signs and verifies with: AWS KMS keys
// (through sigstore's KMS signer, the one cosign uses) and key files (PEM
// PKCS#8, SEC 1 EC, PKCS#1 RSA, and cosign's encrypted format).
//
// A KMS key is checked when it is loaded, before anything is copied: it must
// exist, be enabled, have usage SIGN_VERIFY and a key spec cosign can
// verify. A Key never carries key material in its Ref, which is what logs
// show.
package keys

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/arn"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	awskms "github.com/sigstore/sigstore/pkg/signature/kms/aws"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/ocistow/ocistow/internal/oneline"
)

// Key is a loaded signing or verification key.
type Key struct {
	// Ref is how the user named the key (normalised for KMS keys); safe to
	// log.
	Ref string
	// Verifier checks signatures.
	signature.Verifier
	// Signer makes signatures; nil for a public key.
	Signer signature.Signer
}

// Options configure loading.
type Options struct {
	// AWSRegion is used for KMS keys whose reference names no region.
	AWSRegion string
	// Password returns the password of an encrypted key file (cosign's
	// COSIGN_PASSWORD). It may be nil when no key file is encrypted.
	Password func() ([]byte, error)
	// AWSLoadOptions are added to the AWS configuration of KMS clients:
	// tracing and debug-logging middleware.
	AWSLoadOptions []func(*config.LoadOptions) error
}

// kmsIDPattern matches a bare KMS key id (UUID, or multi-Region mrk- id).
var kmsIDPattern = regexp.MustCompile(`^(mrk-[0-9a-f]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$`)

// KMSReference turns any way of naming an AWS KMS key (key ARN, key id,
// alias/NAME, alias ARN, or an awskms:// reference) into the awskms://
// reference sigstore and cosign take. ok is false when s names no KMS key.
func KMSReference(s string) (ref string, ok bool) {
	switch {
	case strings.HasPrefix(s, awskms.ReferenceScheme):
		return s, true
	case strings.HasPrefix(s, "arn:") && strings.Contains(s, ":kms:"),
		strings.HasPrefix(s, "alias/"),
		kmsIDPattern.MatchString(s):
		return awskms.ReferenceScheme + "/" + s, true
	}
	return "", false
}

// IsKMS reports whether ref names an AWS KMS key.
func IsKMS(ref string) bool {
	_, ok := KMSReference(ref)
	return ok
}

// LoadSigner loads a key that can sign: a KMS key or a private key file.
func LoadSigner(ctx context.Context, ref string, o Options) (*Key, error) {
	if kref, ok := KMSReference(ref); ok {
		return loadKMS(ctx, kref, o)
	}
	k, err := loadFile(ref, o)
	if err != nil {
		return nil, err
	}
	if k.Signer == nil {
		return nil, fmt.Errorf("key %s is a public key: signing needs a private key or a KMS key", ref)
	}
	return k, nil
}

// LoadVerifier loads a key that can verify: a KMS key (its public key is
// fetched from KMS), a public key file, or a private key file.
func LoadVerifier(ctx context.Context, ref string, o Options) (*Key, error) {
	if kref, ok := KMSReference(ref); ok {
		return loadKMS(ctx, kref, o)
	}
	return loadFile(ref, o)
}

func loadFile(path string, o Options) (*Key, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("key file %s does not exist (KMS keys are named awskms:///…, arn:…, alias/… or by key id)", path)
		}
		return nil, fmt.Errorf("reading key file %s: %w", path, err)
	}
	if pub, err := cryptoutils.UnmarshalPEMToPublicKey(b); err == nil {
		v, err := signature.LoadVerifier(pub, hashFor(pub))
		if err != nil {
			return nil, fmt.Errorf("key file %s: %w", path, err)
		}
		return &Key{Ref: path, Verifier: v}, nil
	}
	var pf cryptoutils.PassFunc
	if o.Password != nil {
		pf = func(bool) ([]byte, error) { return o.Password() }
	}
	priv, err := cryptoutils.UnmarshalPEMToPrivateKey(b, pf)
	if err != nil {
		if strings.Contains(err.Error(), "decryption failed") || strings.Contains(err.Error(), "decrypt") {
			return nil, fmt.Errorf("key file %s: wrong password (COSIGN_PASSWORD)", path)
		}
		return nil, fmt.Errorf("key file %s is not a PEM public or private key: %w", path, err)
	}
	signer, ok := priv.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key file %s: unsupported private key type %T", path, priv)
	}
	sv, err := signature.LoadSignerVerifier(priv, hashFor(signer.Public()))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return &Key{Ref: path, Verifier: sv, Signer: sv}, nil
}

// hashFor is the hash a signature by a key of this type is made over: the
// one sigstore's AWS KMS signer uses for the same key spec, and cosign's
// signer for a private key file (sigstore's default algorithm for the key):
// SHA-256 for RSA and ECDSA P-256, SHA-384 for P-384, SHA-512 for P-521.
// So a signature a KMS key made verifies with its exported public key, and
// one made with a P-384 or P-521 key file verifies with cosign. Ed25519
// signs the message itself.
func hashFor(pub crypto.PublicKey) crypto.Hash {
	switch k := pub.(type) {
	case ed25519.PublicKey:
		return crypto.Hash(0)
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P384():
			return crypto.SHA384
		case elliptic.P521():
			return crypto.SHA512
		}
	}
	return crypto.SHA256
}

// supportedSpec reports whether cosign can verify signatures of a KMS key
// of this spec.
func supportedSpec(s kmstypes.KeySpec) bool {
	switch s {
	case kmstypes.KeySpecRsa2048, kmstypes.KeySpecRsa3072, kmstypes.KeySpecRsa4096,
		kmstypes.KeySpecEccNistP256, kmstypes.KeySpecEccNistP384, kmstypes.KeySpecEccNistP521:
		return true
	}
	return false
}

func loadKMS(ctx context.Context, ref string, o Options) (*Key, error) {
	endpoint, keyID, _, err := awskms.ParseReference(ref)
	if err != nil {
		return nil, fmt.Errorf("invalid KMS key reference %q: want awskms://[ENDPOINT]/ID, ALIAS or ARN", ref)
	}
	lopts := append([]func(*config.LoadOptions) error(nil), o.AWSLoadOptions...)
	region := o.AWSRegion
	if a, err := arn.Parse(keyID); err == nil && a.Region != "" {
		region = a.Region // a key lives in one region: call that region's KMS
	}
	if region != "" {
		lopts = append(lopts, config.WithRegion(region))
	}
	cfg, err := config.LoadDefaultConfig(ctx, lopts...)
	if err != nil {
		return nil, fmt.Errorf("KMS key %s: loading AWS configuration: %w", ref, err)
	}
	if endpoint != "" {
		cfg.BaseEndpoint = aws.String("https://" + endpoint)
	}
	if cfg.Region == "" {
		return nil, fmt.Errorf("KMS key %s: no AWS region: give -aws-region or set AWS_REGION, or name the key by ARN", ref)
	}
	out, err := kms.NewFromConfig(cfg).DescribeKey(ctx, &kms.DescribeKeyInput{KeyId: aws.String(keyID)})
	if err != nil {
		return nil, fmt.Errorf("KMS key %s: %s", ref, DescribeAWSError(err))
	}
	md := out.KeyMetadata
	switch {
	case md.KeyState != kmstypes.KeyStateEnabled:
		return nil, fmt.Errorf("KMS key %s is %s, not Enabled", ref, md.KeyState)
	case md.KeyUsage != kmstypes.KeyUsageTypeSignVerify:
		return nil, fmt.Errorf("KMS key %s has usage %s: signing needs a SIGN_VERIFY key", ref, md.KeyUsage)
	case !supportedSpec(md.KeySpec):
		return nil, fmt.Errorf("KMS key %s has key spec %s, which cosign cannot verify (use RSA_2048/3072/4096 or ECC_NIST_P256/P384/P521)", ref, md.KeySpec)
	}
	sv, err := awskms.LoadSignerVerifier(ctx, ref, lopts...)
	if err != nil {
		return nil, fmt.Errorf("KMS key %s: %w", ref, err)
	}
	// Fetch (and cache) the public key now, so that a key that cannot be
	// used fails before anything is copied.
	if _, err := sv.PublicKey(options.WithContext(ctx)); err != nil {
		return nil, fmt.Errorf("KMS key %s: fetching its public key: %s", ref, DescribeAWSError(err))
	}
	return &Key{Ref: ref, Verifier: sv, Signer: sv}, nil
}

// DescribeAWSError renders an AWS SDK error on one line: the service's
// error code and message when it answered, or what kept it from answering.
func DescribeAWSError(err error) string {
	var api smithy.APIError
	if errors.As(err, &api) {
		return fmt.Sprintf("%s: %s", api.ErrorCode(), api.ErrorMessage())
	}
	msg := err.Error()
	switch {
	case strings.Contains(msg, "failed to retrieve credentials") || strings.Contains(msg, "no EC2 IMDS role found") ||
		strings.Contains(msg, "failed to refresh cached credentials"):
		return "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run with a role): " + oneline.String(msg)
	case strings.Contains(msg, "connection refused") || strings.Contains(msg, "no such host") || strings.Contains(msg, "i/o timeout"):
		return "KMS unreachable: " + oneline.String(msg)
	}
	return oneline.String(msg)
}
