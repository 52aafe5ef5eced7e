package policy

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/sign"
)

// FuzzLegacyBundle feeds legacyBundle the annotations of a .sig layer, as
// an upstream registry may serve anything: it must return a bundle or an
// error, never panic, and a bundle it returns is one sigstore-go accepts.
func FuzzLegacyBundle(f *testing.F) {
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		f.Fatal(err)
	}
	d, err := name.NewDigest("registry.example.com/repo@sha256:0b6b9ee5868554d06caaa5b03533a58246f9e4987ce2503b494469e7d495a079")
	if err != nil {
		f.Fatal(err)
	}
	payload, err := sign.Payload(d, nil)
	if err != nil {
		f.Fatal(err)
	}
	l, err := testenv.NewLegacyKeyless(vs, vs, payload, "https://ci.example/", "https://issuer.example")
	if err != nil {
		f.Fatal(err)
	}
	good := sign.LegacyKeyless{Payload: payload, Certificate: string(l.Certificate)}
	f.Add("MEUCIQ==", good.Certificate, `{"SignedEntryTimestamp":"MEUCIQ==","Payload":{"body":"`+l.Rekor.Body.(string)+`","integratedTime":1,"logIndex":1,"logID":"`+l.Rekor.LogID+`"}}`)
	f.Add("", "", "")
	f.Add("YQ==", good.Certificate, `{"SignedEntryTimestamp":"YQ==","Payload":{"body":7,"logID":"00"}}`)
	f.Add("YQ==", good.Certificate, `{"SignedEntryTimestamp":"YQ==","Payload":{"body":"e30=","logID":"00"}}`)
	f.Fuzz(func(t *testing.T, sig, cert, rekor string) {
		s := good
		s.Signature, s.Certificate, s.RekorBundle = sig, cert, rekor
		b, err := legacyBundle(s)
		if (b == nil) == (err == nil) {
			t.Fatalf("legacyBundle: %v, %v", b, err)
		}
		if b != nil {
			if _, err := b.TlogEntries(); err != nil {
				t.Errorf("a bundle whose log entries sigstore-go cannot read: %v", err)
			}
		}
	})
}
