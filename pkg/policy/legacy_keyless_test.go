package policy

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/sign"
)

// TestKeylessLegacy checks cosign v2's keyless .sig signatures on the
// in-process registry (the refusals sigstore-go makes are in cmd/ocistow's
// TestSourcePolicyKeylessLegacy): one passes and is reported as legacy,
// with its identity and issuer; a valid signature of another digest's
// payload, copied to this digest's .sig tag, is refused; and a registry
// whose referrers cannot be listed does not fail a digest whose legacy
// keyless signature passes.
func TestKeylessLegacy(t *testing.T) {
	const (
		identity = "https://github.com/example/app/.github/workflows/release.yml@refs/heads/main"
		issuer   = "https://token.actions.githubusercontent.com"
	)
	ctx := t.Context()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := testenv.VirtualTrustedRoot(vs)
	if err != nil {
		t.Fatal(err)
	}
	p := &Policy{Identity: `^https://github\.com/example/app/`, Issuer: issuer, TrustedRoot: tr, Annotations: map[string]string{"team": "up"}}
	// signed stores, in the .sig tag of at, a keyless signature of the
	// payload naming of.
	signed := func(t *testing.T, of, at name.Digest) {
		t.Helper()
		payload, err := sign.Payload(of, map[string]string{"team": "up"})
		if err != nil {
			t.Fatal(err)
		}
		l, err := testenv.NewLegacyKeyless(vs, vs, payload, identity, issuer)
		if err != nil {
			t.Fatal(err)
		}
		if err := l.Push(ctx, at); err != nil {
			t.Fatal(err)
		}
	}

	b := newBed(t)
	good, replayed := b.image(t, "good"), b.image(t, "replayed")
	signed(t, good, good)
	r, err := Check(ctx, b.st, p, good, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Digests[0]; got.Format != sign.Legacy || got.Identity != identity || got.Issuer != issuer || got.Digest != good.DigestStr() {
		t.Errorf("satisfied by %+v, want %s (issuer %s), legacy", got, identity, issuer)
	}
	signed(t, good, replayed)
	_, err = Check(ctx, b.st, p, replayed, nil)
	if re := refusal(t, err); !strings.Contains(re.Reason, "payload names another digest, "+good.DigestStr()) {
		t.Errorf("another digest's signature: %q", re.Reason)
	}

	// The referrers API fails (and there is no tag fallback for a 403).
	fails := newBedWith(t, func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.Contains(r.URL.Path, "/referrers/") {
				http.Error(w, "denied", http.StatusForbidden)
				return
			}
			h.ServeHTTP(w, r)
		})
	})
	d, unsigned := fails.image(t, "signed"), fails.image(t, "unsigned")
	signed(t, d, d)
	if r, err := Check(ctx, fails.st, p, d, nil); err != nil || r.Digests[0].Format != sign.Legacy {
		t.Errorf("a legacy keyless signature with the referrers failing: %+v, %v", r, err)
	}
	_, err = Check(ctx, fails.st, p, unsigned, nil)
	var re *RefusedError
	if err == nil || errors.As(err, &re) || !strings.Contains(err.Error(), "referrers") {
		t.Errorf("no signature and the referrers failing: %v, want the registry's error", err)
	}
}
