package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/creack/pty"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/ocistow/ocistow/internal/testenv"
)

// pushTags pushes a small image under each of tags in repo on the source
// registry; images differ by seed.
func pushTags(t *testing.T, repo string, seed int64, tags ...string) {
	t.Helper()
	for i, tag := range tags {
		img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 4 << 10, Seed: seed + int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := testenv.Push(t.Context(), e2e.src.Host+"/"+repo+":"+tag, img); err != nil {
			t.Fatal(err)
		}
	}
}

// promotionFile writes body (with SRC and DST replaced) to a file.
func promotionFile(t *testing.T, body, src, dst string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	body = strings.NewReplacer("SRC", src, "DST", dst).Replace(body)
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

type syncResult struct {
	Items []struct {
		SrcImageRef, DstImageRef string
		Status                   string `json:"status"`
		Error                    string `json:"error"`
		ErrorType                string `json:"errorType"`
		Previous                 string `json:"previousDigest"`
	} `json:"items"`
	Summary struct {
		Images          int            `json:"images"`
		Statuses        map[string]int `json:"statuses"`
		SourcePulls     int            `json:"sourcePulls"`
		SignaturesAdded int            `json:"signaturesAdded"`
	} `json:"summary"`
}

func parseSync(t *testing.T, r result) syncResult {
	t.Helper()
	var out syncResult
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("parsing sync -o json: %v\n%s\n%s", err, r.stdout, r.stderr)
	}
	return out
}

// statuses maps each destination to its status.
func (s syncResult) statuses() map[string]string {
	m := map[string]string{}
	for _, it := range s.Items {
		m[it.DstImageRef] = it.Status
	}
	return m
}

const fleetFile = `defaults:
  annotations: {team: platform}
  sign: false
promotions:
  - source: SRC/src/single:v1
    destination: DST/base/single
  - source: SRC/fleet/alpine
    destination: DST/base/alpine
    tags:
      semver: '>=3.19'
      latest: 2
  - source: SRC/fleet/tools
    destination: DST/mirror/tools
    tags: [v1, v2]
    annotations: {owner: observability}
    key: awskms:///alias/` + ecKey + `
    sign: true
  - source: SRC/fleet/tools:v3
    destination: DST/pinned/tools
    immutable: true
`

