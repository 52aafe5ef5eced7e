package policy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/ocistow/ocistow/pkg/sign"
)

// TestLegacyBundleRefuses checks the annotations legacyBundle refuses
// before sigstore-go sees them: each names what is wrong. (What
// sigstore-go checks, with a real trusted root, is in cmd/ocistow's
// TestSourcePolicyKeylessLegacy.)
func TestLegacyBundleRefuses(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "x"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, priv.Public(), priv)
	if err != nil {
		t.Fatal(err)
	}
	cert := string(cryptoutils.PEMEncode(cryptoutils.CertificatePEMType, der))
	body := base64.StdEncoding.EncodeToString([]byte(`{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{"data":{"hash":{"algorithm":"md5"}}}}`))
	sig := base64.StdEncoding.EncodeToString([]byte("sig"))
	good := sign.LegacyKeyless{Payload: []byte("{}"), Signature: sig, Certificate: cert,
		RekorBundle: `{"SignedEntryTimestamp":"c2V0","Payload":{"body":"` + body + `","integratedTime":1,"logIndex":1,"logID":"00"}}`}
	for _, tc := range []struct {
		name   string
		change func(*sign.LegacyKeyless)
		want   string
	}{
		{"no signature", func(s *sign.LegacyKeyless) { s.Signature = "" }, "no signature annotation"},
		{"signature not base64", func(s *sign.LegacyKeyless) { s.Signature = "!" }, "not base64"},
		{"certificate not PEM", func(s *sign.LegacyKeyless) { s.Certificate = "cert" }, "not a PEM certificate"},
		{"not logged", func(s *sign.LegacyKeyless) { s.RekorBundle = "" }, "no transparency-log entry"},
		{"bundle not JSON", func(s *sign.LegacyKeyless) { s.RekorBundle = "{" }, "not cosign's JSON"},
		{"no SET", func(s *sign.LegacyKeyless) { s.RekorBundle = strings.Replace(s.RekorBundle, `"c2V0"`, `""`, 1) }, "no signed entry timestamp"},
		{"log id not hex", func(s *sign.LegacyKeyless) { s.RekorBundle = strings.Replace(s.RekorBundle, `"00"`, `"zz"`, 1) }, "log id is not hex"},
		{"body not an entry", func(s *sign.LegacyKeyless) { s.RekorBundle = strings.Replace(s.RekorBundle, body, "e30=", 1) }, "not a Rekor entry"},
		{"unknown hash", func(s *sign.LegacyKeyless) {}, `hash algorithm "md5"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.change(&s)
			if _, err := legacyBundle(s); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("legacyBundle: %v, want %q", err, tc.want)
			}
		})
	}
}
