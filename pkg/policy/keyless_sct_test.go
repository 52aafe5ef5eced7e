package policy

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/sign"
)

// TestKeylessNeedsSCTsWhenTheRootNamesCTLogs holds the README's "SCTs in
// the certificate are required when the root names certificate-transparency
// logs": the same keyless signature (whose certificate, from the virtual
// CA, carries no SCT) passes against the virtual Sigstore's root, which
// names no CT log, and is refused for its missing SCT once the root names
// one.
func TestKeylessNeedsSCTsWhenTheRootNamesCTLogs(t *testing.T) {
	const (
		identity = "https://github.com/example/app/.github/workflows/release.yml@refs/heads/main"
		issuer   = "https://token.actions.githubusercontent.com"
	)
	ctx := t.Context()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	plain, err := testenv.VirtualTrustedRoot(vs)
	if err != nil {
		t.Fatal(err)
	}
	ctKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctLog := &root.TransparencyLog{
		BaseURL:             "https://ct.example",
		ID:                  []byte("ct-log-id-of-the-test"),
		ValidityPeriodStart: time.Now().Add(-time.Hour),
		HashFunc:            crypto.SHA256,
		PublicKey:           ctKey.Public(),
		SignatureHashFunc:   crypto.SHA256,
	}
	withCT, err := root.NewTrustedRoot(root.TrustedRootMediaType01, plain.FulcioCertificateAuthorities(),
		map[string]*root.TransparencyLog{"ct-log-id-of-the-test": ctLog}, plain.TimestampingAuthorities(), plain.RekorLogs())
	if err != nil {
		t.Fatal(err)
	}

	b := newBed(t)
	d := b.image(t, "signed")
	payload, err := sign.Payload(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := testenv.NewLegacyKeyless(vs, vs, payload, identity, issuer)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Push(ctx, d); err != nil {
		t.Fatal(err)
	}

	p := &Policy{Identity: `^https://github\.com/example/app/`, Issuer: issuer, TrustedRoot: plain}
	if _, err := Check(ctx, b.st, p, d, nil); err != nil {
		t.Fatalf("against a root without CT logs: %v", err)
	}
	p = &Policy{Identity: p.Identity, Issuer: issuer, TrustedRoot: withCT}
	_, err = Check(ctx, b.st, p, d, nil)
	if re := refusal(t, err); !strings.Contains(re.Reason, "SCT") {
		t.Errorf("against a root naming a CT log, a certificate without SCTs: %q, want it refused for its SCTs", re.Reason)
	}
}