func TestSyncPromotesAFleet(t *testing.T) {
	pushTags(t, "fleet/alpine", 100, "3.18", "3.19", "3.20", "3.20.1", "3.19-amd64", "3.21.0-rc.1", "latest", "edge")
	pushTags(t, "fleet/tools", 200, "v1", "v2", "v3")
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	dst := dstRepo(t, e2e.dst.Host)
	file := promotionFile(t, fleetFile, front.Host, dst)

	// The plan: everything is new, nothing is written, nothing pulled.
	plan := ocistow(t, e2e.kms.Env(), "sync", "-f", file, "-dry-run").mustSucceed(t)
	for _, want := range []string{"new", "src/single:v1", "fleet/alpine:3.20.1", "fleet/alpine:3.20", "fleet/tools:v2", "pinned/tools:v3", "6 images: 6 new"} {
		if !strings.Contains(plan.stdout, want) {
			t.Errorf("plan lacks %q:\n%s", want, plan.stdout)
		}
	}
	if strings.Contains(plan.stdout, "3.19-amd64") || strings.Contains(plan.stdout, "3.21.0-rc.1") || strings.Contains(plan.stdout, ":3.19 ") {
		t.Errorf("plan selected a tag the filter excludes:\n%s", plan.stdout)
	}
	if n := manifestGets(front, "fleet/alpine") + manifestGets(front, "fleet/tools") + manifestGets(front, "src/single"); n != 0 {
		t.Errorf("the plan pulled %d manifests from the source", n)
	}
	if ts := tags(t, dst+"/base/alpine", nil); len(ts) != 0 {
		t.Errorf("the plan wrote tags %v", ts)
	}
	var todo []map[string]any
	if err := json.Unmarshal([]byte(ocistow(t, e2e.kms.Env(), "sync", "-f", file, "-dry-run", "-o", "json").mustSucceed(t).stdout), &todo); err != nil {
		t.Fatal(err)
	}
	if len(todo) != 6 || todo[0]["SrcImageRef"] != front.Host+"/src/single:v1" || todo[0]["DstImageRef"] != dst+"/base/single:v1" {
		t.Errorf("plan items %v: want 6 single-promotion requests", todo)
	}

	// The sync.
	pings := func() int {
		return front.Count(func(q testenv.Request) bool { return q.Method == http.MethodGet && q.Path == "/v2/" })
	}
	pinged := pings()
	r := ocistow(t, e2e.kms.Env(), "sync", "-f", file, "-o", "json", "-parallel", "3").mustSucceed(t)
	// One ping (and token) per source repository, shared by its images.
	if n := pings() - pinged; n > 4 {
		t.Errorf("the sync pinged the source %d times for 6 images from 4 repositories", n)
	}
	res := parseSync(t, r)
	if res.Summary.Images != 6 || res.Summary.Statuses["promoted"] != 6 || res.Summary.SignaturesAdded != 2 {
		t.Errorf("sync summary %+v: want 6 promoted, 2 signatures (the tools entry signs)", res.Summary)
	}
	if got := tags(t, dst+"/base/alpine", nil); !slices.Equal(got, []string{"3.20", "3.20.1"}) {
		t.Errorf("alpine tags %v, want [3.20 3.20.1]", got)
	}
	if anns := annotationsOf(t, dst+"/mirror/tools:v1"); anns["team"] != "platform" || anns["owner"] != "observability" {
		t.Errorf("tools annotations %v: want defaults merged with the entry's", anns)
	}
	if v := cosignVerify(t, "awskms:///alias/"+ecKey, dst+"/mirror/tools:v2", "owner=observability"); v.code != 0 {
		t.Errorf("cosign verify of a synced image: %s", v.stderr)
	}
	if n := strings.Count(r.stderr, "method=Copy"); n != 6 {
		t.Errorf("%d canonical Copy lines, want one per image:\n%s", n, r.stderr)
	}
	// "the same canonical Copy, Sign and Referrers lines per image,
	// after a Check line": each image's Check line comes before its Copy
	// line; the two signed images have a Sign line each, and every image
	// a Referrers line (referrers are on by default).
	checkedAt, copiedAt := map[string]int{}, map[string]int{}
	dstField := regexp.MustCompile(` dst=(\S+)`)
	for i, line := range strings.Split(r.stderr, "\n") {
		m := dstField.FindStringSubmatch(line)
		switch {
		case m == nil:
		case strings.Contains(line, "msg=Check "):
			checkedAt[m[1]] = i
		case strings.Contains(line, "msg=Copy "):
			copiedAt[m[1]] = i
		}
	}
	if len(checkedAt) != 6 || len(copiedAt) != 6 {
		t.Errorf("%d images with a Check line and %d with a Copy line, want 6 of each:\n%s", len(checkedAt), len(copiedAt), r.stderr)
	}
	for d, c := range copiedAt {
		if at, ok := checkedAt[d]; !ok || at > c {
			t.Errorf("%s: its Copy line (line %d) is not preceded by its Check line (found: %v, line %d)", d, c, ok, at)
		}
	}
	if n := strings.Count(r.stderr, "method=Sign "); n != 2 {
		t.Errorf("%d canonical Sign lines, want one per signed image (2):\n%s", n, r.stderr)
	}
	if n := strings.Count(r.stderr, "method=Referrers "); n != 6 {
		t.Errorf("%d canonical Referrers lines, want one per image:\n%s", n, r.stderr)
	}

	// The same again: all up to date, and not one pull; each image is
	// resolved once (its promotion starts from its check). (The referrers
	// step asks for the referrers and cosign tags, sha256-…, too.)
	heads := func() int {
		return front.Count(func(q testenv.Request) bool {
			return q.Method == http.MethodHead && strings.Contains(q.Path, "/manifests/") && !strings.Contains(q.Path, "/manifests/sha256-")
		})
	}
	gets := func() int {
		return front.Count(func(q testenv.Request) bool {
			return q.Method == http.MethodGet && strings.Contains(q.Path, "/manifests/")
		})
	}
	before, headsBefore := gets(), heads()
	again := parseSync(t, ocistow(t, e2e.kms.Env(), "sync", "-f", file, "-o", "json").mustSucceed(t))
	after := gets()
	if again.Summary.SignaturesAdded != 0 {
		t.Errorf("re-sync added %d signatures; the signed images were signed already", again.Summary.SignaturesAdded)
	}
	if again.Summary.Statuses["up to date"] != 6 || again.Summary.SourcePulls != 0 || after != before {
		t.Errorf("re-sync: %+v with %d manifest GETs at the source: want 6 up to date and none", again.Summary, after-before)
	}
	if n := heads() - headsBefore; n != 6 {
		t.Errorf("re-sync: %d manifest HEADs at the source for 6 images, want 6", n)
	}

	// Tags that moved upstream, seen by the plan: one moves, the
	// immutable one is refused, the rest stay.
	pushTags(t, "fleet/alpine", 300, "3.20")
	pushTags(t, "fleet/tools", 400, "v3")
	moved := ocistow(t, e2e.kms.Env(), "sync", "-f", file, "-dry-run")
	if moved.code != exitFailed || !strings.Contains(moved.stdout, "6 images: 1 tag moves, 4 up to date, 1 refused (immutable)") {
		t.Errorf("plan after upstream moves: exit %d\n%s", moved.code, moved.stdout)
	}
	// Each image's check has its canonical Check line; the moved tag's
	// says where it moves from.
	alpine := get(t, dst+"/base/alpine:3.20", nil).Digest.String()
	checks := 0
	for _, line := range strings.Split(moved.stderr, "\n") {
		if !strings.Contains(line, "msg=Check") {
			continue
		}
		checks++
		for _, field := range []string{"src=", "dst=", "src_digest=sha256:", "up_to_date=", "src_pulls=0", "took="} {
			if !strings.Contains(line, field) {
				t.Errorf("Check line lacks %s: %s", field, line)
			}
		}
		if strings.Contains(line, "dst="+dst+"/base/alpine:3.20 ") && !strings.Contains(line, "tag_moves_from="+alpine) {
			t.Errorf("the moved tag's Check line lacks tag_moves_from=%s: %s", alpine, line)
		}
	}
	if checks != 6 {
		t.Errorf("%d Check lines in the plan, want one per image:\n%s", checks, moved.stderr)
	}
	pinned := get(t, dst+"/pinned/tools:v3", nil).Digest.String()
	final := parseSync(t, ocistow(t, e2e.kms.Env(), "sync", "-f", file, "-o", "json"))
	if final.Summary.Statuses["promoted"] != 1 || final.Summary.Statuses["refused (immutable)"] != 1 {
		t.Errorf("sync after upstream moves: %+v", final.Summary)
	}
	if got := get(t, dst+"/pinned/tools:v3", nil).Digest.String(); got != pinned {
		t.Errorf("an immutable tag moved from %s to %s", pinned, got)
	}
}

