package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/internal/testenv"
)

func TestHelpShowsSeedFlags(t *testing.T) {
	r := ocistow(t, nil, "-h").mustSucceed(t)
	for _, f := range []string{"-source", "-destination", "-annotations", "-copy", "-sign", "-aws-kms-key-arn", "-aws-region", "-aws-xray", "-debug", "Example"} {
		if !strings.Contains(r.stdout, f) {
			t.Errorf("-h does not mention %s:\n%s", f, r.stdout)
		}
	}
}

func TestCopySingleImageByteForByte(t *testing.T) {
	dst := dstRepo(t, e2e.dst.Host) + ":promoted"
	r := ocistow(t, nil, "-source", srcRef("single"), "-destination", dst, "-sign=false").mustSucceed(t)

	got := get(t, dst, nil)
	if got.Digest.String() != e2e.fixtures["single"] {
		t.Errorf("destination digest %s, want the source's %s", got.Digest, e2e.fixtures["single"])
	}
	if !strings.Contains(r.stdout, "promoted "+srcRef("single")+"@"+e2e.fixtures["single"]) {
		t.Errorf("summary does not name the source and its digest: %q", r.stdout)
	}
	// The canonical log line: one line for Copy with what was asked and done.
	var lines []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.Contains(l, "method=Copy") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("want one canonical Copy line, got %d:\n%s", len(lines), r.stderr)
	}
	for _, want := range []string{"level=INFO", "src=" + srcRef("single"), "dst=" + dst, "annotations={}", "src_digest=" + e2e.fixtures["single"], "dst_digest=" + e2e.fixtures["single"], "blobs_copied=3", "blobs_skipped=0", "blobs_mounted=0", "took="} {
		if !strings.Contains(lines[0], want) {
			t.Errorf("canonical line lacks %q: %s", want, lines[0])
		}
	}
}

func TestCopyIndexKeepsEveryDigest(t *testing.T) {
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	r := ocistow(t, nil, "-source", srcRef("multi"), "-destination", dst, "-sign=false", "-output", "json").mustSucceed(t)
	res := r.copyResult(t)

	got := get(t, dst, nil)
	if got.Digest.String() != e2e.fixtures["multi"] || res.DestinationDigest != e2e.fixtures["multi"] {
		t.Fatalf("index digest %s (result %s), want %s", got.Digest, res.DestinationDigest, e2e.fixtures["multi"])
	}
	if got.MediaType != types.DockerManifestList {
		t.Errorf("index media type %s, want the source's Docker manifest list", got.MediaType)
	}
	idx, err := got.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 || len(res.Manifests) != 2 {
		t.Fatalf("want 2 children, index has %d, result %d", len(im.Manifests), len(res.Manifests))
	}
	mediaTypes := map[types.MediaType]bool{}
	for i, d := range im.Manifests {
		child := get(t, dstRepo(t, e2e.dst.Host)+"@"+d.Digest.String(), nil)
		mediaTypes[child.MediaType] = true
		if res.Manifests[i].SourceDigest != d.Digest.String() || res.Manifests[i].DestinationDigest != d.Digest.String() {
			t.Errorf("result child %d: %+v, want source = destination = %s", i, res.Manifests[i], d.Digest)
		}
		img, err := child.Image()
		if err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range layers {
			if _, err := l.Size(); err != nil {
				t.Fatal(err)
			}
			// Reading every layer back proves each blob was copied whole.
			rc, err := l.Compressed()
			if err != nil {
				t.Fatalf("reading copied layer: %v", err)
			}
			if _, err := drain(rc); err != nil {
				t.Fatalf("copied layer does not match its digest: %v", err)
			}
		}
	}
	if !mediaTypes[types.DockerManifestSchema2] || !mediaTypes[types.OCIManifestSchema1] {
		t.Errorf("children media types %v, want one Docker and one OCI manifest", mediaTypes)
	}
	// 2 children × (2 layers + config) = 6 blobs; 2 child manifests + index.
	if res.BlobsCopied != 6 || res.ManifestsWritten != 3 {
		t.Errorf("result counts copied=%d manifests=%d, want 6 and 3", res.BlobsCopied, res.ManifestsWritten)
	}
}

