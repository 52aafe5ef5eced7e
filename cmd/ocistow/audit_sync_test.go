package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/internal/testenv"
)

// writeFile writes body to name in a new temporary directory and returns
// its path.
func writeFile(t *testing.T, name, body string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// noWrites fails t when front saw a request other than GET or HEAD under
// the repository path (host/path) since the first skip requests.
func noWrites(t *testing.T, front *testenv.Front, repo string, skip int) {
	t.Helper()
	_, path, _ := strings.Cut(repo, "/")
	for _, q := range front.Requests()[skip:] {
		if strings.HasPrefix(q.Path, "/v2/"+path+"/") && q.Method != http.MethodGet && q.Method != http.MethodHead {
			t.Errorf("written at the destination: %s %s", q.Method, q.Path)
		}
	}
}

// TestSyncChecksAnIndexsChildrenThePlanDoesNot holds "an index's children
// are checked by the sync, which reads the index, not by the plan": an
// index signed by the key whose children are unsigned, under `verify:
// {keys, children: true}`, is `new` in `sync -dry-run` (the plan checks
// the source digest only) and `refused (policy)` by the sync, naming the
// first child, with nothing written at the destination.
func TestSyncChecksAnIndexsChildrenThePlanDoesNot(t *testing.T) {
	s := newPolicySource(t)
	s.sign(t, "cosign.key", s.index)
	dst := dstRepo(t, e2e.dstFront.Host)
	file := writeFile(t, "fleet.yaml", "defaults:\n  sign: false\n  referrers: false\n"+
		"promotions:\n  - source: "+s.repo+":index\n    destination: "+dst+":v1\n"+
		"    verify: {keys: ["+s.pub()+"], children: true}\n")

	plan := ocistow(t, nil, "sync", "-f", file, "-dry-run")
	if plan.code != exitOK || !regexp.MustCompile(`(?m)^new\s+\S+:index\s`).MatchString(plan.stdout) {
		t.Errorf("sync -dry-run: exit %d, want 0 and the index new\n%s\n%s", plan.code, plan.stdout, plan.stderr)
	}

	skip := len(e2e.dstFront.Requests())
	r := ocistow(t, nil, "sync", "-f", file, "-o", "json")
	if r.code != exitFailed {
		t.Fatalf("sync: exit %d, want %d\n%s\n%s", r.code, exitFailed, r.stdout, r.stderr)
	}
	res := parseSync(t, r)
	if len(res.Items) != 1 {
		t.Fatalf("sync items %+v, want one", res.Items)
	}
	if it := res.Items[0]; it.Status != "refused (policy)" || it.ErrorType != "PolicyRefused" ||
		!strings.Contains(it.Error, "source "+s.children[0]+" refused by the source policy") || !strings.Contains(it.Error, "no signatures") {
		t.Errorf("sync item %+v: want refused (policy), PolicyRefused, naming child %s unsigned", it, s.children[0])
	}
	noWrites(t, e2e.dstFront, dst, skip)
	if ts := tags(t, dst, nil); len(ts) != 0 {
		t.Errorf("destination tags %v after a refused sync", ts)
	}
}

// TestSourcePolicyRefusalLineInFull holds the refusal line the README shows
// for a key policy, word for word: a source signed by another key than the
// one -source-key names.
func TestSourcePolicyRefusalLineInFull(t *testing.T) {
	s := newPolicySource(t)
	s.sign(t, "cosign.key", s.index)
	other := filepath.Join(s.keyDir, "other.pub")
	repo := dstRepo(t, e2e.dstFront.Host)
	r := ocistow(t, nil, "-source", s.repo+":index", "-destination", repo+":v1", "-sign=false", "-source-key", other)
	if r.code != exitInvalid {
		t.Fatalf("exit %d, want %d\n%s", r.code, exitInvalid, r.stderr)
	}
	want := "ocistow: source " + s.index + " refused by the source policy: none of its 1 signatures satisfies the policy (keys " + other +
		"): none by these keys: a .sig signature does not verify with " + other + " (another key's, or tampered)"
	if got := r.errLine(t); got != want {
		t.Errorf("refusal line\n got %s\nwant %s", got, want)
	}
	r.refused(t, nil, repo)
}

// TestSyncFlagDefaults holds the sync's documented defaults: -parallel 4,
// -registry-requests 16 and -min-pulls 10, as `ocistow sync -h` prints
// them.
func TestSyncFlagDefaults(t *testing.T) {
	r := ocistow(t, nil, "sync", "-h")
	help := r.stdout + r.stderr
	for flag, def := range map[string]string{"parallel": "4", "registry-requests": "16", "min-pulls": "10"} {
		re := regexp.MustCompile(`(?m)^\s+-` + flag + ` int\n\s+.*\(default ` + def + `\)$`)
		if !re.MatchString(help) {
			t.Errorf("sync -h does not give -%s the default %s:\n%s", flag, def, help)
		}
	}
}

// artifact is a one-layer OCI artifact with configType as its config's
// media type, no artifactType, and subject (when not nil) as its subject.
func artifact(t *testing.T, configType, layerType, content string, subject partial.Describable) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.MediaType(configType))
	img, err := mutate.Append(img, mutate.Addendum{Layer: static.NewLayer([]byte(content), types.MediaType(layerType))})
	if err != nil {
		t.Fatal(err)
	}
	if subject != nil {
		d, err := partial.Descriptor(subject)
		if err != nil {
			t.Fatal(err)
		}
		img = mutate.Subject(img, *d).(v1.Image)
	}
	return img
}

