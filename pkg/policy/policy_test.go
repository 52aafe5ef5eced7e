package policy

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/sign"
)

// The fast tests run on go-containerregistry's in-process registry, with
// its referrers API on; the end-to-end tests in cmd/ocistow run the real
// cosign against Distribution.

func newKey(t *testing.T, ref string) *keys.Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadSignerVerifier(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return &keys.Key{Ref: ref, Verifier: sv, Signer: sv}
}

type bed struct {
	st   *sign.Store
	host string
}

func newBed(t *testing.T) *bed {
	t.Helper()
	return newBedWith(t, func(h http.Handler) http.Handler { return h })
}

// newBedWith is newBed with the registry's handler wrapped by wrap.
func newBedWith(t *testing.T, wrap func(http.Handler) http.Handler) *bed {
	t.Helper()
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(true))
	srv := httptest.NewServer(wrap(reg))
	t.Cleanup(srv.Close)
	st, err := sign.NewStore(t.Context(), registry.New())
	if err != nil {
		t.Fatal(err)
	}
	return &bed{st: st, host: strings.TrimPrefix(srv.URL, "http://")}
}

func (b *bed) image(t *testing.T, tag string) name.Digest {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(b.host + "/app:" + tag)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	h, _ := img.Digest()
	return ref.Context().Digest(h.String())
}

func refusal(t *testing.T, err error) *RefusedError {
	t.Helper()
	var re *RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("want a refusal, got %v", err)
	}
	return re
}

func TestKeys(t *testing.T) {
	ctx := t.Context()
	b := newBed(t)
	a, other := newKey(t, "a.pub"), newKey(t, "other.pub")
	legacy, bundled, unsigned := b.image(t, "legacy"), b.image(t, "bundle"), b.image(t, "unsigned")
	if _, err := sign.Digest(ctx, b.st, legacy, map[string]string{"team": "up"}, a); err != nil {
		t.Fatal(err)
	}
	if _, err := sign.DigestBundle(ctx, b.st, bundled, map[string]string{"team": "up"}, a); err != nil {
		t.Fatal(err)
	}

	// Any one of the keys passes, and the result names it and the format.
	for d, format := range map[name.Digest]sign.Format{legacy: sign.Legacy, bundled: sign.Bundle} {
		r, err := Check(ctx, b.st, &Policy{Keys: []*keys.Key{other, a}, Annotations: map[string]string{"team": "up"}}, d, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.Digests[0]; got.Key != "a.pub" || got.Format != format || got.Digest != d.DigestStr() {
			t.Errorf("%s: satisfied by %+v, want a.pub, %s", format, got, format)
		}
		if r.Summary() != "key a.pub ("+string(format)+")" {
			t.Errorf("summary %q", r.Summary())
		}
	}
	for _, tc := range []struct {
		name   string
		p      *Policy
		d      name.Digest
		reason string
	}{
		{"unsigned", &Policy{Keys: []*keys.Key{a}}, unsigned, "no signatures"},
		{"another key, legacy", &Policy{Keys: []*keys.Key{other}}, legacy, "none by these keys: a .sig signature does not verify with other.pub"},
		{"another key, bundle", &Policy{Keys: []*keys.Key{other}}, bundled, "none by these keys: a bundle signed by another key"},
		{"annotation", &Policy{Keys: []*keys.Key{a}, Annotations: map[string]string{"team": "down"}}, legacy, "missing annotation: team=down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Check(ctx, b.st, tc.p, tc.d, nil)
			re := refusal(t, err)
			if re.Digest != tc.d.DigestStr() || !strings.Contains(re.Reason, tc.reason) {
				t.Errorf("refused %s: %q, want %q", re.Digest, re.Reason, tc.reason)
			}
		})
	}

	// A bundle that names a by its hint but whose envelope was changed is
	// tampered, not another key's.
	tampered := b.image(t, "tampered")
	stmt, err := sign.Statement(tampered, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := bundle.SignDSSE(ctx, a.Signer, bundle.InTotoPayloadType, stmt)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := bundle.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	pb.GetDsseEnvelope().Payload = []byte(strings.Replace(string(stmt), "{}", `{"x":1}`, 1))
	if raw, err = protojson.Marshal(pb); err != nil {
		t.Fatal(err)
	}
	puller, _ := remote.NewPuller()
	pusher, _ := remote.NewPusher()
	if _, err := bundle.NewStore(puller, pusher).Attach(ctx, tampered, raw, nil); err != nil {
		t.Fatal(err)
	}
	_, err = Check(ctx, b.st, &Policy{Keys: []*keys.Key{a}}, tampered, nil)
	if re := refusal(t, err); !strings.HasPrefix(strings.SplitN(re.Reason, "): ", 2)[1], "tampered: a bundle names a.pub") {
		t.Errorf("tampered bundle: %q", re.Reason)
	}
}

func TestChildren(t *testing.T) {
	ctx := t.Context()
	b := newBed(t)
	a := newKey(t, "a.pub")
	top, c1, c2 := b.image(t, "top"), b.image(t, "c1"), b.image(t, "c2")
	for _, d := range []name.Digest{top, c2} {
		if _, err := sign.Digest(ctx, b.st, d, nil, a); err != nil {
			t.Fatal(err)
		}
	}
	// Without Children only the top digest is checked.
	if r, err := Check(ctx, b.st, &Policy{Keys: []*keys.Key{a}}, top, []name.Digest{c1, c2}); err != nil || len(r.Digests) != 1 {
		t.Fatalf("without children: %v, %v", r, err)
	}
	_, err := Check(ctx, b.st, &Policy{Keys: []*keys.Key{a}, Children: true}, top, []name.Digest{c2, c1})
	if re := refusal(t, err); re.Digest != c1.DigestStr() {
		t.Errorf("refused %s, want the unsigned child %s", re.Digest, c1.DigestStr())
	}
	if _, err := sign.Digest(ctx, b.st, c1, nil, a); err != nil {
		t.Fatal(err)
	}
	r, err := Check(ctx, b.st, &Policy{Keys: []*keys.Key{a}, Children: true}, top, []name.Digest{c1, c2})
	if err != nil || len(r.Digests) != 3 || r.Digests[0].Digest != top.DigestStr() || r.Digests[1].Digest != c1.DigestStr() {
		t.Errorf("with children signed: %+v, %v", r, err)
	}
}

func TestValidate(t *testing.T) {
	tr := root.TrustedMaterialCollection{}
	for _, tc := range []struct {
		p    *Policy
		want string
	}{
		{&Policy{Identity: "x"}, "needs its OIDC issuer"},
		{&Policy{Issuer: "https://x"}, "needs the identity"},
		{&Policy{Identity: "(", Issuer: "https://x", TrustedRoot: tr}, "not a regular expression"},
		{&Policy{Identity: "x", Issuer: "https://x"}, "needs a trusted root"},
		{&Policy{Annotations: map[string]string{"a": "b"}}, "give -source-key or -source-identity"},
		{&Policy{Children: true}, "give -source-key or -source-identity"},
	} {
		if err := tc.p.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.p, err, tc.want)
		}
	}
	if err := (&Policy{Identity: "x", Issuer: "https://x", TrustedRoot: tr}).Validate(); err != nil {
		t.Error(err)
	}
	if !(*Policy)(nil).Empty() || !(&Policy{Annotations: map[string]string{"a": "b"}}).Empty() {
		t.Error("a policy without keys or identity is not empty")
	}
}

