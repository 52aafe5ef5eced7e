package fleet_test

import (
	"context"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/fleet"
	"github.com/ocistow/ocistow/pkg/promofile"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/service"
)

// These unit tests run against go-containerregistry's in-process
// registry; cmd/ocistow's sync tests hold the same against Distribution.

func newRegistry(t *testing.T) string {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func TestExpandPlanRun(t *testing.T) {
	src, dst := newRegistry(t), newRegistry(t)
	for i, tag := range []string{"1.0.0", "1.1.0", "2.0.0-rc.1", "latest"} {
		img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		if err := testenv.Push(t.Context(), src+"/lib/tool:"+tag, img); err != nil {
			t.Fatal(err)
		}
	}
	file, err := promofile.Parse("fleet.yaml", []byte(`defaults: {sign: false, annotations: {team: platform}}
promotions:
  - source: `+src+`/lib/tool
    destination: `+dst+`/tool
    tags: {semver: '>=1.0.0'}
  - source: `+src+`/lib/tool:latest
    destination: `+dst+`/pinned
  - source: `+src+`/lib/gone
    destination: `+dst+`/gone
    tags: {latest: 1}
`))
	if err != nil {
		t.Fatal(err)
	}
	c := registry.New(registry.WithKeychain(authn.NewMultiKeychain()), registry.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Steps: 1}))
	svc := service.New(c)
	items, err := fleet.Expand(t.Context(), c, file.Resolve(), "")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, it := range items {
		got = append(got, strings.TrimPrefix(it.DstImageRef, dst+"/")+"="+string(it.Status))
	}
	if want := "tool:1.1.0= tool:1.0.0= pinned:latest= gone=source missing"; strings.Join(got, " ") != want {
		t.Fatalf("expanded to %q, want %q", strings.Join(got, " "), want)
	}

	fleet.Plan(t.Context(), svc, items, 2)
	if s := fleet.Summarize(items); s.Statuses[fleet.New] != 3 || s.Statuses[fleet.Missing] != 1 || s.SourcePulls != 0 {
		t.Errorf("plan: %+v", s)
	}
	for i := range items {
		if items[i].Status == fleet.New {
			items[i].Status = "" // run them
		}
	}
	var done atomic.Int32
	fleet.Run(t.Context(), svc, items, fleet.RunOptions{Parallel: 2, Done: func(*fleet.Item) { done.Add(1) }})
	s := fleet.Summarize(items)
	if s.Statuses[fleet.Promoted] != 3 || s.Failures() != 1 || s.BytesCopied == 0 || s.SourcePulls != 3 || done.Load() != 4 {
		t.Errorf("run: %+v, %d done", s, done.Load())
	}
}

func TestItemsATimeoutKeptFromStartingFail(t *testing.T) {
	items := []fleet.Item{{Request: fleet.Request{SrcImageRef: "a/b:1", DstImageRef: "c/d:1"}}, {Request: fleet.Request{SrcImageRef: "a/b:2", DstImageRef: "c/d:2"}}}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	fleet.Run(ctx, service.New(registry.New()), items, fleet.RunOptions{Parallel: 1})
	for _, it := range items {
		if it.Status != fleet.Failed || it.ErrorType != string(service.KindTimeout) || !strings.Contains(it.Error, "not started") {
			t.Errorf("item %+v: want failed, Timeout, not started", it)
		}
	}
}
