package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ocistow/ocistow/internal/testenv"
)

// TestPlatformWithSourceVerifyChildren holds the README's "With
// -source-verify-children, an index's children (those the promotion
// copies, after -platform) must each pass too": of an index whose amd64
// child is unsigned, promoting the arm64 platform alone passes (and checks
// the index and that child only), up to date too; promoting amd64 is
// refused, exit 2, naming the unsigned child, with nothing written.
func TestPlatformWithSourceVerifyChildren(t *testing.T) {
	s := newPolicySource(t)
	amd64, arm64 := s.children[0], s.children[1]
	s.sign(t, "cosign.key", s.index)
	s.sign(t, "cosign.key", arm64)
	policy := []string{"-source-key", s.pub(), "-source-verify-children"}

	t.Run("the signed platform passes", func(t *testing.T) {
		dst := dstRepo(t, e2e.dst.Host) + ":v1"
		args := append([]string{"-source", s.repo + ":index", "-destination", dst, "-sign=false", "-o", "json", "-platform", "linux/arm64"}, policy...)
		// Up to date, the children checked are those of the destination's
		// index: the arm64 one again.
		for _, upToDate := range []bool{false, true} {
			p := ocistow(t, nil, args...).mustSucceed(t).policy(t)
			var checked []string
			for _, d := range p.Policy.Digests {
				checked = append(checked, d.Digest)
			}
			if p.UpToDate != upToDate || !slices.Equal(checked, []string{s.index, arm64}) {
				t.Errorf("up to date %v (want %v): the policy checked %v, want the index %s and the arm64 child %s only", p.UpToDate, upToDate, checked, s.index, arm64)
			}
		}
	})

	t.Run("the unsigned platform is refused", func(t *testing.T) {
		repo := dstRepo(t, e2e.dstFront.Host)
		r := ocistow(t, nil, append([]string{"-source", s.repo + ":index", "-destination", repo + ":v1", "-sign=false", "-platform", "linux/amd64"}, policy...)...)
		if r.code != exitInvalid {
			t.Fatalf("exit %d, want %d\n%s", r.code, exitInvalid, r.stderr)
		}
		r.refused(t, []string{"refused by the source policy", amd64, "no signatures"}, repo)
	})
}

// TestPlatformWithReferrers holds the README's "With -platform, the source
// index is not written (it lists platforms that were not copied) and its
// own referrers and tags stay behind; each kept platform's manifest, with
// its referrers and tags, travels": of the upstream (an index signed with
// its children, attested, with SBOMs on the index and on the amd64 child
// and a review of the index's SBOM), promoting linux/amd64 brings the
// amd64 manifest by its source digest with its .sig tag and SBOM, and
// nothing of the index or of the arm64 child. Stamped, the kept manifest
// is written by digest; with -platform alone it is the copy's own.
func TestPlatformWithReferrers(t *testing.T) {
	u := newUpstream(t)
	amd64, arm64 := u.children[0], u.children[1]
	for _, tc := range []struct {
		name    string
		args    []string
		written int // source manifests the Referrers step writes by digest
	}{
		{"stamped", []string{"-annotations", "team=platform"}, 1},
		{"platform alone", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			repo := dstRepo(t, e2e.dst.Host)
			args := append([]string{"-source", u.ref, "-destination", repo + ":v1", "-platform", "linux/amd64", "-sign=false", "-referrers", "-o", "json"}, tc.args...)
			res := ocistow(t, nil, args...).mustSucceed(t)
			cp, rr := res.copyResult(t), res.referrers(t).Referrers
			if len(cp.Manifests) != 1 || cp.Manifests[0].SourceDigest != amd64 {
				t.Fatalf("copied manifests %+v, want the amd64 child %s alone", cp.Manifests, amd64)
			}
			if !slices.Equal(rr.Subjects, []string{amd64}) {
				t.Errorf("referrers looked up for %v, want the kept platform %s alone", rr.Subjects, amd64)
			}
			// The amd64 SBOM; the amd64 .sig tag.
			if rr.SubjectsWritten != tc.written || rr.ReferrersCopied != 1 || rr.TagsCopied != 1 {
				t.Errorf("referrers %+v, want %d written by digest, 1 referrer and 1 tag copied", rr, tc.written)
			}

			// The kept platform travelled: its manifest by its source
			// digest, its SBOM, its upstream signature.
			if !hasTag(t, repo+"@"+amd64) {
				t.Errorf("the kept platform's manifest %s is not at the destination", amd64)
			}
			if got := referrerDigests(t, repo+"@"+amd64, ""); !slices.Equal(got, []string{u.childSBOM}) {
				t.Errorf("destination lists %v as referrers of %s, want its SBOM %s", got, amd64, u.childSBOM)
			}
			if v := upstreamVerify(t, u, repo+"@"+amd64); v.code != 0 {
				t.Errorf("cosign verify --key upstream.pub %s@%s: exit %d\n%s", repo, amd64, v.code, v.stderr)
			}
			// The source index stayed behind, and with it its referrers
			// (the SBOM and its review) and its .sig and .att tags; so did
			// everything of the platform not copied.
			for _, ref := range []string{
				repo + "@" + u.index, repo + "@" + u.sbom, repo + "@" + u.review, repo + "@" + arm64,
				digestTag(repo, u.index, ".sig"), digestTag(repo, u.index, ".att"), digestTag(repo, u.index, ""),
				digestTag(repo, arm64, ".sig"),
			} {
				if hasTag(t, ref) {
					t.Errorf("%s is at the destination: it should have stayed behind", ref)
				}
			}
		})
	}
}

