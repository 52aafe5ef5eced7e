package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// cosign3VerifyAttestation runs cosign v3's verify-attestation for
// ocistow's predicate type, offline.
func cosign3VerifyAttestation(t *testing.T, keyRef, image string) result {
	t.Helper()
	return cosign3(t, "", nil, "verify-attestation", "--type", promotionType, "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", keyRef, image)
}

// attestationBundles returns the bundle referrers of digest that carry
// ocistow's predicate type, as cosign v3 annotates them.
func attestationBundles(t *testing.T, repo, digest string) int {
	t.Helper()
	n := 0
	for _, m := range bundleReferrers(t, repo, digest) {
		if m.Annotations["dev.sigstore.bundle.predicateType"] == promotionType {
			n++
		}
	}
	return n
}

type attestFormatsJSON struct {
	copyResultJSON
	Attestations struct {
		Formats []string `json:"formats"`
		Digests []struct {
			Digest  string            `json:"digest"`
			Status  string            `json:"status"`
			Formats map[string]string `json:"formats"`
		} `json:"digests"`
		Added   int `json:"added"`
		Present int `json:"present"`
	} `json:"attestations"`
}

type verifiedAttestation struct {
	Digest    string            `json:"digest"`
	Format    string            `json:"format"`
	Predicate attestedPredicate `json:"predicate"`
}

// With -signature-format both, every promoted digest gets its promotion
// attestation in both forms: cosign v2 verifies the .att tag, cosign v3
// the bundle referrer, ocistow both; a re-run adds nothing.
func TestAttestationFollowsSignatureFormatBoth(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	dst := repo + ":v1"
	kmsRef := "awskms:///alias/" + ecKey
	args := []string{"-source", srcRef("multi"), "-destination", dst, "-annotations", "team=foo",
		"-aws-kms-key-arn", "alias/" + ecKey, "-attest", "-signature-format", "both", "-output", "json"}
	res := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
	var out attestFormatsJSON
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatal(err)
	}
	digests := []string{out.DestinationDigest}
	for _, m := range out.Manifests {
		digests = append(digests, m.DestinationDigest)
	}
	if !slices.Equal(out.Attestations.Formats, []string{"legacy", "bundle"}) || out.Attestations.Added != 2*len(digests) || out.Attestations.Present != 0 {
		t.Fatalf("attestations %+v for %d digests", out.Attestations, len(digests))
	}
	for _, d := range out.Attestations.Digests {
		if d.Status != "added" || d.Formats["legacy"] != "added" || d.Formats["bundle"] != "added" {
			t.Errorf("digest %+v", d)
		}
	}
	for _, want := range []string{"method=Attest", "formats=legacy,bundle", "attestations_added=" + strconv.Itoa(2*len(digests))} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("canonical Attest line lacks %q:\n%s", want, res.stderr)
		}
	}
	for i, d := range digests {
		image := dst
		if i > 0 {
			image = repo + "@" + d
		}
		if a, b := attCount(t, repo, d), attestationBundles(t, repo, d); a != 1 || b != 1 {
			t.Errorf("%s: %d legacy attestations and %d attestation bundles, want 1 and 1", d, a, b)
		}
		// cosign v2 reads the .att tag; cosign v3 reads the bundle.
		if v := cosignVerifyAttestation(t, "", nil, kmsRef, image); v.code != 0 {
			t.Errorf("cosign v2 verify-attestation %s: %s", image, v.stderr)
		}
		if v := cosign3VerifyAttestation(t, kmsRef, image); v.code != 0 || !strings.Contains(v.stdout, "payload") {
			t.Errorf("cosign v3 verify-attestation %s: exit %d\n%s", image, v.code, v.stderr)
		}
	}
	// The attestation bundles do not stop cosign v3 from verifying the
	// signature bundles beside them.
	if v := cosign3Verify(t, kmsRef, dst, "team=foo"); v.code != 0 {
		t.Errorf("cosign v3 verify beside attestation bundles: %s", v.stderr)
	}
	// And they are not signatures to ocistow.
	v := ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo", dst).mustSucceed(t)
	if !strings.Contains(v.stderr, "Verified 2 signatures (1 legacy, 1 bundle)") {
		t.Errorf("ocistow verify of the signatures: %s", v.stderr)
	}

	// ocistow verifies both forms and says which it found.
	v = ocistow(t, e2e.kms.Env(), "verify", "-attestation", "-recursive", "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo", dst).mustSucceed(t)
	n := len(digests)
	if want := "Verified " + strconv.Itoa(2*n) + " promotion attestations (" + strconv.Itoa(n) + " legacy, " + strconv.Itoa(n) + " bundle) on " + strconv.Itoa(n) + " digests"; !strings.Contains(v.stderr, want) {
		t.Errorf("ocistow verify -attestation: want %q in\n%s", want, v.stderr)
	}
	if !strings.Contains(v.stderr, "verified_legacy="+strconv.Itoa(n)) || !strings.Contains(v.stderr, "verified_bundle="+strconv.Itoa(n)) {
		t.Errorf("canonical Verify line:\n%s", v.stderr)
	}
	var verified []verifiedAttestation
	if err := json.Unmarshal([]byte(v.stdout), &verified); err != nil {
		t.Fatal(err)
	}
	formats := map[string]int{}
	for _, a := range verified {
		formats[a.Format]++
		if a.Predicate.Source.Digest != e2e.fixtures["multi"] || a.Predicate.Stamp.Annotations["team"] != "foo" {
			t.Errorf("verified %+v", a)
		}
	}
	if formats["legacy"] != n || formats["bundle"] != n {
		t.Errorf("verified formats %v", formats)
	}

	// A re-run adds nothing, in either form.
	again := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
	if err := json.Unmarshal([]byte(again.stdout), &out); err != nil {
		t.Fatal(err)
	}
	if out.Attestations.Added != 0 || out.Attestations.Present != 2*n {
		t.Errorf("re-run: %d added, %d present", out.Attestations.Added, out.Attestations.Present)
	}
	for _, d := range digests {
		if a, b := attCount(t, repo, d), attestationBundles(t, repo, d); a != 1 || b != 1 {
			t.Errorf("%s after a re-run: %d legacy attestations and %d attestation bundles, want 1 and 1", d, a, b)
		}
	}
}

