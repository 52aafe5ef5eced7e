package main

// Scenarios 8 to 11: fleets. N small multi-platform indexes, tagged v1 to
// v5 in N/5 repositories of the source (fleet/app0:v1 … fleet/app9:v5 for
// N = 50), synced into an empty registry (8) and then re-synced when
// nothing changed (9), and both again with Toxiproxy adding 25 ms to every
// answer from either registry (10, 11). ocistow sync with a promotion file
// runs against regclient's regsync and skopeo sync, each given the same
// explicit list of images: no tag listing, no stamping, no signing, byte
// for byte copies.

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/oneline"
	"github.com/ocistow/ocistow/internal/testenv"
)

const (
	// fleetTagsPerRepo is how many images (tags) each source repository
	// of a fleet holds.
	fleetTagsPerRepo = 5
	// fleetLayerSize is the size of each of the four layers of a fleet
	// image (two per platform).
	fleetLayerSize = 64 << 10
	// fleetLatencyMS is the latency Toxiproxy adds to every answer in
	// scenarios 10 and 11.
	fleetLatencyMS = 25
	// fleetParallel is how many images each tool copies at once:
	// ocistow sync's default -parallel, regsync's parallel setting.
	// skopeo sync copies one image at a time whatever it is told.
	fleetParallel = 4
	// fleetRegistryRequests caps the requests in flight to one registry:
	// ocistow sync's default -registry-requests, given to regsync as
	// reqConcurrent for both registries (its default is 3).
	fleetRegistryRequests = 16
)

// fleetTools are the tools the fleet scenarios compare.
func fleetTools() []string { return []string{"ocistow", "regsync", "skopeo"} }

// fleetImage is one image of a fleet: repository (under the registry) and tag.
type fleetImage struct{ repo, tag string }

func (i fleetImage) String() string { return i.repo + ":" + i.tag }

// fleetImages returns the first n images of the fleet layout.
func fleetImages(n int) []fleetImage {
	out := make([]fleetImage, 0, n)
	for i := range n {
		out = append(out, fleetImage{fmt.Sprintf("fleet/app%d", i/fleetTagsPerRepo), fmt.Sprintf("v%d", i%fleetTagsPerRepo+1)})
	}
	return out
}

// fleetRepos groups images by repository, in order.
func fleetRepos(imgs []fleetImage) (repos []string, tags map[string][]string) {
	tags = map[string][]string{}
	for _, i := range imgs {
		if _, ok := tags[i.repo]; !ok {
			repos = append(repos, i.repo)
		}
		tags[i.repo] = append(tags[i.repo], i.tag)
	}
	return repos, tags
}

// pushFleet pushes the first n fleet images to the source, each a distinct
// index of two platforms with two small layers each.
func (b *bench) pushFleet(ctx context.Context, n int) error {
	for k, img := range fleetImages(n) {
		idx, err := testenv.MixedIndex(int64(5000+k*2), fleetLayerSize)
		if err != nil {
			return fmt.Errorf("building fleet image %s: %w", img, err)
		}
		if err := testenv.Push(ctx, b.src.Host+"/"+img.String(), idx); err != nil {
			return fmt.Errorf("pushing fleet image %s: %w", img, err)
		}
	}
	return nil
}

// fleetScenarios are the names of one fleet size's scenarios.
type fleetScenarios struct{ sync, resync string }

func fleetNames(n int, latency bool) fleetScenarios {
	if latency {
		return fleetScenarios{fmt.Sprintf("10 fleet %d sync +%dms", n, fleetLatencyMS), fmt.Sprintf("11 fleet %d no-op +%dms", n, fleetLatencyMS)}
	}
	return fleetScenarios{fmt.Sprintf("8 fleet %d sync", n), fmt.Sprintf("9 fleet %d no-op re-sync", n)}
}

