package main

import (
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
