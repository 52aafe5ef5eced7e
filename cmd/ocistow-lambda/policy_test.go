package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/testenv"
)

// The source policy in Lambda: the payload's Verify and the function's
// SOURCE_KEY. A source signed (by the real cosign, with a local-kms key)
// is promoted and the result says by what; an unsigned one is refused with
// the PolicyRefused errorType and nothing is written.
func TestSourcePolicyPayload(t *testing.T) {
	src := e2e.bed.Src.Host + "/lambda-" + testenv.RepoName(t.Name())
	digests := map[string]string{}
	for i, tag := range []string{"signed", "unsigned"} {
		img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 128, Seed: int64(7100 + i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := testenv.Push(t.Context(), src+":"+tag, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		digests[tag] = d.String()
	}
	upstreamKey := "awskms:///alias/" + testenv.RSAKey
	cmd := exec.Command(e2e.cosign, "sign", "--key", upstreamKey, "--tlog-upload=false", "--yes", src+"@"+digests["signed"])
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, e2e.bed.KMS.Env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cosign sign: %v\n%s", err, out)
	}

	repo := dstRepo(t, e2e.bed.Dst.Host)
	verify := map[string]any{"Keys": []string{"alias/" + testenv.RSAKey}}
	l := function(t)
	var res struct {
		Policy *struct {
			Digests []struct {
				Digest, Format, Key string
			} `json:"digests"`
		} `json:"policy"`
	}
	if le := invokeJSON(t, l, stringPayload(map[string]any{"SrcImageRef": src + ":signed", "DstImageRef": repo + ":signed", "Sign": false, "Verify": verify}), &res); le != nil {
		t.Fatalf("signed source: %s: %s", le.ErrorType, le.ErrorMessage)
	}
	if p := res.Policy; p == nil || len(p.Digests) != 1 || p.Digests[0].Key != upstreamKey || p.Digests[0].Format != "legacy" {
		t.Errorf("result policy %+v, want the digest by %s, legacy", res.Policy, upstreamKey)
	}
	refused := func(l *testenv.Lambda, payload map[string]any, tag string) {
		t.Helper()
		payload["SrcImageRef"], payload["DstImageRef"], payload["Sign"] = src+":unsigned", repo+":"+tag, false
		var out json.RawMessage
		le := invokeJSON(t, l, stringPayload(payload), &out)
		if le == nil || le.ErrorType != "PolicyRefused" || !strings.Contains(le.ErrorMessage, digests["unsigned"]) || !strings.Contains(le.ErrorMessage, "no signatures") {
			t.Errorf("unsigned source: %+v %s, want PolicyRefused naming %s, no signatures", le, out, digests["unsigned"])
		}
		ref, err := name.ParseReference(repo + ":" + tag)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := remote.Head(ref, remote.WithContext(t.Context())); err == nil {
			t.Errorf("%s was written for a refused source", ref)
		}
	}
	refused(l, map[string]any{"Verify": verify}, "payload")
	// The function's own policy, from its environment.
	refused(function(t, "SOURCE_KEY=alias/"+testenv.RSAKey), map[string]any{}, "env")
	// A Verify the function cannot load is the payload's fault.
	var out json.RawMessage
	if le := invokeJSON(t, l, stringPayload(map[string]any{"SrcImageRef": src + ":signed", "DstImageRef": repo + ":x", "Sign": false,
		"Verify": map[string]any{"Identity": "^x$"}}), &out); le == nil || le.ErrorType != "InvalidRequest" || !strings.Contains(le.ErrorMessage, "issuer") {
		t.Errorf("Verify with an identity and no issuer: %+v, want InvalidRequest", le)
	}
}
