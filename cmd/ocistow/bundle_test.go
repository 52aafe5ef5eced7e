package main

import (
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/testenv"
)

const bundleMediaType = "application/vnd.dev.sigstore.bundle.v0.3+json"

// cosign3 runs the real cosign v3 CLI with the local-kms environment.
func cosign3(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	return cosignBin(t, e2e.cosign3, dir, env, args...)
}

// cosign3Verify runs cosign v3's verify with a key, offline and without a
// transparency log, requiring the annotations.
func cosign3Verify(t *testing.T, keyRef, image string, annotations ...string) result {
	t.Helper()
	args := []string{"verify", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", keyRef}
	for _, a := range annotations {
		args = append(args, "-a", a)
	}
	return cosign3(t, "", nil, append(args, image)...)
}

// bundleReferrers returns the referrer manifests of digest in repo that
// hold a Sigstore bundle, read as any OCI client reads them (the referrers
// API, else the referrers tag).
func bundleReferrers(t *testing.T, repo, digest string) []v1.Manifest {
	t.Helper()
	d, err := name.NewDigest(repo + "@" + digest)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Referrers(d, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("referrers of %s: %v", d, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Manifest
	for _, desc := range im.Manifests {
		got := get(t, repo+"@"+desc.Digest.String(), nil)
		var m v1.Manifest
		if err := json.Unmarshal(got.Manifest, &m); err != nil {
			t.Fatal(err)
		}
		if len(m.Layers) == 1 && m.Layers[0].MediaType == bundleMediaType {
			out = append(out, m)
		}
	}
	return out
}

// referrersTag returns the descriptors the referrers tag of digest lists,
// or nil when there is no such tag.
func referrersTag(t *testing.T, repo, digest string) []v1.Descriptor {
	t.Helper()
	ref, err := name.ParseReference(repo + ":" + strings.Replace(digest, ":", "-", 1))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(ref, remote.WithContext(t.Context()))
	if err != nil {
		if strings.Contains(err.Error(), "MANIFEST_UNKNOWN") || strings.Contains(err.Error(), "404") {
			return nil
		}
		t.Fatalf("reading %s: %v", ref, err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	return im.Manifests
}

type signResultJSON struct {
	copyResultJSON
	Signatures struct {
		Key     string   `json:"key"`
		Formats []string `json:"formats"`
		Digests []struct {
			Digest  string            `json:"digest"`
			Status  string            `json:"status"`
			Formats map[string]string `json:"formats"`
		} `json:"digests"`
		Added   int `json:"added"`
		Present int `json:"present"`
	} `json:"signatures"`
}

func TestBundleSignaturesVerifyWithCosign3(t *testing.T) {
	for _, k := range []string{rsaKey, ecKey} {
		t.Run(k, func(t *testing.T) {
			repo := dstRepo(t, e2e.dst.Host)
			dst := repo + ":multi"
			args := []string{"-source", srcRef("multi"), "-destination", dst, "-annotations", "team=foo",
				"-aws-kms-key-arn", "alias/" + k, "-signature-format", "bundle", "-output", "json"}
			res := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
			var out signResultJSON
			if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
				t.Fatal(err)
			}
			digests := []string{out.DestinationDigest}
			for _, m := range out.Manifests {
				digests = append(digests, m.DestinationDigest)
			}
			if !slices.Equal(out.Signatures.Formats, []string{"bundle"}) || out.Signatures.Added != len(digests) || out.Signatures.Present != 0 {
				t.Errorf("signatures %+v, want %d bundles added", out.Signatures, len(digests))
			}
			for _, d := range out.Signatures.Digests {
				if d.Status != "added" || d.Formats["bundle"] != "added" || len(d.Formats) != 1 {
					t.Errorf("digest %+v, want the bundle added", d)
				}
			}
			for _, want := range []string{"method=Sign", "formats=bundle", "signatures_added=" + strconv.Itoa(len(digests))} {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("canonical Sign line lacks %q:\n%s", want, res.stderr)
				}
			}
			for i, d := range digests {
				// No legacy signature; one bundle referrer, laid out as
				// cosign's BUNDLE_SPEC.md says, listed by the referrers
				// tag (Distribution has no referrers API).
				if n := sigCount(t, repo, d); n != 0 {
					t.Errorf("%s: %d legacy signatures with -signature-format bundle", d, n)
				}
				refs := bundleReferrers(t, repo, d)
				if len(refs) != 1 {
					t.Fatalf("%s: %d bundle referrers, want 1", d, len(refs))
				}
				m := refs[0]
				if m.ArtifactType != bundleMediaType || m.Config.MediaType != "application/vnd.oci.empty.v1+json" || m.Subject == nil || m.Subject.Digest.String() != d ||
					m.Annotations["dev.sigstore.bundle.content"] != "dsse-envelope" || m.Annotations["dev.sigstore.bundle.predicateType"] != "https://sigstore.dev/cosign/sign/v1" ||
					m.Annotations["org.opencontainers.image.created"] == "" {
					t.Errorf("%s: referrer manifest %+v", d, m)
				}
				if tag := referrersTag(t, repo, d); len(tag) != 1 || tag[0].ArtifactType != bundleMediaType {
					t.Errorf("%s: referrers tag lists %+v, want the one bundle", d, tag)
				}
				// cosign v3 verifies it, with the annotation, by tag and
				// by digest.
				image := repo + "@" + d
				if i == 0 {
					image = dst
				}
				v := cosign3Verify(t, "awskms:///alias/"+k, image, "team=foo")
				if v.code != 0 {
					t.Fatalf("cosign v3 verify %s: exit %d\n%s\n%s", image, v.code, v.stdout, v.stderr)
				}
				if !strings.Contains(v.stdout, `"docker-manifest-digest":"`+d+`"`) || !strings.Contains(v.stdout, `"team":"foo"`) || !strings.Contains(v.stdout, "https://sigstore.dev/cosign/sign/v1") {
					t.Errorf("cosign v3 verify %s printed %s", image, v.stdout)
				}
			}
			if v := cosign3Verify(t, "awskms:///alias/"+k, dst, "team=bar"); v.code == 0 {
				t.Error("cosign v3 verify accepted -a team=bar on a team=foo bundle")
			}
			// ocistow verify finds the bundles, recursively, and says so.
			v := ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", "alias/"+k, "-annotations", "team=foo", "-recursive", dst).mustSucceed(t)
			if want := "Verified " + strconv.Itoa(len(digests)) + " signatures (0 legacy, " + strconv.Itoa(len(digests)) + " bundle)"; !strings.Contains(v.stderr, want) {
				t.Errorf("ocistow verify stderr lacks %q:\n%s", want, v.stderr)
			}
			if !strings.Contains(v.stderr, "verified_bundle="+strconv.Itoa(len(digests))) {
				t.Errorf("canonical Verify line lacks verified_bundle:\n%s", v.stderr)
			}
			for _, d := range digests {
				if !strings.Contains(v.stdout, d) {
					t.Errorf("ocistow verify output lacks %s: %s", d, v.stdout)
				}
			}
			if v := ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", "alias/"+k, "-annotations", "team=bar", dst); v.code != 1 || !strings.Contains(v.stderr, "annotation team=bar missing") {
				t.Errorf("ocistow verify -annotations team=bar: exit %d\n%s", v.code, v.stderr)
			}
			// A re-run finds every bundle: nothing signed, nothing written.
			front := e2e.dstFront
			viaFront := strings.Replace(dst, e2e.dst.Host, front.Host, 1)
			before := manifestPuts(front)
			args[3] = viaFront
			r := ocistow(t, e2e.kms.Env(), args...).mustSucceed(t)
			if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
				t.Fatal(err)
			}
			if out.Signatures.Added != 0 || out.Signatures.Present != len(digests) || manifestPuts(front) != before {
				t.Errorf("re-run: %d added, %d present, %d manifest PUTs; want 0, %d, 0", out.Signatures.Added, out.Signatures.Present, manifestPuts(front)-before, len(digests))
			}
			for _, d := range digests {
				if n := len(bundleReferrers(t, repo, d)); n != 1 {
					t.Errorf("%s: %d bundles after the re-run, want 1", d, n)
				}
			}
		})
	}
}

// manifestPuts counts the manifest writes a Front saw.
func manifestPuts(f *testenv.Front) int {
	return f.Count(func(r testenv.Request) bool {
		return r.Method == http.MethodPut && strings.Contains(r.Path, "/manifests/")
	})
}

func TestSignatureFormatBoth(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	dst := repo + ":v1"
	ocistow(t, nil, "-source", srcRef("single"), "-destination", dst, "-sign=false").mustSucceed(t)
	digest := e2e.fixtures["single"]
	// Sign only, both formats, the format from the environment.
	env := append(e2e.kms.Env(), "SIGNATURE_FORMAT=both")
	r := ocistow(t, env, "-copy=false", "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo").mustSucceed(t)
	if !strings.Contains(r.stdout, "signed 1 digests with awskms:///alias/"+ecKey+" (legacy and bundle formats): 2 added, 0 already present") ||
		!strings.Contains(r.stderr, "formats=legacy,bundle") {
		t.Errorf("both formats not reported:\n%s\n%s", r.stdout, r.stderr)
	}
	if n, b := sigCount(t, repo, digest), len(bundleReferrers(t, repo, digest)); n != 1 || b != 1 {
		t.Fatalf("%d legacy signatures and %d bundles, want 1 and 1", n, b)
	}
	// cosign v2 reads the legacy signature, cosign v3 the bundle.
	if v := cosignVerify(t, "awskms:///alias/"+ecKey, dst, "team=foo"); v.code != 0 {
		t.Errorf("cosign v2 verify: %s", v.stderr)
	}
	if v := cosign3Verify(t, "awskms:///alias/"+ecKey, dst, "team=foo"); v.code != 0 || !strings.Contains(v.stdout, "https://sigstore.dev/cosign/sign/v1") {
		t.Errorf("cosign v3 verify did not verify the bundle: %s\n%s", v.stdout, v.stderr)
	}
	v := ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", "alias/"+ecKey, "-o", "json", dst).mustSucceed(t)
	var vr struct {
		Formats  []string `json:"formats"`
		Verified []struct {
			Format string `json:"format"`
		} `json:"verified"`
	}
	if err := json.Unmarshal([]byte(v.stdout), &vr); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(vr.Formats, []string{"legacy", "bundle"}) || len(vr.Verified) != 2 {
		t.Errorf("ocistow verify -o json: %s", v.stdout)
	}
	// Re-run: both present; the flag wins over the environment.
	r = ocistow(t, env, "-copy=false", "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo").mustSucceed(t)
	if !strings.Contains(r.stdout, "0 added, 2 already present") {
		t.Errorf("re-run: %s", r.stdout)
	}
	r = ocistow(t, env, "-copy=false", "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo", "-signature-format", "legacy").mustSucceed(t)
	if !strings.Contains(r.stdout, "signed 1 digests with awskms:///alias/"+ecKey+": 0 added, 1 already present") {
		t.Errorf("-signature-format legacy over SIGNATURE_FORMAT=both: %s", r.stdout)
	}
	// Other annotations are another bundle.
	ocistow(t, e2e.kms.Env(), "-copy=false", "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=bar", "-signature-format", "bundle").mustSucceed(t)
	if n := len(bundleReferrers(t, repo, digest)); n != 2 {
		t.Errorf("%d bundles after other annotations, want 2", n)
	}
	// A bad format is refused before anything is done.
	for _, args := range [][]string{
		{"-copy=false", "-destination", dst, "-aws-kms-key-arn", "alias/" + ecKey, "-signature-format", "sigstore"},
		{"sync", "-f", "nonexistent.yaml", "-signature-format", "v3"},
	} {
		r := ocistow(t, e2e.kms.Env(), args...)
		if r.code != 2 || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || !strings.Contains(r.stderr, "want legacy, bundle or both") {
			t.Errorf("%v: exit %d, stderr %q", args, r.code, r.stderr)
		}
	}
}

func TestOcistowVerifiesCosign3Bundles(t *testing.T) {
	dir := t.TempDir()
	const password = "correct horse battery staple"
	if r := cosign3(t, dir, []string{"COSIGN_PASSWORD=" + password}, "generate-key-pair"); r.code != 0 {
		t.Fatalf("cosign v3 generate-key-pair: %s", r.stderr)
	}
	priv, pub := filepath.Join(dir, "cosign.key"), filepath.Join(dir, "cosign.pub")
	repo := dstRepo(t, e2e.dst.Host)
	ocistow(t, nil, "-source", srcRef("single"), "-destination", repo+":file", "-sign=false").mustSucceed(t)
	ocistow(t, nil, "-source", srcRef("multi"), "-destination", repo+":kms", "-sign=false").mustSucceed(t)
	digest := e2e.fixtures["single"]
	sign := func(key, image string, env ...string) {
		t.Helper()
		r := cosign3(t, dir, env, "sign", "--key", key, "--signing-config", e2e.signingConfig, "--trusted-root", e2e.trustedRoot, "-a", "team=foo", "-y", image)
		if r.code != 0 {
			t.Fatalf("cosign v3 sign %s: %s", image, r.stderr)
		}
	}
	// A file key.
	sign(priv, repo+"@"+digest, "COSIGN_PASSWORD="+password)
	if n, b := sigCount(t, repo, digest), len(bundleReferrers(t, repo, digest)); n != 0 || b != 1 {
		t.Fatalf("cosign v3 wrote %d legacy signatures and %d bundles, want 0 and 1", n, b)
	}
	v := ocistow(t, nil, "verify", "-key", pub, "-annotations", "team=foo", repo+":file").mustSucceed(t)
	if !strings.Contains(v.stderr, "(0 legacy, 1 bundle)") || !strings.Contains(v.stdout, `"team":"foo"`) {
		t.Errorf("ocistow verify of cosign v3's bundle:\n%s\n%s", v.stdout, v.stderr)
	}
	if v := ocistow(t, nil, "verify", "-key", pub, "-annotations", "team=bar", repo+":file"); v.code != 1 {
		t.Errorf("ocistow verify -annotations team=bar of a team=foo bundle exited %d", v.code)
	}
	// Another key does not verify it.
	if v := ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", "alias/"+ecKey, repo+":file"); v.code != 1 || !strings.Contains(v.stderr, "bundle signature does not verify") {
		t.Errorf("ocistow verify with another key: exit %d\n%s", v.code, v.stderr)
	}
	// ocistow, signing with the same key file and annotations, finds
	// cosign v3's bundle and adds none.
	r := ocistow(t, []string{"COSIGN_PASSWORD=" + password}, "-copy=false", "-destination", repo+":file", "-key", priv, "-annotations", "team=foo", "-signature-format", "bundle").mustSucceed(t)
	if !strings.Contains(r.stdout, "0 added, 1 already present") || len(bundleReferrers(t, repo, digest)) != 1 {
		t.Errorf("ocistow did not find cosign v3's bundle: %s", r.stdout)
	}
	// With other annotations it signs with the file key, and cosign v3
	// verifies that.
	ocistow(t, []string{"COSIGN_PASSWORD=" + password}, "-copy=false", "-destination", repo+":file", "-key", priv, "-annotations", "team=ocistow", "-signature-format", "bundle").mustSucceed(t)
	if v := cosign3Verify(t, pub, repo+":file", "team=ocistow"); v.code != 0 {
		t.Errorf("cosign v3 verify of ocistow's file-key bundle: %s", v.stderr)
	}
	// A KMS key through local-kms, recursively over an index.
	kmsRef := "awskms:///alias/" + ecKey
	if r := cosign3(t, dir, nil, "sign", "--key", kmsRef, "--signing-config", e2e.signingConfig, "--trusted-root", e2e.trustedRoot, "-a", "team=foo", "--recursive", "-y", repo+":kms"); r.code != 0 {
		t.Fatalf("cosign v3 sign --recursive with KMS: %s", r.stderr)
	}
	v = ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo", "-recursive", repo+":kms").mustSucceed(t)
	// Every digest under the index has its bundle, and only those.
	m := regexp.MustCompile(`\(0 legacy, (\d+) bundle\) on (\d+) digests`).FindStringSubmatch(v.stderr)
	if m == nil || m[1] != m[2] || m[1] == "1" {
		t.Errorf("ocistow verify -recursive of cosign v3's KMS bundles:\n%s", v.stderr)
	}
}

