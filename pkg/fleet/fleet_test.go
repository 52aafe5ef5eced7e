package fleet_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
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
	"github.com/ocistow/ocistow/pkg/sign"
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
	// Three pulls: each copy's GET of its source manifest. The referrers
	// step (on by default) writes the same manifest unstamped by digest
	// beside the stamped copy from what the copy read: no pull.
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

// appItems pushes n distinct one-layer images to src as lib/app:v0 and
// on, and returns their promotions to dst's app repository.
func appItems(t *testing.T, src, dst string, n int, seed int64) []fleet.Item {
	t.Helper()
	var items []fleet.Item
	for i := range n {
		img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: seed + int64(i)})
		if err != nil {
			t.Fatal(err)
		}
		tag := fmt.Sprintf("v%d", i)
		if err := testenv.Push(t.Context(), src+"/lib/app:"+tag, img); err != nil {
			t.Fatal(err)
		}
		items = append(items, fleet.Item{Request: fleet.Request{SrcImageRef: src + "/lib/app:" + tag, DstImageRef: dst + "/app:" + tag}})
	}
	return items
}

// gateWatch is a Service that counts the promotions in flight, and of
// those, the ones past their gate (writing).
type gateWatch struct {
	service.Service
	mu                        sync.Mutex
	inFlight, writing         int
	mostInFlight, mostWriting int
	priorities                map[string]int // destination -> the priority its requests had
}

func (g *gateWatch) Copy(ctx context.Context, req service.CopyRequest) (*service.CopyResult, error) {
	g.mu.Lock()
	if g.priorities == nil {
		g.priorities = map[string]int{}
	}
	g.priorities[req.Destination] = registry.PriorityOf(ctx)
	g.mu.Unlock()
	g.add(&g.inFlight, &g.mostInFlight, 1)
	defer g.add(&g.inFlight, &g.mostInFlight, -1)
	if inner := req.Gate; inner != nil {
		req.Gate = func(ctx context.Context) (func(), error) {
			release, err := inner(ctx)
			if err != nil {
				return nil, err
			}
			g.add(&g.writing, &g.mostWriting, 1)
			return func() { g.add(&g.writing, &g.mostWriting, -1); release() }, nil
		}
	}
	return g.Service.Copy(ctx, req)
}

func (g *gateWatch) add(n, most *int, d int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	*n += d
	*most = max(*most, *n)
}

// Images read ahead of the ones being written: more promotions are in
// flight than -parallel, but no more than -parallel write at once.
func TestRunReadsAheadWritesParallel(t *testing.T) {
	dst := newRegistry(t)
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/manifests/") {
			time.Sleep(50 * time.Millisecond) // reading takes round trips
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(slow.Close)
	items := appItems(t, strings.TrimPrefix(slow.URL, "http://"), dst, 8, 100)
	g := &gateWatch{Service: service.New(registry.New(registry.WithKeychain(authn.NewMultiKeychain())))}
	fleet.Run(t.Context(), g, items, fleet.RunOptions{Parallel: 2, Checks: 8})
	if s := fleet.Summarize(items); s.Statuses[fleet.Promoted] != 8 {
		t.Fatalf("run: %+v", s)
	}
	if g.mostWriting != 2 || g.mostInFlight <= 2 {
		t.Errorf("at most %d promotions in flight and %d writing, want more than 2 and 2", g.mostInFlight, g.mostWriting)
	}
	// Capped requests wait by the image's place in the file.
	for i, it := range items {
		if p := g.priorities[it.DstImageRef]; p != i {
			t.Errorf("%s promoted with priority %d, want its place %d", it.DstImageRef, p, i)
		}
	}
}

// checkWatch is a Service whose check of one image waits for the first
// promotion to start, and which records the priority of each check.
type checkWatch struct {
	service.Service
	last       string        // the source whose check waits
	copying    chan struct{} // closed when the first promotion starts
	once       sync.Once
	waited     chan bool // whether the check saw a promotion start
	mu         sync.Mutex
	priorities map[string]int // source -> its check's priority
}

