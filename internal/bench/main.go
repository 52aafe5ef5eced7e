// Command bench measures ocistow against the tools users would otherwise
// pick (crane, regctl, skopeo) on this machine: real Distribution
// registries on loopback, a counting proxy in front of each fresh
// destination and in front of the source, interleaved runs, and each tool's
// own wall time, CPU time, peak RSS, bytes uploaded and requests made. Every
// copy is checked at the destination (digest, and signatures where the
// scenario signs), and any failure to set a scenario up ends the run with
// an error. Scenario 0 measures the programs themselves: binary size,
// package initialisation (GODEBUG=inittrace=1) and peak RSS of printing
// their version. Scenarios 8 to 11 sync fleets of small multi-platform
// images (fleet.go) with ocistow sync, regsync and skopeo sync.
//
//	make bench                       # defaults: 12 x 256 MiB layers, 5 runs
//	go run ./internal/bench -layers 6 -layer-mib 128 -runs 3
//	go run ./internal/bench -scenarios 0 -compare a6cd58e   # program figures, also of ocistow at a6cd58e
//	go run ./internal/bench -scenarios 8,9,10,11 -fleet 20,50  # the fleet scenarios alone
//	go run ./internal/bench -scenarios 0,1,2 -tools ocistow,crane,ocistow-copy -docs ''  # and the copy path alone
//	go run ./internal/bench -scenarios 0,1,2 -tools crane,ocistow-front -docs ''        # and with the CLI's copy needs
//
// It prints tables of medians, writes bench/results/results.csv,
// bench/results/programs.csv and bench/results/chart.svg, and rewrites the
// generated part of docs/BENCHMARKS.md.
package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/internal/oneline"
	"github.com/ocistow/ocistow/internal/testenv"
)

type config struct {
	layers, layerMiB, runs, small int
	out, docs, compare            string
	scenarios                     map[int]bool
	fleet                         []int           // fleet sizes of scenarios 8 to 11
	tools                         map[string]bool // the tools compared; empty: all
	timelines                     string          // where request timelines go ("": none)
}

// only keeps the tools the run compares (-tools), in their order.
func (c config) only(tools []string) []string {
	if len(c.tools) == 0 {
		return tools
	}
	return slices.DeleteFunc(slices.Clone(tools), func(t string) bool { return !c.tools[t] })
}

// measurement is one run of one tool in one scenario.
type measurement struct {
	scenario, tool string
	run            int
	wall, cpu      time.Duration
	rssBytes       int64
	uploaded       int64
	requests       int // to the destination
	srcRequests    int // to the source
	pulls          int // manifest GETs at the source: metered pulls
	images         int // images a fleet run synced (0: not a fleet)
	sequential     int // round trips in sequence (latency scenarios; 0: not measured)
	ok             bool
	note           string
	log            string // the tool's output, kept for -timelines
}

type bench struct {
	cfg      config
	dir      string
	root     string
	tools    map[string]string // name -> binary
	src      *testenv.Registry
	srcFront *testenv.Front // counts the requests made to the source
	kms      *testenv.KMS
	results  []measurement
	programs []program
	trusted  string
	keyAlias string
}