// TestBundleOnRegistryWithReferrersAPI signs into go-containerregistry's
// registry with its referrers API on: the registry lists the bundles, no
// referrers tag is written, and cosign v3 and ocistow verify them.
func TestBundleOnRegistryWithReferrersAPI(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(true)))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	repo := host + "/" + testenv.RepoName(t.Name())
	dst := repo + ":v1"
	res := ocistow(t, e2e.kms.Env(), "-source", srcRef("multi"), "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey,
		"-signature-format", "bundle", "-annotations", "team=foo", "-output", "json").mustSucceed(t)
	var out signResultJSON
	if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
		t.Fatal(err)
	}
	digests := []string{out.DestinationDigest}
	for _, m := range out.Manifests {
		digests = append(digests, m.DestinationDigest)
	}
	for _, d := range digests {
		if n := len(bundleReferrers(t, repo, d)); n != 1 {
			t.Errorf("%s: %d bundles listed by the referrers API, want 1", d, n)
		}
		if tag := referrersTag(t, repo, d); tag != nil {
			t.Errorf("%s: a referrers tag was written on a registry with the referrers API: %+v", d, tag)
		}
	}
	if v := cosign3Verify(t, "awskms:///alias/"+ecKey, dst, "team=foo"); v.code != 0 {
		t.Errorf("cosign v3 verify: %s", v.stderr)
	}
	ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", "alias/"+ecKey, "-recursive", "-annotations", "team=foo", dst).mustSucceed(t)
	r := ocistow(t, e2e.kms.Env(), "-copy=false", "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey, "-signature-format", "bundle", "-annotations", "team=foo").mustSucceed(t)
	if !strings.Contains(r.stdout, "0 added, "+strconv.Itoa(len(digests))+" already present") {
		t.Errorf("re-run: %s", r.stdout)
	}
}