// pushByDigest writes img to repo by its digest and returns the digest.
func pushByDigest(t *testing.T, repo string, img v1.Image) string {
	t.Helper()
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewDigest(repo + "@" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// smallImage pushes a one-layer image to repo:tag and returns it.
func smallImage(t *testing.T, repo, tag string, seed int64) v1.Image {
	t.Helper()
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Push(t.Context(), repo+":"+tag, img); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestReferrersCarryTheSBOMTag holds "cosign's legacy tags … `.sbom`
// (attached SBOMs), under the same names": an image whose upstream has a
// sha256-<hex>.sbom tag (as cosign attach sbom writes it) arrives with that
// tag, pointing at the same manifest.
func TestReferrersCarryTheSBOMTag(t *testing.T) {
	repo := e2e.src.Host + "/" + testenv.RepoName(t.Name())
	img := smallImage(t, repo, "v1", 7001)
	d, _ := img.Digest()
	sbomTag := strings.Replace(d.String(), ":", "-", 1) + ".sbom"
	sbom := artifact(t, "application/vnd.oci.image.config.v1+json", spdxType, `{"spdxVersion":"SPDX-2.3","name":"sbom-tag"}`, nil)
	if err := testenv.Push(t.Context(), repo+":"+sbomTag, sbom); err != nil {
		t.Fatal(err)
	}
	want, _ := sbom.Digest()
	dst := dstRepo(t, e2e.dst.Host)
	r := ocistow(t, nil, "-source", repo+":v1", "-destination", dst+":v1", "-sign=false", "-referrers", "-o", "json").mustSucceed(t)
	if rr := r.referrers(t).Referrers; rr.TagsCopied != 1 {
		t.Errorf("referrers %+v: want the .sbom tag copied", rr)
	}
	if got := get(t, dst+":"+sbomTag, nil).Digest; got != want {
		t.Errorf("%s at the destination is %s, want %s", sbomTag, got, want)
	}
}

// TestReferrersTypeMatchesAConfigMediaType holds "for a referrer without
// `artifactType`, its config's media type" in -referrers-type's matching:
// a referrer with no artifactType whose config media type is listed is
// copied, and one whose config media type is not is filtered out. (The
// type is the one the source's referrers listing gives, which
// go-containerregistry's writer fills from the config's media type, as the
// OCI spec says.)
func TestReferrersTypeMatchesAConfigMediaType(t *testing.T) {
	const (
		listed   = "application/vnd.example.sbom.config.v1+json"
		unlisted = "application/vnd.example.other.config.v1+json"
	)
	repo := e2e.src.Host + "/" + testenv.RepoName(t.Name())
	img := smallImage(t, repo, "v1", 7101)
	kept := pushByDigest(t, repo, artifact(t, listed, spdxType, `{"name":"kept"}`, img))
	left := pushByDigest(t, repo, artifact(t, unlisted, spdxType, `{"name":"left"}`, img))
	d, _ := img.Digest()
	if got := referrerDigests(t, repo+"@"+d.String(), ""); len(got) != 2 {
		t.Fatalf("the source lists %v as referrers, want 2", got)
	}
	dst := dstRepo(t, e2e.dst.Host)
	r := ocistow(t, nil, "-source", repo+":v1", "-destination", dst+":v1", "-sign=false", "-referrers",
		"-referrers-type", listed, "-o", "json").mustSucceed(t)
	if rr := r.referrers(t).Referrers; rr.ReferrersCopied != 1 || rr.Filtered != 1 {
		t.Errorf("referrers %+v: want 1 copied (its config type listed), 1 filtered", rr)
	}
	if got := referrerDigests(t, dst+"@"+d.String(), ""); !slices.Equal(got, []string{kept}) {
		t.Errorf("destination referrers %v, want only %s (not %s)", got, kept, left)
	}
}

// TestReferrersTravelFromEveryDepth holds "every manifest it lists at
// every depth": in an index of an index, an SBOM whose subject is a
// grandchild image travels with the top index.
func TestReferrersTravelFromEveryDepth(t *testing.T) {
	repo := e2e.src.Host + "/" + testenv.RepoName(t.Name())
	amd, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: 7201, OCI: true})
	if err != nil {
		t.Fatal(err)
	}
	arm, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: 7202, OCI: true,
		Platform: v1.Platform{OS: "linux", Architecture: "arm64"}})
	if err != nil {
		t.Fatal(err)
	}
	inner, err := testenv.Index(false, amd, arm)
	if err != nil {
		t.Fatal(err)
	}
	outer := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{Add: inner})
	if err := testenv.Push(t.Context(), repo+":v1", outer); err != nil {
		t.Fatal(err)
	}
	sbom := pushByDigest(t, repo, artifact(t, spdxType, spdxType, `{"name":"grandchild"}`, arm))
	grandchild, _ := arm.Digest()
	dst := dstRepo(t, e2e.dst.Host)
	ocistow(t, nil, "-source", repo+":v1", "-destination", dst+":v1", "-sign=false", "-referrers").mustSucceed(t)
	if got := referrerDigests(t, dst+"@"+grandchild.String(), ""); !slices.Equal(got, []string{sbom}) {
		t.Errorf("the grandchild's referrers at the destination: %v, want its SBOM %s", got, sbom)
	}
}

