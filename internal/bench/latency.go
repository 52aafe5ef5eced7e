package main

// Scenarios 12 and 13: single promotions with 25 ms added to every answer
// of either registry, which is how a promotion from Docker Hub into ECR
// behaves: round trips, not bandwidth, decide the time.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ocistow/ocistow/internal/oneline"
	"github.com/ocistow/ocistow/internal/testenv"
)

// latencyScenarios are the single-image latency scenarios: name, source
// tag, and how to build the image.
var latencyScenarios = []struct {
	number int
	name   string
	tag    string
}{
	{12, "12 small 2-platform +25ms", "lat/index:v1"},
	{13, "13 one 1-layer image +25ms", "lat/single:v1"},
}

// latencyPeers are the tools compared in scenarios 12 and 13 (skopeo is
// left out: it copies one request at a time, as the fleet scenarios show).
func latencyPeers() []string { return []string{"ocistow", "crane", "regctl"} }

// latency runs scenarios 12 and 13: each tool, run after run in rotating
// order, copies the image into a fresh destination, both registries
// reached through Toxiproxy with fleetLatencyMS on every answer.
func (b *bench) latency(ctx context.Context) error {
	sc := b.cfg.scenarios
	if !sc[12] && !sc[13] {
		return nil
	}
	idx, err := testenv.MixedIndex(7000, fleetLayerSize)
	if err != nil {
		return err
	}
	if err := testenv.Push(ctx, b.src.Host+"/lat/index:v1", idx); err != nil {
		return err
	}
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256 << 10, Seed: 7100})
	if err != nil {
		return err
	}
	if err := testenv.Push(ctx, b.src.Host+"/lat/single:v1", img); err != nil {
		return err
	}
	lat, err := b.startFleetLatency(ctx)
	if err != nil {
		return err
	}
	defer lat.tp.Close()
	for _, s := range latencyScenarios {
		if !sc[s.number] {
			continue
		}
		for run := 1; run <= b.cfg.runs; run++ {
			for _, tool := range rotate(b.cfg.only(latencyPeers()), run) {
				d, err := b.freshDestination(ctx, fmt.Sprintf("lat%d-%s-%d", s.number, tool, run))
				if err != nil {
					return err
				}
				dstHost, err := lat.proxy(ctx, d.front.Host)
				if err != nil {
					d.close()
					return err
				}
				c := b.mark(d)
				m := b.copyVia(ctx, tool, lat.srcHost, s.tag, d, dstHost, s.tag)
				m.scenario, m.run = s.name, run
				m.sequential = sequentialRoundTrips(append(slices.Clone(b.srcFront.Requests()[c.src:]), d.front.Requests()[c.dst:]...), fleetLatencyMS*time.Millisecond)
				b.timeline(m)
				logRun(m)
				b.results = append(b.results, m)
				d.close()
			}
		}
	}
	return nil
}

// copyVia is copyRun with the source and the destination reached through
// the given hosts (proxies before their fronts).
func (b *bench) copyVia(ctx context.Context, tool, srcHost, srcTag string, d *destination, dstHost, repoTag string) measurement {
	c := b.mark(d)
	wall, cpu, rss, out, err := measure(b.command(tool, srcHost+"/"+srcTag, dstHost+"/"+repoTag), nil)
	m := measurement{tool: tool, wall: wall, cpu: cpu, rssBytes: rss, log: b.keepLog(tool, out)}
	b.count(&m, d, c)
	if err == nil {
		err = b.check(ctx, srcTag, d, repoTag, false)
	} else {
		err = fmt.Errorf("%v %s", err, lastLine(out))
	}
	m.ok = err == nil
	if err != nil {
		m.note = oneline.String(err.Error())
	}
	return m
}

// sequentialRoundTrips is the longest chain of reqs (the requests both
// registries' fronts saw in one run) in which each request arrived after
// the answer to the one before had reached the tool: Toxiproxy adds lat to
// every answer after the front, so a request sent on an answer arrives at
// least lat after that answer left the front; half of lat is the margin.
// It counts by time, not by cause: the round trips a tool made one after
// another, its critical path where it waited for answers.
func sequentialRoundTrips(reqs []testenv.Request, lat time.Duration) int {
	reqs = slices.Clone(reqs)
	slices.SortFunc(reqs, func(a, b testenv.Request) int { return a.Start.Compare(b.Start) })
	chain := make([]int, len(reqs))
	longest := 0
	for j := range reqs {
		chain[j] = 1
		for i := range j {
			if reqs[i].End.Add(lat / 2).Before(reqs[j].Start) {
				chain[j] = max(chain[j], chain[i]+1)
			}
		}
		longest = max(longest, chain[j])
	}
	return longest
}

// latencyRoundTrips tabulates the requests and the round trips in sequence
// of each tool in scenarios 12 and 13 (medians).
func latencyRoundTrips(sums []summary) string {
	var sb strings.Builder
	for _, s := range sums {
		if n := scenarioNumber(s.scenario); (n != 12 && n != 13) || s.sequential == 0 {
			continue
		}
		fmt.Fprintf(&sb, "| %s | %s | %d + %d | %d |\n", s.scenario, s.tool, s.srcRequests, s.requests, s.sequential)
	}
	if sb.Len() == 0 {
		return ""
	}
	return "| latency scenario | tool | requests (source + destination) | round trips in sequence |\n| --- | --- | --- | --- |\n" + sb.String()
}

// latencyTargets says whether ocistow met issue 14's latency targets:
// wall <= 0.8x the fastest peer in scenarios 12 and 13.
func latencyTargets(sums []summary, best map[string]summary) string {
	const limit = 0.8
	var sb strings.Builder
	for _, s := range sums {
		if n := scenarioNumber(s.scenario); (n != 12 && n != 13) || s.tool != "ocistow" {
			continue
		}
		bp, ok := best[s.scenario]
		switch {
		case s.runs == s.fail:
			fmt.Fprintf(&sb, "| %s: wall <= %.1fx the fastest peer | failed | %s |\n", s.scenario, limit, s.note)
		case !ok || bp.wall == 0 || s.wall == 0:
			fmt.Fprintf(&sb, "| %s: wall <= %.1fx the fastest peer | no peer measured | |\n", s.scenario, limit)
		default:
			r := s.wall.Seconds() / bp.wall.Seconds()
			status := "not met"
			if r <= limit {
				status = "met"
			}
			fmt.Fprintf(&sb, "| %s: wall <= %.1fx the fastest peer | %s | %.2fs vs %s %.2fs: %.2fx; requests %d + %d vs %d + %d; round trips in sequence %d vs %d |\n",
				s.scenario, limit, status, s.wall.Seconds(), bp.tool, bp.wall.Seconds(), r, s.srcRequests, s.requests, bp.srcRequests, bp.requests, s.sequential, bp.sequential)
		}
	}
	if sb.Len() == 0 {
		return ""
	}
	return "| latency target (ocistow, medians) | status | numbers |\n| --- | --- | --- |\n" + sb.String()
}
