package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	lambdapayload "github.com/ocistow/ocistow/cmd/ocistow-lambda/internal/payload"
	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/fleet"
)

// functionARN is the ARN the state machine's definition is given for the
// function; the local engine sends its Task states to the emulator.
const functionARN = "arn:aws:lambda:us-east-1:111111111111:function:ocistow"

// buildCLI builds cmd/ocistow into dir.
func buildCLI(dir string) (string, error) {
	root, err := testenv.Root()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "ocistow")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "./cmd/ocistow")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building ocistow: %v\n%s", err, b)
	}
	return out, nil
}

// invokeJSON sends payload and decodes the answer into out, or returns the
// function error.
func invokeJSON(t *testing.T, l *testenv.Lambda, payload string, out any) *lambdaError {
	t.Helper()
	body, err := l.Invoke(t.Context(), payload)
	if err != nil {
		t.Fatalf("invoking: %v\n%s", err, l.Output())
	}
	var le lambdaError
	if json.Unmarshal([]byte(body), &le) == nil && le.ErrorType != "" {
		if strings.Contains(le.ErrorMessage, "goroutine ") || strings.Contains(body, "stackTrace") {
			t.Errorf("function error carries a stack trace: %s", body)
		}
		return &le
	}
	if err := json.Unmarshal([]byte(body), out); err != nil {
		t.Fatalf("answer is neither %T nor an error: %s: %v\n%s", out, body, err, l.Output())
	}
	return nil
}