// fleets runs the selected fleet scenarios for every fleet size.
func (b *bench) fleets(ctx context.Context) error {
	sc := b.cfg.scenarios
	if !sc[8] && !sc[9] && !sc[10] && !sc[11] {
		return nil
	}
	largest := 0
	for _, n := range b.cfg.fleet {
		largest = max(largest, n)
	}
	log("pushing %d fleet images (%d tags per repository, 2 platforms x 2 layers of %s each)", largest, fleetTagsPerRepo, human(fleetLayerSize))
	if err := b.pushFleet(ctx, largest); err != nil {
		return err
	}
	var lat *fleetLatency
	if sc[10] || sc[11] {
		var err error
		if lat, err = b.startFleetLatency(ctx); err != nil {
			return err
		}
		defer lat.tp.Close()
	}
	for _, n := range b.cfg.fleet {
		if sc[8] || sc[9] {
			if err := b.fleet(ctx, n, nil, sc[8], sc[9]); err != nil {
				return err
			}
		}
		if sc[10] || sc[11] {
			if err := b.fleet(ctx, n, lat, sc[10], sc[11]); err != nil {
				return err
			}
		}
	}
	return nil
}

// fleetLatency is a Toxiproxy server with a proxy before the source's
// front that delays every answer by fleetLatencyMS.
type fleetLatency struct {
	tp      *testenv.Toxiproxy
	srcHost string // the proxy before the source's front
	proxies int    // proxies made so far (each needs its own name)
}

func (b *bench) startFleetLatency(ctx context.Context) (*fleetLatency, error) {
	tp, err := testenv.StartToxiproxy(ctx)
	if err != nil {
		return nil, fmt.Errorf("starting toxiproxy: %w", err)
	}
	l := &fleetLatency{tp: tp}
	if l.srcHost, err = l.proxy(ctx, b.srcFront.Host); err != nil {
		tp.Close()
		return nil, err
	}
	return l, nil
}

// proxy puts a new proxy with the latency toxic before upstream and
// returns its host:port. The toxic is downstream (on the answers), so each
// request and answer takes fleetLatencyMS more: a round trip of that long.
func (l *fleetLatency) proxy(ctx context.Context, upstream string) (string, error) {
	l.proxies++
	name := fmt.Sprintf("fleet%d", l.proxies)
	host, err := l.tp.Proxy(ctx, name, upstream)
	if err != nil {
		return "", fmt.Errorf("toxiproxy before %s: %w", upstream, err)
	}
	if err := l.tp.Toxic(ctx, name, "latency", "latency", "downstream", 1, map[string]any{"latency": fleetLatencyMS}); err != nil {
		return "", fmt.Errorf("toxiproxy latency before %s: %w", upstream, err)
	}
	return host, nil
}

// fleet runs every tool, run after run in rotating order, on a fleet of n
// images: a sync into a fresh, empty destination (recorded when doSync),
// then a re-sync of the same (recorded when doResync). With lat, both
// registries are reached through its proxies.
func (b *bench) fleet(ctx context.Context, n int, lat *fleetLatency, doSync, doResync bool) error {
	names := fleetNames(n, lat != nil)
	imgs := fleetImages(n)
	for run := 1; run <= b.cfg.runs; run++ {
		for _, tool := range rotate(b.cfg.only(fleetTools()), run) {
			d, err := b.freshDestination(ctx, fmt.Sprintf("fleet%d-%s-%d-%t", n, tool, run, lat != nil))
			if err != nil {
				return err
			}
			srcHost, dstHost := b.srcFront.Host, d.front.Host
			if lat != nil {
				srcHost = lat.srcHost
				if dstHost, err = lat.proxy(ctx, d.front.Host); err != nil {
					d.close()
					return err
				}
			}
			cmd, err := b.fleetCommand(tool, imgs, srcHost, dstHost, d.dir)
			if err != nil {
				d.close()
				return err
			}
			first := b.fleetRun(ctx, cmd, tool, imgs, d)
			first.scenario, first.run = names.sync, run
			b.timeline(first)
			if doSync {
				logRun(first)
				b.results = append(b.results, first)
			} else if !first.ok {
				d.close()
				return fmt.Errorf("preparing %s: %s's first sync: %s", names.resync, tool, first.note)
			}
			if doResync {
				var again measurement
				if first.ok {
					// The same configuration again: nothing changed.
					if cmd, err = b.fleetCommand(tool, imgs, srcHost, dstHost, d.dir); err != nil {
						d.close()
						return err
					}
					again = b.fleetRun(ctx, cmd, tool, imgs, d)
				} else {
					again = measurement{tool: tool, images: n, note: "the first sync failed"}
				}
				again.scenario, again.run = names.resync, run
				b.timeline(again)
				logRun(again)
				b.results = append(b.results, again)
			}
			d.close()
		}
	}
	return nil
}