func TestSyncGoesOnWhenOneImageFails(t *testing.T) {
	pushTags(t, "fleet/many", 400, "1", "2", "3", "4", "5", "6", "7", "8")
	dst := dstRepo(t, e2e.dst.Host)
	body := `defaults: {sign: false}
promotions:
  - source: SRC/fleet/many
    destination: DST/all
    tags: {allow: ['\d']}
  - source: SRC/fleet/nothing-here:v1
    destination: DST/missing:v1
  - source: SRC/fleet/nothing-at-all
    destination: DST/missing-too
    tags: {latest: 1}
`
	file := promotionFile(t, body, e2e.src.Host, dst)
	r := ocistow(t, nil, "sync", "-f", file, "-o", "json", "-parallel", "4")
	if r.code != exitFailed {
		t.Fatalf("exit %d, want %d (some failed)\n%s\n%s", r.code, exitFailed, r.stdout, r.stderr)
	}
	res := parseSync(t, r)
	if res.Summary.Statuses["promoted"] != 8 || res.Summary.Statuses["source missing"] != 2 {
		t.Errorf("summary %+v: want 8 promoted into one repository, 2 sources missing", res.Summary)
	}
	if got := tags(t, dst+"/all", nil); len(got) != 8 {
		t.Errorf("destination tags %v, want 8", got)
	}
	for _, it := range res.Items {
		if it.Status == "source missing" && (it.ErrorType != "SourceNotFound" || it.Error == "") {
			t.Errorf("missing item %+v: want errorType SourceNotFound and a message", it)
		}
	}
	text := ocistow(t, nil, "sync", "-f", file)
	if text.code != exitFailed || !strings.Contains(text.stdout, "source missing") || !strings.Contains(text.stdout, "10 images: 8 up to date, 2 source missing") {
		t.Errorf("exit %d, table:\n%s", text.code, text.stdout)
	}
}