// verifySigned runs the real cosign verify on img with the function's key
// and the annotations.
func verifySigned(t *testing.T, img string, annotations ...string) {
	t.Helper()
	args := []string{"verify", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", "awskms:///alias/" + testenv.ECKey}
	for _, a := range annotations {
		args = append(args, "-a", a)
	}
	cmd := exec.Command(e2e.cosign, append(args, img)...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, e2e.bed.KMS.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("cosign verify %s: %v\n%s", img, err, out)
	}
}

// unsigned checks that the digest at img has no cosign signature tag.
func unsigned(t *testing.T, repo, digest string) {
	t.Helper()
	if _, err := testenv.Get(t.Context(), repo+":"+strings.Replace(digest, ":", "-", 1)+".sig"); err == nil {
		t.Errorf("%s@%s is signed", repo, digest)
	}
}

func stringPayload(v map[string]any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// The payload takes the optional fields of a fleet.Request, and plans.
func TestExtendedPayload(t *testing.T) {
	l := function(t)
	repo := dstRepo(t, e2e.bed.Dst.Host)

	// Sign false copies without signing; the original payload (no Sign)
	// signs, as TestPromotesAndSignsWithTheSeedPayload shows.
	res, le := invoke(t, l, stringPayload(map[string]any{"SrcImageRef": e2e.bed.SrcRef("single"), "DstImageRef": repo + ":unsigned", "Sign": false}))
	if le != nil {
		t.Fatalf("Sign false: %s: %s", le.ErrorType, le.ErrorMessage)
	}
	if res.Signatures != nil {
		t.Errorf("Sign false signed: %+v", res.Signatures)
	}
	unsigned(t, repo, res.DestinationDigest)

	// Platforms, labels, manifest annotations, and the function's own key
	// in another spelling.
	res, le = invoke(t, l, stringPayload(map[string]any{
		"SrcImageRef": e2e.bed.SrcRef("multi"), "DstImageRef": repo + ":amd64",
		"Annotations": map[string]string{"team": "foo"}, "ManifestAnnotations": map[string]string{"build": "42"},
		"Labels": map[string]string{"tier": "base"}, "Platforms": []string{"linux/amd64"},
		"Sign": true, "Key": "alias/" + testenv.ECKey,
	}))
	if le != nil {
		t.Fatalf("%s: %s", le.ErrorType, le.ErrorMessage)
	}
	if len(res.Manifests) != 1 || res.Manifests[0].Platform != "linux/amd64" || res.Signatures == nil || res.Signatures.Added != 2 {
		t.Fatalf("result %+v, signatures %+v: want linux/amd64 alone, index and child signed", res, res.Signatures)
	}
	d, err := testenv.Get(t.Context(), repo+":amd64")
	if err != nil {
		t.Fatal(err)
	}
	if a, _ := testenv.Annotations(d); a["build"] != "42" || a["team"] != "foo" {
		t.Errorf("index annotations %v: want build=42 and team=foo", a)
	}
	child, err := name.ParseReference(repo + "@" + res.Manifests[0].DestinationDigest)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(child, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.Config.Labels["tier"] != "base" || cf.Config.Labels["team"] != "foo" {
		t.Errorf("config labels %v: want tier=base and team=foo", cf.Config.Labels)
	}
	verifySigned(t, repo+":amd64", "team=foo")

	// Immutable refuses to move a tag; so does a function with
	// IMMUTABLE=true, for the original payload.
	if _, le := invoke(t, l, stringPayload(map[string]any{"SrcImageRef": e2e.bed.SrcRef("other"), "DstImageRef": repo + ":unsigned", "Immutable": true, "Sign": false})); le == nil || le.ErrorType != "TagImmutable" {
		t.Errorf("Immutable moving a tag: %+v, want TagImmutable", le)
	}
	immutable := function(t, "IMMUTABLE=true", "SIGN=false")
	if _, le := invoke(t, immutable, payload(e2e.bed.SrcRef("other"), repo+":unsigned", nil)); le == nil || le.ErrorType != "TagImmutable" {
		t.Errorf("IMMUTABLE=true moving a tag: %+v, want TagImmutable", le)
	}
	if got := digestOf(t, repo+":unsigned"); got != e2e.bed.Fixtures["single"] {
		t.Errorf("the immutable tag moved to %s", got)
	}

	good := e2e.bed.SrcRef("single")
	for _, c := range []struct{ name, payload, errorType, want string }{
		{"another key", stringPayload(map[string]any{"SrcImageRef": good, "DstImageRef": repo + ":k", "Key": "alias/" + testenv.RSAKey}),
			"InvalidRequest", "this function signs with awskms:///alias/" + testenv.ECKey},
		{"another key, Sign true", stringPayload(map[string]any{"SrcImageRef": good, "DstImageRef": repo + ":k", "Sign": true, "Key": "awskms:///alias/" + testenv.RSAKey}),
			"InvalidRequest", "this function signs with"},
		{"Sign not a bool", `{"SrcImageRef":"` + good + `","DstImageRef":"` + repo + `:k","Sign":"yes"}`, "InvalidRequest", "invalid payload"},
		{"a plan mixed with a promotion", stringPayload(map[string]any{"PromotionFile": "promotions: []", "SrcImageRef": good}), "InvalidRequest", "separate invocations"},
		// README: an S3 object reference "is refused with `unknown field
		// "Bucket"`; `Key` is the payload's signing key".
		{"an S3 reference", `{"Bucket":"b","Key":"fleet.yaml"}`, "InvalidRequest", `unknown field "Bucket"`},
		{"an invalid promotion file", stringPayload(map[string]any{"PromotionFile": "promotions:\n  - source: " + good + "\n    destinaton: " + repo + ":x\n"}),
			"InvalidRequest", "PromotionFile:3: "},
		{"a promotion file signing with another key", stringPayload(map[string]any{"PromotionFile": "defaults:\n  key: alias/" + testenv.RSAKey + "\npromotions:\n  - source: " + good + "\n    destination: " + repo + ":x\n"}),
			"InvalidRequest", "PromotionFile:4: key alias/" + testenv.RSAKey + ": this function signs with awskms:///alias/" + testenv.ECKey},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, le := invoke(t, l, c.payload)
			if le == nil {
				t.Fatal("the function succeeded")
			}
			if le.ErrorType != c.errorType || !strings.Contains(le.ErrorMessage, c.want) || strings.Contains(le.ErrorMessage, "\n") {
				t.Errorf("errorType %q message %q: want %q containing %q on one line", le.ErrorType, le.ErrorMessage, c.errorType, c.want)
			}
		})
	}
	for _, tag := range []string{"k", "x"} {
		if _, err := testenv.Get(t.Context(), repo+":"+tag); err == nil {
			t.Errorf("a refused invocation wrote %s:%s", repo, tag)
		}
	}

	// A function that does not sign refuses a payload that asks it to.
	nosign := function(t, "SIGN=false")
	if _, le := invoke(t, nosign, stringPayload(map[string]any{"SrcImageRef": good, "DstImageRef": repo + ":k", "Sign": true})); le == nil || le.ErrorType != "InvalidRequest" || !strings.Contains(le.ErrorMessage, "does not sign") {
		t.Errorf("Sign true to a function with SIGN=false: %+v, want InvalidRequest, does not sign", le)
	}
}

// Plan mode answers as ocistow sync -dry-run -o json plans, and writes
// nothing.
func TestPlanMode(t *testing.T) {
	l := function(t)
	repo := dstRepo(t, e2e.bed.Dst.Host)
	// One image is up to date already: promoted with the request the plan
	// will make of it.
	if _, le := invoke(t, l, stringPayload(map[string]any{"SrcImageRef": e2e.bed.SrcRef("other"), "DstImageRef": repo + "/other:v1", "Annotations": map[string]string{"team": "platform"}})); le != nil {
		t.Fatalf("%s: %s", le.ErrorType, le.ErrorMessage)
	}
	// A source whose registry refuses to list its tags: that entry fails,
	// the others are planned.
	unlisted := testenv.NewFront(e2e.bed.Src.Host)
	defer unlisted.Close()
	unlisted.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.URL.Path, "/tags/list") {
			http.Error(w, `{"errors":[{"code":"DENIED","message":"no listing"}]}`, http.StatusForbidden)
			return true
		}
		return false
	})
	file := fmt.Sprintf(`defaults:
  annotations: {team: platform}
promotions:
  - source: %[1]s/src/single:v1
    destination: %[2]s/single:v1
  - source: %[1]s/src/multi
    destination: %[2]s/multi
    tags: [v1]
    sign: false
  - source: %[1]s/src/missing:v1
    destination: %[2]s/missing:v1
  - source: %[1]s/src/other:v1
    destination: %[2]s/other:v1
  - source: %[3]s/src/multi
    destination: %[2]s/unlisted
    tags: {latest: 1}
`, e2e.bed.Src.Host, repo, unlisted.Host)
	var plan lambdapayload.PlanResult
	if le := invokeJSON(t, l, stringPayload(map[string]any{"PromotionFile": file}), &plan); le != nil {
		t.Fatalf("%s: %s", le.ErrorType, le.ErrorMessage)
	}
	key := "awskms:///alias/" + testenv.ECKey
	want := []fleet.Request{
		{SrcImageRef: e2e.bed.SrcRef("single"), DstImageRef: repo + "/single:v1", Annotations: map[string]string{"team": "platform"}, Sign: true, Key: key, Referrers: true},
		{SrcImageRef: e2e.bed.SrcRef("multi"), DstImageRef: repo + "/multi:v1", Annotations: map[string]string{"team": "platform"}, Referrers: true},
	}
	got, _ := json.Marshal(plan.Items)
	wantJSON, _ := json.Marshal(want)
	if string(got) != string(wantJSON) {
		t.Errorf("plan items\n%s\nwant\n%s", got, wantJSON)
	}
	if len(plan.Failures) != 2 {
		t.Fatalf("plan failures %+v: want the missing source and the unlisted one", plan.Failures)
	}
	if plan.Failures[0].SrcImageRef != e2e.bed.Src.Host+"/src/missing:v1" || plan.Failures[0].ErrorType != "SourceNotFound" ||
		plan.Failures[0].Status != fleet.Missing || plan.Failures[0].Line != 10 || plan.Failures[0].Check != nil {
		t.Errorf("plan failures %+v: want the missing source, line 10, SourceNotFound", plan.Failures)
	}
	if f := plan.Failures[len(plan.Failures)-1]; f.SrcImageRef != unlisted.Host+"/src/multi" || f.ErrorType != "Unauthorized" ||
		f.Status != fleet.Failed || f.Line != 14 || !strings.Contains(f.Error, "listing the tags of") {
		t.Errorf("plan failure %+v: want the unlisted source, line 14, Unauthorized", f)
	}
	if s := plan.Summary; s.Images != 5 || s.Statuses[fleet.New] != 2 || s.Statuses[fleet.UpToDate] != 1 || s.Statuses[fleet.Missing] != 1 || s.Statuses[fleet.Failed] != 1 {
		t.Errorf("plan summary %+v: want 5 images, 2 new, 1 up to date, 1 source missing, 1 failed", s)
	}
	for _, it := range want {
		if _, err := testenv.Get(t.Context(), it.DstImageRef); err == nil {
			t.Errorf("the plan wrote %s", it.DstImageRef)
		}
	}
}