// TestReferrersMergeTheAttestationTag holds the `.att` half of "A
// destination `.sig` or `.att` tag that already exists and differs … is
// merged, not written over": an unstamped image promoted with -attest and
// -referrers, whose upstream has a .att tag (cosign attest), ends with both
// attestations in the destination's .att tag of the index; cosign
// verify-attestation passes with the upstream's key (its predicate type)
// and with the KMS key (ocistow's promotion predicate), and a re-run writes
// nothing at the destination.
func TestReferrersMergeTheAttestationTag(t *testing.T) {
	u := newUpstream(t)
	dst := testenv.NewFront(e2e.dst.Host)
	defer dst.Close()
	repo := dstRepo(t, dst.Host)
	kms := "awskms:///alias/" + ecKey
	args := []string{"-source", u.ref, "-destination", repo + ":v1", "-aws-kms-key-arn", "alias/" + ecKey, "-attest", "-referrers", "-o", "json"}
	first := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
	if rr := first.referrers(t).Referrers; rr.TagsMerged != u.sigTags+u.attTags || rr.TagsCopied != 0 {
		t.Errorf("referrers %+v: want the %d .sig and %d .att upstream tags merged into ocistow's, none copied over", rr, u.sigTags, u.attTags)
	}
	att := repo + ":" + strings.Replace(u.index, ":", "-", 1) + ".att"
	img, err := remote.Image(mustRef(t, att), remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := img.Manifest(); err != nil || len(m.Layers) != 2 {
		t.Fatalf("%s: %v, want 2 attestations (ocistow's and the upstream's)", att, err)
	}
	image := repo + "@" + u.index
	if v := cosign(t, "", nil, "verify-attestation", "--type", "custom", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot,
		"--key", filepath.Join(u.keyDir, "cosign.pub"), image); v.code != 0 {
		t.Errorf("cosign verify-attestation --key upstream.pub: exit %d\n%s", v.code, v.stderr)
	}
	if v := cosignVerifyAttestation(t, "", e2e.kms.Env(), kms, image); v.code != 0 {
		t.Errorf("cosign verify-attestation --key %s: exit %d\n%s", kms, v.code, v.stderr)
	}
	skip := len(dst.Requests())
	again := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
	if rr := again.referrers(t).Referrers; rr.TagsMerged != 0 || rr.TagsCopied != 0 {
		t.Errorf("re-run referrers %+v: want nothing merged or copied", rr)
	}
	noWrites(t, dst, repo, skip)
}

func mustRef(t *testing.T, s string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestSyncSigningKeyFlags holds "`-key` / `-aws-kms-key-arn` sign the
// entries that name no key of their own": an entry without a key is signed
// with the sync's -aws-kms-key-arn (and, in a second sync, with its -key
// file), and an entry naming its own key is signed with that one, not the
// flag's.
func TestSyncSigningKeyFlags(t *testing.T) {
	pushTags(t, "audit/keyflags", 7301, "a", "b")
	dir := t.TempDir()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub := writeKeyFile(t, dir, "sync", k, "PRIVATE KEY")
	for _, tc := range []struct {
		name, flag, value string
		verify            func(t *testing.T, image string) result
	}{
		{"aws-kms-key-arn", "-aws-kms-key-arn", "alias/" + ecKey, func(t *testing.T, image string) result {
			return cosignVerify(t, "awskms:///alias/"+ecKey, image)
		}},
		{"key file", "-key", priv, func(t *testing.T, image string) result { return cosignVerifyFile(t, pub, "", image) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := dstRepo(t, e2e.dst.Host)
			file := promotionFile(t, "promotions:\n  - source: SRC/audit/keyflags:a\n    destination: DST/own:a\n"+
				"  - source: SRC/audit/keyflags:b\n    destination: DST/named:b\n    key: alias/"+rsaKey+"\n", e2e.src.Host, dst)
			r := parseSync(t, ocistow(t, e2e.kms.Env(), "sync", "-f", file, tc.flag, tc.value, "-o", "json").mustSucceed(t))
			if r.Summary.Statuses["promoted"] != 2 || r.Summary.SignaturesAdded != 2 {
				t.Errorf("sync summary %+v: want 2 promoted and signed", r.Summary)
			}
			if v := tc.verify(t, dst+"/own:a"); v.code != 0 {
				t.Errorf("the entry without a key is not signed with %s %s: %s", tc.flag, tc.value, v.stderr)
			}
			if v := tc.verify(t, dst+"/named:b"); v.code == 0 {
				t.Errorf("the entry naming its own key was signed with %s %s", tc.flag, tc.value)
			}
			if v := cosignVerify(t, "awskms:///alias/"+rsaKey, dst+"/named:b"); v.code != 0 {
				t.Errorf("the entry naming its own key is not signed with it: %s", v.stderr)
			}
		})
	}
}

// TestSyncDryRunLoadsNoSigningKey holds "a key that cannot sign (checked
// before a sync, not by -dry-run, which loads no signing key)": a file
// whose key is disabled plans as usual (exit 0, the image new) and refuses
// the sync (exit 2) with nothing written.
func TestSyncDryRunLoadsNoSigningKey(t *testing.T) {
	pushTags(t, "audit/disabled", 7401, "a")
	dst := dstRepo(t, e2e.dstFront.Host)
	file := promotionFile(t, "promotions:\n  - source: SRC/audit/disabled:a\n    destination: DST/x:a\n    key: alias/"+disabledKey+"\n", e2e.src.Host, dst)
	plan := ocistow(t, e2e.kms.Env(), "sync", "-f", file, "-dry-run")
	if plan.code != exitOK || !regexp.MustCompile(`(?m)^new\s`).MatchString(plan.stdout) {
		t.Errorf("sync -dry-run with a disabled key: exit %d, want 0 and the image new\n%s\n%s", plan.code, plan.stdout, plan.stderr)
	}
	r := ocistow(t, e2e.kms.Env(), "sync", "-f", file)
	if r.code != exitInvalid {
		t.Fatalf("sync with a disabled key: exit %d, want %d\n%s", r.code, exitInvalid, r.stderr)
	}
	r.refused(t, []string{disabledKey, "Disabled"}, dst+"/x")
}

// TestSyncDefersOnLongRetryAfters holds the sync's deferrals for rate
// limits beyond the pull count: a source repository whose tag listing is
// answered 429 with a Retry-After of hours is one `deferred` entry (exit 4,
// the other entry promoted); an image whose manifest GET is answered 503
// with `Retry-After: 120` (more than a minute) is deferred, while one
// answered 503 with `Retry-After: 30` once is retried and promoted.
func TestSyncDefersOnLongRetryAfters(t *testing.T) {
	pushTags(t, "audit/listed", 7501, "1")
	pushTags(t, "audit/busy", 7511, "long", "short")
	long := get(t, e2e.src.Host+"/audit/busy:long", nil).Digest.String()
	short := get(t, e2e.src.Host+"/audit/busy:short", nil).Digest.String()
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	var shortAnswered atomic.Bool
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case r.URL.Path == "/v2/audit/listed/tags/list":
			w.Header().Set("Retry-After", "7200")
			http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit"}]}`, http.StatusTooManyRequests)
			return true
		case r.Method == http.MethodGet && (r.URL.Path == "/v2/audit/busy/manifests/long" || r.URL.Path == "/v2/audit/busy/manifests/"+long):
			w.Header().Set("Retry-After", "120")
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		case r.Method == http.MethodGet && (r.URL.Path == "/v2/audit/busy/manifests/short" || r.URL.Path == "/v2/audit/busy/manifests/"+short) && !shortAnswered.Swap(true):
			w.Header().Set("Retry-After", "30")
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	dst := dstRepo(t, e2e.dst.Host)
	file := promotionFile(t, "defaults: {sign: false, referrers: false}\npromotions:\n"+
		"  - source: SRC/audit/listed\n    destination: DST/listed\n    tags: {latest: 1}\n"+
		"  - source: SRC/audit/busy\n    destination: DST/busy\n    tags: [long, short]\n", front.Host, dst)
	r := ocistow(t, nil, "sync", "-f", file, "-o", "json")
	if r.code != exitDeferred {
		t.Errorf("exit %d, want %d (deferred, none failed)\n%s", r.code, exitDeferred, r.stderr)
	}
	want := map[string]string{dst + "/listed": "deferred", dst + "/busy:long": "deferred", dst + "/busy:short": "promoted"}
	if got := parseSync(t, r).statuses(); !maps.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if !shortAnswered.Load() {
		t.Error("the short Retry-After was never answered: the test retried nothing")
	}
}

// TestSourcePolicyLoadsBeforeAnyRegistryRead extends
// TestSourceKeyIsLoadedBeforeAnyRegistryRead to "Loaded first … (a missing
// key file, …, an unreadable trusted root) is exit 2", "for a single
// promotion, before anything is read from a registry": a -source-key file
// that does not exist, and a -trusted-root that cannot be read (missing,
// a directory), each exit 2 with one line naming it, and neither the
// source's nor the destination's front sees a request.
func TestSourcePolicyLoadsBeforeAnyRegistryRead(t *testing.T) {
	dir := t.TempDir()
	missingKey := filepath.Join(dir, "missing.pub")
	missingRoot := filepath.Join(dir, "missing-root.json")
	keyless := []string{"-source-identity", "^https://github\\.com/example/", "-source-issuer", "https://token.actions.githubusercontent.com"}
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing key file", []string{"-source-key", missingKey}, missingKey},
		{"missing trusted root", append([]string{"-trusted-root", missingRoot}, keyless...), missingRoot},
		{"trusted root a directory", append([]string{"-trusted-root", dir}, keyless...), dir},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := testenv.NewFront(e2e.src.Host)
			defer src.Close()
			dst := testenv.NewFront(e2e.dst.Host)
			defer dst.Close()
			args := append([]string{"-source", src.Host + "/src/single:v1", "-destination", dst.Host + "/" + testenv.RepoName(t.Name()) + ":v1", "-sign=false"}, tc.args...)
			r := ocistow(t, nil, args...)
			if r.code != exitInvalid {
				t.Fatalf("exit %d, want %d\n%s", r.code, exitInvalid, r.stderr)
			}
			if line := r.errLine(t); !strings.Contains(line, tc.want) {
				t.Errorf("error line %q does not name %s", line, tc.want)
			}
			for _, f := range []struct {
				what  string
				front *testenv.Front
			}{{"source", src}, {"destination", dst}} {
				if reqs := f.front.Requests(); len(reqs) != 0 {
					t.Errorf("the %s registry saw %d requests before the policy failed to load, first %s %s", f.what, len(reqs), reqs[0].Method, reqs[0].Path)
				}
			}
		})
	}
}