// referrerManifestPut matches the write of a manifest by digest (a
// bundle's referrer manifest), not by tag.
var referrerManifestPut = regexp.MustCompile(`/manifests/sha256:[0-9a-f]{64}$`)

func TestConcurrentBundleSignersKeepEveryBundle(t *testing.T) {
	path := freshRepo(t)
	repo := e2e.dst.Host + "/" + path
	ocistow(t, nil, "-source", srcRef("single"), "-destination", repo+":v1", "-sign=false").mustSucceed(t)
	// Four signers at once on one digest, two keys and two annotation
	// sets. A front holds each one's write of its bundle manifest until
	// all four have written theirs, so that their read-modify-writes of
	// the referrers tag that follow run together and overwrite each other.
	const signers = 4
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	var (
		mu      sync.Mutex
		arrived int
		release = make(chan struct{})
	)
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPut || !referrerManifestPut.MatchString(r.URL.Path) {
			return false
		}
		mu.Lock()
		if arrived < signers {
			arrived++
			if arrived == signers {
				close(release)
			}
		}
		mu.Unlock()
		select {
		case <-release:
		case <-time.After(2 * time.Minute):
		}
		return false
	})
	viaFront := front.Host + "/" + path + ":v1"
	var wg sync.WaitGroup
	results := make([]result, signers)
	for i := range results {
		key, ann := ecKey, "team=a"
		if i%2 == 1 {
			key = rsaKey
		}
		if i >= 2 {
			ann = "team=b"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = ocistow(t, e2e.kms.Env(), "-copy=false", "-destination", viaFront, "-aws-kms-key-arn", "alias/"+key, "-annotations", ann, "-signature-format", "bundle")
		}()
	}
	wg.Wait()
	mu.Lock()
	if arrived < signers {
		t.Errorf("only %d of %d signers wrote their bundle together: the test did not race them", arrived, signers)
	}
	mu.Unlock()
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("signer %d exited %d: %s", i, r.code, r.stderr)
		}
	}
	tagWrites := front.Count(func(r testenv.Request) bool {
		return r.Method == http.MethodPut && strings.HasSuffix(r.Path, "/manifests/"+strings.Replace(e2e.fixtures["single"], ":", "-", 1))
	})
	t.Logf("%d writes of the referrers tag to keep %d bundles", tagWrites, signers)
	if tag := referrersTag(t, repo, e2e.fixtures["single"]); len(tag) != signers {
		t.Errorf("the referrers tag lists %d bundles after %d concurrent signers, want %d", len(tag), signers, signers)
	}
	for _, key := range []string{ecKey, rsaKey} {
		for _, ann := range []string{"team=a", "team=b"} {
			if v := cosign3Verify(t, "awskms:///alias/"+key, repo+":v1", ann); v.code != 0 {
				t.Errorf("cosign v3 verify %s %s: %s", key, ann, v.stderr)
			}
		}
	}
}

