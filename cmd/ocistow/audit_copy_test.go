package main

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ocistow/ocistow/internal/testenv"
)

// TestTimeoutDuringSigningLeavesTheCopy holds the README's -timeout row:
// "give up on the whole promotion (key checks, copy, signing, attesting,
// referrers) after this long: … after it, the tag has moved and the line
// says the copy succeeded and which step was cut short (exit 3 …)". A
// KMS front holds every Sign call until ocistow hangs up, so the deadline
// passes while signing, after the copy moved the tag.
func TestTimeoutDuringSigningLeavesTheCopy(t *testing.T) {
	front := testenv.NewFront(strings.TrimPrefix(e2e.kms.Endpoint, "http://"))
	defer front.Close()
	// The server notices a client hanging up only once the body is read:
	// read it, then hold the call until the client goes, or the test ends.
	stop := make(chan struct{})
	defer close(stop)
	var signs atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("X-Amz-Target") != "TrentService.Sign" {
			return false
		}
		signs.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-stop:
		}
		return true
	})
	env := append(e2e.kms.Env(), "AWS_ENDPOINT_URL_KMS=http://"+front.Host)
	repo := dstRepo(t, e2e.dst.Host)
	// Long enough for the key check and the copy of a small image, which
	// the test needs to finish before the deadline; signing never can.
	r := ocistow(t, env, "-source", srcRef("single"), "-destination", repo+":v1", "-aws-kms-key-arn", "alias/"+ecKey, "-timeout", "10s")
	line := r.errLine(t)
	if r.code != exitSignFailed || !strings.Contains(line, "copy succeeded") || !strings.Contains(line, "but signing failed") || !strings.Contains(line, "deadline exceeded") {
		t.Errorf("exit %d, line %q: want exit 3 saying the copy succeeded and signing ran out of time", r.code, line)
	}
	if signs.Load() == 0 {
		t.Error("no KMS Sign call was made: the deadline did not pass while signing")
	}
	if d := get(t, repo+":v1", nil).Digest.String(); d != e2e.fixtures["single"] {
		t.Errorf("destination tag at %s, want the copy %s: the tag moved before signing", d, e2e.fixtures["single"])
	}
}

// TestPlatformListFromTheEnvironment holds the README's "the others
// (PLATFORM=linux/amd64,linux/arm64, …) are split at every comma, spaces
// around each value trimmed": PLATFORM in the environment selects two of a
// source's three platforms.
func TestPlatformListFromTheEnvironment(t *testing.T) {
	var imgs []v1.Image
	for i, p := range []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64", Variant: "v8"}, {OS: "linux", Architecture: "s390x"}} {
		img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 1024, Seed: int64(300 + i), Platform: p})
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	idx, err := testenv.Index(false, imgs...)
	if err != nil {
		t.Fatal(err)
	}
	src := e2e.src.Host + "/src/" + testenv.RepoName(t.Name()) + ":v1"
	if err := testenv.Push(t.Context(), src, idx); err != nil {
		t.Fatal(err)
	}
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	res := ocistow(t, []string{"SOURCE=" + src, "DESTINATION=" + dst, "SIGN=false", "OUTPUT=json", "PLATFORM=linux/amd64, linux/s390x"}).mustSucceed(t).copyResult(t)
	var got []string
	for _, m := range res.Manifests {
		got = append(got, m.Platform)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"linux/amd64", "linux/s390x"}) {
		t.Errorf("PLATFORM=\"linux/amd64, linux/s390x\" promoted platforms %v, want linux/amd64 and linux/s390x", got)
	}
	im, err := v1.ParseIndexManifest(strings.NewReader(string(get(t, dst, nil).Manifest)))
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Errorf("destination index lists %d manifests, want the 2 platforms asked for", len(im.Manifests))
	}
}

// TestSourceAndDestinationByDigest holds the README's -source "image to
// promote, by tag or digest" and -destination "by tag (or by digest, which
// must match)": a multi-platform source named by digest lands at a
// destination named by the same digest, children included, and no tag is
// made; a re-run is up to date with no pull.
func TestSourceAndDestinationByDigest(t *testing.T) {
	d := e2e.fixtures["multi"]
	src := e2e.src.Host + "/src/multi@" + d
	dst := dstRepo(t, e2e.dst.Host)
	args := []string{"-source", src, "-destination", dst + "@" + d, "-sign=false", "-o", "json"}
	res := ocistow(t, nil, args...).mustSucceed(t).copyResult(t)
	if res.SourceDigest != d || res.DestinationDigest != d || len(res.Manifests) != 2 {
		t.Errorf("result %+v, want %s at both ends with its 2 children", res, d)
	}
	if got := get(t, dst+"@"+d, nil).Digest.String(); got != d {
		t.Errorf("destination holds %s, want %s", got, d)
	}
	for _, m := range res.Manifests {
		if got := get(t, dst+"@"+m.DestinationDigest, nil).Digest.String(); got != m.SourceDigest {
			t.Errorf("child %s: destination holds %s", m.SourceDigest, got)
		}
	}
	if ts := tags(t, dst, nil); len(ts) != 0 {
		t.Errorf("a destination by digest got tags %v", ts)
	}
	again := ocistow(t, nil, args...).mustSucceed(t).copyResult(t)
	if !again.UpToDate || again.SourcePulls != 0 || again.DestinationDigest != d {
		t.Errorf("re-run %+v, want up to date at %s with no pull", again, d)
	}
}

