package main

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/testing/ca"

	"github.com/ocistow/ocistow/internal/testenv"
)

// TestSyncKeylessVerifyTakesTheSyncsTrustedRoot holds README's "a keyless
// verify without trustedRoot takes ocistow sync -trusted-root FILE" (The
// sync) and, for the promotion file, "trustedRoot (as -trusted-root;
// without it, the sync's -trusted-root …)". A source signed keyless by
// sigstore-go's virtual Sigstore (a bundle, as cosign v3 attaches it) is
// promoted by three entries naming the identity and issuer: one with no
// trustedRoot, one with the root that trusts the signature, one with
// another Sigstore's root. Synced with -trusted-root naming the trusting
// root, the first two are promoted and the third refused; synced with
// -trusted-root naming the other root, only the second is promoted: the
// entry without a trustedRoot follows the flag, the others keep their own.
func TestSyncKeylessVerifyTakesTheSyncsTrustedRoot(t *testing.T) {
	const (
		identity = "https://github.com/example/app/.github/workflows/release.yml@refs/tags/v1.0.0"
		issuer   = "https://token.actions.githubusercontent.com"
		idRegexp = `^https://github\.com/example/app/\.github/workflows/release\.yml@refs/tags/v`
	)
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	trusting, other := trustedRootFile(t, vs), trustedRootFile(t, rogue)
	s := &policySource{repo: e2e.src.Host + "/" + testenv.RepoName(t.Name())}
	signed := s.image(t, "signed", 41)
	subject := digestRef(t, s.repo+"@"+signed)
	attachBundle(t, subject, keylessBundle(t, vs, subject, identity, issuer, nil))

	body := `defaults:
  sign: false
  referrers: false
  verify:
    identity: '` + idRegexp + `'
    issuer: ` + issuer + `
promotions:
  - {source: SRC:signed, destination: DST:flag}
  - source: SRC:signed
    destination: DST:own
    verify: {trustedRoot: ` + trusting + `}
  - source: SRC:signed
    destination: DST:other
    verify: {trustedRoot: ` + other + `}
`
	// The public-good root is never fetched here: should an entry miss the
	// sync's root, its TUF fetch goes to a closed loopback proxy and fails
	// (exit 2), rather than out to the internet. Registries on loopback
	// are never proxied.
	closed, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	noInternet := []string{"HTTPS_PROXY=http://" + closed, "HTTP_PROXY=http://" + closed}
	for _, tc := range []struct {
		name, root string
		promoted   map[string]bool // by destination tag
	}{
		{"the trusting root", trusting, map[string]bool{"flag": true, "own": true, "other": false}},
		{"another Sigstore's root", other, map[string]bool{"flag": false, "own": true, "other": false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := dstRepo(t, e2e.dstFront.Host)
			file := promotionFile(t, body, s.repo, dst)
			r := ocistow(t, noInternet, "sync", "-f", file, "-trusted-root", tc.root, "-o", "json")
			if r.code != exitFailed {
				t.Fatalf("sync exit %d, want 1 (one refused, the others go on)\n%s\n%s", r.code, r.stdout, r.stderr)
			}
			var out struct {
				Items []struct {
					DstImageRef string      `json:"DstImageRef"`
					Status      string      `json:"status"`
					ErrorType   string      `json:"errorType"`
					Error       string      `json:"error"`
					Result      *policyJSON `json:"result"`
				} `json:"items"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Items) != len(tc.promoted) {
				t.Fatalf("sync -o json: %v, want %d items\n%s", err, len(tc.promoted), r.stdout)
			}
			for _, it := range out.Items {
				tag := it.DstImageRef[strings.LastIndex(it.DstImageRef, ":")+1:]
				if tc.promoted[tag] {
					if it.Status != "promoted" || it.Result == nil || it.Result.Policy == nil || len(it.Result.Policy.Digests) != 1 {
						t.Errorf("%s: %+v, want promoted with the policy satisfied", tag, it)
						continue
					}
					if got := it.Result.Policy.Digests[0]; got.Digest != signed || got.Identity != identity || got.Issuer != issuer || got.Format != "bundle" {
						t.Errorf("%s: policy satisfied by %+v, want %s by identity %s issued by %s, bundle", tag, got, signed, identity, issuer)
					}
					continue
				}
				if it.Status != "refused (policy)" || it.ErrorType != "PolicyRefused" || !strings.Contains(it.Error, signed) || !strings.Contains(it.Error, "keyless") {
					t.Errorf("%s: %+v, want refused (policy), PolicyRefused, naming %s and why (keyless: …)", tag, it, signed)
				}
			}
			var want []string
			for tag, ok := range tc.promoted {
				if ok {
					want = append(want, tag)
				}
			}
			got := tags(t, dst, nil)
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Errorf("destination tags %v, want %v: a refused image was written, or a promoted one was not", got, want)
			}
		})
	}
}
