package main

import (
	"maps"
	"slices"
	"testing"

	lambdapayload "github.com/ocistow/ocistow/cmd/ocistow-lambda/internal/payload"
	"github.com/ocistow/ocistow/internal/testenv"
)

// TestEnvironmentDefaultsMergeWithThePayload holds README's Invoke and
// Configuration: `ANNOTATIONS` are "defaults that the payload's
// annotations override", the payload's `ManifestAnnotations` and `Labels`
// are "added to the environment's, the payload's values winning",
// `Platforms` is "instead of the environment's" (`PLATFORM`) and
// `ReferrersTypes` "instead of `REFERRERS_TYPE`". A function configured
// with all five turns payloads that set none, some and all of them into
// the promotion requests those sentences say.
func TestEnvironmentDefaultsMergeWithThePayload(t *testing.T) {
	env := map[string]string{
		"SIGN":                "false",
		"ANNOTATIONS":         "team=platform,owner=env",
		"MANIFEST_ANNOTATION": "build=1,stage=env",
		"LABEL":               "tier=base,zone=env",
		"PLATFORM":            "linux/amd64,linux/arm64",
		"REFERRERS":           "true",
		"REFERRERS_TYPE":      "application/vnd.dev.sigstore.bundle.v0.3+json,application/spdx+json",
	}
	var logs testenv.Buffer
	h := inProcessHandler(t, env, &logs)
	envPlatforms := []string{"linux/amd64", "linux/arm64"}
	envTypes := []string{"application/vnd.dev.sigstore.bundle.v0.3+json", "application/spdx+json"}
	for _, c := range []struct {
		name                             string
		payload                          map[string]any
		annotations, manifestAnn, labels map[string]string
		platforms, referrersTypes        []string
	}{
		{"the environment's alone", map[string]any{},
			map[string]string{"team": "platform", "owner": "env"},
			map[string]string{"build": "1", "stage": "env"},
			map[string]string{"tier": "base", "zone": "env"},
			envPlatforms, envTypes},
		{"the payload's on top", map[string]any{
			"Annotations":         map[string]string{"owner": "martin", "app": "web"},
			"ManifestAnnotations": map[string]string{"build": "42"},
			"Labels":              map[string]string{"zone": "eu", "extra": "x"},
			"Platforms":           []string{"linux/arm64/v8"},
			"ReferrersTypes":      []string{"application/vnd.in-toto+json"},
		},
			map[string]string{"team": "platform", "owner": "martin", "app": "web"},
			map[string]string{"build": "42", "stage": "env"},
			map[string]string{"tier": "base", "zone": "eu", "extra": "x"},
			[]string{"linux/arm64/v8"}, []string{"application/vnd.in-toto+json"}},
		{"some of the payload's", map[string]any{
			"Labels":    map[string]string{"tier": "app"},
			"Platforms": []string{"linux/amd64"},
		},
			map[string]string{"team": "platform", "owner": "env"},
			map[string]string{"build": "1", "stage": "env"},
			map[string]string{"tier": "app", "zone": "env"},
			[]string{"linux/amd64"}, envTypes},
	} {
		t.Run(c.name, func(t *testing.T) {
			c.payload["SrcImageRef"], c.payload["DstImageRef"] = "registry.invalid/src:v1", "registry.invalid/dst:v1"
			p, err := lambdapayload.Decode([]byte(stringPayload(c.payload)))
			if err != nil {
				t.Fatal(err)
			}
			req, err := h.promoteRequest(t.Context(), p)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(req.Annotations, c.annotations) {
				t.Errorf("annotations %v, want %v", req.Annotations, c.annotations)
			}
			if !maps.Equal(req.ManifestAnnotations, c.manifestAnn) {
				t.Errorf("manifest annotations %v, want %v", req.ManifestAnnotations, c.manifestAnn)
			}
			if !maps.Equal(req.Labels, c.labels) {
				t.Errorf("labels %v, want %v", req.Labels, c.labels)
			}
			if !slices.Equal(req.Platforms, c.platforms) {
				t.Errorf("platforms %v, want %v", req.Platforms, c.platforms)
			}
			if !req.Referrers || !slices.Equal(req.ReferrersTypes, c.referrersTypes) {
				t.Errorf("referrers %v, types %v, want on, %v", req.Referrers, req.ReferrersTypes, c.referrersTypes)
			}
		})
	}
	// The function's defaults are not changed by what a payload merged in.
	if !maps.Equal(h.opts.Annotations, map[string]string{"team": "platform", "owner": "env"}) {
		t.Errorf("the function's ANNOTATIONS became %v", h.opts.Annotations)
	}
}