// TestSignOnlyFailureExitsOne holds the README's exit codes: "1 the copy
// (or … with -copy=false the signing) failed": -copy=false against a KMS
// that refuses Sign (after the key check passed) exits 1, not 3, with one
// line saying signing failed and no copy claimed, and writes no signature.
func TestSignOnlyFailureExitsOne(t *testing.T) {
	front := testenv.NewFront(strings.TrimPrefix(e2e.kms.Endpoint, "http://"))
	defer front.Close()
	var signs atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("X-Amz-Target") != "TrentService.Sign" {
			return false
		}
		signs.Add(1)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"__type":"KMSInvalidStateException","message":"key pending import"}`))
		return true
	})
	repo := dstRepo(t, e2e.dst.Host)
	ocistow(t, nil, "-source", srcRef("single"), "-destination", repo+":v1", "-sign=false").mustSucceed(t)
	env := append(e2e.kms.Env(), "AWS_ENDPOINT_URL_KMS=http://"+front.Host)
	r := ocistow(t, env, "-copy=false", "-destination", repo+":v1", "-aws-kms-key-arn", "alias/"+ecKey)
	line := r.errLine(t)
	if r.code != exitFailed || !strings.HasPrefix(line, "ocistow: signing failed: ") || strings.Contains(line, "copy succeeded") || !strings.Contains(line, "KMSInvalidStateException") {
		t.Errorf("exit %d, line %q: want exit 1 saying signing failed (KMSInvalidStateException), no copy claimed", r.code, line)
	}
	if signs.Load() == 0 {
		t.Error("no KMS Sign call was made: the failure came before signing")
	}
	if ts := tags(t, repo, nil); !slices.Equal(ts, []string{"v1"}) {
		t.Errorf("tags %v after a failed signing, want only v1 (no signature)", ts)
	}
}

// TestSchema1SourceIsRefused holds the README's "2 … a source ocistow
// refuses by design (a Docker schema 1 manifest …): nothing was written"
// and the Lambda's InvalidRequest for it: a source front serving a schema
// 1 signed manifest gets exit 2, one line naming schema 1, the canonical
// line error_type=InvalidRequest, and no write at the destination.
func TestSchema1SourceIsRefused(t *testing.T) {
	const body = `{"schemaVersion":1,"name":"src/old","tag":"v1","architecture":"amd64",` +
		`"fsLayers":[{"blobSum":"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"}],` +
		`"history":[{"v1Compatibility":"{\"id\":\"0\"}"}],"signatures":[]}`
	sum := sha256.Sum256([]byte(body))
	digest := "sha256:" + hex.EncodeToString(sum[:])
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, "/v2/src/old/manifests/") || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			return false
		}
		w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v1+prettyjws")
		w.Header().Set("Docker-Content-Digest", digest)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		if r.Method == http.MethodGet {
			_, _ = w.Write([]byte(body))
		}
		return true
	})
	repo := dstRepo(t, e2e.dstFront.Host)
	r := ocistow(t, nil, "-source", front.Host+"/src/old:v1", "-destination", repo+":v1", "-sign=false")
	if r.code != exitInvalid {
		t.Errorf("exit %d, want %d: %s", r.code, exitInvalid, r.stderr)
	}
	r.refused(t, []string{"schema 1", "src/old"}, repo)
	if !strings.Contains(r.stderr, "error_type=InvalidRequest") {
		t.Errorf("canonical line lacks error_type=InvalidRequest:\n%s", r.stderr)
	}
}

// TestStallTimeoutDefault holds the README's -stall-timeout row: default
// "1m0s", as -h shows it.
func TestStallTimeoutDefault(t *testing.T) {
	r := ocistow(t, nil, "-h").mustSucceed(t)
	_, after, ok := strings.Cut(r.stdout, "  -stall-timeout duration\n")
	if !ok {
		t.Fatalf("-h lists no -stall-timeout duration flag:\n%s", r.stdout)
	}
	usage, _, _ := strings.Cut(after, "\n")
	if !strings.HasSuffix(usage, "(default 1m0s)") {
		t.Errorf("-stall-timeout's usage %q does not end in (default 1m0s)", usage)
	}
}
