package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/testenv"
)

const (
	spdxType   = "application/spdx+json"
	reviewType = "application/vnd.example.review+json"
)

// upstream is a source image as an upstream project publishes it: a
// two-platform index signed with the upstream's own key by the real cosign
// (recursively: the index and each child have a .sig tag), an attestation
// on the index (.att), an SBOM attached to the index and one to the first
// child with regctl (OCI 1.1 referrers, through the referrers tag schema
// since the source registry has no referrers API), and a review of the
// index's SBOM (a referrer of a referrer).
type upstream struct {
	ref              string // by tag
	repo             string
	index            string
	children         []string
	sbom, childSBOM  string
	review           string
	keyDir           string // cosign.key, cosign.pub
	sigTags, attTags int
}

func newUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{repo: e2e.src.Host + "/" + testenv.RepoName(t.Name()), keyDir: t.TempDir()}
	u.ref = u.repo + ":v1"
	idx, err := testenv.MixedIndex(int64(len(t.Name())*7919), 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Push(t.Context(), u.ref, idx); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	u.index = d.String()
	im, _ := idx.IndexManifest()
	for _, m := range im.Manifests {
		u.children = append(u.children, m.Digest.String())
	}
	const password = "upstream"
	env := []string{"COSIGN_PASSWORD=" + password}
	if r := cosign(t, u.keyDir, env, "generate-key-pair"); r.code != 0 {
		t.Fatalf("cosign generate-key-pair: %s", r.stderr)
	}
	if r := cosign(t, u.keyDir, env, "sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", "--recursive", u.repo+"@"+u.index); r.code != 0 {
		t.Fatalf("cosign sign: %s", r.stderr)
	}
	u.sigTags = 3
	predicate := filepath.Join(u.keyDir, "predicate.json")
	if err := os.WriteFile(predicate, []byte(`{"builder":"upstream"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := cosign(t, u.keyDir, env, "attest", "--key", "cosign.key", "--tlog-upload=false", "--yes", "--type", "custom", "--predicate", predicate, u.repo+"@"+u.index); r.code != 0 {
		t.Fatalf("cosign attest: %s", r.stderr)
	}
	u.attTags = 1
	u.sbom = u.attach(t, u.repo+"@"+u.index, spdxType, `{"spdxVersion":"SPDX-2.3","name":"index"}`)
	u.childSBOM = u.attach(t, u.repo+"@"+u.children[0], spdxType, `{"spdxVersion":"SPDX-2.3","name":"amd64"}`)
	u.review = u.attach(t, u.repo+"@"+u.sbom, reviewType, `{"reviewed":true}`)
	return u
}

// attach puts an artifact with the real regctl, with subject as its
// subject, and returns its digest as the source lists it.
func (u *upstream) attach(t *testing.T, subject, artifactType, content string) string {
	t.Helper()
	before := referrerDigests(t, subject, "")
	file := filepath.Join(t.TempDir(), "artifact.json")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	regctl(t, "artifact", "put", "--subject", subject, "--artifact-type", artifactType,
		"--file", file, "--file-media-type", artifactType)
	for _, d := range referrerDigests(t, subject, artifactType) {
		if !slices.Contains(before, d) {
			return d
		}
	}
	t.Fatalf("regctl attached nothing to %s", subject)
	return ""
}

// regctl runs the real regctl CLI, with plain HTTP to the loopback
// registries.
func regctl(t *testing.T, args ...string) {
	t.Helper()
	exe, err := testenv.Tool("regctl")
	if err != nil {
		t.Fatal(err)
	}
	home := t.TempDir()
	for _, h := range []string{e2e.src.Host, e2e.dst.Host} {
		args = append(args, "--host", "reg="+h+",tls=disabled")
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + home}
	if r := runCmd(t, cmd); r.code != 0 {
		t.Fatalf("regctl %s: exit %d\n%s", strings.Join(args, " "), r.code, r.stderr)
	}
}

// referrerDigests lists the referrers of subject (a reference by digest)
// through go-containerregistry: the referrers API, or the referrers tag
// schema where the registry has none. artifactType filters when not "".
func referrerDigests(t *testing.T, subject, artifactType string) []string {
	t.Helper()
	d, err := name.NewDigest(subject)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Referrers(d, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("listing the referrers of %s: %v", subject, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range im.Manifests {
		if artifactType == "" || m.ArtifactType == artifactType {
			out = append(out, m.Digest.String())
		}
	}
	return out
}

// referrersResultJSON is the "referrers" object of -output json.
type referrersResultJSON struct {
	Referrers *struct {
		Subjects         []string `json:"subjects"`
		SubjectsWritten  int      `json:"subjectsWritten"`
		ReferrersCopied  int      `json:"referrersCopied"`
		ReferrersPresent int      `json:"referrersPresent"`
		TagsCopied       int      `json:"tagsCopied"`
		TagsPresent      int      `json:"tagsPresent"`
		TagsMerged       int      `json:"tagsMerged"`
		Filtered         int      `json:"filtered"`
		SourcePulls      int      `json:"sourcePulls"`
	} `json:"referrers"`
}

func (r result) referrers(t *testing.T) referrersResultJSON {
	t.Helper()
	var out referrersResultJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("parsing -output json: %v\n%s", err, r.stdout)
	}
	if out.Referrers == nil {
		t.Fatalf("-output json has no referrers:\n%s", r.stdout)
	}
	return out
}

// upstreamVerify runs cosign verify with the upstream's public key.
func upstreamVerify(t *testing.T, u *upstream, image string) result {
	t.Helper()
	return cosign(t, "", nil, "verify", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot,
		"--key", filepath.Join(u.keyDir, "cosign.pub"), image)
}

func hasTag(t *testing.T, ref string) bool {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	_, err = remote.Head(r, remote.WithContext(t.Context()))
	return err == nil
}

func TestReferrersTravelWithAStampedImage(t *testing.T) {
	u := newUpstream(t)
	// Through the recording front, to see what a re-run writes.
	repo := dstRepo(t, e2e.dstFront.Host)
	dst := repo + ":v1"
	res := ocistow(t, nil, "-source", u.ref, "-destination", dst, "-annotations", "team=platform",
		"-sign=false", "-referrers", "-output", "json").mustSucceed(t)
	cp, rr := res.copyResult(t), res.referrers(t).Referrers
	if cp.DestinationDigest == u.index {
		t.Fatal("the stamped image has the source's digest")
	}
	// The source index and its two children written by digest; three
	// referrers (the SBOMs and the review); the three .sig tags and the
	// .att tag.
	if rr.SubjectsWritten != 3 || rr.ReferrersCopied != 3 || rr.TagsCopied != u.sigTags+u.attTags || rr.ReferrersPresent != 0 {
		t.Errorf("referrers %+v, want 3 subjects written, 3 referrers and %d tags copied", rr, u.sigTags+u.attTags)
	}
	if want := append([]string{u.index}, u.children...); !sameSet(rr.Subjects, want) {
		t.Errorf("subjects %v, want %v", rr.Subjects, want)
	}
	for _, want := range []string{"method=Referrers", "referrers_copied=3", "tags_copied=4", "subjects_written=3", "write_subjects=true"} {
		if !strings.Contains(res.stderr, want) {
			t.Errorf("canonical Referrers line lacks %q:\n%s", want, res.stderr)
		}
	}
	if !strings.Contains(res.stderr, "level=INFO msg=Referrers") {
		t.Errorf("no canonical Referrers line:\n%s", res.stderr)
	}

	// The upstream signature verifies at the destination by the source
	// digest, the index's and each child's.
	for _, d := range append([]string{u.index}, u.children...) {
		if v := upstreamVerify(t, u, repo+"@"+d); v.code != 0 {
			t.Errorf("cosign verify --key upstream.pub %s@%s: exit %d\n%s", repo, d, v.code, v.stderr)
		}
	}
	// The stamped tag is not what upstream signed.
	if v := upstreamVerify(t, u, dst); v.code == 0 {
		t.Errorf("cosign verified the upstream signature on the stamped tag %s", dst)
	}
	// The unstamped source index is untagged: the tag is the stamped one.
	if ts := tags(t, repo, nil); slices.ContainsFunc(ts, func(s string) bool { return !strings.HasPrefix(s, "sha256-") && s != "v1" }) {
		t.Errorf("destination tags %v: want v1 and sha256-… tags only", ts)
	}
	// The referrers are listed at the destination, through the referrers
	// tag schema (Distribution has no referrers API): its sha256-<hex> tag.
	for _, c := range []struct{ subject, want string }{{u.index, u.sbom}, {u.children[0], u.childSBOM}, {u.sbom, u.review}} {
		if got := referrerDigests(t, repo+"@"+c.subject, ""); !slices.Equal(got, []string{c.want}) {
			t.Errorf("destination lists %v as referrers of %s, want %s", got, c.subject, c.want)
		}
		if fallback := repo + ":" + strings.Replace(c.subject, ":", "-", 1); !hasTag(t, fallback) {
			t.Errorf("no fallback tag %s", fallback)
		}
	}

	// A re-run copies nothing and writes nothing.
	before := len(e2e.dstFront.Requests())
	again := ocistow(t, nil, "-source", u.ref, "-destination", dst, "-annotations", "team=platform",
		"-sign=false", "-referrers", "-output", "json").mustSucceed(t)
	rr = again.referrers(t).Referrers
	if rr.SubjectsWritten != 0 || rr.ReferrersCopied != 0 || rr.TagsCopied != 0 || rr.ReferrersPresent != 3 || rr.TagsPresent != 4 {
		t.Errorf("re-run: referrers %+v, want nothing copied, 3 referrers and 4 tags present", rr)
	}
	for _, r := range e2e.dstFront.Requests()[before:] {
		if r.Method != http.MethodGet && r.Method != http.MethodHead && strings.HasPrefix(r.Path, "/v2/"+strings.TrimPrefix(repo, e2e.dstFront.Host+"/")+"/") {
			t.Errorf("re-run wrote %s %s", r.Method, r.Path)
		}
	}
}

// startReferrersRegistry starts go-containerregistry's registry with the
// referrers API, which the Distribution registry lacks.
func startReferrersRegistry(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(true)))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestReferrersTravelWithAnUnstampedImage(t *testing.T) {
	u := newUpstream(t)
	repo := startReferrersRegistry(t) + "/mirror/app"
	dst := repo + ":v1"
	res := ocistow(t, nil, "-source", u.ref, "-destination", dst, "-sign=false", "-referrers", "-output", "json").mustSucceed(t)
	rr := res.referrers(t).Referrers
	if res.copyResult(t).DestinationDigest != u.index {
		t.Fatal("the unstamped copy changed the digest")
	}
	if rr.SubjectsWritten != 0 || rr.ReferrersCopied != 3 || rr.TagsCopied != 4 {
		t.Errorf("referrers %+v, want nothing written by digest, 3 referrers and 4 tags copied", rr)
	}
	if !strings.Contains(res.stderr, "write_subjects=false") {
		t.Errorf("canonical Referrers line lacks write_subjects=false:\n%s", res.stderr)
	}
	// The upstream signature verifies by tag.
	if v := upstreamVerify(t, u, dst); v.code != 0 {
		t.Errorf("cosign verify --key upstream.pub %s: exit %d\n%s", dst, v.code, v.stderr)
	}
	// The destination lists the referrers through its referrers API, so no
	// fallback tag was written.
	for _, c := range []struct{ subject, want string }{{u.index, u.sbom}, {u.children[0], u.childSBOM}, {u.sbom, u.review}} {
		if got := referrerDigests(t, repo+"@"+c.subject, ""); !slices.Equal(got, []string{c.want}) {
			t.Errorf("destination lists %v as referrers of %s, want %s", got, c.subject, c.want)
		}
	}
	if ts := tags(t, repo, nil); slices.ContainsFunc(ts, func(s string) bool { return !strings.Contains(s, ".") && s != "v1" }) {
		t.Errorf("destination tags %v: a fallback tag on a registry with the referrers API", ts)
	}
	// The text summary says what travelled.
	// The re-run reads the referrers tag of each of the three digests that
	// have referrers (the source registry has no referrers API): three
	// pulls.
	text := ocistow(t, nil, "-source", u.ref, "-destination", dst, "-sign=false", "-referrers").mustSucceed(t)
	if !strings.Contains(text.stdout, "referrers of 3 source digests: 0 copied, 3 already present; cosign tags: 0 copied, 4 already present; 0 filtered out; 0 source manifests written by digest; 3 source pulls\n") {
		t.Errorf("text result: %s", text.stdout)
	}
}

func TestReferrersTypeFilters(t *testing.T) {
	u := newUpstream(t)
	repo := dstRepo(t, e2e.dst.Host)
	res := ocistow(t, []string{"REFERRERS=true"}, "-source", u.ref, "-destination", repo+":v1", "-sign=false",
		"-referrers-type", spdxType, "-output", "json").mustSucceed(t)
	rr := res.referrers(t).Referrers
	// The two SBOMs; not the review, nor the .sig and .att tags.
	if rr.ReferrersCopied != 2 || rr.TagsCopied != 0 || rr.Filtered != 1+u.sigTags+u.attTags {
		t.Errorf("referrers %+v, want 2 copied and %d filtered", rr, 1+u.sigTags+u.attTags)
	}
	if got := referrerDigests(t, repo+"@"+u.sbom, ""); len(got) != 0 {
		t.Errorf("the review was copied: %v", got)
	}
	if hasTag(t, repo+":"+strings.Replace(u.index, ":", "-", 1)+".sig") {
		t.Error("the .sig tag was copied")
	}
	// Without -referrers nothing travels, and the result says nothing.
	plain := ocistow(t, nil, "-source", u.ref, "-destination", repo+":v2", "-sign=false", "-output", "json").mustSucceed(t)
	if strings.Contains(plain.stdout, `"referrers"`) || strings.Contains(plain.stderr, "method=Referrers") {
		t.Errorf("referrers ran without -referrers:\n%s\n%s", plain.stdout, plain.stderr)
	}
	// -referrers-type without -referrers is refused.
	r := ocistow(t, nil, "-source", u.ref, "-destination", repo+":v3", "-sign=false", "-referrers-type", spdxType)
	if r.code != exitInvalid {
		t.Fatalf("exit %d, want %d", r.code, exitInvalid)
	}
	r.refused(t, []string{"-referrers-type", "-referrers"}, "")
}

func TestSyncCopiesReferrersByDefault(t *testing.T) {
	u := newUpstream(t)
	repo := dstRepo(t, e2e.dst.Host)
	file := filepath.Join(t.TempDir(), "fleet.yaml")
	body := "defaults: {sign: false, annotations: {team: platform}}\npromotions:\n" +
		"  - {source: " + u.ref + ", destination: " + repo + ":on}\n" +
		"  - {source: " + u.ref + ", destination: " + repo + ":off, referrers: false}\n"
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	res := ocistow(t, nil, "sync", "-f", file, "-o", "json").mustSucceed(t)
	var out struct {
		Items []struct {
			DstImageRef string `json:"DstImageRef"`
			Referrers   bool   `json:"Referrers"`
			Result      json.RawMessage
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Items) != 2 {
		t.Fatalf("items: %s", res.stdout)
	}
	for _, it := range out.Items {
		got := result{stdout: string(it.Result)}
		on := strings.HasSuffix(it.DstImageRef, ":on")
		if it.Referrers != on || strings.Contains(got.stdout, `"referrers"`) != on {
			t.Errorf("%s: Referrers %v, result %s", it.DstImageRef, it.Referrers, got.stdout)
		}
	}
	// Both stamped the same way: one image, whose upstream signature
	// verifies at the destination by the source digest.
	if v := upstreamVerify(t, u, repo+"@"+u.index); v.code != 0 {
		t.Errorf("cosign verify --key upstream.pub %s@%s: exit %d\n%s", repo, u.index, v.code, v.stderr)
	}
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestReferrersFailureAfterASignedCopy: when the referrers cannot be
// copied after the copy and signing succeeded, the run exits 1 with one
// line saying both succeeded and what failed, and the image is in place,
// signed.
func TestReferrersFailureAfterASignedCopy(t *testing.T) {
	u := newUpstream(t)
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	var refused atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/sha256-") && strings.HasSuffix(r.URL.Path, ".att") {
			refused.Add(1)
			http.Error(w, `{"errors":[{"code":"MANIFEST_INVALID","message":"attestations refused here"}]}`, http.StatusBadRequest)
			return true
		}
		return false
	})
	repo := dstRepo(t, front.Host)
	r := ocistow(t, e2e.kms.Env(), "-source", u.ref, "-destination", repo+":v1", "-aws-kms-key-arn", "alias/"+ecKey, "-referrers")
	line := r.errLine(t)
	if r.code != exitFailed {
		t.Errorf("exit %d, want %d (the referrers failed after the image was promoted)", r.code, exitFailed)
	}
	if refused.Load() == 0 {
		t.Fatal("no .att tag was written: the test refused nothing")
	}
	for _, want := range []string{"copy and signing succeeded", repo + ":v1@" + u.index, "copying the referrers failed: copying sha256:", "attestations refused here"} {
		if !strings.Contains(line, want) {
			t.Errorf("error line %q lacks %q", line, want)
		}
	}
	if !strings.Contains(r.stderr, "method=Referrers") || !strings.Contains(r.stderr, "error_type=ReferrersFailed") {
		t.Errorf("want a Referrers line with error_type=ReferrersFailed:\n%s", r.stderr)
	}
	front.SetHook(nil)
	if got := get(t, repo+":v1", nil).Digest.String(); got != u.index {
		t.Errorf("destination tag at %s, want the promoted %s", got, u.index)
	}
	if v := cosignVerify(t, "awskms:///alias/"+ecKey, repo+":v1"); v.code != 0 {
		t.Errorf("cosign verify after the referrers failed: exit %d\n%s", v.code, v.stderr)
	}
}

// TestReferrersKeepOcistowsSignatures: an unstamped copy has the source's
// digests, so the upstream's .sig tags and ocistow's have the same names.
// The upstream's signatures are merged into the destination's tags beside
// ocistow's, not written over them; and a re-run reads no source
// signature manifest (a metered pull) and writes nothing.
func TestReferrersKeepOcistowsSignatures(t *testing.T) {
	u := newUpstream(t)
	src := testenv.NewFront(e2e.src.Host)
	defer src.Close()
	dst := testenv.NewFront(e2e.dst.Host)
	defer dst.Close()
	image := src.Host + strings.TrimPrefix(u.ref, e2e.src.Host)
	repo := dstRepo(t, dst.Host)
	args := []string{"-source", image, "-destination", repo + ":v1", "-aws-kms-key-arn", "alias/" + ecKey, "-referrers", "-o", "json"}
	first := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
	if rr := first.referrers(t).Referrers; rr.TagsMerged != u.sigTags || rr.TagsCopied != u.attTags {
		t.Errorf("referrers %+v: want the %d upstream .sig tags merged into ocistow's, the %d .att tag copied", rr, u.sigTags, u.attTags)
	}
	if !strings.Contains(first.stderr, fmt.Sprintf("tags_merged=%d", u.sigTags)) {
		t.Errorf("canonical Referrers line lacks tags_merged=%d:\n%s", u.sigTags, first.stderr)
	}
	for _, d := range append([]string{u.index}, u.children...) {
		if n := sigCount(t, repo, d); n != 2 {
			t.Errorf("%s has %d signatures at the destination, want 2 (ocistow's and the upstream's)", d, n)
		}
		if v := cosignVerify(t, "awskms:///alias/"+ecKey, repo+"@"+d); v.code != 0 {
			t.Errorf("cosign verify --key awskms %s: exit %d\n%s", d, v.code, v.stderr)
		}
		if v := upstreamVerify(t, u, repo+"@"+d); v.code != 0 {
			t.Errorf("cosign verify --key upstream.pub %s: exit %d\n%s", d, v.code, v.stderr)
		}
	}

	// Every manifest GET at the source is a metered pull; those of the
	// referrers tags (sha256-<hex>, no suffix) list the subjects that
	// have referrers, which a re-run must do too.
	referrersTag := regexp.MustCompile(`/manifests/sha256-[0-9a-f]{64}$`)
	pulls := func(f *testenv.Front) int {
		return f.Count(func(r testenv.Request) bool {
			return r.Method == http.MethodGet && strings.Contains(r.Path, "/manifests/") && !referrersTag.MatchString(r.Path)
		})
	}
	srcBefore := pulls(src)
	dstRequests := len(dst.Requests())
	again := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
	if rr := again.referrers(t).Referrers; rr.TagsMerged != 0 || rr.TagsCopied != 0 || rr.TagsPresent != u.sigTags+u.attTags {
		t.Errorf("re-run referrers %+v: want every tag present, none merged or copied", rr)
	}
	if n := pulls(src) - srcBefore; n != 0 {
		t.Errorf("the re-run read %d source manifests besides the referrers tags; a merged tag says what it holds, and the rest is HEADs", n)
	}
	for _, r := range dst.Requests()[dstRequests:] {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			t.Errorf("the re-run wrote at the destination: %s %s", r.Method, r.Path)
		}
	}
}

// TestReferrersCountTheirSourcePulls holds the README's "src_pulls" of the
// Referrers step: the manifest GETs its reads cost at the source (the
// referrers and cosign tags it reads) are counted, in the result's
// referrers.sourcePulls, on the canonical Referrers line and in the text
// line, so that the copy's and the referrers' pulls add up to what the
// source served, on the first run and on a re-run.
func TestReferrersCountTheirSourcePulls(t *testing.T) {
	u := newUpstream(t)
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	path := strings.TrimPrefix(u.repo, e2e.src.Host+"/")
	src := front.Host + "/" + path + ":v1"
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	for _, run := range []string{"first run", "re-run"} {
		before := manifestGets(front, path)
		r := ocistow(t, nil, "-source", src, "-destination", dst, "-sign=false", "-referrers", "-o", "json").mustSucceed(t)
		served := manifestGets(front, path) - before
		copied, rr := r.copyResult(t), r.referrers(t).Referrers
		if copied.SourcePulls+rr.SourcePulls != served {
			t.Errorf("%s: the copy counted %d pulls and the referrers %d; the source served %d manifest GETs",
				run, copied.SourcePulls, rr.SourcePulls, served)
		}
		if run == "first run" && rr.SourcePulls == 0 {
			t.Errorf("first run: the referrers step counted no pulls, though it read the upstream's referrers and tags")
		}
		if want := fmt.Sprintf("method=Referrers.* src_pulls=%d ", rr.SourcePulls); !regexp.MustCompile(want).MatchString(r.stderr) {
			t.Errorf("%s: the canonical Referrers line lacks src_pulls=%d:\n%s", run, rr.SourcePulls, r.stderr)
		}
	}
	text := ocistow(t, nil, "-source", src, "-destination", dst, "-sign=false", "-referrers").mustSucceed(t)
	if !regexp.MustCompile(`source manifests written by digest; \d+ source pulls\n`).MatchString(text.stdout) {
		t.Errorf("the text line does not say the referrers' pulls:\n%s", text.stdout)
	}
}
