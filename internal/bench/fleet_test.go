package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/promofile"
)

// TestFleetFiles holds the configurations of the fleet scenarios to what
// the tools themselves read from them: ocistow's promotion file through
// its parser, regsync's through the pinned regsync (`regsync config`
// prints the configuration as it understood it; its YAML decoder ignores
// keys it does not know, so a misspelt setting would otherwise go
// unnoticed and skew the comparison). Both must name the same 7 images
// (two repositories: 5 tags and 2), byte-for-byte copies without signing,
// regsync with 4 images at once, 16 requests per registry, plain HTTP and
// no rate-limit waits.
func TestFleetFiles(t *testing.T) {
	const src, dst = "127.0.0.1:5000", "127.0.0.1:5001"
	imgs := fleetImages(7)
	var want []string
	for _, i := range imgs {
		want = append(want, i.String())
	}
	if want[0] != "fleet/app0:v1" || want[4] != "fleet/app0:v5" || want[5] != "fleet/app1:v1" || want[6] != "fleet/app1:v2" {
		t.Fatalf("fleet layout: %v", want)
	}

	f, err := promofile.Parse("promotions.yaml", []byte(ocistowFleetFile(imgs, src, dst)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Defaults.Sign == nil || *f.Defaults.Sign {
		t.Errorf("the promotion file signs: %+v", f.Defaults)
	}
	if f.Defaults.Referrers == nil || *f.Defaults.Referrers {
		t.Errorf("the promotion file copies referrers: %+v", f.Defaults)
	}
	var got []string
	for _, e := range f.Promotions {
		if len(e.Annotations)+len(e.ManifestAnnotations)+len(e.Labels)+len(e.Platforms) > 0 {
			t.Errorf("%s stamps or selects platforms: %+v", e.Source, e.Options)
		}
		repo, ok := strings.CutPrefix(e.Source, src+"/")
		if !ok || e.Destination != dst+"/"+repo || e.Tags == nil {
			t.Fatalf("promotion %+v", e)
		}
		for _, tag := range e.Tags.List {
			got = append(got, repo+":"+tag)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("the promotion file names %v, want %v", got, want)
	}

	regsync, err := testenv.Tool("regsync")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "regsync.yaml")
	if err := os.WriteFile(file, []byte(regsyncFleetFile(imgs, src, dst)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(regsync, "config", "-c", file).CombinedOutput()
	if err != nil {
		t.Fatalf("regsync config: %v\n%s", err, out)
	}
	var conf struct {
		Creds []struct {
			Registry      string `yaml:"registry"`
			TLS           string `yaml:"tls"`
			ReqConcurrent int    `yaml:"reqConcurrent"`
		} `yaml:"creds"`
		Defaults struct {
			Parallel       int  `yaml:"parallel"`
			SkipDockerConf bool `yaml:"skipDockerConfig"`
		} `yaml:"defaults"`
		Sync []struct {
			Source, Target, Type string
			DigestTags           bool `yaml:"digestTags"`
			Referrers            bool `yaml:"referrers"`
			RateLimit            struct {
				Min int `yaml:"min"`
			} `yaml:"ratelimit"`
		} `yaml:"sync"`
	}
	if err := yaml.Unmarshal(out, &conf); err != nil {
		t.Fatalf("regsync config printed %v:\n%s", err, out)
	}
	if len(conf.Creds) != 2 {
		t.Fatalf("regsync read %d registries:\n%s", len(conf.Creds), out)
	}
	for i, h := range []string{src, dst} {
		c := conf.Creds[i]
		if c.Registry != h || c.TLS != "disabled" || c.ReqConcurrent != fleetRegistryRequests {
			t.Errorf("regsync read registry %d as %+v, want %s, tls disabled, %d requests at once", i, c, h, fleetRegistryRequests)
		}
	}
	if conf.Defaults.Parallel != fleetParallel || !conf.Defaults.SkipDockerConf {
		t.Errorf("regsync read defaults %+v", conf.Defaults)
	}
	got = nil
	for _, s := range conf.Sync {
		repoTag, ok := strings.CutPrefix(s.Source, src+"/")
		if !ok || s.Target != dst+"/"+repoTag || s.Type != "image" || s.DigestTags || s.Referrers || s.RateLimit.Min != 0 {
			t.Errorf("regsync read sync entry %+v", s)
		}
		got = append(got, repoTag)
	}
	if !slices.Equal(got, want) {
		t.Errorf("regsync's configuration names %v, want %v", got, want)
	}

	var sk map[string]struct {
		TLSVerify *bool               `yaml:"tls-verify"`
		Images    map[string][]string `yaml:"images"`
	}
	if err := yaml.Unmarshal([]byte(skopeoFleetFile(imgs, src)), &sk); err != nil {
		t.Fatal(err)
	}
	reg, ok := sk[src]
	if len(sk) != 1 || !ok || reg.TLSVerify == nil || *reg.TLSVerify {
		t.Fatalf("skopeo's source file: %+v", sk)
	}
	got = nil
	for repo, tags := range reg.Images {
		for _, tag := range tags {
			got = append(got, repo+":"+tag)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("skopeo's source file names %v, want %v", got, want)
	}
}

// TestFleetTargets checks the verdicts on issue 11's targets, at and on
// either side of each limit.
func TestFleetTargets(t *testing.T) {
	s := func(scenario, tool string, wall float64, pulls, src, dst int) summary {
		return summary{scenario: scenario, tool: tool, wall: time.Duration(wall * float64(time.Second)), pulls: pulls, srcRequests: src, requests: dst, images: 20, runs: 5}
	}
	sums := []summary{
		s("8 fleet 20 sync", "ocistow", 1.0, 60, 200, 600),
		s("8 fleet 20 sync", "regsync", 1.0, 60, 200, 500),
		s("9 fleet 20 no-op re-sync", "ocistow", 0.1, 0, 40, 40),
		s("10 fleet 20 sync +25ms", "ocistow", 0.71, 60, 200, 600),
		s("10 fleet 20 sync +25ms", "skopeo", 1.0, 60, 200, 700),
		s("11 fleet 20 no-op +25ms", "ocistow", 0.2, 0, 40, 41),
		s("8 fleet 50 sync", "ocistow", 1.01, 150, 500, 1500),
		s("8 fleet 50 sync", "skopeo", 1.0, 150, 500, 1500),
		s("9 fleet 50 no-op re-sync", "ocistow", 0.1, 1, 50, 50),
		s("10 fleet 50 sync +25ms", "ocistow", 0.7, 150, 500, 1500),
		s("10 fleet 50 sync +25ms", "regsync", 1.0, 150, 500, 1500),
	}
	best := map[string]summary{}
	for _, x := range sums {
		if x.tool != "ocistow" {
			best[x.scenario] = x
		}
	}
	got := fleetTargets(sums, best)
	for _, want := range []string{
		"| 8 fleet 20 sync: wall <= 1.0x the fastest peer | met | 1.00s vs regsync 1.00s: 1.00x |",
		"| 9 fleet 20 no-op re-sync: 0 metered pulls, <= 2 requests per image at each registry | met | 0 pulls; 2.00 per image at the source, 2.00 at the destination |",
		"| 10 fleet 20 sync +25ms: wall <= 0.7x the fastest peer | not met | 0.71s vs skopeo 1.00s: 0.71x |",
		"| 11 fleet 20 no-op +25ms: 0 metered pulls, <= 2 requests per image at each registry | not met | 0 pulls; 2.00 per image at the source, 2.05 at the destination |",
		"| 8 fleet 50 sync: wall <= 1.0x the fastest peer | not met | 1.01s vs skopeo 1.00s: 1.01x |",
		"| 9 fleet 50 no-op re-sync: 0 metered pulls, <= 2 requests per image at each registry | not met | 1 pulls;",
		"| 10 fleet 50 sync +25ms: wall <= 0.7x the fastest peer | met | 0.70s vs regsync 1.00s: 0.70x |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("targets lack %q:\n%s", want, got)
		}
	}
	if n := strings.Count(got, "\n"); n != 2+7 {
		t.Errorf("targets have %d lines, want a header and 7 rows:\n%s", n, got)
	}
	if fleetTargets(sums[:0], best) != "" {
		t.Error("targets without fleet scenarios are not empty")
	}
}

// TestScenarioOrder: scenario 10 sorts after 9, not after 1.
func TestScenarioOrder(t *testing.T) {
	b := &bench{results: []measurement{
		{scenario: "10 fleet 5 sync +25ms", tool: "ocistow", ok: true},
		{scenario: "9 fleet 5 no-op re-sync", tool: "ocistow", ok: true},
		{scenario: "1 full copy", tool: "ocistow", ok: true},
		{scenario: "11 fleet 5 no-op +25ms", tool: "ocistow", ok: true},
	}}
	var got []string
	for _, s := range b.summaries() {
		got = append(got, s.scenario)
	}
	want := []string{"1 full copy", "9 fleet 5 no-op re-sync", "10 fleet 5 sync +25ms", "11 fleet 5 no-op +25ms"}
	if !slices.Equal(got, want) {
		t.Errorf("order %v, want %v", got, want)
	}
}