// TestSyncGoesOnWhenTagsCannotBeListed: a source repository whose registry
// refuses to list its tags fails its own entry, not the sync.
func TestSyncGoesOnWhenTagsCannotBeListed(t *testing.T) {
	pushTags(t, "fleet/unlisted", 450, "1", "2")
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	var listed atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/v2/fleet/unlisted/tags/list" {
			listed.Add(1)
			http.Error(w, `{"errors":[{"code":"DENIED","message":"listing refused"}]}`, http.StatusForbidden)
			return true
		}
		return false
	})
	dst := dstRepo(t, e2e.dst.Host)
	body := `defaults: {sign: false}
promotions:
  - source: SRC/fleet/unlisted
    destination: DST/unlisted
    tags: {latest: 2}
  - source: SRC/src/single:v1
    destination: DST/single:v1
`
	r := ocistow(t, nil, "sync", "-f", promotionFile(t, body, front.Host, dst), "-o", "json")
	if r.code != exitFailed {
		t.Fatalf("exit %d, want %d (one entry failed, the other promoted)\n%s\n%s", r.code, exitFailed, r.stdout, r.stderr)
	}
	if listed.Load() == 0 {
		t.Fatal("the tags were never listed: the test refused nothing")
	}
	res := parseSync(t, r)
	if got := res.statuses(); got[dst+"/single:v1"] != "promoted" || got[dst+"/unlisted"] != "failed" || len(got) != 2 {
		t.Errorf("statuses %v: want single promoted and the unlisted entry failed", got)
	}
	for _, it := range res.Items {
		if it.DstImageRef == dst+"/unlisted" && (it.ErrorType != "Unauthorized" || !strings.Contains(it.Error, "listing the tags of") || !strings.Contains(it.Error, "403")) {
			t.Errorf("unlisted entry %+v: want errorType Unauthorized and the listing's 403", it)
		}
	}
}

// TestSyncRefusesOverlappingSelections: two tag selections that, once
// listed, pick the same destination tag are refused before anything is
// written (the parser cannot see it without the registry).
func TestSyncRefusesOverlappingSelections(t *testing.T) {
	pushTags(t, "fleet/overlap-a", 460, "1.0", "2.0")
	pushTags(t, "fleet/overlap-b", 470, "2.0", "3.0")
	dst := dstRepo(t, e2e.dstFront.Host)
	body := `defaults: {sign: false}
promotions:
  - source: SRC/fleet/overlap-a
    destination: DST/x
    tags: {semver: '>=1'}
  - source: SRC/fleet/overlap-b
    destination: DST/x
    tags: {semver: '>=2'}
`
	file := promotionFile(t, body, e2e.src.Host, dst)
	for _, args := range [][]string{{"sync", "-f", file}, {"sync", "-f", file, "-dry-run"}} {
		r := ocistow(t, nil, args...)
		if r.code != exitInvalid {
			t.Errorf("%v: exit %d, want %d", args, r.code, exitInvalid)
		}
		r.refused(t, []string{"fleet.yaml: line 6:", dst + "/x:2.0", "also written by the promotion at line 3"}, dst+"/x")
	}
}

func TestSyncRefusesBadInput(t *testing.T) {
	dst := dstRepo(t, e2e.dstFront.Host)
	for _, tc := range []struct {
		name, body string
		args       []string
		want       []string
	}{
		{"no file", "", nil, []string{"-f FILE"}},
		{"no key", "promotions:\n  - source: SRC/src/single:v1\n    destination: DST/x:v1\n", nil, []string{"signing needs a key"}},
		{"invalid file", "promotions:\n  - source: SRC/src/single:v1\n    destination: DST/x:v1\n    annotation: {team: a}\n", nil, []string{"fleet.yaml:4:", `unknown key "annotation"`}},
		{"key that cannot sign", "promotions:\n  - source: SRC/src/single:v1\n    destination: DST/x:v1\n    key: alias/" + disabledKey + "\n", nil, []string{disabledKey, "Disabled"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"sync"}
			if tc.body != "" {
				args = append(args, "-f", promotionFile(t, tc.body, e2e.src.Host, dst))
			}
			r := ocistow(t, e2e.kms.Env(), append(args, tc.args...)...)
			if r.code != exitInvalid {
				t.Errorf("exit %d, want %d", r.code, exitInvalid)
			}
			r.refused(t, tc.want, dst+"/x")
		})
	}
}