func TestLoader(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	a := newKey(t, "a")
	pub, _ := a.PublicKey()
	pem, err := cryptoutils.MarshalPublicKeyToPEM(pub)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(dir, "a.pub")
	if err := os.WriteFile(keyFile, pem, 0o600); err != nil {
		t.Fatal(err)
	}
	loads := 0
	l := NewLoader(func(ctx context.Context, ref string) (*keys.Key, error) {
		loads++
		return keys.LoadVerifier(ctx, ref, keys.Options{})
	}, filepath.Join(dir, "tuf"))
	for range 2 {
		p, err := l.Load(ctx, &Spec{Keys: []string{keyFile, keyFile}, Annotations: map[string]string{"a": "b"}})
		if err != nil || len(p.Keys) != 1 || p.Annotations["a"] != "b" {
			t.Fatalf("Load: %+v, %v", p, err)
		}
	}
	if loads != 1 {
		t.Errorf("the key was loaded %d times, want once", loads)
	}
	for _, s := range []*Spec{nil, {}, {TrustedRoot: "root.json"}} {
		if p, err := l.Load(ctx, s); p != nil || err != nil {
			t.Errorf("spec %+v asks for nothing: %v, %v", s, p, err)
		}
	}
	for _, tc := range []struct {
		s    *Spec
		want string
	}{
		{&Spec{Keys: []string{filepath.Join(dir, "missing.pub")}}, "missing.pub"},
		{&Spec{Identity: "x"}, "needs its OIDC issuer"},
		{&Spec{Identity: "x", Issuer: "https://x", TrustedRoot: filepath.Join(dir, "none.json")}, "none.json"},
	} {
		if _, err := l.Load(ctx, tc.s); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.s, err, tc.want)
		}
	}
	// No network for an invalid spec: the TUF cache was never made.
	if _, err := os.Stat(filepath.Join(dir, "tuf")); !os.IsNotExist(err) {
		t.Errorf("the TUF cache exists: %v", err)
	}
}