func TestSyncSignatureFormats(t *testing.T) {
	prefix := testenv.RepoName(t.Name())
	file := promotionFile(t, `defaults:
  key: awskms:///alias/`+ecKey+`
promotions:
  - source: SRC/src/single:v1
    destination: DST/`+prefix+`/entry:v1
    signatureFormat: bundle
  - source: SRC/src/other:v1
    destination: DST/`+prefix+`/flag:v1
`, e2e.src.Host, e2e.dst.Host)
	// The plan carries each image's format: the entry's, else the flag's.
	r := ocistow(t, e2e.kms.Env(), "sync", "-f", file, "-dry-run", "-o", "json", "-signature-format", "both").mustSucceed(t)
	var plan []struct {
		DstImageRef     string
		SignatureFormat string
	}
	if err := json.Unmarshal([]byte(r.stdout), &plan); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, p := range plan {
		got[p.DstImageRef[strings.LastIndex(p.DstImageRef, "/")+1:]] = p.SignatureFormat
	}
	if got["entry:v1"] != "bundle" || got["flag:v1"] != "both" {
		t.Errorf("plan formats %v, want entry:v1 bundle and flag:v1 both", got)
	}
	// Without the flag, the second entry signs in the legacy format.
	ocistow(t, e2e.kms.Env(), "sync", "-f", file).mustSucceed(t)
	for _, c := range []struct {
		repo, fixture   string
		legacy, bundles int
	}{{"entry", "single", 0, 1}, {"flag", "other", 1, 0}} {
		repo := e2e.dst.Host + "/" + prefix + "/" + c.repo
		d := get(t, repo+":v1", nil).Digest.String()
		if l, b := sigCount(t, repo, d), len(bundleReferrers(t, repo, d)); l != c.legacy || b != c.bundles {
			t.Errorf("%s: %d legacy signatures and %d bundles, want %d and %d", c.repo, l, b, c.legacy, c.bundles)
		}
	}
	// cosign v3 verifies both: the bundle, and, on an image without
	// bundles, the legacy signature.
	for _, image := range []string{e2e.dst.Host + "/" + prefix + "/entry:v1", e2e.dst.Host + "/" + prefix + "/flag:v1"} {
		if v := cosign3Verify(t, "awskms:///alias/"+ecKey, image); v.code != 0 {
			t.Errorf("cosign v3 verify %s: %s", image, v.stderr)
		}
	}
}
