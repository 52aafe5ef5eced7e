package testenv

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// The users of the Bed's authenticated registry.
const (
	AliceUser = "alice"
	AlicePass = "wonderland-s3cret-pw"
	ECRUser   = "AWS"
	ECRPass   = "ecr-token-0123456789abcdef"
)

// The KMS keys of a Bed, by alias (without "alias/").
const (
	RSAKey      = "ocistow-rsa"      // RSA_4096, SIGN_VERIFY
	ECKey       = "ocistow-ec"       // ECC_NIST_P256, SIGN_VERIFY
	EncryptKey  = "ocistow-encrypt"  // RSA_2048, ENCRYPT_DECRYPT
	DisabledKey = "ocistow-disabled" // ECC_NIST_P256, SIGN_VERIFY, disabled
	P384Key     = "ocistow-p384"     // ECC_NIST_P384, SIGN_VERIFY
	P521Key     = "ocistow-p521"     // ECC_NIST_P521, SIGN_VERIFY
)

// Bed is the end-to-end test bed: a source and a destination registry, one
// with htpasswd authentication, local-kms with its keys, and the fixture
// images pushed to the source as <Src.Host>/src/<name>:v1.
type Bed struct {
	Src, Dst, Auth *Registry
	KMS            *KMS
	// Fixtures maps fixture names to their digests: single (2 small
	// layers, label team=upstream), multi (MixedIndex), big (3 × 3 MiB,
	// OCI), other (1 small layer).
	Fixtures map[string]string
	// KeyID and KeyARN map key aliases to ids and ARNs.
	KeyID, KeyARN map[string]string
	closers       []func() error
}

// StartBed starts everything under dir. On error, what was started is
// stopped.
func StartBed(ctx context.Context, dir string) (b *Bed, err error) {
	b = &Bed{}
	defer func() {
		if err != nil {
			b.Close()
		}
	}()
	for _, r := range []struct {
		p    **Registry
		name string
		opts RegistryOptions
	}{
		{&b.Src, "src", RegistryOptions{}},
		{&b.Dst, "dst", RegistryOptions{}},
		{&b.Auth, "auth", RegistryOptions{Users: map[string]string{AliceUser: AlicePass, ECRUser: ECRPass}}},
	} {
		reg, err := StartRegistry(ctx, filepath.Join(dir, r.name), r.opts)
		if err != nil {
			return nil, err
		}
		b.closers = append(b.closers, reg.Close)
		*r.p = reg
	}
	if err := b.pushFixtures(ctx); err != nil {
		return nil, err
	}
	if b.KMS, err = StartKMS(ctx, filepath.Join(dir, "kms")); err != nil {
		return nil, err
	}
	b.closers = append(b.closers, b.KMS.Close)
	if err := b.createKeys(ctx); err != nil {
		return nil, err
	}
	return b, nil
}

// SrcRef names a fixture on the source registry.
func (b *Bed) SrcRef(fixture string) string { return b.Src.Host + "/src/" + fixture + ":v1" }

// Close stops everything.
func (b *Bed) Close() error {
	var errs []error
	for i := len(b.closers) - 1; i >= 0; i-- {
		errs = append(errs, b.closers[i]())
	}
	b.closers = nil
	return errors.Join(errs...)
}

func (b *Bed) pushFixtures(ctx context.Context) error {
	b.Fixtures = map[string]string{}
	single, err := Image(ImageOptions{Layers: 2, LayerSize: 64 << 10, Seed: 1, Labels: map[string]string{"team": "upstream"}})
	if err != nil {
		return err
	}
	multi, err := MixedIndex(10, 128<<10)
	if err != nil {
		return err
	}
	big, err := Image(ImageOptions{Layers: 3, LayerSize: 3 << 20, Seed: 20, OCI: true})
	if err != nil {
		return err
	}
	other, err := Image(ImageOptions{Layers: 1, LayerSize: 32 << 10, Seed: 30})
	if err != nil {
		return err
	}
	for name, m := range map[string]interface {
		Digest() (v1.Hash, error)
	}{"single": single, "multi": multi, "big": big, "other": other} {
		if err := Push(ctx, b.SrcRef(name), m); err != nil {
			return fmt.Errorf("pushing fixture %s: %w", name, err)
		}
		d, err := m.Digest()
		if err != nil {
			return err
		}
		b.Fixtures[name] = d.String()
	}
	return nil
}

func (b *Bed) createKeys(ctx context.Context) error {
	b.KeyID, b.KeyARN = map[string]string{}, map[string]string{}
	for _, k := range []struct {
		alias string
		spec  kmstypes.KeySpec
		usage kmstypes.KeyUsageType
	}{
		{RSAKey, kmstypes.KeySpecRsa4096, kmstypes.KeyUsageTypeSignVerify},
		{ECKey, kmstypes.KeySpecEccNistP256, kmstypes.KeyUsageTypeSignVerify},
		{EncryptKey, kmstypes.KeySpecRsa2048, kmstypes.KeyUsageTypeEncryptDecrypt},
		{DisabledKey, kmstypes.KeySpecEccNistP256, kmstypes.KeyUsageTypeSignVerify},
		{P384Key, kmstypes.KeySpecEccNistP384, kmstypes.KeyUsageTypeSignVerify},
		{P521Key, kmstypes.KeySpecEccNistP521, kmstypes.KeyUsageTypeSignVerify},
	} {
		id, arn, err := b.KMS.CreateKey(ctx, k.spec, k.usage, k.alias)
		if err != nil {
			return err
		}
		b.KeyID[k.alias], b.KeyARN[k.alias] = id, arn
	}
	return b.KMS.DisableKey(ctx, b.KeyID[DisabledKey])
}