// A plan item of ocistow sync -dry-run -o json, sent as it is to the
// function, promotes it.
func TestSyncPlanItemsPromoteUnderTheEmulator(t *testing.T) {
	l := function(t)
	repo := dstRepo(t, e2e.bed.Dst.Host)
	file := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(file, fmt.Appendf(nil, `defaults:
  annotations: {team: platform}
  key: alias/%[3]s
promotions:
  - source: %[1]s/src/multi:v1
    destination: %[2]s/multi:v1
    platforms: [linux/arm64/v8]
    labels: {tier: base}
  - source: %[1]s/src/single:v1
    destination: %[2]s/single:v1
    manifestAnnotations: {build: "7"}
`, e2e.bed.Src.Host, repo, testenv.ECKey), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e2e.ocistow, "sync", "-f", file, "-dry-run", "-o", "json")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "AWS_EC2_METADATA_DISABLED=true"}, e2e.bed.KMS.Env()...)
	stdout, stderr, code, err := testenv.Run(cmd)
	if err != nil || code != 0 {
		t.Fatalf("ocistow sync -dry-run: exit %d %v\n%s", code, err, stderr)
	}
	var items []json.RawMessage
	if err := json.Unmarshal([]byte(stdout), &items); err != nil || len(items) != 2 {
		t.Fatalf("plan %s: %v, want 2 items", stdout, err)
	}
	for _, item := range items {
		var req fleet.Request
		if err := json.Unmarshal(item, &req); err != nil {
			t.Fatal(err)
		}
		// Sent as it is.
		res, le := invoke(t, l, string(item))
		if le != nil {
			t.Fatalf("%s: %s: %s", item, le.ErrorType, le.ErrorMessage)
		}
		if res.Destination != req.DstImageRef || res.DestinationDigest != digestOf(t, req.DstImageRef) || res.Signatures == nil || res.Signatures.Added == 0 {
			t.Errorf("%s: result %+v, signatures %+v", item, res, res.Signatures)
		}
		verifySigned(t, req.DstImageRef, "team=platform")
	}
	// The plan's options reached the promotion: one platform, labelled; a
	// manifest annotation.
	d, err := testenv.Get(t.Context(), repo+"/multi:v1")
	if err != nil {
		t.Fatal(err)
	}
	idx, err := d.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil || len(im.Manifests) != 1 || im.Manifests[0].Platform == nil || im.Manifests[0].Platform.Architecture != "arm64" {
		t.Fatalf("multi:v1 index %+v (%v): want linux/arm64/v8 alone", im, err)
	}
	img, err := idx.Image(im.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	if cf, err := img.ConfigFile(); err != nil || cf.Config.Labels["tier"] != "base" {
		t.Errorf("multi:v1 config labels %v (%v): want tier=base", cf.Config.Labels, err)
	}
	if d, err := testenv.Get(t.Context(), repo+"/single:v1"); err != nil {
		t.Fatal(err)
	} else if a, _ := testenv.Annotations(d); a["build"] != "7" {
		t.Errorf("single:v1 annotations %v: want build=7", a)
	}
}

