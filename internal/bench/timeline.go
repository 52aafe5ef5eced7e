package main

// Request timelines: with -timelines DIR, ocistow's runs in the fleet and
// latency scenarios run with -debug, and each run's requests are written to
// DIR as a timeline (when each started, how long it took, what it was), the
// way the round trips on a promotion's critical path are found. The debug
// log costs a little: numbers from such a run are not for the tables.

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// debugArgs returns the extra arguments ocistow gets when timelines are
// asked for.
func (b *bench) debugArgs(tool string) []string {
	if b.cfg.timelines == "" || tool != "ocistow" {
		return nil
	}
	return []string{"-debug"}
}

var httpLine = regexp.MustCompile(`^time=(\S+) level=DEBUG msg=http method=(\S+) url=(\S+) took=(\S+)(?: .*?status=(\d+))?`)

// keepLog returns out when a timeline of tool's run is to be written.
func (b *bench) keepLog(tool, out string) string {
	if b.cfg.timelines == "" || tool != "ocistow" {
		return ""
	}
	return out
}

// timeline writes m's request timeline, if its log was kept, and logs a
// failure to (the tables do not depend on it).
func (b *bench) timeline(m measurement) {
	if m.log == "" {
		return
	}
	if err := b.writeTimeline(fmt.Sprintf("%s %s run%d", m.scenario, m.tool, m.run), m.log); err != nil {
		log("timeline of %s run %d: %v", m.scenario, m.run, err)
	}
}

// request is one line of a timeline.
type request struct {
	start       time.Time
	took        time.Duration
	method, url string
	status      string
}

// writeTimeline writes the requests in a run's debug log to the timelines
// directory, as name.txt: milliseconds from the first request, duration,
// method, status and URL, in the order they started.
func (b *bench) writeTimeline(name, log string) error {
	if b.cfg.timelines == "" {
		return nil
	}
	var reqs []request
	sc := bufio.NewScanner(strings.NewReader(log))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		m := httpLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		end, err := time.Parse(time.RFC3339Nano, m[1])
		if err != nil {
			continue
		}
		took, err := time.ParseDuration(m[4])
		if err != nil {
			continue
		}
		status := m[5]
		if status == "" {
			status = "ERR"
		}
		reqs = append(reqs, request{start: end.Add(-took), took: took, method: m[2], url: m[3], status: status})
	}
	if len(reqs) == 0 {
		return nil
	}
	slices.SortStableFunc(reqs, func(a, c request) int { return a.start.Compare(c.start) })
	first := reqs[0].start
	var sb strings.Builder
	fmt.Fprintf(&sb, "# %s: %d requests; start and duration in ms from the first request\n", name, len(reqs))
	for _, r := range reqs {
		fmt.Fprintf(&sb, "%7.1f %7.1f %-6s %-3s %s\n", float64(r.start.Sub(first))/1e6, float64(r.took)/1e6, r.method, r.status, r.url)
	}
	if err := os.MkdirAll(b.cfg.timelines, 0o755); err != nil {
		return err
	}
	file := filepath.Join(b.cfg.timelines, strings.NewReplacer(" ", "-", "/", "-", "+", "").Replace(name)+".txt")
	return os.WriteFile(file, []byte(sb.String()), 0o644)
}
