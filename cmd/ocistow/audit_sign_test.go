package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/internal/testenv"
)

// manifestGet matches a manifest GET and captures its repository and reference.
var manifestGet = regexp.MustCompile(`^/v2/(.+)/manifests/([^/]+)$`)

// pushNestedIndex pushes, to a new source repository, an index listing an
// index of two images and an image, and returns its reference.
func pushNestedIndex(t *testing.T) string {
	t.Helper()
	inner, err := testenv.MixedIndex(40, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	solo, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 16 << 10, Seed: 43, OCI: true,
		Platform: v1.Platform{OS: "linux", Architecture: "s390x"}})
	if err != nil {
		t.Fatal(err)
	}
	outer := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
		mutate.IndexAddendum{Add: inner, Descriptor: v1.Descriptor{MediaType: types.DockerManifestList}},
		mutate.IndexAddendum{Add: solo, Descriptor: v1.Descriptor{MediaType: types.OCIManifestSchema1, Platform: &v1.Platform{OS: "linux", Architecture: "s390x"}}},
	)
	src := e2e.src.Host + "/src/" + testenv.RepoName(t.Name()) + ":v1"
	if err := testenv.Push(t.Context(), src, outer); err != nil {
		t.Fatal(err)
	}
	return src
}

// README (Signing): "It finds the grandchildren by reading the pushed
// indexes at the destination, never an image manifest." A promotion of an
// index of an index, and a -copy=false signing of it, through a recording
// front: every manifest GET at the destination's repository (signature
// tags aside) is of an index, and the grandchildren are signed.
func TestSigningReadsOnlyIndexesAtTheDestination(t *testing.T) {
	src := pushNestedIndex(t)
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	repoPath := freshRepo(t)
	repo := front.Host + "/" + repoPath
	dst := repo + ":v1"

	// manifestGets lists the references of the manifest GETs of the
	// image's repository since request from, signature tags left out.
	manifestGets := func(from int) []string {
		var refs []string
		for _, r := range front.Requests()[from:] {
			m := manifestGet.FindStringSubmatch(r.Path)
			if r.Method != http.MethodGet || m == nil || m[1] != repoPath || strings.HasSuffix(m[2], ".sig") {
				continue
			}
			refs = append(refs, m[2])
		}
		return refs
	}

	r := ocistow(t, e2e.kms.Env(), "-source", src, "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	if !strings.Contains(r.stderr, "signatures_added=5") {
		t.Fatalf("want 5 digests signed:\n%s", r.stderr)
	}
	// What the destination holds: 2 indexes and 3 images.
	top := get(t, dst, nil)
	indexes := map[string]bool{top.Digest.String(): true, "v1": true}
	var images []string
	idx, err := top.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	var walk func(v1.ImageIndex)
	walk = func(idx v1.ImageIndex) {
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range im.Manifests {
			if !m.MediaType.IsIndex() {
				images = append(images, m.Digest.String())
				continue
			}
			indexes[m.Digest.String()] = true
			child, err := idx.ImageIndex(m.Digest)
			if err != nil {
				t.Fatal(err)
			}
			walk(child)
		}
	}
	walk(idx)
	if len(images) != 3 || len(indexes) != 3 {
		t.Fatalf("destination holds %d images and %d index references; want 3 and 3 (tag, outer, inner)", len(images), len(indexes))
	}
	for _, d := range images {
		if n := sigCount(t, repo, d); n != 1 {
			t.Errorf("image %s has %d signatures, want 1", d, n)
		}
	}
	check := func(what string, gets []string, wantInner bool) {
		t.Helper()
		sawInner := false
		for _, ref := range gets {
			if !indexes[ref] {
				t.Errorf("%s read manifest %s at the destination, which is not an index", what, ref)
			}
			sawInner = sawInner || (ref != "v1" && ref != top.Digest.String())
		}
		if wantInner && !sawInner {
			t.Errorf("%s did not read the inner index at the destination (GETs %q): the grandchildren were found another way", what, gets)
		}
	}
	check("the promotion", manifestGets(0), true)

	// Signing alone, with other annotations (so every digest is signed
	// again): only the tag's index and the inner index are read.
	before := len(front.Requests())
	r = ocistow(t, e2e.kms.Env(), "-copy=false", "-destination", dst, "-annotations", "team=bar", "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	if !strings.Contains(r.stderr, "signatures_added=5") {
		t.Fatalf("want 5 digests signed:\n%s", r.stderr)
	}
	gets := manifestGets(before)
	check("signing with -copy=false", gets, true)
	if len(gets) != 2 {
		t.Errorf("signing with -copy=false read %d manifests (%q), want 2: the tag's index and the inner index", len(gets), gets)
	}
}