func TestPlatformSelectsChildren(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	srcIdx, err := get(t, srcRef("multi"), nil).ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := srcIdx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var armDigest string
	for _, d := range sim.Manifests {
		if d.Platform.Architecture == "arm64" {
			armDigest = d.Digest.String()
		}
	}

	ocistow(t, nil, "-source", srcRef("multi"), "-destination", repo+":arm", "-sign=false", "-platform", "linux/arm64").mustSucceed(t)
	got := get(t, repo+":arm", nil)
	idx, err := got.ImageIndex()
	if err != nil {
		t.Fatalf("destination is not an index: %v", err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 || im.Manifests[0].Digest.String() != armDigest {
		t.Fatalf("destination index lists %v, want only the arm64 child %s", im.Manifests, armDigest)
	}
	if got.MediaType != types.DockerManifestList {
		t.Errorf("filtered index media type %s, want the source's", got.MediaType)
	}

	// Two platforms keep both; the variant is matched when given.
	ocistow(t, nil, "-source", srcRef("multi"), "-destination", repo+":both", "-sign=false", "-platform", "linux/arm64/v8", "-platform", "linux/amd64").mustSucceed(t)
	bothIdx, err := get(t, repo+":both", nil).ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	both, err := bothIdx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(both.Manifests) != 2 {
		t.Errorf("two platforms kept %d children", len(both.Manifests))
	}

	// A platform the source lacks is refused, naming what it has.
	r := ocistow(t, nil, "-source", srcRef("multi"), "-destination", repo+":none", "-sign=false", "-platform", "windows/amd64")
	line := r.errLine(t)
	if r.code != exitInvalid || !strings.Contains(line, "windows/amd64") || !strings.Contains(line, "linux/arm64/v8") {
		t.Errorf("exit %d, line %q: want exit 2 naming the wanted and available platforms", r.code, line)
	}
}

func TestAnnotationsAndLabelsEverywhere(t *testing.T) {
	dst := dstRepo(t, e2e.dst.Host) + ":stamped"
	r := ocistow(t, nil, "-source", srcRef("multi"), "-destination", dst, "-sign=false",
		"-annotations", "team=foo", "-annotations", "owner=martin", "-output", "json").mustSucceed(t)
	res := r.copyResult(t)
	want := map[string]string{"team": "foo", "owner": "martin"}

	got := get(t, dst, nil)
	if got.Digest.String() == e2e.fixtures["multi"] {
		t.Fatal("stamped index has the source's digest")
	}
	if res.DestinationDigest != got.Digest.String() {
		t.Errorf("result destination digest %s, registry has %s", res.DestinationDigest, got.Digest)
	}
	idx, err := got.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	assertContains(t, "index annotations", im.Annotations, want)

	srcIdx, err := get(t, srcRef("multi"), nil).ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	sim, err := srcIdx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range im.Manifests {
		if d.Digest == sim.Manifests[i].Digest {
			t.Errorf("child %d still points at the unstamped source child", i)
		}
		if d.MediaType != sim.Manifests[i].MediaType || d.Platform.String() != sim.Manifests[i].Platform.String() {
			t.Errorf("child %d descriptor changed media type or platform: %+v", i, d)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		m, err := img.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		assertContains(t, fmt.Sprintf("child %d annotations", i), m.Annotations, want)
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		assertContains(t, fmt.Sprintf("child %d labels", i), cf.Config.Labels, map[string]string{"team": "foo", "owner": "martin", "existing": "keep"})

		srcImg, err := srcIdx.Image(sim.Manifests[i].Digest)
		if err != nil {
			t.Fatal(err)
		}
		sm, err := srcImg.Manifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(sm.Layers) != len(m.Layers) {
			t.Fatalf("child %d layer count changed", i)
		}
		for j := range sm.Layers {
			if sm.Layers[j].Digest != m.Layers[j].Digest || sm.Layers[j].MediaType != m.Layers[j].MediaType {
				t.Errorf("child %d layer %d changed: %s -> %s", i, j, sm.Layers[j].Digest, m.Layers[j].Digest)
			}
		}
		if sm.Config.Digest == m.Config.Digest {
			t.Errorf("child %d config digest unchanged although labels were added", i)
		}
		if cd, err := img.ConfigName(); err != nil || cd != m.Config.Digest {
			t.Errorf("child %d config digest %s does not match its manifest's %s (%v)", i, cd, m.Config.Digest, err)
		}
	}

	// -label and -manifest-annotation add to one place only.
	one := dstRepo(t, e2e.dst.Host) + ":split"
	ocistow(t, nil, "-source", srcRef("single"), "-destination", one, "-sign=false",
		"-label", "only.label=1", "-manifest-annotation", "only.annotation=2").mustSucceed(t)
	img, err := get(t, one, nil).Image()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if m.Annotations["only.annotation"] != "2" || m.Annotations["only.label"] != "" {
		t.Errorf("manifest annotations %v: want only.annotation alone", m.Annotations)
	}
	if cf.Config.Labels["only.label"] != "1" || cf.Config.Labels["only.annotation"] != "" || cf.Config.Labels["team"] != "upstream" {
		t.Errorf("config labels %v: want only.label added beside the existing team=upstream", cf.Config.Labels)
	}
}

func TestAnnotationsFromEnvironment(t *testing.T) {
	dst := dstRepo(t, e2e.dst.Host) + ":env"
	ocistow(t, []string{"SOURCE=" + srcRef("single"), "DESTINATION=" + dst, "SIGN=false", "ANNOTATIONS=team=foo,url=https://x/?a=1,2"}).mustSucceed(t)
	img, err := get(t, dst, nil).Image()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	assertContains(t, "annotations", m.Annotations, map[string]string{"team": "foo", "url": "https://x/?a=1,2"})

	// A flag wins over its variable.
	r := ocistow(t, []string{"SOURCE=" + srcRef("nope"), "DESTINATION=" + dst, "SIGN=false"}, "-source", srcRef("single"))
	r.mustSucceed(t)
}

func TestSkipsBlobsTheDestinationHas(t *testing.T) {
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	repo := dstRepo(t, front.Host)
	uploads := func() int {
		return front.Count(func(r testenv.Request) bool {
			return (r.Method == http.MethodPatch || r.Method == http.MethodPut) && strings.Contains(r.Path, "/blobs/uploads/")
		})
	}
	patches := func() int { return front.Count(func(r testenv.Request) bool { return r.Method == http.MethodPatch }) }

	first := ocistow(t, nil, "-source", srcRef("big"), "-destination", repo+":a", "-sign=false", "-output", "json").mustSucceed(t).copyResult(t)
	if first.BlobsCopied != 4 || first.BlobsSkipped != 0 {
		t.Errorf("first copy: copied %d skipped %d, want 4 and 0", first.BlobsCopied, first.BlobsSkipped)
	}
	if first.BytesCopied < 9<<20 {
		t.Errorf("first copy reports %d bytes, want the ~9 MiB of the image", first.BytesCopied)
	}
	// Each blob: one PUT with its bytes, which commits it (Distribution
	// takes monolithic uploads).
	if n, p := uploads(), patches(); n != 4 || p != 0 {
		t.Errorf("first copy made %d upload requests (%d PATCHes), want 4 PUTs (4 blobs)", n, p)
	}

	before := uploads()
	second := ocistow(t, nil, "-source", srcRef("big"), "-destination", repo+":b", "-sign=false", "-output", "json").mustSucceed(t).copyResult(t)
	if n := uploads() - before; n != 0 {
		t.Errorf("second copy into the same repository made %d upload requests, want 0", n)
	}
	if second.BlobsCopied != 0 || second.BlobsSkipped != 4 || second.BytesCopied != 0 {
		t.Errorf("second copy: copied %d skipped %d bytes %d, want 0, 4, 0", second.BlobsCopied, second.BlobsSkipped, second.BytesCopied)
	}
}

func TestMountsAcrossRepositoriesOfOneRegistry(t *testing.T) {
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	src := front.Host + "/src/big:v1"
	dst := dstRepo(t, front.Host) + ":mounted"

	res := ocistow(t, nil, "-source", src, "-destination", dst, "-sign=false", "-output", "json").mustSucceed(t).copyResult(t)
	if res.BlobsMounted != 4 || res.BlobsCopied != 0 {
		t.Errorf("mounted %d copied %d, want 4 and 0", res.BlobsMounted, res.BlobsCopied)
	}
	mounts := front.Count(func(r testenv.Request) bool {
		return r.Method == http.MethodPost && strings.Contains(r.Query, "mount=") && r.Status == http.StatusCreated
	})
	patches := front.Count(func(r testenv.Request) bool { return r.Method == http.MethodPatch })
	if mounts != 4 || patches != 0 {
		t.Errorf("registry saw %d mounts and %d PATCH uploads, want 4 and 0", mounts, patches)
	}
	if get(t, dst, nil).Digest.String() != e2e.fixtures["big"] {
		t.Error("mounted copy has another digest")
	}
}

func TestDockerConfigCredentials(t *testing.T) {
	dst := dstRepo(t, e2e.auth.Host) + ":v1"

	// Without credentials the registry refuses, and ocistow says so.
	r := ocistow(t, nil, "-source", srcRef("single"), "-destination", dst, "-sign=false")
	line := r.errLine(t)
	if r.code != exitFailed || !strings.Contains(line, "401") || !strings.Contains(line, e2e.auth.Host) {
		t.Errorf("exit %d, line %q: want exit 1 naming the registry and its 401", r.code, line)
	}
	if !strings.Contains(r.stderr, "error_type=Unauthorized") {
		t.Errorf("canonical line lacks error_type=Unauthorized:\n%s", r.stderr)
	}
	if ts := tags(t, dstRepo(t, e2e.auth.Host), basic(aliceUser, alicePass)); len(ts) != 0 {
		t.Errorf("refused copy left tags %v", ts)
	}

	cfg := dockerConfig(t, e2e.auth.Host, aliceUser, alicePass)
	r = ocistow(t, []string{"DOCKER_CONFIG=" + cfg}, "-source", srcRef("single"), "-destination", dst, "-sign=false", "-debug").mustSucceed(t)
	if got := get(t, dst, basic(aliceUser, alicePass)); got.Digest.String() != e2e.fixtures["single"] {
		t.Errorf("authenticated copy digest %s", got.Digest)
	}
	// Debug output shows requests but never the credentials.
	if !strings.Contains(r.stderr, "msg=http") {
		t.Errorf("-debug logged no requests:\n%s", r.stderr)
	}
	basicHeader := "Basic " + "YWxpY2U6" // base64 of "alice:" prefix
	for _, secret := range []string{alicePass, basicHeader, "Authorization"} {
		if strings.Contains(r.stderr+r.stdout, secret) {
			t.Errorf("output contains %q", secret)
		}
	}
}

func TestECRCredentialsFromAWS(t *testing.T) {
	ecrEnv, calls := fakeECRAPI(t)
	dst := dstRepo(t, e2e.auth.Host) + ":v1"
	r := ocistow(t, append(ecrEnv, awsKeys...), "-source", srcRef("single"), "-destination", dst, "-sign=false", "-ecr-registry", e2e.auth.Host, "-debug").mustSucceed(t)
	if calls.Load() == 0 {
		t.Fatal("the ECR API was never asked for a token")
	}
	if got := get(t, dst, basic(ecrUser, ecrPass)); got.Digest.String() != e2e.fixtures["single"] {
		t.Errorf("copy digest %s", got.Digest)
	}
	for _, secret := range []string{ecrPass, awsSecretKey, encodeToken(ecrUser, ecrPass)} {
		if strings.Contains(r.stderr+r.stdout, secret) {
			t.Errorf("output contains the secret %q", secret)
		}
	}

	// Without AWS credentials the failure names ECR and the registry.
	r = ocistow(t, ecrEnv, "-source", srcRef("single"), "-destination", dst+"x", "-sign=false", "-ecr-registry", e2e.auth.Host)
	line := r.errLine(t)
	if r.code == 0 || !strings.Contains(line, "ECR") || !strings.Contains(line, e2e.auth.Host) {
		t.Errorf("exit %d, line %q: want a failure naming ECR credentials for the registry", r.code, line)
	}
}

func encodeToken(user, pass string) string {
	return base64Std(user + ":" + pass)
}

func TestRetriesTransientFailures(t *testing.T) {
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	// The first three requests after the ping (the manifest and the first
	// blobs) fail: 503 with Retry-After, 429, a reset connection.
	var faults frontFaults
	var n atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/" {
			return false
		}
		i := n.Add(1)
		if i > 3 {
			return false
		}
		// Recorded before the fault is sent: net/http resends a HEAD on a
		// fresh connection at once when a reused one is reset.
		faults.add(r)
		switch i {
		case 1:
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusServiceUnavailable)
		case 2:
			w.WriteHeader(http.StatusTooManyRequests)
		case 3:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err != nil {
				t.Errorf("hijacking: %v", err)
				return false
			}
			conn.Close()
		}
		return true
	})
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	ocistow(t, nil, "-source", front.Host+"/src/big:v1", "-destination", dst, "-sign=false").mustSucceed(t)
	if got := get(t, dst, nil); got.Digest.String() != e2e.fixtures["big"] {
		t.Errorf("copy after retries has digest %s", got.Digest)
	}
	list := faults.all()
	if len(list) != 3 {
		t.Fatalf("injected %d faults, want 3", len(list))
	}
	// Each faulted request was really sent again, and the one answered
	// with Retry-After: 2 no sooner than 2 s later.
	for i, f := range list {
		again := retriedAfter(front, f)
		if again.IsZero() {
			t.Errorf("fault %d (%s %s) was never retried: the front saw it once", i+1, f.method, f.path)
			continue
		}
		if i == 0 && again.Sub(f.at) < 2*time.Second {
			t.Errorf("%s %s retried %v after a 503 with Retry-After: 2", f.method, f.path, again.Sub(f.at))
		}
	}
}

