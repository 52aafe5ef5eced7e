package main

import (
	"net/http"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/ocistow/ocistow/internal/testenv"
)

// manifestGets counts the manifest GETs a front served for repo: what
// Docker Hub meters as pulls.
func manifestGets(f *testenv.Front, repo string) int {
	return f.Count(func(r testenv.Request) bool {
		return r.Method == http.MethodGet && strings.HasPrefix(r.Path, "/v2/"+repo+"/manifests/") && r.Status < 300
	})
}

func TestRePromotionCostsNoPull(t *testing.T) {
	// A source index that carries annotations of its own, which stamping
	// and provenance must keep.
	idx, err := testenv.MixedIndex(70, 16<<10)
	if err != nil {
		t.Fatal(err)
	}
	idx = mutate.Annotations(idx, map[string]string{"org.opencontainers.image.base.name": "docker.io/library/alpine:3.20"}).(v1.ImageIndex)
	if err := testenv.Push(t.Context(), e2e.src.Host+"/src/annotated:v1", idx); err != nil {
		t.Fatal(err)
	}
	front := testenv.NewFront(e2e.src.Host)
	defer front.Close()
	source := front.Host + "/src/annotated:v1"
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"byte for byte", nil},
		{"stamped", []string{"-annotations", "team=platform"}},
		{"one platform", []string{"-platform", "linux/amd64"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := dstRepo(t, e2e.dst.Host) + ":v1"
			args := append([]string{"-source", source, "-destination", dst, "-sign=false", "-o", "json"}, tc.args...)
			before := manifestGets(front, "src/annotated")
			first := ocistow(t, nil, args...).mustSucceed(t)
			res := first.copyResult(t)
			served := manifestGets(front, "src/annotated") - before
			if res.UpToDate || res.SourcePulls == 0 || res.SourcePulls != served {
				t.Errorf("first run: upToDate %v, sourcePulls %d, the source served %d manifest GETs", res.UpToDate, res.SourcePulls, served)
			}

			before = manifestGets(front, "src/annotated")
			again := ocistow(t, nil, args...).mustSucceed(t)
			res2 := again.copyResult(t)
			if n := manifestGets(front, "src/annotated") - before; n != 0 {
				t.Errorf("re-promotion of an unchanged image cost %d manifest GETs at the source", n)
			}
			if !res2.UpToDate || res2.SourcePulls != 0 || res2.ManifestsWritten != 0 || res2.DestinationDigest != res.DestinationDigest {
				t.Errorf("second run: %+v, want up to date at %s with no pull", res2, res.DestinationDigest)
			}
			if !strings.Contains(again.stderr, "up_to_date=true") || !strings.Contains(again.stderr, "src_pulls=0") {
				t.Errorf("canonical line does not say up_to_date=true src_pulls=0:\n%s", again.stderr)
			}
			anns := annotationsOf(t, dst)
			if anns["org.opencontainers.image.base.name"] != "docker.io/library/alpine:3.20" {
				t.Errorf("source annotation lost: %v", anns)
			}
			if tc.args == nil {
				if res.DestinationDigest != res.SourceDigest {
					t.Errorf("byte-for-byte copy has digest %s, source %s", res.DestinationDigest, res.SourceDigest)
				}
				return
			}
			if anns["dev.ocistow.source.digest"] != res.SourceDigest || anns["dev.ocistow.source.reference"] != source || anns["dev.ocistow.stamp"] == "" {
				t.Errorf("provenance annotations %v, want source %s from %s", anns, res.SourceDigest, source)
			}
		})
	}
}

func TestChangedStampPromotesAgain(t *testing.T) {
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	first := ocistow(t, nil, "-source", srcRef("multi"), "-destination", dst, "-sign=false", "-o", "json", "-annotations", "team=a").mustSucceed(t).copyResult(t)
	second := ocistow(t, nil, "-source", srcRef("multi"), "-destination", dst, "-sign=false", "-o", "json", "-annotations", "team=b").mustSucceed(t).copyResult(t)
	if second.UpToDate || second.DestinationDigest == first.DestinationDigest || second.PreviousDigest != first.DestinationDigest {
		t.Errorf("another stamp: %+v after %+v, want a new digest and the tag moved", second, first)
	}
	// Back to the first stamp: the first digest again (stamping is
	// deterministic).
	third := ocistow(t, nil, "-source", srcRef("multi"), "-destination", dst, "-sign=false", "-o", "json", "-annotations", "team=a").mustSucceed(t).copyResult(t)
	if third.DestinationDigest != first.DestinationDigest {
		t.Errorf("the same stamp gave %s, first %s", third.DestinationDigest, first.DestinationDigest)
	}
	if get(t, dst, nil).Digest.String() != first.DestinationDigest {
		t.Errorf("tag not at %s", first.DestinationDigest)
	}
}

// annotationsOf returns the annotations of the manifest or index at ref.
func annotationsOf(t *testing.T, ref string) map[string]string {
	t.Helper()
	anns, err := testenv.Annotations(get(t, ref, nil))
	if err != nil {
		t.Fatal(err)
	}
	return anns
}
