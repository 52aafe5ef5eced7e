package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/sign"
)

// TestSourcePolicyLoadedOncePerInstance holds README's "keys and trusted
// roots are loaded once per function instance" (Invoke, the payload's
// Verify) for the function's TRUSTED_ROOT, a payload's TrustedRoot and a
// payload's key file. One function instance promotes three sources that
// pass their policies; then each file is replaced by one that does not
// trust the signature (another Sigstore's root, another key), and the
// same instance still promotes them, with what it loaded first. A new
// instance, which loads the files as they now are, refuses the same
// payloads: the replaced files would have refused them.
func TestSourcePolicyLoadedOncePerInstance(t *testing.T) {
	const (
		identity = "https://github.com/example/app/.github/workflows/release.yml@refs/tags/v1.0.0"
		issuer   = "https://token.actions.githubusercontent.com"
		idRegexp = `^https://github\.com/example/app/\.github/workflows/release\.yml@refs/tags/v`
		password = "upstream"
	)
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	rogue, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	envRoot, payloadRoot := filepath.Join(dir, "env_root.json"), filepath.Join(dir, "payload_root.json")
	writeTrustedRoot(t, vs, envRoot)
	writeTrustedRoot(t, vs, payloadRoot)
	keyDir, otherDir := t.TempDir(), t.TempDir()
	cosign := func(dir string, args ...string) {
		t.Helper()
		cmd := exec.Command(e2e.cosign, args...)
		cmd.Dir = dir
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + dir, "COSIGN_PASSWORD=" + password}
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("cosign %s: %v\n%s", args[0], err, out)
		}
	}
	cosign(keyDir, "generate-key-pair")
	cosign(otherDir, "generate-key-pair")
	pub := filepath.Join(keyDir, "cosign.pub")

	// Two sources: one signed keyless (cosign v2's .sig with a
	// certificate, by the virtual Sigstore), one with the key file.
	src := e2e.bed.Src.Host + "/lambda-" + testenv.RepoName(t.Name())
	digests := map[string]string{}
	for i, tag := range []string{"keyless", "keyed"} {
		img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 128, Seed: int64(7200 + i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := testenv.Push(t.Context(), src+":"+tag, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		digests[tag] = d.String()
	}
	keyless, err := name.NewDigest(src + "@" + digests["keyless"])
	if err != nil {
		t.Fatal(err)
	}
	p, err := sign.Payload(keyless, nil)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := testenv.NewLegacyKeyless(vs, vs, p, identity, issuer)
	if err != nil {
		t.Fatal(err)
	}
	if err := sig.Push(t.Context(), keyless); err != nil {
		t.Fatal(err)
	}
	cosign(keyDir, "sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", src+"@"+digests["keyed"])

	cases := []struct {
		name, tag string
		verify    map[string]any
		refusal   string // why a policy loaded from the replaced file refuses
	}{
		{"the function's TRUSTED_ROOT", "keyless", map[string]any{"Identity": idRegexp, "Issuer": issuer}, "keyless"},
		{"the payload's TrustedRoot", "keyless", map[string]any{"Identity": idRegexp, "Issuer": issuer, "TrustedRoot": payloadRoot}, "keyless"},
		{"the payload's key", "keyed", map[string]any{"Keys": []string{pub}}, "none by these keys"},
	}
	repo := dstRepo(t, e2e.bed.Dst.Host)
	promote := func(l *testenv.Lambda, tag string, verify map[string]any, dst string) (*policyResult, *lambdaError) {
		t.Helper()
		var res policyResult
		le := invokeJSON(t, l, stringPayload(map[string]any{"SrcImageRef": src + ":" + tag, "DstImageRef": dst, "Sign": false, "Verify": verify}), &res)
		return &res, le
	}
	passes := func(l *testenv.Lambda, round string) {
		t.Helper()
		for i, c := range cases {
			res, le := promote(l, c.tag, c.verify, fmt.Sprintf("%s:%s-%d", repo, round, i))
			if le != nil {
				t.Errorf("%s, %s: %s: %s", round, c.name, le.ErrorType, le.ErrorMessage)
				continue
			}
			if pol := res.Policy; pol == nil || len(pol.Digests) != 1 || pol.Digests[0].Digest != digests[c.tag] {
				t.Errorf("%s, %s: result policy %+v, want %s checked", round, c.name, res.Policy, digests[c.tag])
			}
		}
	}

	l := function(t, "TRUSTED_ROOT="+envRoot)
	passes(l, "first")
	// The files change under the running instance.
	writeTrustedRoot(t, rogue, envRoot)
	writeTrustedRoot(t, rogue, payloadRoot)
	other, err := os.ReadFile(filepath.Join(otherDir, "cosign.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, other, 0o600); err != nil {
		t.Fatal(err)
	}
	passes(l, "warm")

	// A new instance reads them as they are now, and refuses.
	cold := function(t, "TRUSTED_ROOT="+envRoot)
	for i, c := range cases {
		dst := fmt.Sprintf("%s:cold-%d", repo, i)
		_, le := promote(cold, c.tag, c.verify, dst)
		if le == nil || le.ErrorType != "PolicyRefused" || !strings.Contains(le.ErrorMessage, digests[c.tag]) || !strings.Contains(le.ErrorMessage, c.refusal) {
			t.Errorf("a new instance, %s: %+v, want PolicyRefused naming %s, %s", c.name, le, digests[c.tag], c.refusal)
		}
		if _, err := testenv.Get(t.Context(), dst); err == nil {
			t.Errorf("a new instance, %s: %s was written for a refused source", c.name, dst)
		}
	}
}

// policyResult is the part of a promotion's result the source policy adds.
type policyResult struct {
	Policy *struct {
		Digests []struct {
			Digest, Format, Key, Identity, Issuer string
		} `json:"digests"`
	} `json:"policy"`
}

// writeTrustedRoot writes the trusted root of the virtual Sigstore vs (its
// CA, timestamping authority and log) to path.
func writeTrustedRoot(t *testing.T, vs *ca.VirtualSigstore, path string) {
	t.Helper()
	tr, err := testenv.VirtualTrustedRoot(vs)
	if err != nil {
		t.Fatal(err)
	}
	b, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