func TestFailedCopyLeavesTagUntouched(t *testing.T) {
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	repo := dstRepo(t, front.Host)
	ocistow(t, nil, "-source", srcRef("other"), "-destination", repo+":stable", "-sign=false").mustSucceed(t)

	// Every blob upload of the next promotion fails after the first one
	// succeeded: the destination is left half-copied, but the tag must not
	// move.
	var uploads atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if testenv.IsUpload(r) && uploads.Add(1) > 1 {
			http.Error(w, "storage on fire", http.StatusInternalServerError)
			return true
		}
		return false
	})
	r := ocistow(t, nil, "-source", srcRef("big"), "-destination", repo+":stable", "-sign=false", "-jobs", "1")
	line := r.errLine(t)
	if r.code != exitFailed || !strings.Contains(line, "destination") || !strings.Contains(line, "500") {
		t.Errorf("exit %d, line %q: want exit 1 naming the destination and its 500", r.code, line)
	}
	if uploads.Load() < 2 {
		t.Fatalf("the failing upload was never reached (%d uploads)", uploads.Load())
	}
	front.SetHook(nil)
	if got := get(t, repo+":stable", nil); got.Digest.String() != e2e.fixtures["other"] {
		t.Errorf("tag moved to %s after a failed promotion, want %s", got.Digest, e2e.fixtures["other"])
	}
}

