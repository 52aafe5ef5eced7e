package main

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/internal/testenv"
)

// The payload's Referrers and ReferrersTypes, and the function's REFERRERS.
func TestReferrersPayload(t *testing.T) {
	// A source image with an SBOM referrer (written through the referrers
	// tag schema: the Distribution registry has no referrers API).
	src := e2e.bed.Src.Host + "/lambda-" + testenv.RepoName(t.Name())
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: 4242, OCI: true})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Push(t.Context(), src+":v1", img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	sz, _ := img.Size()
	mt, _ := img.MediaType()
	sbom := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), "application/spdx+json")
	sbom, err = mutate.AppendLayers(sbom, static.NewLayer([]byte(`{"spdxVersion":"SPDX-2.3"}`), "application/spdx+json"))
	if err != nil {
		t.Fatal(err)
	}
	sbom = mutate.Subject(sbom, v1.Descriptor{MediaType: mt, Size: sz, Digest: d}).(v1.Image)
	sd, _ := sbom.Digest()
	ref, err := name.ParseReference(src + "@" + sd.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, sbom, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}

	type referrersResult struct {
		Referrers *struct {
			ReferrersCopied  int `json:"referrersCopied"`
			ReferrersPresent int `json:"referrersPresent"`
			Filtered         int `json:"filtered"`
		} `json:"referrers"`
	}
	repo := dstRepo(t, e2e.bed.Dst.Host)
	l := function(t)
	for _, c := range []struct {
		name    string
		payload map[string]any
		want    string // "" for no referrers step
	}{
		{"absent", map[string]any{}, ""},
		{"true", map[string]any{"Referrers": true}, "1 copied"},
		{"true again", map[string]any{"Referrers": true}, "1 present"},
		{"filtered", map[string]any{"Referrers": true, "ReferrersTypes": []string{"application/vnd.other"}}, "1 filtered"},
	} {
		payload := map[string]any{"SrcImageRef": src + ":v1", "DstImageRef": repo + ":v1", "Sign": false}
		for k, v := range c.payload {
			payload[k] = v
		}
		var res referrersResult
		if le := invokeJSON(t, l, stringPayload(payload), &res); le != nil {
			t.Fatalf("%s: %s: %s", c.name, le.ErrorType, le.ErrorMessage)
		}
		got := ""
		if r := res.Referrers; r != nil {
			switch {
			case r.ReferrersCopied == 1:
				got = "1 copied"
			case r.ReferrersPresent == 1:
				got = "1 present"
			case r.Filtered == 1:
				got = "1 filtered"
			default:
				got = "nothing"
			}
		}
		if got != c.want {
			t.Errorf("%s: referrers %q, want %q", c.name, got, c.want)
		}
	}

	// REFERRERS=true turns them on for payloads that do not say; a
	// payload's "Referrers": false turns them off.
	on := function(t, "REFERRERS=true")
	for _, c := range []struct {
		payload string
		want    bool
	}{
		{`{"SrcImageRef":"` + src + `:v1","DstImageRef":"` + repo + `:v2","Sign":false}`, true},
		{`{"SrcImageRef":"` + src + `:v1","DstImageRef":"` + repo + `:v3","Sign":false,"Referrers":false}`, false},
	} {
		var res json.RawMessage
		if le := invokeJSON(t, on, c.payload, &res); le != nil {
			t.Fatalf("%s: %s", le.ErrorType, le.ErrorMessage)
		}
		if got := strings.Contains(string(res), `"referrers"`); got != c.want {
			t.Errorf("REFERRERS=true, payload %s: referrers ran: %v, want %v", c.payload, got, c.want)
		}
	}
}
