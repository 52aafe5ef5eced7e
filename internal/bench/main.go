// Command bench measures ocistow against the tools users would otherwise
// pick (crane, regctl, skopeo) on this machine: real Distribution
// registries on loopback, a counting proxy in front of each fresh
// destination, interleaved runs, and each tool's own wall time, CPU time,
// peak RSS, bytes uploaded and requests made.
//
//	make bench                       # defaults: 12 x 256 MiB layers, 5 runs
//	go run ./internal/bench -layers 6 -layer-mib 128 -runs 3
//
// It prints a table of medians, writes bench/results/results.csv and
// bench/results/chart.svg, and rewrites the generated part of
// docs/BENCHMARKS.md.
package main

import (
	"bytes"
	"context"
	"encoding/csv"
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
	out, docs                     string
	scenarios                     map[int]bool
}

// measurement is one run of one tool in one scenario.
type measurement struct {
	scenario, tool string
	run            int
	wall, cpu      time.Duration
	rssBytes       int64
	uploaded       int64
	requests       int
	ok             bool
	note           string
}

type bench struct {
	cfg      config
	dir      string
	root     string
	tools    map[string]string // name -> binary
	src      *testenv.Registry
	kms      *testenv.KMS
	results  []measurement
	trusted  string
	keyAlias string
}