// TestSourcePolicyPassesWhenReferrersCannotBeListed holds, end to end, "a
// digest whose … signature passes is promoted even when the registry
// refuses to list its referrers (without one, that registry error fails
// the promotion)": through a front that answers 403 to every referrers API
// request, a source whose .sig signature (cosign v2, a key) passes is
// promoted, and an unsigned one fails with the registry's error rather
// than a refusal.
func TestSourcePolicyPassesWhenReferrersCannotBeListed(t *testing.T) {
	s := newPolicySource(t)
	signed := s.image(t, "signed", 31)
	s.sign(t, "cosign.key", signed)
	s.image(t, "unsigned", 32)
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	var denied atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.Contains(r.URL.Path, "/referrers/") {
			denied.Add(1)
			http.Error(w, `{"errors":[{"code":"DENIED","message":"referrers refused"}]}`, http.StatusForbidden)
			return true
		}
		return false
	})
	src := front.Host + strings.TrimPrefix(s.repo, e2e.src.Host)
	dst := dstRepo(t, e2e.dst.Host)
	r := ocistow(t, nil, "-source", src+":signed", "-destination", dst+":signed", "-sign=false", "-o", "json", "-source-key", s.pub()).mustSucceed(t)
	if got := r.policy(t).Policy.Digests[0]; got.Digest != signed || got.Format != "legacy" {
		t.Errorf("policy satisfied by %+v, want %s's .sig signature", got, signed)
	}
	if denied.Load() == 0 {
		t.Fatal("the referrers were never asked for: the test refused nothing")
	}
	if got := get(t, dst+":signed", nil).Digest.String(); got != signed {
		t.Errorf("destination holds %s, want %s", got, signed)
	}
	u := ocistow(t, nil, "-source", src+":unsigned", "-destination", dst+":unsigned", "-sign=false", "-source-key", s.pub())
	if line := u.errLine(t); u.code == exitOK || strings.Contains(line, "refused by the source policy") || !strings.Contains(line, "403") {
		t.Errorf("unsigned, the referrers refused: exit %d, %q: want the registry's 403, not a refusal", u.code, line)
	}
	if ts := tags(t, dst, nil); slices.Contains(ts, "unsigned") {
		t.Errorf("the unsigned source was promoted: %v", ts)
	}
}
