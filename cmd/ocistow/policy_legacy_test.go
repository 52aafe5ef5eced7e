package main

import (
	"strings"
	"testing"

	"github.com/sigstore/sigstore-go/pkg/testing/ca"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/sign"
)

// TestSourcePolicyKeylessLegacy checks cosign v2's keyless signatures in
// the .sig tag against a trusted root, with sigstore-go's virtual
// Sigstore issuing the certificate and logging the entry: the right
// identity and issuer pass (format legacy); a wrong identity, a wrong
// issuer, a missing annotation, a tampered payload, a certificate from a
// CA the root does not name (logged in the trusted log), an entry
// timestamp missing or signed by another log, and no log entry at all are
// refused, with nothing written.
func TestSourcePolicyKeylessLegacy(t *testing.T) {
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
	trFile := trustedRootFile(t, vs)
	s := &policySource{repo: e2e.src.Host + "/" + testenv.RepoName(t.Name())}
	team := map[string]string{"team": "upstream"}
	// signAs pushes an image as tag with a legacy keyless signature made
	// by fulcio's certificate and rekor's log, changed by change.
	signAs := func(tag string, seed int64, fulcio, rekor *ca.VirtualSigstore, change func(*testenv.LegacyKeyless)) string {
		d := s.image(t, tag, seed)
		ref := digestRef(t, s.repo+"@"+d)
		payload, err := sign.Payload(ref, team)
		if err != nil {
			t.Fatal(err)
		}
		l, err := testenv.NewLegacyKeyless(fulcio, rekor, payload, identity, issuer)
		if err != nil {
			t.Fatal(err)
		}
		if change != nil {
			change(l)
		}
		if err := l.Push(t.Context(), ref); err != nil {
			t.Fatal(err)
		}
		return d
	}
	signed := signAs("signed", 31, vs, vs, nil)
	dst := dstRepo(t, e2e.dstFront.Host)
	policy := []string{"-trusted-root", trFile, "-source-identity", idRegexp, "-source-issuer", issuer}

	r := ocistow(t, nil, append([]string{"-source", s.repo + ":signed", "-destination", dst + ":signed", "-sign=false", "-o", "json",
		"-source-annotations", "team=upstream"}, policy...)...).mustSucceed(t)
	if got := r.policy(t).Policy.Digests[0]; got.Identity != identity || got.Issuer != issuer || got.Format != "legacy" || got.Digest != signed {
		t.Errorf("policy satisfied by %+v, want identity %s issued by %s, legacy", got, identity, issuer)
	}
	if !strings.Contains(r.stderr, "policy=\"identity "+identity+" (issuer "+issuer+") (legacy)\"") {
		t.Errorf("the Copy line does not name the identity and the legacy format:\n%s", r.stderr)
	}

	// The real cosign v2 verifies the hand-made signature against the
	// same root: the layer is what cosign v2 writes and reads.
	if cr := cosign(t, t.TempDir(), nil, "verify", "--trusted-root", trFile, "--certificate-identity-regexp", idRegexp,
		"--certificate-oidc-issuer", issuer, "--insecure-ignore-sct", "-a", "team=upstream", s.repo+"@"+signed); cr.code != 0 {
		t.Errorf("cosign v2 verify of the legacy keyless signature: exit %d\n%s", cr.code, cr.stderr)
	}

	tampered := signAs("tampered", 32, vs, vs, func(l *testenv.LegacyKeyless) {
		l.Payload = []byte(strings.Replace(string(l.Payload), `"team":"upstream"`, `"team":"attacker"`, 1))
	})
	untrustedCA := signAs("untrusted-ca", 33, rogue, vs, nil)
	noSET := signAs("no-set", 34, vs, vs, func(l *testenv.LegacyKeyless) { l.SET = nil })
	forgedSET := signAs("forged-set", 35, vs, rogue, func(l *testenv.LegacyKeyless) {
		// rogue's log signs the entry under the trusted log's id.
		logID, err := vs.RekorLogID()
		if err != nil {
			t.Fatal(err)
		}
		l.Rekor.LogID = logID
		if l.SET, err = rogue.RekorSignPayload(l.Rekor); err != nil {
			t.Fatal(err)
		}
	})
	unlogged := signAs("unlogged", 36, vs, vs, func(l *testenv.LegacyKeyless) { l.NoRekorBundle = true })

	for _, tc := range []struct {
		name, tag string
		args      []string
		wants     []string
	}{
		{"wrong identity", "signed", []string{"-trusted-root", trFile, "-source-identity", `^https://github\.com/example/other/`, "-source-issuer", issuer},
			[]string{signed, "identity mismatch"}},
		{"wrong issuer", "signed", []string{"-trusted-root", trFile, "-source-identity", idRegexp, "-source-issuer", "https://accounts.google.com"},
			[]string{signed, "issuer mismatch"}},
		{"annotation missing", "signed", append([]string{"-source-annotations", "team=platform"}, policy...),
			[]string{signed, "missing annotation: team=platform"}},
		{"tampered payload", "tampered", policy, []string{tampered, "tampered"}},
		{"untrusted CA", "untrusted-ca", policy, []string{untrustedCA, "keyless: failed to verify leaf certificate"}},
		{"missing SET", "no-set", policy, []string{noSET, "no signed entry timestamp"}},
		{"forged SET", "forged-set", policy, []string{forgedSET, "keyless: transparency log"}},
		{"not logged", "unlogged", policy, []string{unlogged, "no transparency-log entry"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := dstRepo(t, e2e.dstFront.Host)
			r := ocistow(t, nil, append([]string{"-source", s.repo + ":" + tc.tag, "-destination", repo + ":v1", "-sign=false"}, tc.args...)...)
			if r.code != exitInvalid {
				t.Fatalf("exit %d, want 2\n%s", r.code, r.stderr)
			}
			r.refused(t, append([]string{"refused by the source policy"}, tc.wants...), repo)
		})
	}
}