func main() {
	var c config
	var scen, fleetSizes string
	flag.IntVar(&c.layers, "layers", 12, "layers of the large image")
	flag.IntVar(&c.layerMiB, "layer-mib", 256, "MiB per layer (incompressible)")
	flag.IntVar(&c.runs, "runs", 5, "runs per tool and scenario, interleaved")
	flag.IntVar(&c.small, "small", 50, "small multi-platform images in scenario 5")
	flag.StringVar(&c.out, "out", "bench/results", "where CSV and SVG go")
	flag.StringVar(&c.docs, "docs", "docs/BENCHMARKS.md", "the document whose generated section is rewritten ('' for none)")
	flag.StringVar(&scen, "scenarios", "0,1,2,3,4,5,6,7,8,9,10,11,12,13", "scenarios to run (0: the programs themselves; 8-11: fleets; 12-13: single images with 25 ms latency)")
	flag.StringVar(&fleetSizes, "fleet", "20,50", "images per fleet in scenarios 8 to 11")
	flag.StringVar(&c.compare, "compare", "", "a git revision whose ocistow scenario 0 measures too")
	var tools string
	flag.StringVar(&tools, "tools", "", "compare only these tools (comma-separated, e.g. ocistow,regsync); default all but ocistow-copy (ocistow's copy path alone, scenarios 0 to 2) and ocistow-front (that path with what the CLI needs for a plain copy linked in), measured only when named")
	flag.StringVar(&c.timelines, "timelines", "", "a directory for request timelines of ocistow's runs in scenarios 8 to 13 (runs with -debug: not for the tables)")
	flag.Parse()
	c.tools = map[string]bool{}
	for _, t := range strings.Split(tools, ",") {
		if t = strings.TrimSpace(t); t != "" {
			c.tools[t] = true
		}
	}
	c.scenarios = map[int]bool{}
	for _, s := range strings.Split(scen, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: bad -scenarios:", err)
			os.Exit(2)
		}
		c.scenarios[n] = true
	}
	for _, s := range strings.Split(fleetSizes, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			fmt.Fprintf(os.Stderr, "bench: bad -fleet: %q is not a number of images\n", s)
			os.Exit(2)
		}
		if !slices.Contains(c.fleet, n) {
			c.fleet = append(c.fleet, n)
		}
	}
	if err := run(context.Background(), c); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, c config) error {
	root, err := testenv.Root()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "ocistow-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	b := &bench{cfg: c, dir: dir, root: root, tools: map[string]string{}}
	if err := b.setupTools(); err != nil {
		return err
	}
	if b.src, err = testenv.StartRegistry(ctx, filepath.Join(dir, "src"), testenv.RegistryOptions{}); err != nil {
		return err
	}
	defer b.src.Close()
	b.srcFront = testenv.NewFront(b.src.Host)
	defer b.srcFront.Close()
	if b.kms, err = testenv.StartKMS(ctx, filepath.Join(dir, "kms")); err != nil {
		return err
	}
	defer b.kms.Close()
	b.keyAlias = "bench"
	if _, _, err := b.kms.CreateKey(ctx, kmstypes.KeySpecEccNistP256, kmstypes.KeyUsageTypeSignVerify, b.keyAlias); err != nil {
		return err
	}
	if b.trusted, err = testenv.WriteEmptyTrustedRoot(dir); err != nil {
		return err
	}

	if c.scenarios[0] {
		if err := b.measurePrograms(); err != nil {
			return err
		}
	}
	layer := int64(c.layerMiB) << 20
	if c.scenarios[1] || c.scenarios[3] || c.scenarios[4] || c.scenarios[6] || c.scenarios[7] {
		log("pushing the large image (%d x %d MiB)", c.layers, c.layerMiB)
		if err := b.push(ctx, "big:v1", c.layers, layer, 1); err != nil {
			return err
		}
	}
	oneGiB := max(1, int(math.Ceil(float64(1<<30)/float64(layer))))
	if c.scenarios[2] {
		log("pushing the 1 GiB image (%d x %d MiB)", oneGiB, c.layerMiB)
		if err := b.push(ctx, "one:v1", oneGiB, layer, 2); err != nil {
			return err
		}
	}
	peers := c.only([]string{"ocistow", "crane", "regctl", "skopeo"})
	full := peers // the full copies' tools
	// Asked for by name only, for scenarios 0 to 2: ocistow's copy path
	// alone, and that path with what the CLI needs for a plain copy linked
	// in (see internal/bench/copyonly).
	for _, t := range []string{"ocistow-copy", "ocistow-front"} {
		if c.tools[t] {
			full = append(slices.Clone(full), t)
		}
	}
	if c.scenarios[1] {
		if err := b.fullCopy(ctx, "1 full copy", "big:v1", full); err != nil {
			return err
		}
	}
	if c.scenarios[2] {
		if err := b.fullCopy(ctx, "2 full copy 1GiB", "one:v1", full); err != nil {
			return err
		}
	}
	if c.scenarios[3] {
		if err := b.noop(ctx, peers); err != nil {
			return err
		}
	}
	if c.scenarios[4] {
		if err := b.incremental(ctx, peers, layer); err != nil {
			return err
		}
	}
	if c.scenarios[5] {
		if err := b.smallImages(ctx, peers); err != nil {
			return err
		}
	}
	if c.scenarios[6] {
		if err := b.promoteSign(ctx); err != nil {
			return err
		}
	}
	if c.scenarios[7] {
		if err := b.lambda(ctx); err != nil {
			return err
		}
	}
	if err := b.fleets(ctx); err != nil {
		return err
	}
	if err := b.latency(ctx); err != nil {
		return err
	}
	return b.report()
}

