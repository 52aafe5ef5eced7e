package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/internal/testenv"
)

const promotionType = "https://github.com/ocistow/ocistow/promotion/v1"

// attestationTag is cosign's .att tag of digest in repo.
func attestationTag(repo, digest string) string {
	return repo + ":" + strings.Replace(digest, ":", "-", 1) + ".att"
}

// attCount counts the layers of the .att tag of digest.
func attCount(t *testing.T, repo, digest string) int {
	t.Helper()
	ref, err := name.ParseReference(attestationTag(repo, digest))
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		if strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
			return 0
		}
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return len(m.Layers)
}

// envelopeOf returns the first layer of the .att tag of digest.
func envelopeOf(t *testing.T, repo, digest string) []byte {
	t.Helper()
	ref, err := name.ParseReference(attestationTag(repo, digest))
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	ls, err := img.Layers()
	if err != nil || len(ls) == 0 {
		t.Fatalf("layers of %s: %d, %v", ref, len(ls), err)
	}
	rc, err := ls[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// writeAttestation stores envelope as the only attestation of digest, as
// cosign lays it out.
func writeAttestation(t *testing.T, repo, digest string, envelope []byte) {
	t.Helper()
	ref, err := name.ParseReference(attestationTag(repo, digest))
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), mutate.Addendum{
		Layer:       static.NewLayer(envelope, "application/vnd.dsse.envelope.v1+json"),
		Annotations: map[string]string{"dev.cosignproject.cosign/signature": "", "predicateType": promotionType},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
}

// cosignVerifyAttestation runs cosign verify-attestation for ocistow's
// predicate type, offline.
func cosignVerifyAttestation(t *testing.T, dir string, env []string, keyRef, image string) result {
	t.Helper()
	return cosign(t, dir, env, "verify-attestation", "--type", promotionType, "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", keyRef, image)
}

type attestedPredicate struct {
	Source      struct{ Reference, Digest string } `json:"source"`
	Destination struct{ Reference, Digest string } `json:"destination"`
	Stamp       struct {
		Annotations         map[string]string `json:"annotations"`
		ManifestAnnotations map[string]string `json:"manifestAnnotations"`
		Labels              map[string]string `json:"labels"`
	} `json:"stamp"`
	Platforms []string `json:"platforms"`
	Ocistow   struct {
		Version string `json:"version"`
	} `json:"ocistow"`
	PromotedAt string `json:"promotedAt"`
}

func TestAttestedPromotionVerifies(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	dst := repo + ":v1"
	kmsRef := "awskms:///alias/" + ecKey
	args := []string{"-source", srcRef("multi"), "-destination", dst, "-annotations", "team=foo",
		"-manifest-annotation", "tier=gold", "-label", "owner=ops", "-aws-kms-key-arn", "alias/" + ecKey, "-attest", "-output", "json"}
	res := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
	var out struct {
		copyResultJSON
		Attestations struct {
			Key           string `json:"key"`
			PredicateType string `json:"predicateType"`
			Digests       []struct{ Digest, Status string }
			Added         int `json:"added"`
			Present       int `json:"present"`
		} `json:"attestations"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatal(err)
	}
	digests := []string{out.DestinationDigest}
	for _, m := range out.Manifests {
		digests = append(digests, m.DestinationDigest)
	}
	if len(digests) < 3 || out.Attestations.Added != len(digests) || out.Attestations.Key != kmsRef || out.Attestations.PredicateType != promotionType {
		t.Fatalf("attestations %+v for %d digests", out.Attestations, len(digests))
	}
	for _, want := range []string{"msg=Attest", "method=Attest", "key=" + kmsRef, "predicate_type=" + promotionType, "attestations_added=" + strconv.Itoa(len(digests)), "attestations_present=0", "src_digest=" + e2e.fixtures["multi"]} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("canonical Attest line lacks %q:\n%s", want, res.stderr)
		}
	}

	// cosign verifies the attestation of the tag and of every child.
	for i, d := range digests {
		image := dst
		if i > 0 {
			image = repo + "@" + d
		}
		v := cosignVerifyAttestation(t, "", nil, kmsRef, image)
		if v.code != 0 {
			t.Fatalf("cosign verify-attestation %s: exit %d\n%s", image, v.code, v.stderr)
		}
		// cosign v3, finding no bundle, reads the .att tag.
		if v := cosign3VerifyAttestation(t, kmsRef, image); v.code != 0 {
			t.Errorf("cosign v3 verify-attestation of the legacy form %s: exit %d\n%s", image, v.code, v.stderr)
		}
	}

	// ocistow verifies them and prints the predicates.
	v := ocistow(t, e2e.kms.Env(), "verify", "-attestation", "-recursive", "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo", dst).mustSucceed(t)
	var verified []struct {
		Digest        string            `json:"digest"`
		PredicateType string            `json:"predicateType"`
		Predicate     attestedPredicate `json:"predicate"`
	}
	if err := json.Unmarshal([]byte(v.stdout), &verified); err != nil {
		t.Fatalf("ocistow verify -attestation printed %q: %v", v.stdout, err)
	}
	if len(verified) != len(digests) {
		t.Fatalf("%d attestations verified, want %d", len(verified), len(digests))
	}
	version := strings.TrimSpace(strings.TrimPrefix(ocistow(t, nil, "-version").mustSucceed(t).stdout, "ocistow "))
	for i, a := range verified {
		p := a.Predicate
		if a.Digest != digests[i] || a.PredicateType != promotionType {
			t.Errorf("attestation %d: digest %s, type %s", i, a.Digest, a.PredicateType)
		}
		if p.Source.Reference != srcRef("multi") || p.Source.Digest != e2e.fixtures["multi"] ||
			p.Destination.Reference != dst || p.Destination.Digest != out.DestinationDigest {
			t.Errorf("predicate source/destination %+v %+v", p.Source, p.Destination)
		}
		if p.Stamp.Annotations["team"] != "foo" || p.Stamp.ManifestAnnotations["tier"] != "gold" || p.Stamp.Labels["owner"] != "ops" {
			t.Errorf("predicate stamp %+v", p.Stamp)
		}
		if p.Ocistow.Version != version || version == "" {
			t.Errorf("predicate version %q, ocistow -version %q", p.Ocistow.Version, version)
		}
		if at, err := time.Parse(time.RFC3339, p.PromotedAt); err != nil || at.Location() != time.UTC || time.Since(at) > time.Hour {
			t.Errorf("promotedAt %q: %v", p.PromotedAt, err)
		}
	}

	// A re-run adds nothing.
	again := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
	if err := json.Unmarshal([]byte(again.stdout), &out); err != nil {
		t.Fatal(err)
	}
	if out.Attestations.Added != 0 || out.Attestations.Present != len(digests) {
		t.Errorf("re-run: %d added, %d present", out.Attestations.Added, out.Attestations.Present)
	}
	for _, d := range digests {
		if n := attCount(t, repo, d); n != 1 {
			t.Errorf("%s has %d attestations after a re-run, want 1", d, n)
		}
	}

	// Another key: refused by both.
	if v := cosignVerifyAttestation(t, "", nil, "awskms:///alias/"+rsaKey, dst); v.code == 0 {
		t.Error("cosign verified the attestation with another key")
	}
	r := ocistow(t, e2e.kms.Env(), "verify", "-attestation", "-aws-kms-key-arn", "alias/"+rsaKey, dst)
	if r.code != exitFailed {
		t.Errorf("verify with another key: exit %d", r.code)
	}
	r.refused(t, []string{"verification failed", out.DestinationDigest, "signature does not verify with awskms:///alias/" + rsaKey}, "")
	// A required annotation the stamp lacks.
	r = ocistow(t, e2e.kms.Env(), "verify", "-attestation", "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=bar", dst)
	r.refused(t, []string{"annotation team=bar missing or different"}, "")

	// The top-level attestation stored for a child: it names the index.
	top := envelopeOf(t, repo, digests[0])
	writeAttestation(t, repo, digests[1], top)
	r = ocistow(t, e2e.kms.Env(), "verify", "-attestation", "-aws-kms-key-arn", "alias/"+ecKey, repo+"@"+digests[1])
	r.refused(t, []string{digests[1], "attestation names another subject, " + digests[0]}, "")
	if v := cosignVerifyAttestation(t, "", nil, kmsRef, repo+"@"+digests[1]); v.code == 0 {
		t.Error("cosign verified an attestation naming another digest")
	}

	// A tampered predicate, its signature kept.
	var env map[string]any
	if err := json.Unmarshal(top, &env); err != nil {
		t.Fatal(err)
	}
	stmt, err := base64.StdEncoding.DecodeString(env["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(stmt), `"foo"`) {
		t.Fatalf("statement lacks the stamp: %s", stmt)
	}
	env["payload"] = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(stmt), `"foo"`, `"bar"`, 1)))
	tampered, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	writeAttestation(t, repo, digests[0], tampered)
	r = ocistow(t, e2e.kms.Env(), "verify", "-attestation", "-aws-kms-key-arn", "alias/"+ecKey, dst)
	r.refused(t, []string{"signature does not verify with " + kmsRef}, "")
	if v := cosignVerifyAttestation(t, "", nil, kmsRef, dst); v.code == 0 {
		t.Error("cosign verified a tampered attestation")
	}
}

func TestAttestWithKeyFile(t *testing.T) {
	dir := t.TempDir()
	const password = "attest-pw"
	pw := []string{"COSIGN_PASSWORD=" + password}
	if r := cosign(t, dir, pw, "generate-key-pair"); r.code != 0 {
		t.Fatalf("cosign generate-key-pair: %s", r.stderr)
	}
	repo := dstRepo(t, e2e.dst.Host)
	dst := repo + ":v1"
	// Signing off: the attestation alone, on a single image.
	res := ocistow(t, pw, "-source", srcRef("single"), "-destination", dst, "-sign=false", "-attest",
		"-key", filepath.Join(dir, "cosign.key")).mustSucceed(t)
	if !strings.Contains(res.stdout, "attested 1 digests with "+filepath.Join(dir, "cosign.key")+": 1 added, 0 already present") {
		t.Errorf("summary: %s", res.stdout)
	}
	if strings.Contains(res.stdout, "signed ") || strings.Contains(res.stderr, "method=Sign") {
		t.Errorf("-sign=false signed:\n%s\n%s", res.stdout, res.stderr)
	}
	if v := cosignVerifyAttestation(t, dir, nil, "cosign.pub", dst); v.code != 0 {
		t.Fatalf("cosign verify-attestation: exit %d\n%s", v.code, v.stderr)
	}
	v := ocistow(t, nil, "verify", "-attestation", "-key", filepath.Join(dir, "cosign.pub"), dst).mustSucceed(t)
	if !strings.Contains(v.stdout, `"reference":"`+srcRef("single")+`"`) {
		t.Errorf("verify printed %s", v.stdout)
	}
	// The signature verification still looks at signatures: there are none.
	r := ocistow(t, nil, "verify", "-key", filepath.Join(dir, "cosign.pub"), dst)
	r.refused(t, []string{"no signatures found"}, "")
	// An image signed but never attested.
	other := repo + ":other"
	ocistow(t, pw, "-source", srcRef("other"), "-destination", other, "-key", filepath.Join(dir, "cosign.key")).mustSucceed(t)
	r = ocistow(t, nil, "verify", "-attestation", "-key", filepath.Join(dir, "cosign.pub"), other)
	if r.code != exitFailed {
		t.Errorf("exit %d", r.code)
	}
	r.refused(t, []string{"no promotion attestation found"}, "")
	// Attesting it later, up to date: the attestation is added.
	late := ocistow(t, pw, "-source", srcRef("other"), "-destination", other, "-key", filepath.Join(dir, "cosign.key"), "-attest").mustSucceed(t)
	if !strings.Contains(late.stdout, "destination already up to date") || !strings.Contains(late.stdout, "attested 1 digests with "+filepath.Join(dir, "cosign.key")+": 1 added") {
		t.Errorf("attesting an up-to-date image: %s", late.stdout)
	}
	ocistow(t, nil, "verify", "-attestation", "-key", filepath.Join(dir, "cosign.pub"), other).mustSucceed(t)
}

// A destination that refuses the .att tag: the copy stands, exit 3.
func TestAttestFailureAfterCopy(t *testing.T) {
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, ".att") {
			http.Error(w, `{"errors":[{"code":"DENIED","message":"no attestations here"}]}`, http.StatusForbidden)
			return true
		}
		return false
	})
	dst := front.Host + "/" + testenv.RepoName(t.Name()) + ":v1"
	r := ocistow(t, e2e.kms.Env(), "-source", srcRef("single"), "-destination", dst, "-attest", "-aws-kms-key-arn", "alias/"+ecKey)
	if r.code != exitSignFailed {
		t.Errorf("exit %d, want %d", r.code, exitSignFailed)
	}
	r.refused(t, []string{"copy succeeded", "but attesting failed", "DENIED"}, "")
	if !strings.Contains(r.stderr, "error_type=SigningFailed") {
		t.Errorf("canonical Attest line lacks error_type=SigningFailed:\n%s", r.stderr)
	}
}

func TestAttestRefusals(t *testing.T) {
	repo := dstRepo(t, e2e.dstFront.Host)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-sign=false", "-attest"}, "-attest needs a key"},
		{[]string{"-copy=false", "-attest", "-aws-kms-key-arn", "alias/" + ecKey}, "-attest needs the copy"},
	} {
		r := ocistow(t, e2e.kms.Env(), append([]string{"-source", srcRef("single"), "-destination", repo + ":v1"}, c.args...)...)
		if r.code != exitInvalid {
			t.Errorf("%v: exit %d", c.args, r.code)
		}
		r.refused(t, []string{c.want}, repo)
	}
	// ATTEST is read from the environment.
	r := ocistow(t, []string{"ATTEST=true", "SIGN=false"}, "-source", srcRef("single"), "-destination", repo+":v1")
	r.refused(t, []string{"-attest needs a key"}, repo)
}

func TestSyncAttests(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	file := promotionFile(t, `defaults:
  key: alias/`+ecKey+`
  attest: true
  annotations: {team: fleet}
promotions:
  - source: SRC/src/single:v1
    destination: DST:attested
  - source: SRC/src/other:v1
    destination: DST:plain
    attest: false
`, e2e.src.Host, repo)
	// The plan's requests carry Attest, as the Lambda payload takes it.
	plan := ocistow(t, e2e.kms.Env(), "sync", "-f", file, "-dry-run", "-o", "json").mustSucceed(t)
	var reqs []map[string]any
	if err := json.Unmarshal([]byte(plan.stdout), &reqs); err != nil {
		t.Fatalf("%v: %s", err, plan.stdout)
	}
	attests := map[string]any{}
	for _, r := range reqs {
		attests[r["DstImageRef"].(string)] = r["Attest"]
	}
	if attests[repo+":attested"] != true || attests[repo+":plain"] != nil {
		t.Errorf("plan's Attest fields: %v", attests)
	}

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
		if n := strings.Count(r.stderr, "method=Attest"); n != 1 {
			t.Errorf("run %d: %d canonical Attest lines, want 1:\n%s", run, n, r.stderr)
		}
	}
	digest := get(t, repo+":attested", nil).Digest.String()
	if n := attCount(t, repo, digest); n != 1 {
		t.Errorf("%d attestations after two syncs, want 1", n)
	}
	if n := attCount(t, repo, get(t, repo+":plain", nil).Digest.String()); n != 0 {
		t.Errorf("attest: false wrote %d attestations", n)
	}
	if v := cosignVerifyAttestation(t, "", nil, "awskms:///alias/"+ecKey, repo+":attested"); v.code != 0 {
		t.Fatalf("cosign verify-attestation: exit %d\n%s", v.code, v.stderr)
	}
	v := ocistow(t, e2e.kms.Env(), "verify", "-attestation", "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=fleet", repo+":attested").mustSucceed(t)
	if !strings.Contains(v.stdout, `"reference":"`+repo+`:attested"`) {
		t.Errorf("verify printed %s", v.stdout)
	}
}

// A re-run that finds every attestation present asks KMS to sign nothing:
// the stored attestations are checked with the public key first.
func TestAttestRerunMakesNoKMSSignCalls(t *testing.T) {
	signs, env := kmsSignCounter(t)
	dst := e2e.dst.Host + "/" + freshRepo(t) + ":v1"
	args := []string{"-source", srcRef("multi"), "-destination", dst, "-sign=false", "-attest", "-aws-kms-key-arn", "alias/" + ecKey}
	ocistow(t, env, args...).mustSucceed(t)
	if n := signs.Load(); n != 3 {
		t.Fatalf("first run made %d KMS Sign calls, want 3 (index and two images)", n)
	}
	signs.Store(0)
	r := ocistow(t, env, args...).mustSucceed(t)
	if n := signs.Load(); n != 0 {
		t.Errorf("identical re-run made %d KMS Sign calls, want 0", n)
	}
	if !strings.Contains(r.stdout, "attested 3 digests with awskms:///alias/"+ecKey+": 0 added, 3 already present") {
		t.Errorf("re-run summary: %s", r.stdout)
	}
}

// -attest adds an Attest span under the root, with one span per digest
// under it.
func TestTracedAttest(t *testing.T) {
	recv := testenv.NewOTLPReceiver()
	defer recv.Close()
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	env := append(e2e.kms.Env(), "OTEL_EXPORTER_OTLP_ENDPOINT="+recv.Endpoint)
	ocistow(t, env, "-aws-xray", "-source", srcRef("multi"), "-destination", dst, "-attest", "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	tree := newSpanTree(recv.Spans())
	attests := tree.named("Attest")
	if len(attests) != 1 || !tree.under(attests[0], "ocistow") || attests[0].Attributes["ocistow.attestations_added"] != "3" ||
		!strings.Contains(attests[0].Attributes["ocistow.attestation_formats"], "legacy") {
		t.Fatalf("Attest spans %+v", attests)
	}
	per := tree.named("attest sha256:")
	if len(per) != 3 {
		t.Fatalf("%d per-digest attest spans, want 3", len(per))
	}
	for _, s := range per {
		if !tree.under(s, "Attest") || s.Attributes["ocistow.attestation"] != "added" {
			t.Errorf("span %s: parent chain or status %v", s.Name, s.Attributes)
		}
	}
}

// TestPredicateReferencesAreFullyQualified holds docs/promotion-predicate.md's
// "fully qualified" references: a destination given without a tag is
// recorded with the tag it gets, latest.
func TestPredicateReferencesAreFullyQualified(t *testing.T) {
	dst := dstRepo(t, e2e.dst.Host)
	ocistow(t, e2e.kms.Env(), "-source", srcRef("single"), "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey, "-attest").mustSucceed(t)
	v := ocistow(t, e2e.kms.Env(), "verify", "-attestation", "-aws-kms-key-arn", "alias/"+ecKey, dst+":latest").mustSucceed(t)
	var verified []struct {
		Predicate attestedPredicate `json:"predicate"`
	}
	if err := json.Unmarshal([]byte(v.stdout), &verified); err != nil || len(verified) != 1 {
		t.Fatalf("ocistow verify -attestation printed %q: %v", v.stdout, err)
	}
	if p := verified[0].Predicate; p.Destination.Reference != dst+":latest" || p.Source.Reference != srcRef("single") {
		t.Errorf("predicate references %q and %q, want %q and %q", p.Source.Reference, p.Destination.Reference, srcRef("single"), dst+":latest")
	}
}
