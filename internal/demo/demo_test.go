package main

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ocistow/ocistow/internal/testenv"
)

// TestDemo runs the demo, the README's first command, as make demo does:
// every step it runs (ocistow, cosign verify and verify-attestation, the
// fleet sync) must succeed, the re-run must find everything in place and
// write nothing (no blob, signature, attestation, referrer or tag), and
// the fleet's re-run must copy, pull and sign nothing.
func TestDemo(t *testing.T) {
	root, err := testenv.Root()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	bin, demo := filepath.Join(dir, "ocistow"), filepath.Join(dir, "demo")
	for out, pkg := range map[string]string{bin: "./cmd/ocistow", demo: "./internal/demo"} {
		build := exec.Command("go", "build", "-o", out, pkg)
		build.Dir = root
		if b, err := build.CombinedOutput(); err != nil {
			t.Fatalf("building %s: %v\n%s", pkg, err, b)
		}
	}
	stdout, stderr, code, err := testenv.Run(exec.Command(demo, "-ocistow", bin))
	if err != nil || code != 0 {
		t.Fatalf("demo: exit %d, %v\n%s\n%s", code, err, stdout, stderr)
	}
	// The re-run writes nothing (README, Two commands: "then again to show
	// that a re-run writes nothing"): its copy, signing, attestation and
	// referrers each say so in the result (the canonical lines go to
	// stderr, which holds the first run's and the sync's too).
	_, rerun, _ := strings.Cut(stdout, "==> Running it again")
	rerun, _, _ = strings.Cut(rerun, "\n==> ")
	for _, want := range []string{
		"2 platforms, destination already up to date, 0 source pulls",
		"signed 3 digests with awskms:///alias/ocistow-demo: 0 added, 3 already present",
		"attested 3 digests with awskms:///alias/ocistow-demo: 0 added, 3 already present",
		"referrers of 3 source digests: 0 copied, 0 already present; cosign tags: 0 copied, 3 already present; 0 filtered out; 0 source manifests written by digest",
	} {
		if !strings.Contains(rerun, want) {
			t.Errorf("the demo's re-run lacks %q:\n%s", want, rerun)
		}
	}
	for _, want := range []string{
		"The following checks were performed on each of these signatures", // cosign verify
		"3 images: 3 promoted",
		"3 images: 3 up to date; 0 B copied, 0 source pulls, 0 signatures added",
	} {
		if !strings.Contains(stdout+stderr, want) {
			t.Errorf("the demo's output lacks %q:\n%s\n%s", want, stdout, stderr)
		}
	}
}
