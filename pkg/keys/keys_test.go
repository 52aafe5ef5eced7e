package keys

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"testing"

	"github.com/sigstore/sigstore/pkg/signature"
)

func TestKMSReference(t *testing.T) {
	cases := map[string]string{
		"arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab": "awskms:///arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
		"arn:aws:kms:us-east-1:111122223333:alias/signing":                            "awskms:///arn:aws:kms:us-east-1:111122223333:alias/signing",
		"alias/signing":                        "awskms:///alias/signing",
		"1234abcd-12ab-34cd-56ef-1234567890ab": "awskms:///1234abcd-12ab-34cd-56ef-1234567890ab",
		"mrk-1234abcd12ab34cd56ef1234567890ab": "awskms:///mrk-1234abcd12ab34cd56ef1234567890ab",
		"awskms://kms.internal:4566/alias/x":   "awskms://kms.internal:4566/alias/x",
		"awskms:///alias/x":                    "awskms:///alias/x",
		"cosign.key":                           "",
		"/etc/keys/signing.pem":                "",
		"arn:aws:s3:::bucket":                  "",
	}
	for in, want := range cases {
		got, ok := KMSReference(in)
		if got != want || ok != (want != "") {
			t.Errorf("KMSReference(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestHashForFollowsTheCurve(t *testing.T) {
	for _, c := range []struct {
		curve elliptic.Curve
		want  crypto.Hash
	}{
		{elliptic.P256(), crypto.SHA256},
		{elliptic.P384(), crypto.SHA384},
		{elliptic.P521(), crypto.SHA512},
	} {
		k, err := ecdsa.GenerateKey(c.curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if got := hashFor(k.Public()); got != c.want {
			t.Errorf("hashFor(%s) = %v, want %v", c.curve.Params().Name, got, c.want)
		}
		// The same as sigstore's default for a key of this curve, which
		// cosign signs key files with.
		d, err := signature.GetDefaultAlgorithmDetails(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		if d.GetHashType() != c.want {
			t.Errorf("sigstore's default hash for %s is %v, ocistow's %v", c.curve.Params().Name, d.GetHashType(), c.want)
		}
	}
}