func log(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

// goBuild builds the package pkg of the module at dir into b.dir/name, with
// the extra go build flags given.
func (b *bench) goBuild(dir, pkg, name string, flags ...string) (string, error) {
	exe := filepath.Join(b.dir, name)
	cmd := exec.Command("go", append(append([]string{"build", "-trimpath", "-o", exe}, flags...), pkg)...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building %s in %s: %v\n%s", pkg, dir, err, out)
	}
	return exe, nil
}

func (b *bench) setupTools() error {
	var err error
	if b.tools["ocistow"], err = b.goBuild(b.root, "./cmd/ocistow", "ocistow"); err != nil {
		return err
	}
	for _, t := range []string{"crane", "regctl", "regsync", "cosign", "aws-lambda-rie"} {
		p, err := testenv.Tool(t)
		if err != nil {
			return err
		}
		b.tools[t] = p
	}
	p, err := exec.LookPath("skopeo")
	if err != nil {
		log("skopeo is missing: installing Debian's package")
		inst := exec.Command("apt-get", "install", "-y", "skopeo")
		inst.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := inst.CombinedOutput(); err != nil {
			return fmt.Errorf("installing skopeo (apt-get install -y skopeo): %v\n%s", err, out)
		}
		if p, err = exec.LookPath("skopeo"); err != nil {
			return err
		}
	}
	b.tools["skopeo"] = p
	if b.tools["bootstrap"], err = testenv.BuildBootstrap(b.dir); err != nil {
		return err
	}
	if b.tools["time"], err = exec.LookPath("/usr/bin/time"); err != nil {
		log("GNU time is missing: installing Debian's package")
		inst := exec.Command("apt-get", "install", "-y", "time")
		inst.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		if out, err := inst.CombinedOutput(); err != nil {
			return fmt.Errorf("installing GNU time (apt-get install -y time): %v\n%s", err, out)
		}
		if b.tools["time"], err = exec.LookPath("/usr/bin/time"); err != nil {
			return err
		}
	}
	if b.cfg.compare != "" {
		if b.tools["ocistow@"+b.cfg.compare], err = b.buildAt(b.cfg.compare); err != nil {
			return err
		}
	}
	if b.cfg.tools["ocistow-copy"] {
		if b.tools["ocistow-copy"], err = b.goBuild(b.root, "./internal/bench/copyonly", "ocistow-copy"); err != nil {
			return err
		}
	}
	if b.cfg.tools["ocistow-front"] {
		if b.tools["ocistow-front"], err = b.goBuild(b.root, "./internal/bench/copyonly", "ocistow-front", "-tags", "front"); err != nil {
			return err
		}
	}
	return nil
}

// buildAt builds cmd/ocistow as it was at the git revision rev.
func (b *bench) buildAt(rev string) (string, error) {
	src := filepath.Join(b.dir, "rev-"+rev)
	if err := os.MkdirAll(src, 0o755); err != nil {
		return "", err
	}
	archive := exec.Command("sh", "-c", `git archive "$1" | tar -x -C "$2"`, "sh", rev, src)
	archive.Dir = b.root
	if out, err := archive.CombinedOutput(); err != nil {
		return "", fmt.Errorf("extracting %s: %v\n%s", rev, err, out)
	}
	return b.goBuild(src, "./cmd/ocistow", "ocistow-"+rev)
}

// push writes an image of n incompressible layers to the source.
func (b *bench) push(ctx context.Context, tag string, n int, size int64, seed uint64) error {
	img, err := testenv.BulkImage(n, size, seed)
	if err != nil {
		return err
	}
	return testenv.Push(ctx, b.src.Host+"/bench/"+tag, img)
}

// destination is a fresh, empty registry behind a counting proxy.
type destination struct {
	reg   *testenv.Registry
	front *testenv.Front
	dir   string
}

func (b *bench) freshDestination(ctx context.Context, name string) (*destination, error) {
	dir := filepath.Join(b.dir, "dst-"+name)
	reg, err := testenv.StartRegistry(ctx, dir, testenv.RegistryOptions{})
	if err != nil {
		return nil, fmt.Errorf("starting destination %s: %w", name, err)
	}
	return &destination{reg: reg, front: testenv.NewFront(reg.Host), dir: dir}, nil
}

func (d *destination) close() {
	d.front.Close()
	d.reg.Close()
	_ = os.RemoveAll(d.dir)
}

// command returns how tool copies src to dst.
func (b *bench) command(tool, src, dst string) *exec.Cmd {
	switch tool {
	case "ocistow":
		return exec.Command(b.tools[tool], append([]string{"-source", src, "-destination", dst, "-sign=false", "-quiet"}, b.debugArgs(tool)...)...)
	case "ocistow-copy", "ocistow-front":
		return exec.Command(b.tools[tool], src, dst)
	case "crane":
		return exec.Command(b.tools[tool], "copy", src, dst)
	case "regctl":
		return exec.Command(b.tools[tool], "--host", "reg="+hostOf(src)+",tls=disabled", "--host", "reg="+hostOf(dst)+",tls=disabled", "image", "copy", src, dst)
	case "skopeo":
		return exec.Command(b.tools[tool], "--insecure-policy", "copy", "--all", "--preserve-digests", "--src-tls-verify=false", "--dest-tls-verify=false", "docker://"+src, "docker://"+dst)
	}
	panic("unknown tool " + tool)
}

func hostOf(ref string) string { h, _, _ := strings.Cut(ref, "/"); return h }

// measure runs cmd and reads its own resource usage from the kernel: CPU
// time from its rusage, and peak RSS from /proc/<pid>/status (VmHWM),
// polled while it runs. (The rusage's maxrss would count the memory of
// this process, which the child shares until it execs.)
func measure(cmd *exec.Cmd, env []string) (wall, cpu time.Duration, rss int64, out string, err error) {
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir(), "AWS_EC2_METADATA_DISABLED=true"}, env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	start := time.Now()
	if err = cmd.Start(); err != nil {
		return 0, 0, 0, "", err
	}
	done := make(chan struct{})
	peak := make(chan int64, 1)
	go func() {
		var hwm int64
		status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
		for {
			if v := testenv.VmHWM(status); v > hwm {
				hwm = v
			}
			select {
			case <-done:
				peak <- hwm
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	err = cmd.Wait()
	wall = time.Since(start)
	close(done)
	rss = <-peak
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok && ru != nil {
		cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	}
	return wall, cpu, rss, buf.String(), err
}

// tally counts requests and request-body bytes sent to a front.
func tally(reqs []testenv.Request) (n int, uploaded int64) {
	for _, r := range reqs {
		n++
		if r.Method == http.MethodPatch || r.Method == http.MethodPut || r.Method == http.MethodPost {
			uploaded += r.BodyBytes
		}
	}
	return n, uploaded
}

// digestAt returns the digest ref points at, asked of the registry itself
// (not through a counting front).
func digestAt(ctx context.Context, ref string) (string, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return "", err
	}
	d, err := remote.Head(r, remote.WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("reading %s: %w", ref, err)
	}
	return d.Digest.String(), nil
}

// counts is where the fronts' logs stood before a run.
type counts struct{ src, dst int }

func (b *bench) mark(d *destination) counts {
	return counts{len(b.srcFront.Requests()), len(d.front.Requests())}
}

// count fills in m's requests and upload since c.
func (b *bench) count(m *measurement, d *destination, c counts) {
	src := b.srcFront.Requests()[c.src:]
	m.srcRequests = len(src)
	for _, r := range src {
		if isManifestGet(r) {
			m.pulls++
		}
	}
	m.requests, m.uploaded = tally(d.front.Requests()[c.dst:])
}

// check reports whether repoTag at the destination holds the digest srcTag
// holds at the source, and then, when signed, that its signature verifies
// with the bench key (ocistow verify, after the timed run).
func (b *bench) check(ctx context.Context, srcTag string, d *destination, repoTag string, signed bool) error {
	want, err := digestAt(ctx, b.src.Host+"/"+srcTag)
	if err != nil {
		return err
	}
	got, err := digestAt(ctx, d.reg.Host+"/"+repoTag)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("destination holds %s, the source %s", got, want)
	}
	if !signed {
		return nil
	}
	ref := d.reg.Host + "/" + strings.SplitN(repoTag, ":", 2)[0] + "@" + got
	_, _, _, out, err := measure(exec.Command(b.tools["ocistow"], "verify", "-aws-kms-key-arn", "alias/"+b.keyAlias, ref), b.kms.Env())
	if err != nil {
		return fmt.Errorf("ocistow verify %s: %v %s", ref, err, lastLine(out))
	}
	return nil
}

// copyRun runs tool from srcTag (through the source's front) to repoTag at
// d (through its front), counting requests and checking the copy.
func (b *bench) copyRun(ctx context.Context, tool, srcTag string, d *destination, repoTag string) measurement {
	return b.copyVia(ctx, tool, b.srcFront.Host, srcTag, d, d.front.Host, repoTag)
}

// copyOnce is copyRun recorded as one run of scenario.
func (b *bench) copyOnce(ctx context.Context, scenario, tool string, run int, srcTag string, d *destination, repoTag string) measurement {
	m := b.copyRun(ctx, tool, srcTag, d, repoTag)
	m.scenario, m.run = scenario, run
	logRun(m)
	return m
}

func logRun(m measurement) {
	log("%-22s %-14s run %d: %6.2fs wall %6.2fs cpu %6.1f MiB rss %s up %4d+%d req %d pulls %v %s", m.scenario, m.tool, m.run, m.wall.Seconds(), m.cpu.Seconds(), float64(m.rssBytes)/(1<<20), human(m.uploaded), m.srcRequests, m.requests, m.pulls, okWord(m.ok), m.note)
}

func okWord(ok bool) string {
	if ok {
		return "ok"
	}
	return "FAILED"
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func (b *bench) fullCopy(ctx context.Context, scenario, tag string, tools []string) error {
	for run := 1; run <= b.cfg.runs; run++ {
		for _, tool := range rotate(tools, run) {
			d, err := b.freshDestination(ctx, fmt.Sprintf("%s-%d", tool, run))
			if err != nil {
				return err
			}
			b.results = append(b.results, b.copyOnce(ctx, scenario, tool, run, "bench/"+tag, d, "bench/"+tag))
			d.close()
		}
	}
	return nil
}

// rotate interleaves: each run starts with another tool.
func rotate(tools []string, run int) []string {
	if len(tools) == 0 {
		return nil
	}
	k := run % len(tools)
	return append(slices.Clone(tools[k:]), tools[:k]...)
}

func (b *bench) noop(ctx context.Context, tools []string) error {
	const scenario = "3 no-op re-promotion"
	for run := 1; run <= b.cfg.runs; run++ {
		d, err := b.freshDestination(ctx, fmt.Sprintf("noop-%d", run))
		if err != nil {
			return err
		}
		src := b.srcFront.Host + "/bench/big:v1"
		dst := d.front.Host + "/bench/big:v1"
		// Promoted and signed once, as a pipeline would have.
		// (Through the destination's front: the signature names the
		// repository by the host it was pushed to.)
		prep := exec.Command(b.tools["ocistow"], "-source", b.src.Host+"/bench/big:v1", "-destination", dst, "-aws-kms-key-arn", "alias/"+b.keyAlias, "-quiet")
		if _, _, _, out, err := measure(prep, b.kms.Env()); err != nil {
			return fmt.Errorf("preparing the no-op: %v %s", err, lastLine(out))
		}
		for _, tool := range rotate(tools, run) {
			b.results = append(b.results, b.copyOnce(ctx, scenario, tool, run, "bench/big:v1", d, "bench/big:v1"))
		}
		// ocistow with signing: finds every signature present.
		c := b.mark(d)
		cmd := exec.Command(b.tools["ocistow"], "-source", src, "-destination", dst, "-aws-kms-key-arn", "alias/"+b.keyAlias, "-quiet")
		wall, cpu, rss, out, err := measure(cmd, b.kms.Env())
		m := measurement{scenario: scenario, tool: "ocistow+sign", run: run, wall: wall, cpu: cpu, rssBytes: rss}
		b.count(&m, d, c)
		if err == nil && !strings.Contains(out, "0 added, 1 already present") {
			err = errors.New("did not find the signature present: " + lastLine(out))
		}
		if err == nil {
			err = b.check(ctx, "bench/big:v1", d, "bench/big:v1", true)
		}
		m.ok = err == nil
		if err != nil {
			m.note = oneline.String(err.Error())
		}
		logRun(m)
		b.results = append(b.results, m)
		d.close()
	}
	return nil
}

func (b *bench) incremental(ctx context.Context, tools []string, layer int64) error {
	const scenario = "4 incremental"
	base, err := testenv.BulkImage(b.cfg.layers, layer, 1) // the large image's layers
	if err != nil {
		return err
	}
	extra := make([]byte, layer)
	for i := range extra {
		extra[i] = byte(i*7 + 3)
	}
	img, err := mutate.AppendLayers(base, static.NewLayer(extra, types.OCILayer))
	if err != nil {
		return err
	}
	if err := testenv.Push(ctx, b.src.Host+"/bench/big:v2", img); err != nil {
		return err
	}
	for run := 1; run <= b.cfg.runs; run++ {
		for _, tool := range rotate(tools, run) {
			d, err := b.freshDestination(ctx, fmt.Sprintf("inc-%s-%d", tool, run))
			if err != nil {
				return err
			}
			prep := exec.Command(b.tools["crane"], "copy", b.src.Host+"/bench/big:v1", d.reg.Host+"/bench/big:v1")
			if _, _, _, out, err := measure(prep, nil); err != nil {
				return fmt.Errorf("preparing incremental: %v %s", err, lastLine(out))
			}
			b.results = append(b.results, b.copyOnce(ctx, scenario, tool, run, "bench/big:v2", d, "bench/big:v2"))
			d.close()
		}
	}
	return nil
}

func (b *bench) smallImages(ctx context.Context, tools []string) error {
	const scenario = "5 50 small multi-platform"
	for i := range b.cfg.small {
		idx, err := testenv.MixedIndex(int64(1000+i*2), 64<<10)
		if err != nil {
			return err
		}
		if err := testenv.Push(ctx, fmt.Sprintf("%s/small/img%d:v1", b.src.Host, i), idx); err != nil {
			return err
		}
	}
	for run := 1; run <= b.cfg.runs; run++ {
		for _, tool := range rotate(tools, run) {
			d, err := b.freshDestination(ctx, fmt.Sprintf("small-%s-%d", tool, run))
			if err != nil {
				return err
			}
			total := measurement{scenario: scenario, tool: tool, run: run, ok: true}
			for i := range b.cfg.small {
				tag := fmt.Sprintf("small/img%d:v1", i)
				m := b.copyRun(ctx, tool, tag, d, tag)
				total.wall += m.wall
				total.cpu += m.cpu
				total.rssBytes = max(total.rssBytes, m.rssBytes)
				total.uploaded += m.uploaded
				total.requests += m.requests
				total.srcRequests += m.srcRequests
				if !m.ok {
					total.ok, total.note = false, m.note
				}
			}
			logRun(total)
			b.results = append(b.results, total)
			d.close()
		}
	}
	return nil
}

func (b *bench) promoteSign(ctx context.Context) error {
	const scenario = "6 promote+sign"
	const tag = "bench/big:v1"
	for run := 1; run <= b.cfg.runs; run++ {
		for _, tool := range rotate([]string{"ocistow", "crane+cosign"}, run) {
			d, err := b.freshDestination(ctx, fmt.Sprintf("sign-%s-%d", strings.ReplaceAll(tool, "+", ""), run))
			if err != nil {
				return err
			}
			src, dst := b.srcFront.Host+"/"+tag, d.front.Host+"/"+tag
			m := measurement{scenario: scenario, tool: tool, run: run}
			c := b.mark(d)
			if tool == "ocistow" {
				var out string
				m.wall, m.cpu, m.rssBytes, out, err = measure(exec.Command(b.tools["ocistow"], "-source", src, "-destination", dst, "-aws-kms-key-arn", "alias/"+b.keyAlias, "-quiet"), b.kms.Env())
				if err != nil {
					err = fmt.Errorf("%v %s", err, lastLine(out))
				}
			} else {
				// cosign signs the digest crane pushed, as a pipeline would
				// read it from crane's output: crane copy prints nothing, so
				// it comes from the source, which the copy keeps.
				var digest string
				w1, c1, r1, out1, err1 := measure(b.command("crane", src, dst), nil)
				if err1 == nil {
					digest, err1 = digestAt(ctx, b.src.Host+"/"+tag)
				}
				err = fmt.Errorf("crane: %v %s", err1, lastLine(out1))
				if err1 == nil {
					w2, c2, r2, out2, err2 := measure(exec.Command(b.tools["cosign"], "sign", "--key", "awskms:///alias/"+b.keyAlias, "--tlog-upload=false", "--yes", d.front.Host+"/bench/big@"+digest), b.kms.Env())
					m.wall, m.cpu, m.rssBytes, err = w1+w2, c1+c2, max(r1, r2), nil
					if err2 != nil {
						err = fmt.Errorf("cosign: %v %s", err2, lastLine(out2))
					}
				}
			}
			b.count(&m, d, c)
			if err == nil {
				err = b.check(ctx, tag, d, tag, true)
			}
			m.ok = err == nil
			if err != nil {
				m.note = oneline.String(err.Error())
			}
			logRun(m)
			b.results = append(b.results, m)
			d.close()
		}
	}
	return nil
}

// program is what scenario 0 measures of one program: its size, the time
// its packages take to initialise (GODEBUG=inittrace=1, summed; median of
// the runs) and the peak RSS of printing its version (GNU time's maximum
// resident set size; median), or 0 where it has no version command.
type program struct {
	name     string
	size     int64
	initMS   float64
	rssBytes int64
}

// measurePrograms fills b.programs.
func (b *bench) measurePrograms() error {
	type version struct {
		tool string
		args []string
	}
	versions := []version{{"ocistow", []string{"-version"}}}
	if b.cfg.compare != "" {
		versions = append(versions, version{"ocistow@" + b.cfg.compare, []string{"-version"}})
	}
	for _, t := range []string{"ocistow-copy", "ocistow-front"} {
		if b.cfg.tools[t] {
			versions = append(versions, version{t, []string{"-version"}})
		}
	}
	versions = append(versions, version{"bootstrap", nil}, version{"crane", []string{"version"}},
		version{"regctl", []string{"version"}}, version{"skopeo", []string{"--version"}})
	runs := max(3, b.cfg.runs)
	for _, v := range versions {
		exe := b.tools[v.tool]
		st, err := os.Stat(exe)
		if err != nil {
			return err
		}
		p := program{name: v.tool, size: st.Size()}
		if v.tool == "bootstrap" {
			p.name = "ocistow-lambda (bootstrap)"
		}
		var inits []float64
		var rss []int64
		for range runs {
			ms, err := packageInit(exe, v.args)
			if err != nil {
				return err
			}
			inits = append(inits, ms)
			if v.args == nil {
				continue // the bootstrap needs the Lambda Runtime API to run
			}
			kb, err := b.versionRSS(exe, v.args)
			if err != nil {
				return err
			}
			rss = append(rss, kb)
		}
		slices.Sort(inits)
		p.initMS, p.rssBytes = inits[len(inits)/2], medianInt(rss)
		log("%-22s %-26s binary %s, package init %.1f ms, version peak RSS %.1f MiB", "0 programs", p.name, human(p.size), p.initMS, float64(p.rssBytes)/(1<<20))
		b.programs = append(b.programs, p)
	}
	return nil
}

// versionRSS returns the maximum resident set size of exe args, as GNU
// time reports it for the child it forks (a fork of a small C program,
// not of this process, whose memory would count otherwise).
func (b *bench) versionRSS(exe string, args []string) (int64, error) {
	report := filepath.Join(b.dir, "time.out")
	cmd := exec.Command(b.tools["time"], append([]string{"-f", "%M", "-o", report, exe}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.TempDir()}
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("%s %s: %v %s", exe, strings.Join(args, " "), err, lastLine(string(out)))
	}
	out, err := os.ReadFile(report)
	if err != nil {
		return 0, err
	}
	kb, err := strconv.ParseInt(lastLine(string(out)), 10, 64)
	if err != nil || kb <= 0 {
		return 0, fmt.Errorf("GNU time reported %q for %s", out, exe)
	}
	return kb << 10, nil
}

// packageInit sums the package initialisation times Go reports for exe
// run with args (GODEBUG=inittrace=1): what every start pays before main
// runs. It fails when exe reports none.
func packageInit(exe string, args []string) (float64, error) {
	cmd := exec.Command(exe, args...)
	cmd.Env = []string{"GODEBUG=inittrace=1", "SIGN=false", "HOME=" + os.TempDir()}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	_ = cmd.Run() // the bootstrap exits non-zero outside Lambda; its inits ran
	var total float64
	found := inittraceRE.FindAllStringSubmatch(out.String(), -1)
	for _, m := range found {
		v, err := strconv.ParseFloat(m[1], 64)
		if err != nil {
			return 0, err
		}
		total += v
	}
	if len(found) == 0 {
		return 0, fmt.Errorf("%s reported no package initialisation with GODEBUG=inittrace=1: %s", exe, lastLine(out.String()))
	}
	return total, nil
}

var inittraceRE = regexp.MustCompile(`init \S+ @[0-9.]+ ms, ([0-9.]+) ms clock`)

// lambda runs the real bootstrap under the emulator with 128 MB and
// records, for promoting the large image, its wall time, the CPU time and
// peak RSS of the bootstrap process, and the requests and bytes the
// fronts saw, and checks the copy.
func (b *bench) lambda(ctx context.Context) error {
	const scenario = "7 lambda 128MB"
	const tag = "bench/big:v1"
	bootstrap := b.tools["bootstrap"]
	for run := 1; run <= b.cfg.runs; run++ {
		d, err := b.freshDestination(ctx, fmt.Sprintf("lambda-%d", run))
		if err != nil {
			return err
		}
		l, err := testenv.StartLambda(ctx, bootstrap, append(b.kms.Env(), "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128", "AWS_LAMBDA_FUNCTION_TIMEOUT=900", "SIGN=false", "AWS_EC2_METADATA_DISABLED=true"))
		if err != nil {
			return err
		}
		// Cold start: the emulator starts the bootstrap on the first
		// invocation; a refused payload answers right after init.
		cold := time.Now()
		body, err := l.Invoke(ctx, `{}`)
		coldStart := time.Since(cold)
		if err != nil || !strings.Contains(body, `"InvalidRequest"`) {
			l.Close()
			return fmt.Errorf("the function did not start: %v %s\n%s", err, body, l.Output())
		}
		cpu0, err := testenv.ProcessCPU(bootstrap)
		if err != nil {
			l.Close()
			return err
		}
		c := b.mark(d)
		start := time.Now()
		body, err = l.Invoke(ctx, fmt.Sprintf(`{"SrcImageRef":%q,"DstImageRef":%q}`, b.srcFront.Host+"/"+tag, d.front.Host+"/"+tag))
		m := measurement{scenario: scenario, tool: "ocistow-lambda", run: run, wall: time.Since(start)}
		b.count(&m, d, c)
		cpu1, cerr := testenv.ProcessCPU(bootstrap)
		rss, rerr := testenv.PeakRSS(bootstrap)
		l.Close()
		if err := errors.Join(cerr, rerr); err != nil {
			return err
		}
		m.cpu, m.rssBytes = cpu1-cpu0, rss
		var res struct {
			DestinationDigest string `json:"destinationDigest"`
		}
		if err == nil {
			if jerr := json.Unmarshal([]byte(body), &res); jerr != nil || res.DestinationDigest == "" {
				err = fmt.Errorf("the function answered %s", body)
			}
		}
		if err == nil {
			err = b.check(ctx, tag, d, tag, false)
		}
		m.ok = err == nil
		m.note = fmt.Sprintf("cold start to first answer %.0f ms", float64(coldStart.Microseconds())/1000)
		if err != nil {
			m.note += " " + oneline.String(err.Error())
		}
		logRun(m)
		b.results = append(b.results, m)
		d.close()
	}
	return nil
}

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

// summary is the median of one tool in one scenario.
type summary struct {
	scenario, tool       string
	wall, cpu            time.Duration
	wallMin, wallMax     time.Duration
	rss, uploaded        int64
	requests, runs, fail int
	srcRequests, pulls   int
	images               int // images per run of a fleet scenario (0: not a fleet)
	sequential           int // median round trips in sequence (0: not measured)
	note                 string
}

func medianDur(v []time.Duration) time.Duration {
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

func medianInt(v []int64) int64 {
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	return v[len(v)/2]
}

func (b *bench) summaries() []summary {
	type key struct{ s, t string }
	groups := map[key][]measurement{}
	var order []key
	for _, m := range b.results {
		k := key{m.scenario, m.tool}
		if _, ok := groups[k]; !ok {
			order = append(order, k)
		}
		groups[k] = append(groups[k], m)
	}
	slices.SortStableFunc(order, func(a, c key) int {
		if n, m := scenarioNumber(a.s), scenarioNumber(c.s); n != m {
			return n - m
		}
		return strings.Compare(a.s, c.s)
	})
	var out []summary
	for _, k := range order {
		ms := groups[k]
		var walls, cpus []time.Duration
		var rss, up, req, srcReq, pulls, seq []int64
		s := summary{scenario: k.s, tool: k.t, runs: len(ms)}
		for _, m := range ms {
			s.images = max(s.images, m.images)
			if !m.ok {
				s.fail++
				s.note = m.note
				continue
			}
			walls, cpus = append(walls, m.wall), append(cpus, m.cpu)
			rss, up, req = append(rss, m.rssBytes), append(up, m.uploaded), append(req, int64(m.requests))
			srcReq, pulls = append(srcReq, int64(m.srcRequests)), append(pulls, int64(m.pulls))
			if m.sequential > 0 {
				seq = append(seq, int64(m.sequential))
			}
			if s.note == "" {
				s.note = m.note
			}
		}
		s.wall, s.cpu = medianDur(walls), medianDur(cpus)
		if len(walls) > 0 {
			s.wallMin, s.wallMax = slices.Min(walls), slices.Max(walls)
		}
		s.rss, s.uploaded, s.requests, s.srcRequests, s.pulls = medianInt(rss), medianInt(up), int(medianInt(req)), int(medianInt(srcReq)), int(medianInt(pulls))
		s.sequential = int(medianInt(seq))
		out = append(out, s)
	}
	return out
}

func (b *bench) report() error {
	sums := b.summaries()
	// Ratios to the best peer (not ocistow) of each scenario.
	best := map[string]time.Duration{}
	bestPeer := map[string]summary{}
	for _, s := range sums {
		if s.tool == "ocistow" || strings.HasPrefix(s.tool, "ocistow") || s.wall == 0 {
			continue
		}
		if cur, ok := best[s.scenario]; !ok || s.wall < cur {
			best[s.scenario] = s.wall
			bestPeer[s.scenario] = s
		}
	}
	var table strings.Builder
	if len(b.programs) > 0 {
		fmt.Fprintf(&table, "| program | binary | package init (median) | peak RSS of printing its version (median) |\n| --- | --- | --- | --- |\n")
		for _, p := range b.programs {
			rss := "-"
			if p.rssBytes > 0 {
				rss = fmt.Sprintf("%.1f MiB", float64(p.rssBytes)/(1<<20))
			}
			fmt.Fprintf(&table, "| %s | %.1f MB (%s) | %.1f ms | %s |\n", p.name, float64(p.size)/1e6, human(p.size), p.initMS, rss)
		}
		table.WriteString("\n")
	}
	ratio := func(s summary) string {
		if bp, ok := best[s.scenario]; ok && bp > 0 && s.wall > 0 {
			return fmt.Sprintf("%.2fx", s.wall.Seconds()/bp.Seconds())
		}
		return "-"
	}
	var rows, fleetRows strings.Builder
	for _, s := range sums {
		if s.images > 0 {
			fmt.Fprintf(&fleetRows, "| %s | %s | %.2fs (%.2f-%.2f) | %s | %.2fs | %.1f MiB | %s | %d + %d | %s / %s | %d | %d/%d | %s |\n",
				s.scenario, s.tool, s.wall.Seconds(), s.wallMin.Seconds(), s.wallMax.Seconds(), ratio(s), s.cpu.Seconds(),
				float64(s.rss)/(1<<20), human(s.uploaded), s.srcRequests, s.requests, perImage(s.srcRequests, s.images), perImage(s.requests, s.images),
				s.pulls, s.runs-s.fail, s.runs, s.note)
			continue
		}
		fmt.Fprintf(&rows, "| %s | %s | %.2fs (%.2f-%.2f) | %s | %.2fs | %.1f MiB | %s | %d + %d | %d/%d | %s |\n",
			s.scenario, s.tool, s.wall.Seconds(), s.wallMin.Seconds(), s.wallMax.Seconds(), ratio(s), s.cpu.Seconds(),
			float64(s.rss)/(1<<20), human(s.uploaded), s.srcRequests, s.requests, s.runs-s.fail, s.runs, s.note)
	}
	if rows.Len() > 0 {
		fmt.Fprintf(&table, "| scenario | tool | wall (median, min-max) | vs best peer | CPU | peak RSS | uploaded | requests (source + destination) | runs ok | note |\n")
		fmt.Fprintf(&table, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		table.WriteString(rows.String())
		if t := latencyRoundTrips(sums); t != "" {
			table.WriteString("\n" + t)
		}
		if t := latencyTargets(sums, bestPeer); t != "" {
			table.WriteString("\n" + t)
		}
	}
	if fleetRows.Len() > 0 {
		if table.Len() > 0 {
			table.WriteString("\n")
		}
		fmt.Fprintf(&table, "| fleet scenario | tool | wall (median, min-max) | vs best peer | CPU | peak RSS | uploaded | requests (source + destination) | per image (source / destination) | metered pulls (source manifest GETs) | runs ok | note |\n")
		fmt.Fprintf(&table, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
		table.WriteString(fleetRows.String())
		if t := fleetTargets(sums, bestPeer); t != "" {
			table.WriteString("\n" + t)
		}
	}
	fmt.Println(table.String())

	if err := os.MkdirAll(b.cfg.out, 0o755); err != nil {
		return err
	}
	f, err := os.Create(filepath.Join(b.cfg.out, "results.csv"))
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	_ = w.Write([]string{"scenario", "tool", "run", "wall_s", "cpu_s", "peak_rss_bytes", "uploaded_bytes", "requests", "source_requests", "source_manifest_gets", "images", "sequential_round_trips", "ok", "note"})
	for _, m := range b.results {
		_ = w.Write([]string{m.scenario, m.tool, strconv.Itoa(m.run), fmt.Sprintf("%.3f", m.wall.Seconds()), fmt.Sprintf("%.3f", m.cpu.Seconds()),
			strconv.FormatInt(m.rssBytes, 10), strconv.FormatInt(m.uploaded, 10), strconv.Itoa(m.requests), strconv.Itoa(m.srcRequests),
			strconv.Itoa(m.pulls), strconv.Itoa(m.images), strconv.Itoa(m.sequential), strconv.FormatBool(m.ok), m.note})
	}
	w.Flush()
	if err := errors.Join(w.Error(), f.Close()); err != nil {
		return err
	}
	var progs bytes.Buffer
	pw := csv.NewWriter(&progs)
	_ = pw.Write([]string{"program", "binary_bytes", "package_init_ms", "version_peak_rss_bytes"})
	for _, p := range b.programs {
		_ = pw.Write([]string{p.name, strconv.FormatInt(p.size, 10), fmt.Sprintf("%.3f", p.initMS), strconv.FormatInt(p.rssBytes, 10)})
	}
	pw.Flush()
	if err := pw.Error(); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.cfg.out, "programs.csv"), progs.Bytes(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(b.cfg.out, "chart.svg"), []byte(chart(sums)), 0o644); err != nil {
		return err
	}
	log("wrote %s/results.csv and %s/chart.svg", b.cfg.out, b.cfg.out)
	if b.cfg.docs == "" {
		return nil
	}
	// The document shows the chart of its numbers.
	if err := os.WriteFile(filepath.Join(filepath.Dir(b.cfg.docs), "benchmarks.svg"), []byte(chart(sums)), 0o644); err != nil {
		return err
	}
	return b.updateDocs(table.String())
}

const (
	beginMark = "<!-- bench:begin (generated by make bench; do not edit) -->"
	endMark   = "<!-- bench:end -->"
)

func (b *bench) updateDocs(table string) error {
	doc, err := os.ReadFile(b.cfg.docs)
	if err != nil {
		return err
	}
	i, j := bytes.Index(doc, []byte(beginMark)), bytes.Index(doc, []byte(endMark))
	if i < 0 || j < i {
		return fmt.Errorf("%s has no generated section (%s … %s)", b.cfg.docs, beginMark, endMark)
	}
	cpu := "unknown CPU"
	if info, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(info), "\n") {
			if strings.HasPrefix(line, "model name") {
				_, cpu, _ = strings.Cut(line, ": ")
				break
			}
		}
	}
	fleets := ""
	if b.cfg.scenarios[8] || b.cfg.scenarios[9] || b.cfg.scenarios[10] || b.cfg.scenarios[11] {
		sizes := make([]string, len(b.cfg.fleet))
		for i, n := range b.cfg.fleet {
			sizes[i] = strconv.Itoa(n)
		}
		fleets = ", fleets of " + strings.Join(sizes, " and ") + " images"
	}
	gen := fmt.Sprintf("%s\n\nMeasured %s on %d CPUs (%s), %s/%s, with `go run ./internal/bench %s` (%d x %d MiB layers, %d runs, %d small images%s).\n\n%s\n![wall, CPU and peak RSS per tool and scenario](benchmarks.svg)\n%s",
		beginMark, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), strings.TrimSpace(cpu), runtime.GOOS, runtime.GOARCH,
		strings.Join(os.Args[1:], " "), b.cfg.layers, b.cfg.layerMiB, b.cfg.runs, b.cfg.small, fleets, table, endMark)
	out := append(append(append([]byte{}, doc[:i]...), gen...), doc[j+len(endMark):]...)
	return os.WriteFile(b.cfg.docs, out, 0o644)
}

// chart draws wall time, CPU time and peak RSS per tool and scenario as
// grouped horizontal bars, one panel per metric.
func chart(sums []summary) string {
	type metric struct {
		title string
		val   func(summary) float64
		unit  string
	}
	metrics := []metric{
		{"wall time", func(s summary) float64 { return s.wall.Seconds() }, "s"},
		{"CPU time", func(s summary) float64 { return s.cpu.Seconds() }, "s"},
		{"peak RSS", func(s summary) float64 { return float64(s.rss) / (1 << 20) }, "MiB"},
	}
	colors := map[string]string{"ocistow": "#2b8a3e", "ocistow+sign": "#69db7c", "ocistow-lambda": "#2b8a3e", "crane": "#1971c2", "regctl": "#e8590c", "regsync": "#e8590c", "skopeo": "#862e9c", "crane+cosign": "#1971c2"}
	const rowH, left, barW = 16, 330, 360
	panelH := len(sums)*rowH + 40
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`+"\n", left+barW+120, panelH*len(metrics))
	for p, m := range metrics {
		top := p * panelH
		maxV := 0.0
		for _, s := range sums {
			maxV = max(maxV, m.val(s))
		}
		fmt.Fprintf(&sb, `<text x="4" y="%d" font-weight="bold" font-size="13">%s (%s, median)</text>`+"\n", top+16, m.title, m.unit)
		for i, s := range sums {
			y := top + 28 + i*rowH
			v := m.val(s)
			w := 0.0
			if maxV > 0 {
				w = v / maxV * barW
			}
			c := colors[s.tool]
			if c == "" {
				c = "#868e96"
			}
			fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="end">%s · %s</text>`, left-6, y+11, esc(s.scenario), esc(s.tool))
			fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="%.1f" height="%d" fill="%s"/>`, left, y+2, w, rowH-4, c)
			fmt.Fprintf(&sb, `<text x="%.1f" y="%d">%.2f</text>`+"\n", float64(left)+w+4, y+11, v)
		}
	}
	sb.WriteString("</svg>\n")
	return sb.String()
}

func esc(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

// scenarioNumber is the number a scenario's name starts with, so that
// scenario 10 sorts after 9.
func scenarioNumber(s string) int {
	num, _, _ := strings.Cut(s, " ")
	n, err := strconv.Atoi(num)
	if err != nil {
		return math.MaxInt32
	}
	return n
}