func TestSyncDefersWhenPullsRunOut(t *testing.T) {
	pushTags(t, "fleet/limited", 500, "1", "2", "3", "4", "5")
	dst := dstRepo(t, e2e.dst.Host)
	// Tag 4 is promoted already: it needs no pull.
	ocistow(t, nil, "-source", e2e.src.Host+"/fleet/limited:4", "-destination", dst+"/limited:4", "-sign=false").mustSucceed(t)

	// A source that meters pulls as Docker Hub does: each manifest GET
	// spends one, and every manifest answer, HEADs included, says how
	// many are left.
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	var left atomic.Int32
	left.Store(4)
	front.SetModify(func(resp *http.Response) error {
		if !strings.Contains(resp.Request.URL.Path, "/manifests/") {
			return nil
		}
		if resp.Request.Method == http.MethodGet && resp.StatusCode == http.StatusOK {
			left.Add(-1)
		}
		resp.Header.Set("Ratelimit-Limit", "100;w=21600")
		resp.Header.Set("Ratelimit-Remaining", fmt.Sprintf("%d;w=21600", left.Load()))
		return nil
	})
	file := promotionFile(t, "defaults: {sign: false}\npromotions:\n  - source: SRC/fleet/limited\n    destination: DST/limited\n    tags: ['1', '2', '3', '4', '5']\n", front.Host, dst)
	r := ocistow(t, nil, "sync", "-f", file, "-o", "json", "-parallel", "1", "-min-pulls", "2")
	if r.code != exitDeferred {
		t.Fatalf("exit %d, want %d (some deferred, none failed)\n%s\n%s", r.code, exitDeferred, r.stdout, r.stderr)
	}
	res := parseSync(t, r)
	want := map[string]string{dst + "/limited:1": "promoted", dst + "/limited:2": "promoted", dst + "/limited:3": "promoted", dst + "/limited:4": "up to date", dst + "/limited:5": "deferred"}
	if got := res.statuses(); !maps.Equal(got, want) {
		t.Errorf("statuses %v, want %v", got, want)
	}
	if res.Summary.SourcePulls != 3 || left.Load() != 1 {
		t.Errorf("%d pulls counted, %d left at the source: want 3 spent and 1 left", res.Summary.SourcePulls, left.Load())
	}
	for _, it := range res.Items {
		if it.Status == "deferred" && !strings.Contains(it.Error, "1 pulls left") {
			t.Errorf("deferred item says %q", it.Error)
		}
	}
	if ts := tags(t, dst+"/limited", nil); slices.Contains(ts, "5") {
		t.Errorf("the deferred image was written: %v", ts)
	}
}

func TestLongRetryAfterDefers(t *testing.T) {
	pushTags(t, "fleet/throttled", 600, "a", "b")
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	b := get(t, e2e.src.Host+"/fleet/throttled:b", nil).Digest.String()
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet || r.URL.Path != "/v2/fleet/throttled/manifests/b" && r.URL.Path != "/v2/fleet/throttled/manifests/"+b {
			return false
		}
		w.Header().Set("Retry-After", "7200")
		http.Error(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit"}]}`, http.StatusTooManyRequests)
		return true
	})
	dst := dstRepo(t, e2e.dst.Host)
	// A single promotion fails at once, saying when to come back.
	one := ocistow(t, nil, "-source", front.Host+"/fleet/throttled:b", "-destination", dst+"/single:b", "-sign=false")
	if line := one.errLine(t); one.code != exitFailed || !strings.Contains(line, "rate limiting") || !strings.Contains(line, "2h0m0s") {
		t.Errorf("exit %d, line %q: want a failure saying the registry asks for 2h", one.code, line)
	}
	// A sync defers that image and promotes the other.
	file := promotionFile(t, "defaults: {sign: false}\npromotions:\n  - source: SRC/fleet/throttled\n    destination: DST/fleet\n    tags: [a, b]\n", front.Host, dst)
	r := ocistow(t, nil, "sync", "-f", file, "-o", "json")
	if r.code != exitDeferred {
		t.Fatalf("exit %d, want %d\n%s\n%s", r.code, exitDeferred, r.stdout, r.stderr)
	}
	if got := parseSync(t, r).statuses(); got[dst+"/fleet:a"] != "promoted" || got[dst+"/fleet:b"] != "deferred" {
		t.Errorf("statuses %v", got)
	}
}