// fleetRun runs cmd, counts what the fronts saw, and checks every image at
// the destination.
func (b *bench) fleetRun(ctx context.Context, cmd *exec.Cmd, tool string, imgs []fleetImage, d *destination) measurement {
	c := b.mark(d)
	wall, cpu, rss, out, err := measure(cmd, nil)
	m := measurement{tool: tool, wall: wall, cpu: cpu, rssBytes: rss, images: len(imgs), log: b.keepLog(tool, out)}
	b.count(&m, d, c)
	if err != nil {
		err = fmt.Errorf("%v %s", err, lastLine(out))
	} else {
		err = b.checkFleet(ctx, imgs, d)
	}
	m.ok = err == nil
	if err != nil {
		m.note = oneline.String(err.Error())
	}
	return m
}

// checkFleet checks, at the destination registry itself (not through its
// front), that every image's tag holds the source's digest and that every
// manifest that index names is there.
func (b *bench) checkFleet(ctx context.Context, imgs []fleetImage, d *destination) error {
	for _, img := range imgs {
		if err := b.check(ctx, img.String(), d, img.String(), false); err != nil {
			return fmt.Errorf("%s: %w", img, err)
		}
		ref, err := name.ParseReference(d.reg.Host + "/" + img.String())
		if err != nil {
			return err
		}
		idx, err := remote.Index(ref, remote.WithContext(ctx))
		if err != nil {
			return fmt.Errorf("%s: reading the index at the destination: %w", img, err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return fmt.Errorf("%s: reading the index at the destination: %w", img, err)
		}
		if len(im.Manifests) != 2 {
			return fmt.Errorf("%s: the index at the destination names %d manifests, not 2", img, len(im.Manifests))
		}
		for _, child := range im.Manifests {
			if _, err := remote.Head(ref.Context().Digest(child.Digest.String()), remote.WithContext(ctx)); err != nil {
				return fmt.Errorf("%s: manifest %s at the destination: %w", img, child.Digest, err)
			}
		}
	}
	return nil
}

// fleetCommand writes tool's configuration for syncing imgs from srcHost
// to dstHost into dir and returns the command that runs it.
func (b *bench) fleetCommand(tool string, imgs []fleetImage, srcHost, dstHost, dir string) (*exec.Cmd, error) {
	var file, conf string
	switch tool {
	case "ocistow":
		file, conf = filepath.Join(dir, "promotions.yaml"), ocistowFleetFile(imgs, srcHost, dstHost)
	case "regsync":
		file, conf = filepath.Join(dir, "regsync.yaml"), regsyncFleetFile(imgs, srcHost, dstHost)
	case "skopeo":
		file, conf = filepath.Join(dir, "skopeo-sync.yaml"), skopeoFleetFile(imgs, srcHost)
	default:
		return nil, fmt.Errorf("no fleet command for %s", tool)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		return nil, fmt.Errorf("writing %s's configuration: %w", tool, err)
	}
	switch tool {
	case "ocistow":
		return exec.Command(b.tools["ocistow"], append([]string{"sync", "-f", file, "-parallel", strconv.Itoa(fleetParallel), "-quiet"}, b.debugArgs(tool)...)...), nil
	case "regsync":
		return exec.Command(b.tools["regsync"], "once", "-c", file), nil
	default:
		// Without --scoped, skopeo names each destination repository
		// after the last element of the source's: fleet/appK lands as
		// DST/fleet/appK.
		return exec.Command(b.tools["skopeo"], "--insecure-policy", "sync", "--src", "yaml", "--dest", "docker",
			"--dest-tls-verify=false", "--all", "--preserve-digests", file, dstHost+"/fleet"), nil
	}
}

// ocistowFleetFile is the promotion file: one entry per repository with
// its tags listed, signing off, referrers left behind (regsync copies none
// unless configured to, and skopeo sync none at all).
func ocistowFleetFile(imgs []fleetImage, srcHost, dstHost string) string {
	var sb strings.Builder
	sb.WriteString("defaults:\n  sign: false\n  referrers: false\npromotions:\n")
	repos, tags := fleetRepos(imgs)
	for _, r := range repos {
		fmt.Fprintf(&sb, "  - source: %s/%s\n    destination: %s/%s\n    tags: [%s]\n", srcHost, r, dstHost, r, quoteJoin(tags[r]))
	}
	return sb.String()
}

// regsyncFleetFile is regsync's configuration: one image entry per image,
// plain HTTP to both registries, fleetParallel images at once, at most
// fleetRegistryRequests requests per registry, no Docker config, and no
// rate-limit checks (ratelimit.min 0: it never asks or waits; Distribution
// sends no rate-limit headers anyway).
func regsyncFleetFile(imgs []fleetImage, srcHost, dstHost string) string {
	var sb strings.Builder
	sb.WriteString("version: 1\ncreds:\n")
	for _, h := range []string{srcHost, dstHost} {
		fmt.Fprintf(&sb, "  - registry: %q\n    tls: disabled\n    reqConcurrent: %d\n", h, fleetRegistryRequests)
	}
	fmt.Fprintf(&sb, "defaults:\n  parallel: %d\n  skipDockerConfig: true\n  ratelimit:\n    min: 0\nsync:\n", fleetParallel)
	for _, i := range imgs {
		fmt.Fprintf(&sb, "  - source: %q\n    target: %q\n    type: image\n", srcHost+"/"+i.String(), dstHost+"/"+i.String())
	}
	return sb.String()
}

// skopeoFleetFile is skopeo sync's YAML source: the source registry, plain
// HTTP, and each repository's tags.
func skopeoFleetFile(imgs []fleetImage, srcHost string) string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "%q:\n  tls-verify: false\n  images:\n", srcHost)
	repos, tags := fleetRepos(imgs)
	for _, r := range repos {
		fmt.Fprintf(&sb, "    %s: [%s]\n", r, quoteJoin(tags[r]))
	}
	return sb.String()
}

