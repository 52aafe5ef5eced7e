package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	lambdapayload "github.com/ocistow/ocistow/cmd/ocistow-lambda/internal/payload"
	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/fleet"
)

// TestPlanLeavesVerifyToEachPromotion holds README's plan mode: "`Items`
// are the images to promote …, as `-dry-run -o json` lists them but for
// entries with a `verify` block, which the function's plan does not check"
// and Known gaps' "the Lambda function's plan does not check it at all
// (each promotion does)". An entry whose verify block refuses its
// (unsigned) source is in the plan's Items, its Verify block with it, not
// in Failures; the CLI's `sync -dry-run -o json` does check it and leaves
// it out; and that item, sent to the function as it is, is PolicyRefused
// and writes nothing.
func TestPlanLeavesVerifyToEachPromotion(t *testing.T) {
	src := e2e.bed.Src.Host + "/lambda-" + testenv.RepoName(t.Name())
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 128, Seed: 7300})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Push(t.Context(), src+":unsigned", img); err != nil {
		t.Fatal(err)
	}
	digest, _ := img.Digest()
	repo := dstRepo(t, e2e.bed.Dst.Host)
	file := fmt.Sprintf(`promotions:
  - source: %[1]s:unsigned
    destination: %[2]s:v1
    sign: false
    verify:
      keys: [alias/%[3]s]
`, src, repo, testenv.RSAKey)

	l := function(t)
	var plan lambdapayload.PlanResult
	if le := invokeJSON(t, l, stringPayload(map[string]any{"PromotionFile": file}), &plan); le != nil {
		t.Fatalf("plan: %s: %s", le.ErrorType, le.ErrorMessage)
	}
	if len(plan.Items) != 1 || len(plan.Failures) != 0 {
		t.Fatalf("plan items %+v, failures %+v: want the entry as an item, no failure", plan.Items, plan.Failures)
	}
	item := plan.Items[0]
	if item.SrcImageRef != src+":unsigned" || item.DstImageRef != repo+":v1" || item.Verify == nil ||
		!slices.Equal(item.Verify.Keys, []string{"alias/" + testenv.RSAKey}) {
		t.Errorf("plan item %+v (verify %+v): want the entry with its Verify block", item, item.Verify)
	}
	if plan.Summary.Statuses[fleet.New] != 1 || plan.Summary.Statuses[fleet.RefusedPolicy] != 0 {
		t.Errorf("plan statuses %v: want it new, not refused", plan.Summary.Statuses)
	}

	// The CLI's dry-run checks the verify block, and lists nothing.
	path := filepath.Join(t.TempDir(), "fleet.yaml")
	if err := os.WriteFile(path, []byte(file), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(e2e.ocistow, "sync", "-f", path, "-dry-run", "-o", "json")
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir(), "AWS_EC2_METADATA_DISABLED=true"}, e2e.bed.KMS.Env()...)
	stdout, stderr, code, err := testenv.Run(cmd)
	if err != nil {
		t.Fatal(err)
	}
	var cli []fleet.Request
	if jerr := json.Unmarshal([]byte(stdout), &cli); jerr != nil || len(cli) != 0 || code != 1 {
		t.Errorf("ocistow sync -dry-run -o json: exit %d, %s (%v): want exit 1 and no item, the source refused\n%s", code, stdout, jerr, stderr)
	}

	// Sent as it is, the item is refused by its own Verify.
	raw, err := json.Marshal(item)
	if err != nil {
		t.Fatal(err)
	}
	var out json.RawMessage
	le := invokeJSON(t, l, string(raw), &out)
	if le == nil || le.ErrorType != "PolicyRefused" || !strings.Contains(le.ErrorMessage, digest.String()) {
		t.Errorf("promoting the plan's item: %+v %s, want PolicyRefused naming %s", le, out, digest)
	}
	if _, err := testenv.Get(t.Context(), repo+":v1"); err == nil {
		t.Errorf("%s:v1 was written for a refused source", repo)
	}
}