func TestSyncShowsProgressOnATerminal(t *testing.T) {
	pushTags(t, "fleet/shown", 700, "1", "2", "3")
	dst := dstRepo(t, e2e.dst.Host)
	file := promotionFile(t, "defaults: {sign: false}\npromotions:\n  - source: SRC/fleet/shown\n    destination: DST/shown\n    tags: ['1', '2', '3']\n", e2e.src.Host, dst)
	cmd := exec.Command(e2e.bin, "sync", "-f", file)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "DOCKER_CONFIG=" + t.TempDir(), "TERM=xterm"}
	tty, err := pty.StartWithSize(cmd, &pty.Winsize{Rows: 40, Cols: 200})
	if err != nil {
		t.Fatal(err)
	}
	defer tty.Close()
	var out strings.Builder
	_, _ = io.Copy(&out, tty) // until the process closes the terminal (EIO)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("sync on a terminal: %v\n%s", err, out.String())
	}
	screen := out.String()
	for _, want := range []string{"images", "3/3", "3 promoted", "method=Copy", "3 images: 3 promoted"} {
		if !strings.Contains(screen, want) {
			t.Errorf("terminal output lacks %q:\n%s", want, screen)
		}
	}
	// Every image's canonical line prints above the lines, the last
	// one's too, however close to the end it was written.
	if n := strings.Count(screen, "method=Copy"); n != 3 {
		t.Errorf("%d canonical Copy lines on the terminal, want 3:\n%s", n, screen)
	}
	// Piped, the same sync shows no progress lines, only the log lines.
	piped := ocistow(t, nil, "sync", "-f", file)
	if strings.Contains(piped.stderr, "images ") || strings.Contains(piped.stderr, "\x1b[") {
		t.Errorf("piped stderr has progress lines:\n%q", piped.stderr)
	}
}

// TestSyncUploadsASharedLayerOnce checks, through the binary, that two
// images of a sync that share a layer and go into one repository upload it
// once, whether they write it at the same time or one after the other
// (-parallel 1), once both have found it missing: the front holds the
// layer's first upload until both images have asked for it.
func TestSyncUploadsASharedLayerOnce(t *testing.T) {
	base, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 3 << 20, Seed: 700})
	if err != nil {
		t.Fatal(err)
	}
	layers, err := base.Layers()
	if err != nil {
		t.Fatal(err)
	}
	shared, err := layers[0].Digest()
	if err != nil {
		t.Fatal(err)
	}
	size, err := layers[0].Size()
	if err != nil {
		t.Fatal(err)
	}
	top, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 4 << 10, Seed: 701})
	if err != nil {
		t.Fatal(err)
	}
	topLayers, err := top.Layers()
	if err != nil {
		t.Fatal(err)
	}
	derived, err := mutate.AppendLayers(base, topLayers[0])
	if err != nil {
		t.Fatal(err)
	}
	repo := testenv.RepoName(t.Name())
	for tag, img := range map[string]v1.Image{"base": base, "derived": derived} {
		if err := testenv.Push(t.Context(), e2e.src.Host+"/"+repo+":"+tag, img); err != nil {
			t.Fatal(err)
		}
	}
	for _, parallel := range []string{"4", "1"} {
		t.Run("parallel "+parallel, func(t *testing.T) {
			dst := testenv.NewFront(e2e.dst.Host)
			defer dst.Close()
			layerPath := "/blobs/" + shared.String()
			var asked atomic.Int32
			bothAsked := make(chan struct{})
			dst.SetHook(func(_ http.ResponseWriter, r *http.Request) bool {
				switch {
				case r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, layerPath):
					if asked.Add(1) == 2 {
						close(bothAsked)
					}
				case r.Method == http.MethodPut && strings.Contains(r.URL.RawQuery, url.QueryEscape(shared.String())):
					select {
					case <-bothAsked:
					case <-time.After(5 * time.Second):
					}
				}
				return false
			})
			file := promotionFile(t, `promotions:
  - source: SRC/`+repo+`
    destination: DST/`+testenv.RepoName(t.Name())+`
    tags: [base, derived]
    sign: false
`, e2e.src.Host, dst.Host)
			ocistow(t, nil, "sync", "-f", file, "-parallel", parallel).mustSucceed(t)
			var bytes int64
			for _, q := range dst.Requests() {
				if q.Method == http.MethodPut || q.Method == http.MethodPatch {
					bytes += q.BodyBytes
				}
			}
			if n := asked.Load(); n < 2 {
				t.Fatalf("the shared layer was asked for %d times at the destination: the two images did not both find it missing", n)
			}
			if bytes >= 2*size {
				t.Errorf("%d bytes uploaded: the %d-byte shared layer went up twice", bytes, size)
			}
		})
	}
}