func quoteJoin(v []string) string {
	q := make([]string, len(v))
	for i, s := range v {
		q[i] = strconv.Quote(s)
	}
	return strings.Join(q, ", ")
}

// isManifestGet reports whether r is a manifest GET: a pull, on registries
// that meter them (HEADs are free).
func isManifestGet(r testenv.Request) bool {
	return r.Method == http.MethodGet && strings.Contains(r.Path, "/manifests/")
}

// perImage is n requests per image of a fleet of images.
func perImage(n, images int) string {
	if images == 0 {
		return "-"
	}
	return strconv.FormatFloat(float64(n)/float64(images), 'f', 2, 64)
}

// fleetTargets evaluates issue 11's targets on the fleet summaries: wall
// against the fastest peer (at most 1.0x without latency, 0.7x with), and
// for a no-op re-sync no metered pull and at most 2 requests per image at
// each registry. It returns a Markdown table, or "" when no fleet ran.
func fleetTargets(sums []summary, best map[string]summary) string {
	var sb strings.Builder
	for _, s := range sums {
		if s.images == 0 || s.tool != "ocistow" {
			continue
		}
		status := func(ok bool) string {
			if s.runs == s.fail {
				return "failed"
			}
			if ok {
				return "met"
			}
			return "not met"
		}
		switch n := scenarioNumber(s.scenario); n {
		case 8, 10:
			limit := 1.0
			if n == 10 {
				limit = 0.7
			}
			bp, ok := best[s.scenario]
			if !ok || bp.wall == 0 || s.wall == 0 {
				fmt.Fprintf(&sb, "| %s: wall <= %.1fx the fastest peer | no peer measured | |\n", s.scenario, limit)
				continue
			}
			r := s.wall.Seconds() / bp.wall.Seconds()
			fmt.Fprintf(&sb, "| %s: wall <= %.1fx the fastest peer | %s | %.2fs vs %s %.2fs: %.2fx |\n", s.scenario, limit, status(r <= limit), s.wall.Seconds(), bp.tool, bp.wall.Seconds(), r)
		case 9, 11:
			ok := s.pulls == 0 && s.srcRequests <= 2*s.images && s.requests <= 2*s.images
			fmt.Fprintf(&sb, "| %s: 0 metered pulls, <= 2 requests per image at each registry | %s | %d pulls; %s per image at the source, %s at the destination |\n",
				s.scenario, status(ok), s.pulls, perImage(s.srcRequests, s.images), perImage(s.requests, s.images))
		}
	}
	if sb.Len() == 0 {
		return ""
	}
	return "| fleet target (ocistow, medians) | status | numbers |\n| --- | --- | --- |\n" + sb.String()
}