// fanout is the output of the state machine.
type fanout struct {
	Images, Succeeded, Failed int
	Statuses                  map[fleet.Status]int
	Failures                  []fleet.Item
}

func definitionFile(t *testing.T) string {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(root, "deploy", "statemachine.asl.json")
}

// runStateMachine runs the state machine with MaxConcurrency 2 on the
// function, l and a second execution environment of it.
func runStateMachine(t *testing.T, l *testenv.Lambda, file string, retryIntervals map[string]time.Duration) *testenv.Execution {
	t.Helper()
	sfn, err := testenv.NewStepFunctions()
	if err != nil {
		t.Fatal(err)
	}
	second := function(t)
	ex, err := sfn.Run(t.Context(), definitionFile(t), testenv.RunOptions{
		Substitutions:  map[string]string{"FunctionArn": functionARN, "MaxConcurrency": "2"},
		Functions:      map[string][]*testenv.Lambda{functionARN: {l, second}},
		RetryIntervals: retryIntervals,
	}, map[string]string{"PromotionFile": file})
	if err != nil {
		t.Fatal(err)
	}
	if ex.Error != "" {
		t.Fatalf("the execution failed: %s: %s\n%s\n%s", ex.Error, ex.Cause, l.Output(), second.Output())
	}
	return ex
}

func invocationsOf(ex *testenv.Execution, state string) []testenv.Invocation {
	var out []testenv.Invocation
	for _, in := range ex.Invocations {
		if in.State == state {
			out = append(out, in)
		}
	}
	return out
}