func main() {
	var c config
	var scen string
	flag.IntVar(&c.layers, "layers", 12, "layers of the large image")
	flag.IntVar(&c.layerMiB, "layer-mib", 256, "MiB per layer (incompressible)")
	flag.IntVar(&c.runs, "runs", 5, "runs per tool and scenario, interleaved")
	flag.IntVar(&c.small, "small", 50, "small multi-platform images in scenario 5")
	flag.StringVar(&c.out, "out", "bench/results", "where CSV and SVG go")
	flag.StringVar(&c.docs, "docs", "docs/BENCHMARKS.md", "the document whose generated section is rewritten ('' for none)")
	flag.StringVar(&scen, "scenarios", "1,2,3,4,5,6,7", "scenarios to run")
	flag.Parse()
	c.scenarios = map[int]bool{}
	for _, s := range strings.Split(scen, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil {
			fmt.Fprintln(os.Stderr, "bench: bad -scenarios:", err)
			os.Exit(2)
		}
		c.scenarios[n] = true
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

	layer := int64(c.layerMiB) << 20
	log("pushing the large image (%d x %d MiB)", c.layers, c.layerMiB)
	if err := b.push(ctx, "big:v1", c.layers, layer, 1); err != nil {
		return err
	}
	oneGiB := max(1, int(math.Ceil(float64(1<<30)/float64(layer))))
	if c.scenarios[2] {
		log("pushing the 1 GiB image (%d x %d MiB)", oneGiB, c.layerMiB)
		if err := b.push(ctx, "one:v1", oneGiB, layer, 2); err != nil {
			return err
		}
	}
	peers := []string{"ocistow", "crane", "regctl", "skopeo"}
	if c.scenarios[1] {
		b.fullCopy(ctx, "1 full copy", "big:v1", peers)
	}
	if c.scenarios[2] {
		b.fullCopy(ctx, "2 full copy 1GiB", "one:v1", peers)
	}
	if c.scenarios[3] {
		b.noop(ctx, peers)
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
		b.promoteSign(ctx)
	}
	if c.scenarios[7] {
		if err := b.lambda(ctx); err != nil {
			return err
		}
	}
	return b.report()
}

func log(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
}

func (b *bench) setupTools() error {
	ocistow := filepath.Join(b.dir, "ocistow")
	cmd := exec.Command("go", "build", "-trimpath", "-o", ocistow, "./cmd/ocistow")
	cmd.Dir = b.root
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("building ocistow: %v\n%s", err, out)
	}
	b.tools["ocistow"] = ocistow
	for _, t := range []string{"crane", "regctl", "cosign", "aws-lambda-rie"} {
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
	return nil
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
}

func (b *bench) freshDestination(ctx context.Context, name string) (*destination, error) {
	reg, err := testenv.StartRegistry(ctx, filepath.Join(b.dir, "dst-"+name), testenv.RegistryOptions{})
	if err != nil {
		return nil, err
	}
	return &destination{reg: reg, front: testenv.NewFront(reg.Host)}, nil
}

func (d *destination) close(dir string) {
	d.front.Close()
	d.reg.Close()
	_ = os.RemoveAll(dir)
}

// command returns how tool copies src to dst.
func (b *bench) command(tool, src, dst string) *exec.Cmd {
	switch tool {
	case "ocistow":
		return exec.Command(b.tools[tool], "-source", src, "-destination", dst, "-sign=false", "-quiet")
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

// tally counts requests and request-body bytes sent to the destination.
func tally(reqs []testenv.Request) (n int, uploaded int64) {
	for _, r := range reqs {
		n++
		if r.Method == http.MethodPatch || r.Method == http.MethodPut || r.Method == http.MethodPost {
			uploaded += r.BodyBytes
		}
	}
	return n, uploaded
}

func digestAt(ctx context.Context, ref string) string {
	r, err := name.ParseReference(ref)
	if err != nil {
		return ""
	}
	d, err := remote.Head(r, remote.WithContext(ctx))
	if err != nil {
		return ""
	}
	return d.Digest.String()
}

// copyOnce runs tool from src into dst behind front, recording the run.
func (b *bench) copyOnce(ctx context.Context, scenario, tool string, run int, src, dstHost, repoTag string, front *testenv.Front, env []string) measurement {
	before := len(front.Requests())
	dst := dstHost + "/" + repoTag
	wall, cpu, rss, out, err := measure(b.command(tool, src, dst), env)
	m := measurement{scenario: scenario, tool: tool, run: run, wall: wall, cpu: cpu, rssBytes: rss}
	m.requests, m.uploaded = tally(front.Requests()[before:])
	want := digestAt(ctx, src)
	m.ok = err == nil && want != "" && digestAt(ctx, dst) == want
	if !m.ok {
		m.note = oneline.String(fmt.Sprint(err, " ", lastLine(out)))
	}
	log("%-22s %-8s run %d: %6.2fs wall %6.2fs cpu %6.1f MiB rss %s up %4d req %v", scenario, tool, run, wall.Seconds(), cpu.Seconds(), float64(rss)/(1<<20), human(m.uploaded), m.requests, okWord(m.ok))
	return m
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

func (b *bench) fullCopy(ctx context.Context, scenario, tag string, tools []string) {
	for run := 1; run <= b.cfg.runs; run++ {
		for _, tool := range rotate(tools, run) {
			name := fmt.Sprintf("%s-%d", tool, run)
			d, err := b.freshDestination(ctx, name)
			if err != nil {
				b.results = append(b.results, measurement{scenario: scenario, tool: tool, run: run, note: err.Error()})
				continue
			}
			b.results = append(b.results, b.copyOnce(ctx, scenario, tool, run, b.src.Host+"/bench/"+tag, d.front.Host, "bench/"+tag, d.front, nil))
			d.close(filepath.Join(b.dir, "dst-"+name))
		}
	}
}

// rotate interleaves: each run starts with another tool.
func rotate(tools []string, run int) []string {
	k := run % len(tools)
	return append(slices.Clone(tools[k:]), tools[:k]...)
}

func (b *bench) noop(ctx context.Context, tools []string) {
	const scenario = "3 no-op re-promotion"
	for run := 1; run <= b.cfg.runs; run++ {
		name := fmt.Sprintf("noop-%d", run)
		d, err := b.freshDestination(ctx, name)
		if err != nil {
			continue
		}
		src := b.src.Host + "/bench/big:v1"
		dst := d.front.Host + "/bench/big:v1"
		// Promoted and signed once, as a pipeline would have.
		prep := exec.Command(b.tools["ocistow"], "-source", src, "-destination", dst, "-aws-kms-key-arn", "alias/"+b.keyAlias, "-quiet")
		if _, _, _, out, err := measure(prep, b.kms.Env()); err != nil {
			log("preparing the no-op: %v %s", err, out)
		}
		for _, tool := range rotate(tools, run) {
			b.results = append(b.results, b.copyOnce(ctx, scenario, tool, run, src, d.front.Host, "bench/big:v1", d.front, nil))
		}
		// ocistow with signing: finds every signature present.
		before := len(d.front.Requests())
		cmd := exec.Command(b.tools["ocistow"], "-source", src, "-destination", dst, "-aws-kms-key-arn", "alias/"+b.keyAlias, "-quiet")
		wall, cpu, rss, out, err := measure(cmd, b.kms.Env())
		m := measurement{scenario: scenario, tool: "ocistow+sign", run: run, wall: wall, cpu: cpu, rssBytes: rss, ok: err == nil && strings.Contains(out, "0 added, 1 already present")}
		for _, r := range d.front.Requests()[before:] {
			m.requests++
			if r.Method == http.MethodPatch || r.Method == http.MethodPut || r.Method == http.MethodPost {
				m.uploaded += r.BodyBytes
			}
		}
		if !m.ok {
			m.note = oneline.String(lastLine(out))
		}
		log("%-22s %-8s run %d: %6.2fs wall, %d requests, %s uploaded, %v", scenario, m.tool, run, wall.Seconds(), m.requests, human(m.uploaded), okWord(m.ok))
		b.results = append(b.results, m)
		d.close(filepath.Join(b.dir, "dst-"+name))
	}
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
			name := fmt.Sprintf("inc-%s-%d", tool, run)
			d, err := b.freshDestination(ctx, name)
			if err != nil {
				continue
			}
			prep := exec.Command(b.tools["crane"], "copy", b.src.Host+"/bench/big:v1", d.reg.Host+"/bench/big:v1")
			if _, _, _, out, err := measure(prep, nil); err != nil {
				log("preparing incremental: %v %s", err, out)
			}
			b.results = append(b.results, b.copyOnce(ctx, scenario, tool, run, b.src.Host+"/bench/big:v2", d.front.Host, "bench/big:v2", d.front, nil))
			d.close(filepath.Join(b.dir, "dst-"+name))
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
			name := fmt.Sprintf("small-%s-%d", tool, run)
			d, err := b.freshDestination(ctx, name)
			if err != nil {
				continue
			}
			total := measurement{scenario: scenario, tool: tool, run: run, ok: true}
			for i := range b.cfg.small {
				tag := fmt.Sprintf("small/img%d:v1", i)
				m := b.copyQuiet(ctx, tool, b.src.Host+"/"+tag, d, tag)
				total.wall += m.wall
				total.cpu += m.cpu
				total.rssBytes = max(total.rssBytes, m.rssBytes)
				total.uploaded += m.uploaded
				total.requests += m.requests
				if !m.ok {
					total.ok, total.note = false, m.note
				}
			}
			log("%-22s %-8s run %d: %6.2fs wall %6.2fs cpu %d req %v", scenario, tool, run, total.wall.Seconds(), total.cpu.Seconds(), total.requests, okWord(total.ok))
			b.results = append(b.results, total)
			d.close(filepath.Join(b.dir, "dst-"+name))
		}
	}
	return nil
}

func (b *bench) copyQuiet(ctx context.Context, tool, src string, d *destination, repoTag string) measurement {
	before := len(d.front.Requests())
	wall, cpu, rss, out, err := measure(b.command(tool, src, d.front.Host+"/"+repoTag), nil)
	m := measurement{wall: wall, cpu: cpu, rssBytes: rss}
	m.requests, m.uploaded = tally(d.front.Requests()[before:])
	m.ok = err == nil && digestAt(ctx, d.front.Host+"/"+repoTag) == digestAt(ctx, src)
	if !m.ok {
		m.note = oneline.String(fmt.Sprint(err, " ", lastLine(out)))
	}
	return m
}

func (b *bench) promoteSign(ctx context.Context) {
	const scenario = "6 promote+sign"
	src := b.src.Host + "/bench/big:v1"
	for run := 1; run <= b.cfg.runs; run++ {
		for _, tool := range rotate([]string{"ocistow", "crane+cosign"}, run) {
			name := fmt.Sprintf("sign-%s-%d", strings.ReplaceAll(tool, "+", ""), run)
			d, err := b.freshDestination(ctx, name)
			if err != nil {
				continue
			}
			dst := d.front.Host + "/bench/big:v1"
			m := measurement{scenario: scenario, tool: tool, run: run}
			if tool == "ocistow" {
				wall, cpu, rss, out, err := measure(exec.Command(b.tools["ocistow"], "-source", src, "-destination", dst, "-aws-kms-key-arn", "alias/"+b.keyAlias, "-quiet"), b.kms.Env())
				m.wall, m.cpu, m.rssBytes, m.ok = wall, cpu, rss, err == nil
				if err != nil {
					m.note = oneline.String(lastLine(out))
				}
			} else {
				w1, c1, r1, out1, err1 := measure(b.command("crane", src, dst), nil)
				digest := digestAt(ctx, dst)
				w2, c2, r2, out2, err2 := measure(exec.Command(b.tools["cosign"], "sign", "--key", "awskms:///alias/"+b.keyAlias, "--tlog-upload=false", "--yes", d.front.Host+"/bench/big@"+digest), b.kms.Env())
				m.wall, m.cpu, m.rssBytes, m.ok = w1+w2, c1+c2, max(r1, r2), err1 == nil && err2 == nil
				if !m.ok {
					m.note = oneline.String(lastLine(out1) + " " + lastLine(out2))
				}
			}
			m.requests, m.uploaded = tally(d.front.Requests())
			log("%-22s %-12s run %d: %6.2fs wall %6.2fs cpu %v %s", scenario, tool, run, m.wall.Seconds(), m.cpu.Seconds(), okWord(m.ok), m.note)
			b.results = append(b.results, m)
			d.close(filepath.Join(b.dir, "dst-"+name))
		}
	}
}

// packageInit sums the package initialisation times Go reports for exe
// (GODEBUG=inittrace=1): what every cold start pays before main runs.
func packageInit(exe string) float64 {
	cmd := exec.Command(exe)
	cmd.Env = []string{"GODEBUG=inittrace=1", "SIGN=false"}
	out, _ := cmd.CombinedOutput()
	var total float64
	for _, m := range inittraceRE.FindAllStringSubmatch(string(out), -1) {
		v, _ := strconv.ParseFloat(m[1], 64)
		total += v
	}
	return total
}

var inittraceRE = regexp.MustCompile(`init \S+ @[0-9.]+ ms, ([0-9.]+) ms clock`)

// lambda runs the real bootstrap under the emulator with 128 MB and
// records init duration, binary size and peak memory while promoting the
// large image.
func (b *bench) lambda(ctx context.Context) error {
	const scenario = "7 lambda 128MB"
	bootstrap, err := testenv.BuildBootstrap(b.dir)
	if err != nil {
		return err
	}
	st, err := os.Stat(bootstrap)
	if err != nil {
		return err
	}
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
		if _, err := l.Invoke(ctx, `{}`); err != nil {
			return err
		}
		coldStart := time.Since(cold)
		start := time.Now()
		body, err := l.Invoke(ctx, fmt.Sprintf(`{"SrcImageRef":%q,"DstImageRef":%q}`, b.src.Host+"/bench/big:v1", d.front.Host+"/bench/big:v1"))
		wall := time.Since(start)
		m := measurement{scenario: scenario, tool: "ocistow-lambda", run: run, wall: wall, ok: err == nil && !strings.Contains(body, "errorType")}
		if m.rssBytes, err = testenv.PeakRSS(bootstrap); err != nil {
			return err
		}
		m.note = fmt.Sprintf("package init %.1f ms; cold start to first answer %.0f ms; binary %.1f MiB",
			packageInit(bootstrap), float64(coldStart.Microseconds())/1000, float64(st.Size())/(1<<20))
		if !m.ok {
			m.note += " " + oneline.String(body)
		}
		log("%-22s run %d: %6.2fs wall, peak RSS %.1f MiB, %s", scenario, run, wall.Seconds(), float64(m.rssBytes)/(1<<20), m.note)
		b.results = append(b.results, m)
		l.Close()
		d.close(filepath.Join(b.dir, fmt.Sprintf("dst-lambda-%d", run)))
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
	slices.SortStableFunc(order, func(a, c key) int { return strings.Compare(a.s, c.s) })
	var out []summary
	for _, k := range order {
		ms := groups[k]
		var walls, cpus []time.Duration
		var rss, up, req []int64
		s := summary{scenario: k.s, tool: k.t, runs: len(ms)}
		for _, m := range ms {
			if !m.ok {
				s.fail++
				s.note = m.note
				continue
			}
			walls, cpus = append(walls, m.wall), append(cpus, m.cpu)
			rss, up, req = append(rss, m.rssBytes), append(up, m.uploaded), append(req, int64(m.requests))
			if s.note == "" {
				s.note = m.note
			}
		}
		s.wall, s.cpu = medianDur(walls), medianDur(cpus)
		if len(walls) > 0 {
			s.wallMin, s.wallMax = slices.Min(walls), slices.Max(walls)
		}
		s.rss, s.uploaded, s.requests = medianInt(rss), medianInt(up), int(medianInt(req))
		out = append(out, s)
	}
	return out
}

func (b *bench) report() error {
	sums := b.summaries()
	// Ratios to the best peer (not ocistow) of each scenario.
	best := map[string]time.Duration{}
	for _, s := range sums {
		if s.tool == "ocistow" || strings.HasPrefix(s.tool, "ocistow") || s.wall == 0 {
			continue
		}
		if cur, ok := best[s.scenario]; !ok || s.wall < cur {
			best[s.scenario] = s.wall
		}
	}
	var table strings.Builder
	fmt.Fprintf(&table, "| scenario | tool | wall (median, min-max) | vs best peer | CPU | peak RSS | uploaded | requests | runs ok | note |\n")
	fmt.Fprintf(&table, "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, s := range sums {
		ratio := "-"
		if bp, ok := best[s.scenario]; ok && bp > 0 && s.wall > 0 {
			ratio = fmt.Sprintf("%.2fx", s.wall.Seconds()/bp.Seconds())
		}
		fmt.Fprintf(&table, "| %s | %s | %.2fs (%.2f-%.2f) | %s | %.2fs | %.1f MiB | %s | %d | %d/%d | %s |\n",
			s.scenario, s.tool, s.wall.Seconds(), s.wallMin.Seconds(), s.wallMax.Seconds(), ratio, s.cpu.Seconds(),
			float64(s.rss)/(1<<20), human(s.uploaded), s.requests, s.runs-s.fail, s.runs, s.note)
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
	_ = w.Write([]string{"scenario", "tool", "run", "wall_s", "cpu_s", "peak_rss_bytes", "uploaded_bytes", "requests", "ok", "note"})
	for _, m := range b.results {
		_ = w.Write([]string{m.scenario, m.tool, strconv.Itoa(m.run), fmt.Sprintf("%.3f", m.wall.Seconds()), fmt.Sprintf("%.3f", m.cpu.Seconds()),
			strconv.FormatInt(m.rssBytes, 10), strconv.FormatInt(m.uploaded, 10), strconv.Itoa(m.requests), strconv.FormatBool(m.ok), m.note})
	}
	w.Flush()
	if err := errors.Join(w.Error(), f.Close()); err != nil {
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
	gen := fmt.Sprintf("%s\n\nMeasured %s on %d CPUs (%s), %s/%s, with `go run ./internal/bench -layers %d -layer-mib %d -runs %d -small %d`.\n\n%s\n![wall, CPU and peak RSS per tool and scenario](benchmarks.svg)\n%s",
		beginMark, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), strings.TrimSpace(cpu), runtime.GOOS, runtime.GOARCH,
		b.cfg.layers, b.cfg.layerMiB, b.cfg.runs, b.cfg.small, table, endMark)
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
	colors := map[string]string{"ocistow": "#2b8a3e", "ocistow+sign": "#69db7c", "ocistow-lambda": "#2b8a3e", "crane": "#1971c2", "regctl": "#e8590c", "skopeo": "#862e9c", "crane+cosign": "#1971c2"}
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