func (c *checkWatch) Check(ctx context.Context, req service.CopyRequest) (*service.CheckResult, error) {
	c.mu.Lock()
	c.priorities[req.Source] = registry.PriorityOf(ctx)
	c.mu.Unlock()
	if req.Source == c.last {
		select {
		case <-c.copying:
			c.waited <- true
		case <-time.After(10 * time.Second):
			c.waited <- false
		}
	}
	return c.Service.Check(ctx, req)
}

func (c *checkWatch) Copy(ctx context.Context, req service.CopyRequest) (*service.CopyResult, error) {
	c.once.Do(func() { close(c.copying) })
	return c.Service.Copy(ctx, req)
}

// An image is promoted as soon as its own check is in, not once every
// image's is; checks wait behind earlier images' requests like the rest.
func TestRunPromotesBeforeEveryCheckIsIn(t *testing.T) {
	items := appItems(t, newRegistry(t), newRegistry(t), 3, 200)
	c := &checkWatch{
		Service:    service.New(registry.New(registry.WithKeychain(authn.NewMultiKeychain()))),
		last:       items[2].SrcImageRef,
		copying:    make(chan struct{}),
		waited:     make(chan bool, 1),
		priorities: map[string]int{},
	}
	fleet.Run(t.Context(), c, items, fleet.RunOptions{Parallel: 1, Checks: 4})
	if s := fleet.Summarize(items); s.Statuses[fleet.Promoted] != 3 {
		t.Fatalf("run: %+v", s)
	}
	if !<-c.waited {
		t.Error("no promotion started before the last image's check was in")
	}
	for i, it := range items {
		if p := c.priorities[it.SrcImageRef]; p != i {
			t.Errorf("%s checked with priority %d, want its place %d", it.SrcImageRef, p, i)
		}
	}
}

// TestSummarizeCountsEveryStepsPulls: a sync's sourcePulls adds up what each
// image's check, copy and referrers step read at the source, so that the
// referrers tags a re-sync reads are not left out of the pulls it reports.
func TestSummarizeCountsEveryStepsPulls(t *testing.T) {
	var rr service.ReferrersResult
	rr.SourcePulls = 3
	cr := &service.CopyResult{}
	cr.SourcePulls = 2
	check := &service.CheckResult{}
	check.SourcePulls = 1
	items := []fleet.Item{{
		Status: fleet.UpToDate,
		Check:  check,
		Result: &service.PromoteResult{CopyResult: cr, Referrers: &rr},
	}}
	if s := fleet.Summarize(items); s.SourcePulls != 6 {
		t.Errorf("sourcePulls %d, want 6 (check 1, copy 2, referrers 3)", s.SourcePulls)
	}
}

// TestDefaultSignatureFormat holds the README's "SignatureFormat when the
// entry names one or, for an entry that signs or attests,
// -signature-format names bundle or both": the sync's format fills in the
// signing and attesting items that name none, and legacy, which an absent
// format means, fills in nothing.
func TestDefaultSignatureFormat(t *testing.T) {
	items := func() []fleet.Item {
		return []fleet.Item{
			{Request: fleet.Request{Sign: true}},
			{Request: fleet.Request{Attest: true}},
			{Request: fleet.Request{}},
			{Request: fleet.Request{Sign: true, SignatureFormat: "legacy"}},
		}
	}
	formats := func(its []fleet.Item) string {
		var out []string
		for _, it := range its {
			out = append(out, it.SignatureFormat)
		}
		return strings.Join(out, ",")
	}
	both := items()
	fleet.DefaultSignatureFormat(both, sign.Both)
	if got, want := formats(both), "both,both,,legacy"; got != want {
		t.Errorf("with -signature-format both: %q, want %q", got, want)
	}
	legacy := items()
	fleet.DefaultSignatureFormat(legacy, sign.Legacy)
	if got, want := formats(legacy), ",,,legacy"; got != want {
		t.Errorf("with -signature-format legacy: %q, want %q", got, want)
	}
}