// digestTag is the tag of digest in repo with suffix: cosign's .sig, .att,
// or "" for the referrers tag schema's index.
func digestTag(repo, digest, suffix string) string {
	return repo + ":" + strings.Replace(digest, ":", "-", 1) + suffix
}

// TestPlatformWithAttest holds the README's "the predicate … records … the
// platforms kept (-platform)" and docs/promotion-predicate.md's
// "platforms: … the platforms kept": asked for linux/arm64 and linux/s390x
// of an index with linux/amd64 and linux/arm64/v8, the promotion keeps the
// arm64 manifest alone, attests the index and that manifest, and each
// predicate lists linux/arm64/v8, as the index lists it, and not the
// platform the source lacks; the up-to-date re-run records the same and
// adds nothing. Without -platform, and for a single-platform source kept
// whole, the field is absent.
func TestPlatformWithAttest(t *testing.T) {
	for _, tc := range []struct {
		name, fixture string
		args          []string
		digests       int
		want          []string
	}{
		{"two platforms asked, one kept", "multi", []string{"-platform", "linux/arm64", "-platform", "linux/s390x"}, 2, []string{"linux/arm64/v8"}},
		{"every platform", "multi", nil, 3, nil},
		{"a single-platform source", "single", []string{"-platform", "linux/amd64"}, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := e2e.dst.Host + "/" + freshRepo(t) + ":v1"
			args := append([]string{"-source", srcRef(tc.fixture), "-destination", dst, "-sign=false", "-attest",
				"-aws-kms-key-arn", "alias/" + ecKey, "-o", "json"}, tc.args...)
			// The up-to-date re-run, whose manifests come from the
			// destination's index, records the same platforms: it finds
			// its attestations present.
			for _, want := range []struct{ added, present int }{{tc.digests, 0}, {0, tc.digests}} {
				var out attestFormatsJSON
				if err := json.Unmarshal([]byte(ocistow(t, e2e.kms.Env(), args...).mustSucceed(t).stdout), &out); err != nil {
					t.Fatal(err)
				}
				if a := out.Attestations; len(a.Digests) != tc.digests || a.Added != want.added || a.Present != want.present {
					t.Errorf("up to date %v: %d digests attested, %d added, %d present; want %d, %d, %d", out.UpToDate, len(a.Digests), a.Added, a.Present, tc.digests, want.added, want.present)
				}
			}
			v := ocistow(t, e2e.kms.Env(), "verify", "-attestation", "-recursive", "-aws-kms-key-arn", "alias/"+ecKey, dst).mustSucceed(t)
			var verified []struct {
				Digest    string          `json:"digest"`
				Predicate json.RawMessage `json:"predicate"`
			}
			if err := json.Unmarshal([]byte(v.stdout), &verified); err != nil {
				t.Fatalf("ocistow verify -attestation printed %q: %v", v.stdout, err)
			}
			if len(verified) != tc.digests {
				t.Fatalf("%d attestations verified, want %d", len(verified), tc.digests)
			}
			for _, a := range verified {
				var p map[string]json.RawMessage
				if err := json.Unmarshal(a.Predicate, &p); err != nil {
					t.Fatal(err)
				}
				raw, ok := p["platforms"]
				if tc.want == nil {
					if ok {
						t.Errorf("%s: the predicate has platforms %s, want the field absent", a.Digest, raw)
					}
					continue
				}
				var got []string
				if err := json.Unmarshal(raw, &got); err != nil || !slices.Equal(got, tc.want) {
					t.Errorf("%s: the predicate's platforms are %s, want %q", a.Digest, raw, tc.want)
				}
			}
		})
	}
}