// With -signature-format bundle, only the bundle form is written, and a
// key file attests as a KMS key does. ocistow also verifies the
// attestation bundles cosign v3's own attest writes.
func TestAttestationBundleOnly(t *testing.T) {
	dir := t.TempDir()
	const password = "correct horse battery staple"
	if r := cosign3(t, dir, []string{"COSIGN_PASSWORD=" + password}, "generate-key-pair"); r.code != 0 {
		t.Fatalf("cosign v3 generate-key-pair: %s", r.stderr)
	}
	priv, pub := filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")
	repo := dstRepo(t, e2e.dst.Host)
	dst := repo + ":v1"
	env := []string{"COSIGN_PASSWORD=" + password}
	r := ocistow(t, env, "-source", srcRef("single"), "-destination", dst, "-key", priv, "-sign=false", "-attest", "-signature-format", "bundle").mustSucceed(t)
	if !strings.Contains(r.stdout, "attested 1 digests with "+priv+" (bundle format): 1 added, 0 already present") {
		t.Errorf("summary: %s", r.stdout)
	}
	digest := e2e.fixtures["single"]
	if a, b := attCount(t, repo, digest), attestationBundles(t, repo, digest); a != 0 || b != 1 {
		t.Fatalf("%d legacy attestations and %d attestation bundles, want 0 and 1", a, b)
	}
	if v := cosign3VerifyAttestation(t, pub, dst); v.code != 0 {
		t.Errorf("cosign v3 verify-attestation with the key file: %s", v.stderr)
	}
	v := ocistow(t, nil, "verify", "-attestation", "-key", pub, dst).mustSucceed(t)
	if !strings.Contains(v.stderr, "(0 legacy, 1 bundle)") || !strings.Contains(v.stdout, `"format":"bundle"`) {
		t.Errorf("ocistow verify -attestation:\n%s\n%s", v.stdout, v.stderr)
	}
	// Another key does not verify it.
	if v := ocistow(t, e2e.kms.Env(), "verify", "-attestation", "-aws-kms-key-arn", "alias/"+ecKey, dst); v.code != exitFailed || !strings.Contains(v.stderr, "signature does not verify") {
		t.Errorf("verify with another key: exit %d\n%s", v.code, v.stderr)
	}
	if v := cosign3VerifyAttestation(t, "awskms:///alias/"+ecKey, dst); v.code == 0 {
		t.Error("cosign v3 verified the attestation with another key")
	}
	// The same promotion again adds nothing.
	r = ocistow(t, env, "-source", srcRef("single"), "-destination", dst, "-key", priv, "-sign=false", "-attest", "-signature-format", "bundle").mustSucceed(t)
	if !strings.Contains(r.stdout, "0 added, 1 already present") || attestationBundles(t, repo, digest) != 1 {
		t.Errorf("re-run: %s", r.stdout)
	}

	// cosign v3's own attestation bundle of this predicate type.
	other := repo + ":cosign"
	ocistow(t, nil, "-source", srcRef("other"), "-destination", other, "-sign=false").mustSucceed(t)
	pred := filepath.Join(dir, "predicate.json")
	if err := os.WriteFile(pred, []byte(`{"source":{"reference":"upstream/app:1","digest":"sha256:`+strings.Repeat("1", 64)+`"},"stamp":{"annotations":{"team":"cosign"}}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	od := get(t, other, nil).Digest.String()
	if c := cosign3(t, dir, env, "attest", "--key", priv, "--signing-config", e2e.signingConfig, "--trusted-root", e2e.trustedRoot,
		"--type", promotionType, "--predicate", pred, "-y", repo+"@"+od); c.code != 0 {
		t.Fatalf("cosign v3 attest: %s", c.stderr)
	}
	v = ocistow(t, nil, "verify", "-attestation", "-key", pub, "-annotations", "team=cosign", other).mustSucceed(t)
	if !strings.Contains(v.stderr, "(0 legacy, 1 bundle)") || !strings.Contains(v.stdout, `"reference":"upstream/app:1"`) {
		t.Errorf("ocistow verify -attestation of cosign v3's bundle:\n%s\n%s", v.stdout, v.stderr)
	}

	// A bundle cosign v3 wrote of the same promotion counts: ocistow
	// adds none.
	same := repo + ":same"
	ocistow(t, nil, "-source", srcRef("other"), "-destination", same, "-sign=false").mustSucceed(t)
	p := `{"source":{"reference":"` + srcRef("other") + `","digest":"` + od + `"},"destination":{"reference":"` + same + `","digest":"` + od + `"},"stamp":{}}`
	if err := os.WriteFile(pred, []byte(p), 0o644); err != nil {
		t.Fatal(err)
	}
	if c := cosign3(t, dir, env, "attest", "--key", priv, "--signing-config", e2e.signingConfig, "--trusted-root", e2e.trustedRoot,
		"--type", promotionType, "--predicate", pred, "-y", repo+"@"+od); c.code != 0 {
		t.Fatalf("cosign v3 attest: %s", c.stderr)
	}
	r = ocistow(t, env, "-source", srcRef("other"), "-destination", same, "-key", priv, "-sign=false", "-attest", "-signature-format", "bundle").mustSucceed(t)
	if !strings.Contains(r.stdout, "0 added, 1 already present") || attestationBundles(t, repo, od) != 2 {
		t.Errorf("ocistow did not find cosign v3's attestation of the same promotion (%d bundles): %s", attestationBundles(t, repo, od), r.stdout)
	}
}

// A sync attests in the entry's signature format, also with signing off.
func TestSyncAttestsInSignatureFormat(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	file := promotionFile(t, `defaults:
  key: alias/`+ecKey+`
  attest: true
promotions:
  - source: SRC/src/single:v1
    destination: DST:v1
    sign: false
    signatureFormat: bundle
`, e2e.src.Host, repo)
	for run, want := range []int{1, 0} {
		var sum struct {
			Summary struct {
				AttestationsAdded int `json:"attestationsAdded"`
			} `json:"summary"`
		}
		r := ocistow(t, e2e.kms.Env(), "sync", "-f", file, "-o", "json").mustSucceed(t)
		if err := json.Unmarshal([]byte(r.stdout), &sum); err != nil {
			t.Fatal(err)
		}
		if sum.Summary.AttestationsAdded != want {
			t.Errorf("run %d: %d attestations added, want %d", run, sum.Summary.AttestationsAdded, want)
		}
	}
	d := get(t, repo+":v1", nil).Digest.String()
	if a, b := attCount(t, repo, d), attestationBundles(t, repo, d); a != 0 || b != 1 {
		t.Errorf("%d legacy attestations and %d attestation bundles, want 0 and 1", a, b)
	}
	if v := cosign3VerifyAttestation(t, "awskms:///alias/"+ecKey, repo+":v1"); v.code != 0 {
		t.Errorf("cosign v3 verify-attestation: %s", v.stderr)
	}
}
