package main

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/sign"
)

// legacyKeyless is a keyless signature as cosign v2 stores it in the .sig
// tag: the simple-signing payload as the layer, and on its descriptor the
// base64 signature, the Fulcio certificate and chain (PEM) and the Rekor
// bundle (the log's signed entry timestamp over the entry's body,
// integrated time, log index and log id).
type legacyKeyless struct {
	payload    []byte
	sig        []byte
	cert       []byte
	chain      []byte
	set        []byte
	rekor      tlog.RekorPayload
	noRekorAnn bool // leave the bundle annotation out
}

// newLegacyKeyless signs digest's simple-signing payload (with
// annotations) with a certificate the virtual Sigstore fulcio issues to
// identity and issuer, logs it, and has the log of rekor sign the entry
// timestamp (rekor is fulcio, but for the forgeries).
func newLegacyKeyless(t *testing.T, fulcio, rekor *ca.VirtualSigstore, digest name.Digest, identity, issuer string, annotations map[string]string) *legacyKeyless {
	t.Helper()
	payload, err := sign.Payload(digest, annotations)
	if err != nil {
		t.Fatal(err)
	}
	ent, err := fulcio.SignAtTime(identity, issuer, payload, time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		t.Fatal(err)
	}
	cert, err := cryptoutils.MarshalCertificateToPEM(vc.Certificate())
	if err != nil {
		t.Fatal(err)
	}
	fca := fulcio.FulcioCertificateAuthorities()[0].(*root.FulcioCertificateAuthority)
	chain, err := cryptoutils.MarshalCertificatesToPEM(append(fca.Intermediates, fca.Root))
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ent.TlogEntries()
	if err != nil || len(entries) != 1 {
		t.Fatalf("tlog entries: %v, %d", err, len(entries))
	}
	tle := entries[0].TransparencyLogEntry()
	logID, err := rekor.RekorLogID()
	if err != nil {
		t.Fatal(err)
	}
	l := &legacyKeyless{
		payload: payload,
		sig:     sc.MessageSignatureContent().Signature(),
		cert:    cert,
		chain:   chain,
		rekor: tlog.RekorPayload{
			Body:           base64.StdEncoding.EncodeToString(tle.GetCanonicalizedBody()),
			IntegratedTime: tle.GetIntegratedTime(),
			LogIndex:       tle.GetLogIndex(),
			LogID:          logID,
		},
	}
	if l.set, err = rekor.RekorSignPayload(l.rekor); err != nil {
		t.Fatal(err)
	}
	return l
}

// push stores l as the only signature in digest's .sig tag, with cosign
// v2's annotations.
func (l *legacyKeyless) push(t *testing.T, digest name.Digest) {
	t.Helper()
	ann := map[string]string{
		"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(l.sig),
		"dev.sigstore.cosign/certificate":    string(l.cert),
		"dev.sigstore.cosign/chain":          string(l.chain),
	}
	if !l.noRekorAnn {
		// cosign's RekorBundle: the SET as base64 (a []byte in JSON), the
		// payload with lower-case keys.
		rb := map[string]any{"SignedEntryTimestamp": l.set, "Payload": l.rekor}
		j, err := json.Marshal(rb)
		if err != nil {
			t.Fatal(err)
		}
		ann["dev.sigstore.cosign/bundle"] = string(j)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(l.payload, "application/vnd.dev.cosign.simplesigning.v1+json"),
		Annotations: ann,
	})
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(digest.Context().String() + ":" + strings.Replace(digest.DigestStr(), ":", "-", 1) + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
}

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
	signAs := func(tag string, seed int64, fulcio, rekor *ca.VirtualSigstore, change func(*legacyKeyless)) string {
		d := s.image(t, tag, seed)
		ref := digestRef(t, s.repo+"@"+d)
		l := newLegacyKeyless(t, fulcio, rekor, ref, identity, issuer, team)
		if change != nil {
			change(l)
		}
		l.push(t, ref)
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

	tampered := signAs("tampered", 32, vs, vs, func(l *legacyKeyless) {
		l.payload = []byte(strings.Replace(string(l.payload), `"team":"upstream"`, `"team":"attacker"`, 1))
	})
	untrustedCA := signAs("untrusted-ca", 33, rogue, vs, nil)
	noSET := signAs("no-set", 34, vs, vs, func(l *legacyKeyless) { l.set = nil })
	forgedSET := signAs("forged-set", 35, vs, rogue, func(l *legacyKeyless) {
		// rogue's log signs the entry under the trusted log's id.
		logID, err := vs.RekorLogID()
		if err != nil {
			t.Fatal(err)
		}
		l.rekor.LogID = logID
		if l.set, err = rogue.RekorSignPayload(l.rekor); err != nil {
			t.Fatal(err)
		}
	})
	unlogged := signAs("unlogged", 36, vs, vs, func(l *legacyKeyless) { l.noRekorAnn = true })

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