// TestSourcePullsCountPolicyReads holds the README's "The signature
// artifacts are manifest GETs too (the .sig tag, the referrers listing, …
// and each bundle's manifest …), so on registries that meter pulls they
// count in src_pulls like the copy's": the src_pulls (sourcePulls) a
// promotion with a source policy reports is the number of manifest GETs a
// recording front before the source served, the signature GETs included,
// on the first run and on an up-to-date re-run, which makes the policy's
// reads again.
func TestSourcePullsCountPolicyReads(t *testing.T) {
	s := newPolicySource(t)
	// The index signed by cosign v3 (a bundle in the referrers tag), its
	// children by cosign v2 (.sig tags).
	if r := cosign3(t, s.keyDir, []string{"COSIGN_PASSWORD=" + upstreamPassword}, "sign", "--key", "cosign.key",
		"--signing-config", e2e.signingConfig, "--trusted-root", e2e.trustedRoot, "-y", s.repo+"@"+s.index); r.code != 0 {
		t.Fatalf("cosign v3 sign: %s", r.stderr)
	}
	bundles := referrerDigests(t, s.repo+"@"+s.index, bundleMediaType)
	if len(bundles) != 1 {
		t.Fatalf("cosign v3 attached %d bundles to the index, want 1", len(bundles))
	}
	for _, c := range s.children {
		s.sign(t, "cosign.key", c)
	}
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	path := strings.TrimPrefix(s.repo, e2e.src.Host+"/")
	args := []string{"-source", front.Host + "/" + path + ":index", "-destination", dstRepo(t, e2e.dst.Host) + ":v1",
		"-sign=false", "-o", "json", "-source-key", s.pub(), "-source-verify-children"}
	// The signature manifests: the index's referrers tag and its bundle,
	// each child's .sig tag.
	signatureGETs := func() int {
		return front.Count(func(q testenv.Request) bool {
			if q.Method != http.MethodGet || q.Status >= 300 {
				return false
			}
			return strings.HasSuffix(q.Path, "/manifests/"+strings.Replace(s.index, ":", "-", 1)) ||
				strings.HasSuffix(q.Path, "/manifests/"+bundles[0]) ||
				strings.HasSuffix(q.Path, "/manifests/"+strings.Replace(s.children[0], ":", "-", 1)+".sig") ||
				strings.HasSuffix(q.Path, "/manifests/"+strings.Replace(s.children[1], ":", "-", 1)+".sig")
		})
	}
	for _, run := range []struct {
		name                  string
		upToDate              bool
		pulls, signaturePulls int
	}{
		// The copy's three (the index, two children) and the policy's four.
		{"first run", false, 7, 4},
		// The policy's four alone.
		{"up-to-date re-run", true, 4, 4},
	} {
		before, sigBefore := manifestGets(front, path), signatureGETs()
		r := ocistow(t, nil, args...).mustSucceed(t)
		p := r.policy(t)
		served, sigs := manifestGets(front, path)-before, signatureGETs()-sigBefore
		if p.UpToDate != run.upToDate || p.SourcePulls != served || served != run.pulls || sigs != run.signaturePulls {
			t.Errorf("%s: upToDate %v, sourcePulls %d; the source served %d manifest GETs, %d of them signature manifests; want upToDate %v and %d pulls, %d of signatures",
				run.name, p.UpToDate, p.SourcePulls, served, sigs, run.upToDate, run.pulls, run.signaturePulls)
		}
		if want := "src_pulls=" + strconv.Itoa(served); !strings.Contains(r.stderr, want) {
			t.Errorf("%s: the canonical Copy line lacks %s:\n%s", run.name, want, r.stderr)
		}
	}
}

