package promote_test

import (
	"net/http"
	"testing"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/promote"
	"github.com/ocistow/ocistow/pkg/stamp"
)

// TestAnotherSpellingOfTheSourceIsUpToDate holds the README's "a
// re-promotion of an unchanged image costs no pull" and "recorded as
// given, compared by what it names": a stamped promotion of host/lib/app,
// repeated as host/lib/app:latest (the same reference, spelled out), is up
// to date with no source GET, and the destination keeps the first
// spelling, so no digest stamped before changes. Another repository with
// the same content is another source, and promotes again.
func TestAnotherSpellingOfTheSourceIsUpToDate(t *testing.T) {
	src, dst := newServer(t), newServer(t)
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 512, Seed: 41})
	if err != nil {
		t.Fatal(err)
	}
	push(t, src.Host+"/lib/app:latest", img)
	push(t, src.Host+"/lib/copy:latest", img)
	st := stamp.Stamp{Annotations: map[string]string{"team": "platform"}}
	req := promote.Request{Source: ref(t, src.Host+"/lib/app"), Destination: ref(t, dst.Host+"/app:1"), Stamp: st}
	first := copyOK(t, req)
	if got := annotationsAt(t, dst.Host+"/app:1")[promote.AnnotationSourceReference]; got != src.Host+"/lib/app" {
		t.Fatalf("recorded source %q, want it as given: %s", got, src.Host+"/lib/app")
	}

	src.reset()
	req.Source = ref(t, src.Host+"/lib/app:latest")
	again := copyOK(t, req)
	if !again.UpToDate || again.SourcePulls != 0 || again.ManifestsWritten != 0 || again.DestinationDigest != first.DestinationDigest {
		t.Errorf("another spelling of the source: %+v, want up to date at %s with no pull", again, first.DestinationDigest)
	}
	if n := src.count(http.MethodGet, "/manifests/"); n != 0 {
		t.Errorf("source served %d manifest GETs to another spelling of an unchanged source", n)
	}

	src.reset()
	req.Source = ref(t, src.Host+"/lib/copy:latest")
	other := copyOK(t, req)
	if other.UpToDate || other.SourcePulls == 0 || other.DestinationDigest == first.DestinationDigest {
		t.Errorf("another repository of the same content: %+v, want promoted again (another source recorded)", other)
	}
}