// The state machine in deploy/, run by aws-local-stepfunctions against the
// real function under the emulator: plan, promote each image, sum up; a
// missing source fails alone. It holds README's "check each image
// promoted, stamped and signed (cosign verifies)": every manifest under
// each promoted tag carries its entry's annotations and manifest
// annotations, and every image config its annotations and labels, as the
// promotion file asks.
func TestStateMachineFansOut(t *testing.T) {
	l := function(t)
	repo := dstRepo(t, e2e.bed.Dst.Host)
	if _, le := invoke(t, l, stringPayload(map[string]any{"SrcImageRef": e2e.bed.SrcRef("big"), "DstImageRef": repo + "/big:v1", "Annotations": map[string]string{"team": "platform"}})); le != nil {
		t.Fatalf("%s: %s", le.ErrorType, le.ErrorMessage)
	}
	file := fmt.Sprintf(`defaults:
  annotations: {team: platform}
promotions:
  - source: %[1]s/src/single:v1
    destination: %[2]s/single:v1
  - source: %[1]s/src/multi
    destination: %[2]s/multi
    tags: [v1]
    labels: {tier: base}
    manifestAnnotations: {build: "42"}
  - source: %[1]s/src/other:v1
    destination: %[2]s/other:v1
    annotations: {owner: martin}
  - source: %[1]s/src/missing:v1
    destination: %[2]s/missing:v1
  - source: %[1]s/src/big:v1
    destination: %[2]s/big:v1
`, e2e.bed.Src.Host, repo)
	ex := runStateMachine(t, l, file, nil)

	plans := invocationsOf(ex, "Plan")
	if len(plans) != 1 {
		t.Fatalf("%d plan invocations, want 1", len(plans))
	}
	var plan lambdapayload.PlanResult
	if err := json.Unmarshal(plans[0].Response, &plan); err != nil {
		t.Fatalf("plan answer %s: %v", plans[0].Response, err)
	}
	var planned []string
	for _, it := range plan.Items {
		planned = append(planned, it.DstImageRef)
	}
	good := []string{repo + "/single:v1", repo + "/multi:v1", repo + "/other:v1"}
	if !slices.Equal(planned, good) {
		t.Errorf("the plan returned %v, want %v", planned, good)
	}
	promotions := invocationsOf(ex, "PromoteImage")
	if len(promotions) != len(good) {
		t.Errorf("%d promotions, want %d: one per planned image", len(promotions), len(good))
	}
	for i, p := range promotions {
		if p.Error != nil {
			t.Errorf("promotion %d (%s) failed: %+v", i, p.Payload, p.Error)
		}
	}
	for _, img := range good {
		verifySigned(t, img, "team=platform")
	}
	verifySigned(t, repo+"/other:v1", "team=platform", "owner=martin")
	// Stamped as the file asks: the entry's annotations (merged with the
	// defaults') on every manifest and as labels in every config, its
	// manifest annotations on manifests only, its labels in configs only.
	team := map[string]string{"team": "platform"}
	for _, c := range []struct {
		ref                 string
		annotations, labels map[string]string
		manifests           int
	}{
		// The fixtures' own labels stay (existing=keep), but for team,
		// which the stamp sets.
		{repo + "/single:v1", team, team, 1},
		{repo + "/multi:v1", map[string]string{"team": "platform", "build": "42"}, map[string]string{"team": "platform", "tier": "base", "existing": "keep"}, 3},
		{repo + "/other:v1", map[string]string{"team": "platform", "owner": "martin"}, map[string]string{"team": "platform", "owner": "martin"}, 1},
	} {
		if n := stamped(t, c.ref, c.annotations, c.labels); n != c.manifests {
			t.Errorf("%s: %d manifests under the tag, want %d", c.ref, n, c.manifests)
		}
	}
	if _, err := testenv.Get(t.Context(), repo+"/missing:v1"); err == nil {
		t.Errorf("the missing source was written")
	}

	var out fanout
	if err := json.Unmarshal(ex.Output, &out); err != nil {
		t.Fatalf("output %s: %v", ex.Output, err)
	}
	if out.Images != 5 || out.Succeeded != 4 || out.Failed != 1 || out.Statuses[fleet.Promoted] != 3 || out.Statuses[fleet.UpToDate] != 1 || out.Statuses[fleet.Missing] != 1 {
		t.Errorf("summary %s: want 5 images, 4 succeeded (3 promoted, 1 up to date), 1 failed (source missing)", ex.Output)
	}
	if len(out.Failures) != 1 || out.Failures[0].ErrorType != "SourceNotFound" || out.Failures[0].DstImageRef != repo+"/missing:v1" || !strings.Contains(out.Failures[0].Error, "404") {
		t.Errorf("failures %+v: want the missing source with SourceNotFound", out.Failures)
	}
}