func assertContains(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: %q=%q, want %q (all: %v)", what, k, got[k], v, got)
		}
	}
}

func TestMovingATagIsReportedOrRefused(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	ocistow(t, nil, "-source", srcRef("other"), "-destination", repo+":stable", "-sign=false").mustSucceed(t)

	r := ocistow(t, nil, "-source", srcRef("single"), "-destination", repo+":stable", "-sign=false", "-immutable")
	line := r.errLine(t)
	if r.code != exitInvalid || !strings.Contains(line, e2e.fixtures["other"]) || !strings.Contains(line, "-immutable") {
		t.Errorf("exit %d, line %q: want exit 2 naming the current digest and -immutable", r.code, line)
	}
	if !strings.Contains(r.stderr, "error_type=TagImmutable") {
		t.Errorf("canonical line lacks error_type=TagImmutable:\n%s", r.stderr)
	}
	if got := get(t, repo+":stable", nil).Digest.String(); got != e2e.fixtures["other"] {
		t.Errorf("-immutable let the tag move to %s", got)
	}
	// The same digest again is no move: -immutable lets it through.
	ocistow(t, nil, "-source", srcRef("other"), "-destination", repo+":stable", "-sign=false", "-immutable").mustSucceed(t)

	r = ocistow(t, nil, "-source", srcRef("single"), "-destination", repo+":stable", "-sign=false", "-output", "json").mustSucceed(t)
	var res struct {
		PreviousDigest string `json:"previousDigest"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatal(err)
	}
	if res.PreviousDigest != e2e.fixtures["other"] || !strings.Contains(r.stderr, "tag_moved_from="+e2e.fixtures["other"]) {
		t.Errorf("previousDigest %q; log:\n%s\nwant the move from %s reported", res.PreviousDigest, r.stderr, e2e.fixtures["other"])
	}
}

// A promotion killed with SIGKILL in the middle of its blobs leaves the tag
// as it was; running it again uploads only what was not yet complete.
func TestKilledPromotionResumes(t *testing.T) {
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	// A repository of its own each time: the test needs blobs to upload.
	repo := fmt.Sprintf("%s-%d", dstRepo(t, front.Host), time.Now().UnixNano())
	ocistow(t, nil, "-source", srcRef("other"), "-destination", repo+":stable", "-sign=false").mustSucceed(t)

	// Uploads finish one at a time; after the second finished upload, the
	// next one hangs until the process is killed.
	var commits atomic.Int32
	hang := make(chan struct{})
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && strings.Contains(r.URL.RawQuery, "digest=") && commits.Add(1) > 2 {
			select {
			case <-hang:
			case <-r.Context().Done():
			}
			http.Error(w, "gone", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	cmd := exec.Command(e2e.bin, "-source", srcRef("big"), "-destination", repo+":stable", "-sign=false", "-jobs", "1")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "AWS_EC2_METADATA_DISABLED=true"}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	// Wait until the registry committed two blobs and the third hangs.
	for commits.Load() < 3 {
		select {
		case err := <-done:
			t.Fatalf("ocistow ended before it could be killed: %v", err)
		case <-time.After(20 * time.Millisecond):
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-done
	close(hang)
	front.SetHook(nil)
	if got := get(t, repo+":stable", nil).Digest.String(); got != e2e.fixtures["other"] {
		t.Fatalf("after SIGKILL the tag points at %s, want the old %s", got, e2e.fixtures["other"])
	}

	res := ocistow(t, nil, "-source", srcRef("big"), "-destination", repo+":stable", "-sign=false", "-output", "json").mustSucceed(t).copyResult(t)
	if res.BlobsSkipped != 2 || res.BlobsCopied != 2 {
		t.Errorf("resumed run copied %d and skipped %d blobs, want 2 and 2 (the two committed before the kill)", res.BlobsCopied, res.BlobsSkipped)
	}
	if get(t, repo+":stable", nil).Digest.String() != e2e.fixtures["big"] {
		t.Error("the resumed promotion did not complete")
	}
}

// -immutable fails closed: a registry that will not say where the tag
// points does not get it moved.
func TestImmutableFailsClosed(t *testing.T) {
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	repo := dstRepo(t, front.Host)
	ocistow(t, nil, "-source", srcRef("other"), "-destination", repo+":stable", "-sign=false").mustSucceed(t)
	// The registry refuses to say where the tag points (a read of the tag,
	// GET or HEAD, is forbidden), but would take the writes.
	tagPath := "/v2/" + strings.TrimPrefix(repo, front.Host+"/") + "/manifests/stable"
	var hidden atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if (r.Method == http.MethodHead || r.Method == http.MethodGet) && r.URL.Path == tagPath {
			hidden.Add(1)
			http.Error(w, `{"errors":[{"code":"DENIED","message":"no"}]}`, http.StatusForbidden)
			return true
		}
		return false
	})
	r := ocistow(t, nil, "-source", srcRef("single"), "-destination", repo+":stable", "-sign=false", "-immutable", "-o", "json")
	line := r.errLine(t)
	if r.code != exitFailed || !strings.Contains(line, "-immutable") || !strings.Contains(line, "403") {
		t.Errorf("exit %d, line %q: want exit %d naming -immutable and the 403\n%s", r.code, line, exitFailed, r.stderr)
	}
	if hidden.Load() == 0 {
		t.Fatal("the tag was never read: the test hid nothing")
	}
	if !strings.Contains(r.stderr, "error_type=Unauthorized") {
		t.Errorf("want error_type=Unauthorized on the canonical line:\n%s", r.stderr)
	}
	front.SetHook(nil)
	if got := get(t, repo+":stable", nil).Digest.String(); got != e2e.fixtures["other"] {
		t.Errorf("tag moved to %s behind a registry that hid it", got)
	}
}

func TestShortOutputFlagWinsOverTheEnvironment(t *testing.T) {
	r := ocistow(t, []string{"OUTPUT=text"}, "-source", srcRef("single"), "-destination", dstRepo(t, e2e.dst.Host)+":v1", "-sign=false", "-o", "json").mustSucceed(t)
	if !strings.HasPrefix(strings.TrimSpace(r.stdout), "{") {
		t.Errorf("-o json lost to OUTPUT=text: %s", r.stdout)
	}
}

// TestDestinationWithoutTagAndJSONLogs: a destination without a tag gets
// latest, and -log-format json writes the canonical line as one JSON
// object with the same fields.
func TestDestinationWithoutTagAndJSONLogs(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	r := ocistow(t, nil, "-source", srcRef("single"), "-destination", repo, "-sign=false", "-log-format", "json").mustSucceed(t)
	if got := get(t, repo+":latest", nil).Digest.String(); got != e2e.fixtures["single"] {
		t.Errorf("%s:latest is %s, want %s", repo, got, e2e.fixtures["single"])
	}
	var line map[string]any
	for _, l := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
		if strings.Contains(l, `"msg":"Copy"`) {
			if err := json.Unmarshal([]byte(l), &line); err != nil {
				t.Fatalf("the Copy line is not JSON: %v\n%s", err, l)
			}
		}
	}
	if line == nil || line["level"] != "INFO" || line["dst"] != repo || line["dst_digest"] != e2e.fixtures["single"] || line["up_to_date"] != false {
		t.Errorf("JSON Copy line %v: want level, dst as given, dst_digest, up_to_date", line)
	}
}
