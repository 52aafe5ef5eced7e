package main

import (
	"strconv"
	"strings"
	"testing"

	"github.com/ocistow/ocistow/internal/testenv"
)

// TestTracedReferrers holds the README's tracing tree for the Referrers
// step: "Referrers (with -referrers) digests, referrers and tags copied",
// under the root span, and under it "promote.Copy (one per artifact
// copied, as above)", each with its manifest span. The upstream's three
// referrers and four cosign tags, copied byte for byte, make seven; the
// image's own promote.Copy stays under Copy. Without -referrers there is
// no Referrers span.
func TestTracedReferrers(t *testing.T) {
	u := newUpstream(t)
	recv := testenv.NewOTLPReceiver()
	defer recv.Close()
	env := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.Endpoint}
	res := ocistow(t, env, "-aws-xray", "-source", u.ref, "-destination", dstRepo(t, e2e.dst.Host)+":v1",
		"-sign=false", "-referrers", "-o", "json").mustSucceed(t)
	rr := res.referrers(t).Referrers
	if rr.ReferrersCopied != 3 || rr.TagsCopied != u.sigTags+u.attTags {
		t.Fatalf("referrers %+v, want 3 referrers and %d tags copied", rr, u.sigTags+u.attTags)
	}

	tree := newSpanTree(recv.Spans())
	steps := tree.named("Referrers")
	if len(steps) != 1 {
		t.Fatalf("want one Referrers span, got %d of %d spans", len(steps), len(tree.spans))
	}
	step := steps[0]
	if root, ok := tree.byID[step.Parent]; !ok || root.Name != "ocistow" || root.Parent != "" {
		t.Errorf("the Referrers span's parent is %q, want the root span ocistow", root.Name)
	}
	if !strings.Contains(step.Attributes["ocistow.digests"], u.index) ||
		step.Attributes["ocistow.referrers_copied"] != "3" ||
		step.Attributes["ocistow.tags_copied"] != strconv.Itoa(u.sigTags+u.attTags) {
		t.Errorf("Referrers span attributes %v: want the digests asked for (%s), 3 referrers and %d tags copied", step.Attributes, u.index, u.sigTags+u.attTags)
	}
	var copies, underCopy int
	for _, s := range tree.named("promote.Copy") {
		switch parent := tree.byID[s.Parent]; parent.Name {
		case "Referrers":
			copies++
			var manifests int
			for _, c := range tree.spans {
				if c.Parent == s.SpanID && strings.HasPrefix(c.Name, "manifest ") {
					manifests++
				}
			}
			if manifests == 0 {
				t.Errorf("promote.Copy %s → %s under Referrers has no manifest span", s.Attributes["ocistow.source"], s.Attributes["ocistow.destination"])
			}
		case "Copy":
			underCopy++
		default:
			t.Errorf("a promote.Copy span under %q", parent.Name)
		}
	}
	if want := rr.ReferrersCopied + rr.TagsCopied; copies != want || underCopy != 1 {
		t.Errorf("%d promote.Copy spans under Referrers and %d under Copy, want %d (one per artifact copied) and 1", copies, underCopy, want)
	}

	// Without -referrers, no Referrers span.
	plain := testenv.NewOTLPReceiver()
	defer plain.Close()
	ocistow(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + plain.Endpoint}, "-source", u.ref, "-destination", dstRepo(t, e2e.dst.Host)+":plain",
		"-sign=false").mustSucceed(t)
	ptree := newSpanTree(plain.Spans())
	if n := len(ptree.named("Referrers")); n != 0 || len(ptree.named("Copy")) != 1 {
		t.Errorf("without -referrers: %d Referrers spans and %d Copy spans, want none and 1", n, len(ptree.named("Copy")))
	}
}