// stamped checks that the manifest or index at ref, and every manifest
// under it, carries annotations, and that every image config under it has
// exactly labels; it returns how many manifests it read.
func stamped(t *testing.T, ref string, annotations, labels map[string]string) int {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	d, err := remote.Get(r, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	got, err := testenv.Annotations(d)
	if err != nil {
		t.Fatalf("%s: %v", ref, err)
	}
	for k, v := range annotations {
		if got[k] != v {
			t.Errorf("%s annotations %v: want %s=%s", ref, got, k, v)
		}
	}
	if d.MediaType.IsIndex() {
		idx, err := d.ImageIndex()
		if err != nil {
			t.Fatal(err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		n := 1
		for _, child := range im.Manifests {
			n += stamped(t, r.Context().Digest(child.Digest.String()).String(), annotations, labels)
		}
		return n
	}
	img, err := d.Image()
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("%s config: %v", ref, err)
	}
	if !maps.Equal(cf.Config.Labels, labels) {
		t.Errorf("%s config labels %v, want %v", ref, cf.Config.Labels, labels)
	}
	return 1
}

// Retry by errorType retries a promotion that failed for a reason that may
// pass; Catch records one that keeps failing, and the others go on.
func TestStateMachineRetriesAndCatches(t *testing.T) {
	front := testenv.NewFront(e2e.bed.Dst.Host)
	defer front.Close()
	var flaky atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		// "broken" refuses every blob upload; "flaky" its first tag write
		// only. A 400 with a code that is not temporary is not retried by
		// the function itself: it fails with CopyFailed, and the tag has
		// not moved.
		broken := strings.Contains(r.URL.Path, "/broken/") && r.Method == http.MethodPost
		first := strings.HasSuffix(r.URL.Path, "/flaky/manifests/v1") && r.Method == http.MethodPut && flaky.Add(1) == 1
		if broken || first {
			http.Error(w, `{"errors":[{"code":"NAME_INVALID","message":"not now"}]}`, http.StatusBadRequest)
			return true
		}
		return false
	})
	l := function(t)
	repo := dstRepo(t, front.Host)
	file := fmt.Sprintf(`promotions:
  - source: %[1]s/src/single:v1
    destination: %[2]s/flaky:v1
  - source: %[1]s/src/other:v1
    destination: %[2]s/broken:v1
`, e2e.bed.Src.Host, repo)
	ex := runStateMachine(t, l, file, map[string]time.Duration{"PromoteImage": 50 * time.Millisecond})

	attempts := map[string]int{}
	for _, p := range invocationsOf(ex, "PromoteImage") {
		var req fleet.Request
		if err := json.Unmarshal(p.Payload, &req); err != nil {
			t.Fatal(err)
		}
		attempts[req.DstImageRef]++
	}
	// Retry: MaxAttempts 3 retries after the first attempt.
	if attempts[repo+"/flaky:v1"] != 2 || attempts[repo+"/broken:v1"] != 4 {
		t.Errorf("attempts %v: want flaky twice (one retry), broken 4 times (3 retries)", attempts)
		for _, in := range ex.Invocations {
			t.Logf("%s %s %s %+v", in.State, in.Payload, in.Response, in.Error)
		}
	}
	verifySigned(t, strings.Replace(repo, front.Host, e2e.bed.Dst.Host, 1)+"/flaky:v1")
	var out fanout
	if err := json.Unmarshal(ex.Output, &out); err != nil {
		t.Fatalf("output %s: %v", ex.Output, err)
	}
	if out.Succeeded != 1 || out.Failed != 1 || out.Statuses[fleet.Promoted] != 1 || out.Statuses[fleet.Failed] != 1 {
		t.Errorf("summary %s: want 1 promoted, 1 failed", ex.Output)
	}
	if len(out.Failures) != 1 || out.Failures[0].ErrorType != "CopyFailed" || !strings.Contains(out.Failures[0].Error, "NAME_INVALID") {
		t.Errorf("failures %+v: want broken:v1 with CopyFailed and the registry's answer", out.Failures)
	}
}
