package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/ocistow/ocistow/internal/testenv"
)

type attestResult struct {
	Attestations *struct {
		Key           string   `json:"key"`
		PredicateType string   `json:"predicateType"`
		Formats       []string `json:"formats"`
		Added         int      `json:"added"`
		Present       int      `json:"present"`
	} `json:"attestations"`
	Signatures *struct {
		Added int `json:"added"`
	} `json:"signatures"`
}

func attestPayload(t *testing.T, src, dst string, fields map[string]any) string {
	t.Helper()
	p := map[string]any{"SrcImageRef": src, "DstImageRef": dst}
	for k, v := range fields {
		p[k] = v
	}
	b, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func verifyAttestation(t *testing.T, image string) error {
	t.Helper()
	cmd := exec.Command(e2e.cosign, "verify-attestation", "--type", "https://github.com/ocistow/ocistow/promotion/v1",
		"--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", "awskms:///alias/"+testenv.ECKey, image)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}, e2e.bed.KMS.Env()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Logf("cosign verify-attestation %s:\n%s", image, out)
	}
	return err
}

func TestPayloadAttest(t *testing.T) {
	l := function(t)
	repo := dstRepo(t, e2e.bed.Dst.Host)
	var res attestResult
	if le := invokeJSON(t, l, attestPayload(t, e2e.bed.SrcRef("single"), repo+":v1", map[string]any{"Attest": true}), &res); le != nil {
		t.Fatalf("function error %s: %s", le.ErrorType, le.ErrorMessage)
	}
	if res.Attestations == nil || res.Attestations.Added != 1 || res.Attestations.Key != "awskms:///alias/"+testenv.ECKey ||
		res.Attestations.PredicateType != "https://github.com/ocistow/ocistow/promotion/v1" {
		t.Fatalf("attestations %+v", res.Attestations)
	}
	if err := verifyAttestation(t, repo+":v1"); err != nil {
		t.Errorf("cosign verify-attestation: %v", err)
	}
	var line map[string]any
	for _, l := range strings.Split(l.Output(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["method"] == "Attest" {
			line = m
		}
	}
	if line == nil || line["attestations_added"] != float64(1) || line["aws_request_id"] == nil {
		t.Errorf("canonical Attest line %v", line)
	}
	// The original payload does not attest unless the function is told to.
	res = attestResult{}
	if le := invokeJSON(t, l, payload(e2e.bed.SrcRef("other"), repo+":plain", nil), &res); le != nil {
		t.Fatalf("function error %s: %s", le.ErrorType, le.ErrorMessage)
	}
	if res.Attestations != nil {
		t.Errorf("attested without being asked: %+v", res.Attestations)
	}
}

func TestAttestConfiguration(t *testing.T) {
	repo := dstRepo(t, e2e.bed.Dst.Host)
	// ATTEST=true: the original payload attests; with SIGN=false, without
	// signing; "Attest": false turns it off.
	l := function(t, "ATTEST=true", "SIGN=false")
	var res attestResult
	if le := invokeJSON(t, l, payload(e2e.bed.SrcRef("single"), repo+":v1", nil), &res); le != nil {
		t.Fatalf("function error %s: %s", le.ErrorType, le.ErrorMessage)
	}
	if res.Attestations == nil || res.Attestations.Added != 1 || res.Signatures != nil {
		t.Errorf("ATTEST=true SIGN=false: attestations %+v, signatures %+v", res.Attestations, res.Signatures)
	}
	if err := verifyAttestation(t, repo+":v1"); err != nil {
		t.Errorf("cosign verify-attestation: %v", err)
	}
	res = attestResult{}
	if le := invokeJSON(t, l, attestPayload(t, e2e.bed.SrcRef("other"), repo+":off", map[string]any{"Attest": false}), &res); le != nil {
		t.Fatalf("function error %s: %s", le.ErrorType, le.ErrorMessage)
	}
	if res.Attestations != nil {
		t.Errorf("\"Attest\": false attested: %+v", res.Attestations)
	}
	// The key is there to attest with, but SIGN=false says the function
	// does not sign: "Sign": true is refused, and nothing is written.
	_, le := invoke(t, l, attestPayload(t, e2e.bed.SrcRef("other"), repo+":sign", map[string]any{"Sign": true}))
	if le == nil || le.ErrorType != "InvalidRequest" || !strings.Contains(le.ErrorMessage, "SIGN=false") {
		t.Errorf("\"Sign\": true to ATTEST=true SIGN=false: %+v", le)
	}
	if _, err := testenv.Get(t.Context(), repo+":sign"); err == nil {
		t.Error("a refused payload was promoted")
	}

	// A function without a key refuses to attest.
	nokey := function(t, "SIGN=false")
	_, le = invoke(t, nokey, attestPayload(t, e2e.bed.SrcRef("single"), repo+":nokey", map[string]any{"Attest": true}))
	if le == nil || le.ErrorType != "InvalidRequest" || !strings.Contains(le.ErrorMessage, "no key to attest with") {
		t.Errorf("Attest to a function without a key: %+v", le)
	}
	// ATTEST=true with COPY=false fails at init.
	bad := function(t, "ATTEST=true", "COPY=false")
	_, le = invoke(t, bad, payload(e2e.bed.SrcRef("single"), repo+":bad", nil))
	if le == nil || le.ErrorType != "InvalidConfiguration" || !strings.Contains(le.ErrorMessage, "-attest needs the copy") {
		t.Errorf("ATTEST=true COPY=false: %+v", le)
	}
}

// Attestations follow the signature format: the function's
// SIGNATURE_FORMAT, then the payload's SignatureFormat.
func TestAttestSignatureFormat(t *testing.T) {
	l := function(t, "ATTEST=true", "SIGNATURE_FORMAT=bundle")
	repo := dstRepo(t, e2e.bed.Dst.Host)
	var res attestResult
	if le := invokeJSON(t, l, payload(e2e.bed.SrcRef("single"), repo+":v1", nil), &res); le != nil {
		t.Fatalf("function error %s: %s", le.ErrorType, le.ErrorMessage)
	}
	if res.Attestations == nil || !slices.Equal(res.Attestations.Formats, []string{"bundle"}) || res.Attestations.Added != 1 {
		t.Fatalf("SIGNATURE_FORMAT=bundle: attestations %+v, want one bundle added", res.Attestations)
	}
	res = attestResult{}
	if le := invokeJSON(t, l, attestPayload(t, e2e.bed.SrcRef("single"), repo+":v1", map[string]any{"SignatureFormat": "both"}), &res); le != nil {
		t.Fatalf("function error %s: %s", le.ErrorType, le.ErrorMessage)
	}
	if res.Attestations == nil || !slices.Equal(res.Attestations.Formats, []string{"legacy", "bundle"}) || res.Attestations.Added != 1 || res.Attestations.Present != 1 {
		t.Errorf("SignatureFormat both: attestations %+v, want the legacy one added and the bundle present", res.Attestations)
	}
	if err := verifyAttestation(t, repo+":v1"); err != nil {
		t.Errorf("cosign verify-attestation of the legacy form: %v", err)
	}
}