// README (Signing): the simple-signing payload has
// "critical.identity.docker-reference = the destination repository",
// "critical.image.docker-manifest-digest", "critical.type = cosign container
// image signature" and "optional = your -annotations": read from the .sig
// layer ocistow wrote.
func TestSignaturePayloadNamesTheDestinationRepository(t *testing.T) {
	repo := e2e.dst.Host + "/" + freshRepo(t)
	dst := repo + ":v1"
	ocistow(t, e2e.kms.Env(), "-source", srcRef("single"), "-destination", dst, "-annotations", "team=foo",
		"-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	digest := get(t, dst, nil).Digest.String()
	img := readImage(t, repo+":"+strings.Replace(digest, ":", "-", 1)+".sig")
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("the .sig tag has %d layers, want 1", len(layers))
	}
	mt, err := layers[0].MediaType()
	if err != nil || mt != "application/vnd.dev.cosign.simplesigning.v1+json" {
		t.Errorf("signature layer media type %q (%v), want application/vnd.dev.cosign.simplesigning.v1+json", mt, err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	var p struct {
		Critical struct {
			Identity struct {
				DockerReference string `json:"docker-reference"`
			} `json:"identity"`
			Image struct {
				DockerManifestDigest string `json:"docker-manifest-digest"`
			} `json:"image"`
			Type string `json:"type"`
		} `json:"critical"`
		Optional map[string]string `json:"optional"`
	}
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatalf("signature payload %s: %v", b, err)
	}
	if p.Critical.Identity.DockerReference != repo {
		t.Errorf("docker-reference %q, want the destination repository %q", p.Critical.Identity.DockerReference, repo)
	}
	if p.Critical.Image.DockerManifestDigest != digest {
		t.Errorf("docker-manifest-digest %q, want %q", p.Critical.Image.DockerManifestDigest, digest)
	}
	if p.Critical.Type != "cosign container image signature" {
		t.Errorf("critical.type %q", p.Critical.Type)
	}
	if p.Optional["team"] != "foo" || len(p.Optional) != 1 {
		t.Errorf("optional %v, want {team: foo}", p.Optional)
	}
}

// README (Signature formats / Verify with ocistow): "A bundle is printed on
// stdout as cosign v3 prints it: the statement in the shape of a
// simple-signing payload (the predicate type as its type, the subject's
// annotations as optional)."
func TestVerifyPrintsABundleWithItsPredicateType(t *testing.T) {
	dst := e2e.dst.Host + "/" + freshRepo(t) + ":v1"
	ocistow(t, e2e.kms.Env(), "-source", srcRef("single"), "-destination", dst, "-annotations", "team=foo",
		"-signature-format", "bundle", "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	v := ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", "alias/"+ecKey, dst).mustSucceed(t)
	if !strings.Contains(v.stderr, "(0 legacy, 1 bundle)") {
		t.Fatalf("want one bundle verified:\n%s", v.stderr)
	}
	var out []struct {
		Critical struct {
			Type string `json:"type"`
		} `json:"critical"`
		Optional map[string]string `json:"optional"`
	}
	if err := json.Unmarshal([]byte(v.stdout), &out); err != nil {
		t.Fatalf("ocistow verify stdout %q: %v", v.stdout, err)
	}
	if len(out) != 1 || out[0].Critical.Type != "https://sigstore.dev/cosign/sign/v1" || out[0].Optional["team"] != "foo" {
		t.Errorf("ocistow verify printed %s; want one payload of type https://sigstore.dev/cosign/sign/v1 with optional team=foo", v.stdout)
	}
	if !strings.Contains(v.stdout, `"type":"https://sigstore.dev/cosign/sign/v1"`) {
		t.Errorf("stdout lacks \"type\":\"https://sigstore.dev/cosign/sign/v1\": %s", v.stdout)
	}
}

// bearerFront is a front for a registry that asks for a bearer token, as
// Docker Hub does: /v2/ and any request without a token get a 401
// challenge, tokens are handed out at /token and name the repository they
// were asked for (a token for another repository gets a 403). It records
// the scope of every token asked for and counts pings.
type bearerFront struct {
	host   string
	mu     sync.Mutex
	scopes []string
	pings  int
}

func newBearerFront(t *testing.T, inner string) *bearerFront {
	f := &bearerFront{}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: inner})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/token" {
			scope := r.URL.Query().Get("scope")
			f.mu.Lock()
			f.scopes = append(f.scopes, scope)
			f.mu.Unlock()
			_ = json.NewEncoder(w).Encode(map[string]string{"token": "t:" + scope})
			return
		}
		if r.URL.Path == "/v2/" {
			f.mu.Lock()
			f.pings++
			f.mu.Unlock()
		}
		auth := r.Header.Get("Authorization")
		if r.URL.Path == "/v2/" || !strings.HasPrefix(auth, "Bearer t:repository:") {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://`+r.Host+`/token",service="test"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		repo := strings.SplitN(strings.TrimPrefix(auth, "Bearer t:repository:"), ":", 2)[0]
		if !strings.HasPrefix(r.URL.Path, "/v2/"+repo+"/") {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	f.host = strings.TrimPrefix(srv.URL, "http://")
	return f
}

// take returns the token scopes asked for and the pings since the last
// call, and starts counting again.
func (f *bearerFront) take() (scopes []string, pings int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	scopes, pings = slices.Clone(f.scopes), f.pings
	f.scopes, f.pings = nil, 0
	return scopes, pings
}

// countScopes counts the tokens asked for per scope.
func countScopes(scopes []string) map[string]int {
	n := map[string]int{}
	for _, s := range scopes {
		n[s]++
	}
	return n
}

// README (Signing): "ocistow pings a registry once per process and fetches
// a token per repository once for reading and once for each writer (the
// copy's uploads, and go-containerregistry's Pusher, which writes
// signatures …), shared by every digest …: not once per digest." Signing
// the 3 digests of an index behind a registry that wants bearer tokens:
// one ping, one read token and one write token; a promotion that copies
// and signs: one ping, one read token for the source, and at the
// destination one read token and two write tokens (the copy's, the
// Pusher's), whatever the number of digests.
func TestSigningFetchesATokenPerRepositoryNotPerDigest(t *testing.T) {
	front := newBearerFront(t, e2e.dst.Host)
	repo := freshRepo(t)
	dst := front.host + "/" + repo + ":v1"
	srcRepo := "src/multi"
	srcFront := newBearerFront(t, e2e.src.Host)
	src := srcFront.host + "/" + srcRepo + ":v1"
	if want := e2e.src.Host + "/" + srcRepo + ":v1"; srcRef("multi") != want {
		t.Fatalf("srcRef(multi) = %s, want %s", srcRef("multi"), want)
	}

	r := ocistow(t, e2e.kms.Env(), "-source", src, "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	if !strings.Contains(r.stderr, "signatures_added=3") {
		t.Fatalf("want 3 digests signed:\n%s", r.stderr)
	}
	scopes, pings := front.take()
	srcScopes, srcPings := srcFront.take()
	t.Logf("promotion: destination tokens %q, pings %d; source tokens %q, pings %d", scopes, pings, srcScopes, srcPings)
	if pings != 1 || srcPings != 1 {
		t.Errorf("the promotion pinged the destination %d times and the source %d times, want once each", pings, srcPings)
	}
	if n := countScopes(srcScopes); len(srcScopes) != 1 || n["repository:"+srcRepo+":pull"] != 1 {
		t.Errorf("source tokens %q, want one to read %s", srcScopes, srcRepo)
	}
	wantDst := map[string]int{"repository:" + repo + ":pull": 1, "repository:" + repo + ":push,pull": 2}
	if n := countScopes(scopes); !mapsEqual(n, wantDst) {
		t.Errorf("destination tokens %v, want %v (one to read, one per writer: the copy's and the Pusher's)", n, wantDst)
	}

	// Signing alone, 3 digests, with other annotations so that each is
	// signed: one ping, one token to read and one for the Pusher.
	r = ocistow(t, e2e.kms.Env(), "-copy=false", "-destination", dst, "-annotations", "team=bar", "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	if !strings.Contains(r.stderr, "signatures_added=3") {
		t.Fatalf("want 3 digests signed:\n%s", r.stderr)
	}
	scopes, pings = front.take()
	t.Logf("signing: tokens %q, pings %d", scopes, pings)
	if pings != 1 {
		t.Errorf("signing 3 digests pinged the registry %d times, want 1", pings)
	}
	wantSign := map[string]int{"repository:" + repo + ":pull": 1, "repository:" + repo + ":push,pull": 1}
	if n := countScopes(scopes); !mapsEqual(n, wantSign) {
		t.Errorf("signing 3 digests asked for tokens %v, want %v", n, wantSign)
	}
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// README (Logs): one canonical line per service step "at info level, or at
// error level when the step failed, with err and a stable error_type": a
// promotion whose source is missing logs its Copy line at ERROR with
// error_type=SourceNotFound; one that finds the destination up to date
// logs it at INFO, without err.
func TestCanonicalLinesAreAtErrorLevelWhenTheStepFailed(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	r := ocistow(t, nil, "-source", e2e.src.Host+"/src/missing:v1", "-destination", repo+":v1", "-sign=false")
	if r.code != 1 {
		t.Fatalf("exit %d, want 1\n%s", r.code, r.stderr)
	}
	line := logLine(t, r.stderr, "Copy")
	if !strings.Contains(line, "level=ERROR msg=Copy ") || !strings.Contains(line, " error_type=SourceNotFound") || !strings.Contains(line, " err=") {
		t.Errorf("failed Copy line %q, want level=ERROR msg=Copy with err and error_type=SourceNotFound", line)
	}
	args := []string{"-source", srcRef("single"), "-destination", repo + ":v2", "-sign=false"}
	ocistow(t, nil, args...).mustSucceed(t)
	r = ocistow(t, nil, args...).mustSucceed(t)
	line = logLine(t, r.stderr, "Copy")
	if !strings.Contains(line, "level=INFO msg=Copy ") || !strings.Contains(line, " up_to_date=true") || strings.Contains(line, " err=") || strings.Contains(line, "error_type") {
		t.Errorf("up-to-date Copy line %q, want level=INFO msg=Copy with up_to_date=true and no error", line)
	}
}

// logLine returns the one canonical line of step (msg=STEP) in stderr,
// failing the test unless there is exactly one.
func logLine(t *testing.T, stderr, step string) string {
	t.Helper()
	var lines []string
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, " msg="+step+" ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("want one msg=%s line, got %d:\n%s", step, len(lines), stderr)
	}
	return lines[0]
}

// README (Logs): the Referrers line carries artifact_types,
// referrers_present and tags_present (among others): a re-run with
// -referrers and two -referrers-type finds the SBOMs and the .sig tags
// present and says so, with the types asked for.
func TestReferrersLineCountsWhatIsPresent(t *testing.T) {
	u := newUpstream(t)
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	const sigType = "application/vnd.dev.cosign.simplesigning.v1+json"
	args := []string{"-source", u.ref, "-destination", dst, "-sign=false", "-referrers", "-referrers-type", spdxType, "-referrers-type", sigType}
	first := logLine(t, ocistow(t, nil, args...).mustSucceed(t).stderr, "Referrers")
	for _, want := range []string{" referrers_copied=2 ", " tags_copied=3 ", " referrers_present=0 ", " tags_present=0 "} {
		if !strings.Contains(first, want) {
			t.Errorf("first Referrers line lacks %q: %s", want, first)
		}
	}
	line := logLine(t, ocistow(t, nil, args...).mustSucceed(t).stderr, "Referrers")
	for _, want := range []string{
		`level=INFO msg=Referrers `,
		` artifact_types="[` + spdxType + ` ` + sigType + `]" `,
		" referrers_copied=0 ", " referrers_present=2 ",
		" tags_copied=0 ", " tags_present=3 ",
	} {
		if !strings.Contains(line, want) {
			t.Errorf("re-run's Referrers line lacks %q: %s", want, line)
		}
	}
}