// TestReferrersOfAFilteredOutReferrer holds the README's "The referrers of
// a referrer left out are not looked at": kept to the review's type, the
// promotion leaves the SBOMs out, and so the review of the index's SBOM,
// although of a type kept, is not copied, and neither the SBOM's referrers
// nor its cosign tags are asked for at the source.
func TestReferrersOfAFilteredOutReferrer(t *testing.T) {
	u := newUpstream(t)
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	repo := dstRepo(t, e2e.dst.Host)
	res := ocistow(t, nil, "-source", front.Host+strings.TrimPrefix(u.ref, e2e.src.Host), "-destination", repo+":v1",
		"-sign=false", "-referrers", "-referrers-type", reviewType, "-o", "json").mustSucceed(t)
	rr := res.referrers(t).Referrers
	// Left out: the two SBOMs, the three .sig tags and the .att tag.
	if rr.ReferrersCopied != 0 || rr.ReferrersPresent != 0 || rr.Filtered != 2+u.sigTags+u.attTags {
		t.Errorf("referrers %+v, want none copied and %d filtered", rr, 2+u.sigTags+u.attTags)
	}
	if hasTag(t, repo+"@"+u.review) {
		t.Errorf("the review %s of the left-out SBOM was copied", u.review)
	}
	for _, suffix := range []string{"", ".sig", ".att", ".sbom"} {
		if head, get := digestTagReads(front, u.sbom, suffix); head+get != 0 {
			t.Errorf("the source's %q tag of the left-out SBOM was asked for: %d HEADs, %d GETs", strings.Replace(u.sbom, ":", "-", 1)+suffix, head, get)
		}
	}
	// The check reads something: the index's own referrers tag was.
	if head, _ := digestTagReads(front, u.index, ""); head == 0 {
		t.Error("the index's referrers tag was never looked for: the front saw nothing")
	}
}

// TestAttestTextLines holds the README's text results of -attest, "a
// re-run adds nothing (attested 3 digests with …: 0 added, 3 already
// present)" and "the text result names the formats when they are not just
// legacy (attested 3 digests with … (legacy and bundle formats): 6 added,
// 0 already present)": the exact last line of stdout, first run and
// re-run, in each -signature-format.
func TestAttestTextLines(t *testing.T) {
	key := "awskms:///alias/" + ecKey
	for _, tc := range []struct {
		format, note string
		perDigest    int
	}{
		{"legacy", "", 1},
		{"bundle", " (bundle format)", 1},
		{"both", " (legacy and bundle formats)", 2},
	} {
		t.Run(tc.format, func(t *testing.T) {
			dst := e2e.dst.Host + "/" + freshRepo(t) + ":v1"
			args := []string{"-source", srcRef("multi"), "-destination", dst, "-sign=false", "-attest",
				"-aws-kms-key-arn", "alias/" + ecKey, "-signature-format", tc.format}
			n := 3 * tc.perDigest
			for _, want := range []string{
				"attested 3 digests with " + key + tc.note + ": " + strconv.Itoa(n) + " added, 0 already present",
				"attested 3 digests with " + key + tc.note + ": 0 added, " + strconv.Itoa(n) + " already present",
			} {
				r := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
				lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
				if got := lines[len(lines)-1]; got != want {
					t.Errorf("last line of stdout\n%q, want\n%q", got, want)
				}
			}
		})
	}
}
