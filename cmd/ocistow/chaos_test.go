package main

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/ocistow/ocistow/internal/testenv"
)

// chaosRuns is how many promotions a chaos scenario makes: a few in CI,
// CHAOS_RUNS of them under make chaos.
func chaosRuns() int {
	if n, err := strconv.Atoi(os.Getenv("CHAOS_RUNS")); err == nil && n > 0 {
		return n
	}
	return 4
}

// Connections through a real TCP proxy (Toxiproxy) are cut in the middle of
// blob transfers, on about 10 % of connections, both from the source and to
// the destination: every promotion still succeeds, byte for byte.
func TestChaosConnectionResets(t *testing.T) {
	ctx := t.Context()
	tp, err := testenv.StartToxiproxy(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tp.Close()
	src, err := tp.Proxy(ctx, "src", e2e.src.Host)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := tp.Proxy(ctx, "dst", e2e.dst.Host)
	if err != nil {
		t.Fatal(err)
	}
	// limit_data closes a connection once it has carried this many bytes:
	// mid-blob for the 3 MiB layers of the fixture.
	if err := tp.Toxic(ctx, "src", "cut-downloads", "limit_data", "downstream", 0.1, map[string]any{"bytes": 1 << 20}); err != nil {
		t.Fatal(err)
	}
	if err := tp.Toxic(ctx, "dst", "cut-uploads", "limit_data", "upstream", 0.1, map[string]any{"bytes": 1 << 20}); err != nil {
		t.Fatal(err)
	}
	runs, ok, faults := chaosRuns(), 0, 0
	for i := range runs {
		dstRef := fmt.Sprintf("%s/%s-%d:v1", dst, testenv.RepoName(t.Name()), i)
		r := ocistow(t, nil, "-source", src+"/src/big:v1", "-destination", dstRef, "-sign=false", "-debug")
		// Each cut connection shows as a request that failed or a blob
		// that was retried.
		faults += strings.Count(r.stderr, "msg=http") - strings.Count(r.stderr, "status=")
		faults += strings.Count(r.stderr, "level=WARN")
		if r.code != 0 {
			t.Errorf("promotion %d failed under connection resets: %s", i, r.stderr)
			continue
		}
		if got := get(t, dstRef, nil).Digest.String(); got != e2e.fixtures["big"] {
			t.Errorf("promotion %d has digest %s, want %s", i, got, e2e.fixtures["big"])
			continue
		}
		ok++
	}
	t.Logf("chaos: connection resets on ~10%% of connections: %d of %d promotions succeeded, every digest equal to the source's; %d requests cut and retried", ok, runs, faults)
	if faults == 0 {
		t.Error("no connection was cut: the scenario tested nothing")
	}
}
