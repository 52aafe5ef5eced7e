package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/creack/pty"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/promote"
)

// The tests of the CLI's own flags and output: -cpuprofile and
// -memprofile, -jobs, progress bars and -quiet, and a refused ECR token.

// TestProfilesOfTheRun holds the README's flag row "-cpuprofile F,
// -memprofile F: pprof CPU and heap profiles of the run": after a
// promotion, both files are profiles pprof reads, of the ocistow binary,
// one of CPU time and one of the heap.
func TestProfilesOfTheRun(t *testing.T) {
	dir := t.TempDir()
	cpu, mem := filepath.Join(dir, "cpu.pprof"), filepath.Join(dir, "mem.pprof")
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	ocistow(t, nil, "-source", srcRef("big"), "-destination", dst, "-sign=false", "-cpuprofile", cpu, "-memprofile", mem).mustSucceed(t)
	if got := get(t, dst, nil).Digest.String(); got != e2e.fixtures["big"] {
		t.Errorf("promoted %s, want %s", got, e2e.fixtures["big"])
	}
	for _, p := range []struct{ file, kind string }{{cpu, "cpu"}, {mem, "inuse_space"}} {
		top := pprofTop(t, p.file)
		if !strings.Contains(top, "\nType: "+p.kind+"\n") || !strings.HasPrefix(top, "File: ocistow\n") {
			t.Errorf("%s is not a %s profile of ocistow:\n%s", filepath.Base(p.file), p.kind, top)
		}
	}
}

// pprofTop returns what go tool pprof -top makes of a profile file,
// failing the test unless it reads it.
func pprofTop(t *testing.T, file string) string {
	t.Helper()
	out, err := exec.Command("go", "tool", "pprof", "-symbolize=none", "-top", file).CombinedOutput()
	if err != nil {
		t.Fatalf("go tool pprof -top %s: %v\n%s", file, err, out)
	}
	return string(out)
}

// TestUnwritableProfileIsRefused holds the rest of the README's row for
// -cpuprofile and -memprofile: "a file that cannot be created is refused
// before anything is copied (exit 2), and one that cannot be written at
// the end is reported on stderr, the exit code staying the promotion's".
// For each flag, a file in a missing directory: one line naming the flag
// and the file, exit 2, no request that writes at the destination, and no
// file left (the other profile's neither). /dev/full, which opens but
// takes no byte: the promotion succeeds (exit 0) and one line names both
// flags and the failed write.
func TestUnwritableProfileIsRefused(t *testing.T) {
	for _, flag := range []string{"cpuprofile", "memprofile"} {
		t.Run(flag, func(t *testing.T) {
			dir := t.TempDir()
			bad := filepath.Join(dir, "missing", "profile.pprof")
			// The other profile's file could be created: it is not left.
			other, otherFlag := filepath.Join(dir, "other.pprof"), "-memprofile"
			if flag == "memprofile" {
				otherFlag = "-cpuprofile"
			}
			dst := dstRepo(t, e2e.dstFront.Host)
			r := ocistow(t, nil, "-source", srcRef("single"), "-destination", dst+":v1", "-sign=false", "-"+flag, bad, otherFlag, other)
			if r.code != exitInvalid {
				t.Errorf("exit %d with an unwritable -%s, want %d\n%s", r.code, flag, exitInvalid, r.stderr)
			}
			r.refused(t, []string{"-" + flag, bad, "no such file or directory"}, dst)
			for _, f := range []string{bad, other} {
				if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s is there after a refused run (%v)", f, err)
				}
			}
		})
	}
	t.Run("full disk", func(t *testing.T) {
		dst := dstRepo(t, e2e.dst.Host) + ":v1"
		r := ocistow(t, nil, "-source", srcRef("single"), "-destination", dst, "-sign=false", "-cpuprofile", "/dev/full", "-memprofile", "/dev/full").mustSucceed(t)
		line := r.errLine(t)
		for _, want := range []string{"-cpuprofile", "-memprofile", "/dev/full", "no space left on device"} {
			if !strings.Contains(line, want) {
				t.Errorf("error line %q lacks %q", line, want)
			}
		}
		if got := get(t, dst, nil).Digest.String(); got != e2e.fixtures["single"] {
			t.Errorf("promoted %s, want %s", got, e2e.fixtures["single"])
		}
	})
}

// peakGate measures how many of the requests a test passes through it are
// in flight at once, holding them so that a cap shows: it holds each until
// want are in flight and then gateGrace more passes with none arriving
// (so that any over want arrive while the first are held), or, when fewer
// ever arrive, until none has arrived for gateStall; then it lets all go,
// and the ones after pass unheld (still counted). A cap above want shows
// as a peak above it, one below as a peak below. Nothing is timed before
// the first request arrives.
type peakGate struct {
	want    int
	arrived chan struct{} // a request arrived (coalesced)
	open    chan struct{} // closed when held requests go

	mu      sync.Mutex
	n, peak int
	held    bool // want were held together
}

const (
	gateGrace = time.Second
	gateStall = 10 * time.Second
)

// newPeakGate starts a gate for want requests at once, until ctx ends.
func newPeakGate(ctx context.Context, want int) *peakGate {
	g := &peakGate{want: want, arrived: make(chan struct{}, 1), open: make(chan struct{})}
	go g.control(ctx)
	return g
}

func (g *peakGate) control(ctx context.Context) {
	defer close(g.open)
	select {
	case <-g.arrived:
	case <-ctx.Done():
		return
	}
	for {
		g.mu.Lock()
		wait := gateStall
		if g.n >= g.want {
			wait, g.held = gateGrace, true
		}
		g.mu.Unlock()
		timer := time.NewTimer(wait)
		select {
		case <-g.arrived:
			timer.Stop()
		case <-timer.C:
			return
		case <-ctx.Done():
			timer.Stop()
			return
		}
	}
}

// do counts a request in flight while it holds it and while forward runs.
func (g *peakGate) do(ctx context.Context, forward func()) {
	g.mu.Lock()
	g.n++
	g.peak = max(g.peak, g.n)
	g.mu.Unlock()
	select {
	case g.arrived <- struct{}{}:
	default:
	}
	select {
	case <-g.open:
	case <-ctx.Done():
	}
	forward()
	g.mu.Lock()
	g.n--
	g.mu.Unlock()
}

// check fails the test unless the peak was want, reached while requests
// were held.
func (g *peakGate) check(t *testing.T, what string) {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.peak != g.want || !g.held {
		t.Errorf("%s: at most %d at once, want %d", what, g.peak, g.want)
	}
}

// gatedFront puts a Front before the server at host whose requests that
// match go through gate: counted and held there, then passed on.
func gatedFront(t *testing.T, host string, gate *peakGate, match func(*http.Request) bool) *testenv.Front {
	t.Helper()
	front := testenv.NewFront(host)
	t.Cleanup(front.Close)
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: host})
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !match(r) {
			return false
		}
		gate.do(r.Context(), func() { proxy.ServeHTTP(w, r) })
		return true
	})
	return front
}

// isBlobUpload reports whether r sends a blob's bytes, of more than 1 MiB
// when large, and of at most that otherwise.
func isBlobUpload(large bool) func(*http.Request) bool {
	return func(r *http.Request) bool {
		return testenv.IsUpload(r) && (r.ContentLength > 1<<20) == large
	}
}

// TestJobsCapsBlobsAtOnce holds the README's -jobs row: "blobs over 1 MiB
// copied at once (smaller ones, round-trip bound, up to 4×N)", with a front
// on the destination counting blob uploads in flight. An image of 12 small
// blobs (one exactly 1 MiB: not over it) uploads 4×N of them at once; one
// of 3 layers just over 1 MiB uploads N at once (its small config aside).
func TestJobsCapsBlobsAtOnce(t *testing.T) {
	smallImg, err := testenv.BulkImage(10, 4<<10, 801)
	if err != nil {
		t.Fatal(err)
	}
	mib, err := testenv.BulkImage(1, 1<<20, 802)
	if err != nil {
		t.Fatal(err)
	}
	mibLayers, err := mib.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if smallImg, err = mutate.AppendLayers(smallImg, mibLayers...); err != nil {
		t.Fatal(err)
	}
	largeImg, err := testenv.BulkImage(3, 1<<20+1, 803)
	if err != nil {
		t.Fatal(err)
	}
	srcRepo := e2e.src.Host + "/" + testenv.RepoName(t.Name())
	for tag, img := range map[string]v1.Image{"small": smallImg, "large": largeImg} {
		if err := testenv.Push(t.Context(), srcRepo+":"+tag, img); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		image      string
		jobs, want int
	}{
		{"small", 1, 4},
		{"small", 2, 8},
		{"large", 1, 1},
		{"large", 2, 2},
	} {
		t.Run(fmt.Sprintf("%s -jobs %d", tc.image, tc.jobs), func(t *testing.T) {
			gate := newPeakGate(t.Context(), tc.want)
			front := gatedFront(t, e2e.dst.Host, gate, isBlobUpload(tc.image == "large"))
			dst := front.Host + "/" + freshRepo(t) + ":v1"
			res := ocistow(t, nil, "-source", srcRepo+":"+tc.image, "-destination", dst, "-sign=false", "-jobs", strconv.Itoa(tc.jobs), "-o", "json").mustSucceed(t).copyResult(t)
			if wantBlobs := map[string]int{"small": 12, "large": 4}[tc.image]; res.BlobsCopied != wantBlobs {
				t.Fatalf("copied %d blobs, want %d", res.BlobsCopied, wantBlobs)
			}
			gate.check(t, fmt.Sprintf("%s blob uploads with -jobs %d", tc.image, tc.jobs))
		})
	}
}

// TestJobsCapsDigestsSignedAtOnce holds the end of the README's -jobs row:
// "and digests signed at once": with a front on local-kms counting Sign
// calls in flight, the 6 digests of an index of 5 images are signed N at
// a time.
func TestJobsCapsDigestsSignedAtOnce(t *testing.T) {
	var imgs []v1.Image
	for i, arch := range []string{"amd64", "arm64", "386", "ppc64le", "s390x"} {
		img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 1 << 10, Seed: int64(810 + i), Platform: v1.Platform{OS: "linux", Architecture: arch}})
		if err != nil {
			t.Fatal(err)
		}
		imgs = append(imgs, img)
	}
	idx, err := testenv.Index(false, imgs...)
	if err != nil {
		t.Fatal(err)
	}
	src := e2e.src.Host + "/" + testenv.RepoName(t.Name()) + ":v1"
	if err := testenv.Push(t.Context(), src, idx); err != nil {
		t.Fatal(err)
	}
	kmsHost := strings.TrimPrefix(e2e.kms.Endpoint, "http://")
	for _, jobs := range []int{1, 2} {
		t.Run(fmt.Sprintf("-jobs %d", jobs), func(t *testing.T) {
			gate := newPeakGate(t.Context(), jobs)
			front := gatedFront(t, kmsHost, gate, func(r *http.Request) bool {
				return r.Header.Get("X-Amz-Target") == "TrentService.Sign"
			})
			dst := e2e.dst.Host + "/" + freshRepo(t) + ":v1"
			r := ocistow(t, append(e2e.kms.Env(), "AWS_ENDPOINT_URL_KMS=http://"+front.Host),
				"-source", src, "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey, "-jobs", strconv.Itoa(jobs)).mustSucceed(t)
			if !strings.Contains(r.stdout, "signed 6 digests") || !strings.Contains(r.stdout, "6 added") {
				t.Fatalf("want 6 digests signed: %s", r.stdout)
			}
			gate.check(t, fmt.Sprintf("KMS Sign calls with -jobs %d", jobs))
		})
	}
}

// TestRefusedECRTokenIsUnauthorized holds the README's Credentials
// sentence "A token ECR issues but the registry refuses is a 401, as any
// refused credentials": GetAuthorizationToken succeeds with a token the
// registry does not take; the promotion fails as with a refused Docker
// login (exit 1, the registry and its 401 named, error_type=Unauthorized),
// nothing is written, and the token shows in no output, -debug's included.
func TestRefusedECRTokenIsUnauthorized(t *testing.T) {
	const token = "ecr-token-the-registry-refuses-4f1c"
	ecrEnv, calls := fakeECRTokenAPI(t, ecrUser, token)
	front := testenv.NewFront(e2e.auth.Host)
	defer front.Close()
	repo := dstRepo(t, front.Host)
	// A Docker login the registry refuses, for comparison.
	login := "DOCKER_CONFIG=" + dockerConfig(t, front.Host, aliceUser, "not-alices-password")

	for _, tc := range []struct {
		name string
		env  []string
		args []string
	}{
		{"ECR token", append(ecrEnv, awsKeys...), []string{"-ecr-registry", front.Host, "-debug"}},
		{"Docker login", []string{login}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := len(front.Requests())
			r := ocistow(t, tc.env, append([]string{"-source", srcRef("single"), "-destination", repo + ":v1", "-sign=false"}, tc.args...)...)
			line := r.errLine(t)
			if r.code != exitFailed || !strings.Contains(line, "401") || !strings.Contains(line, front.Host) || !strings.Contains(line, "destination") {
				t.Errorf("exit %d, line %q: want exit %d naming the destination registry and its 401", r.code, line, exitFailed)
			}
			if !strings.Contains(r.stderr, "error_type=Unauthorized") {
				t.Errorf("canonical line lacks error_type=Unauthorized:\n%s", r.stderr)
			}
			for _, req := range front.Requests()[before:] {
				if req.Method != http.MethodGet && req.Method != http.MethodHead && req.Status < 300 {
					t.Errorf("the registry took %s %s (%d) with refused credentials", req.Method, req.Path, req.Status)
				}
			}
			for _, secret := range []string{token, encodeToken(ecrUser, token), awsSecretKey, "not-alices-password"} {
				if strings.Contains(r.stdout+r.stderr, secret) {
					t.Errorf("output shows the secret %q", secret)
				}
			}
		})
	}
	if calls.Load() == 0 {
		t.Error("the ECR API was never asked for a token: the test refused none")
	}
	if ts := tags(t, dstRepo(t, e2e.auth.Host), basic(aliceUser, alicePass)); len(ts) != 0 {
		t.Errorf("the destination has tags %v after refused credentials", ts)
	}
}

// screen is what a pseudo-terminal was sent: every byte the process wrote
// to it, in order (every frame of the bars, escape sequences and all).
type screen struct {
	mu      sync.Mutex
	b       strings.Builder
	changed chan struct{} // closed and replaced at every write
}

func newScreen() *screen { return &screen{changed: make(chan struct{})} }

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.b.Write(p)
	close(s.changed)
	s.changed = make(chan struct{})
	return len(p), nil
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// waitFor reports whether the screen was sent a match of re, waiting for
// one until ctx ends.
func (s *screen) waitFor(ctx context.Context, re *regexp.Regexp) bool {
	for {
		s.mu.Lock()
		ok, changed := re.MatchString(s.b.String()), s.changed
		s.mu.Unlock()
		if ok {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// onTerminal runs ocistow with its stderr on a new pseudo-terminal, 1000
// columns wide so that no line wraps, copying what the terminal is sent
// into scr as it runs. stdout is the terminal too when stdoutToo, and a
// pipe otherwise (as for a caller capturing the result). The result's
// stderr is what the terminal was sent.
func onTerminal(t *testing.T, scr *screen, stdoutToo bool, env []string, args ...string) result {
	t.Helper()
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 50, Cols: 1000}); err != nil {
		tty.Close()
		t.Fatal(err)
	}
	cmd := ocistowCmd(t, append([]string{"TERM=xterm"}, env...), args...)
	var stdout strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, tty
	if stdoutToo {
		cmd.Stdout = tty
	}
	err = cmd.Start()
	tty.Close() // the child's is the only one left: its exit ends the reads
	if err != nil {
		t.Fatalf("starting ocistow: %v", err)
	}
	read := make(chan struct{})
	go func() {
		_, _ = io.Copy(scr, ptmx) // until the child closes the terminal (EIO)
		close(read)
	}()
	err = cmd.Wait()
	<-read
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running ocistow on a terminal: %v", err)
	}
	return result{stdout: stdout.String(), stderr: scr.String(), code: code}
}

// csi matches the escape sequences the bars use: cursor up (A) and erase
// to the end of the screen (J).
var csi = regexp.MustCompile(`^\x1b\[(\d*)([AJ])`)

// replay plays what a terminal was sent on an empty screen wide enough
// for every line, and returns the lines left on it, failing the test on
// an escape sequence it does not know (rather than misreading the screen).
func replay(t *testing.T, sent string) []string {
	t.Helper()
	var lines [][]rune
	row, col := 0, 0
	for i := 0; i < len(sent); {
		for len(lines) <= row {
			lines = append(lines, nil)
		}
		switch c := sent[i]; c {
		case '\r':
			col = 0
			i++
		case '\n':
			row++
			i++
		case 0x1b:
			m := csi.FindStringSubmatch(sent[i:])
			if m == nil {
				t.Fatalf("unknown escape sequence at %d: %q", i, sent[i:min(len(sent), i+12)])
			}
			n, _ := strconv.Atoi(m[1])
			switch m[2] {
			case "A":
				row = max(0, row-max(n, 1))
			case "J":
				lines[row] = lines[row][:min(col, len(lines[row]))]
				lines = lines[:row+1]
			}
			i += len(m[0])
		default:
			r, size := utf8.DecodeRuneInString(sent[i:])
			l := lines[row]
			for len(l) < col {
				l = append(l, ' ')
			}
			if col < len(l) {
				l[col] = r
			} else {
				l = append(l, r)
			}
			lines[row] = l
			col++
			i += size
		}
	}
	var out []string
	for _, l := range lines {
		out = append(out, strings.TrimRight(string(l), " "))
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	return out
}

// The rates a bar may show (barLine).
const (
	noRate    = iota // no bytes moved
	withRate         // bytes moved
	maybeRate        // either
)

// barLine matches the bar of the blob whose digest starts with short, in
// state, with its bytes ("3.0 MiB / 3.0 MiB") and rate as rate says.
func barLine(short, state string, rate int) *regexp.Regexp {
	r := ` +\d+\.\d (b|KiB|MiB|GiB)/s`
	switch rate {
	case noRate:
		r = ""
	case maybeRate:
		r = "(" + r + ")?"
	}
	return regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(short) + ` +` + state + ` +\[[=>-]+\] +\d+\.\d (b|KiB|MiB) / \d+\.\d (b|KiB|MiB)` + r + ` *\r?$`)
}

// anyBar matches a line of any bar.
var anyBar = regexp.MustCompile(`^sha256:[0-9a-f]{12} +[a-z]+ +\[`)

// shortDigest is how a bar names a blob.
func shortDigest(d v1.Hash) string { return d.String()[:19] }

// finalScreen checks the screen a run left: log lines, one bar per blob
// of bars (each matching its pattern), log lines again and then, when
// last is not empty, last (the result or the failure line), whole, and
// nothing else. It returns the log lines above the bars and below them.
func finalScreen(t *testing.T, sent string, bars map[string]*regexp.Regexp, last string) (above, below []string) {
	t.Helper()
	lines := replay(t, sent)
	logs := func(rest []string) ([]string, []string) {
		var l []string
		for len(rest) > 0 && strings.HasPrefix(rest[0], "time=") {
			l, rest = append(l, rest[0]), rest[1:]
		}
		return l, rest
	}
	above, rest := logs(lines)
	var barLines []string
	for len(rest) > 0 && anyBar.MatchString(rest[0]) {
		barLines, rest = append(barLines, rest[0]), rest[1:]
	}
	below, rest = logs(rest)
	if want := []string{last}; last == "" && len(rest) != 0 || last != "" && !slices.Equal(rest, want) {
		t.Errorf("below the bars and the log lines, the screen has %q, want %q:\n%s", rest, last, strings.Join(lines, "\n"))
	}
	if len(barLines) != len(bars) {
		t.Errorf("%d bars, want %d:\n%s", len(barLines), len(bars), strings.Join(lines, "\n"))
	}
	for short, want := range bars {
		n := 0
		for _, l := range barLines {
			if strings.HasPrefix(l, short+" ") {
				n++
				if !want.MatchString(l) {
					t.Errorf("bar %q does not match %s", l, want)
				}
			}
		}
		if n != 1 {
			t.Errorf("%d bars for %s, want 1:\n%s", n, short, strings.Join(lines, "\n"))
		}
	}
	return above, below
}

// TestProgressBarsOnATerminal holds the README's "Progress" paragraph:
// "When stderr is a terminal (and without -quiet), ocistow shows one bar
// per blob with its digest, its state (checking, uploading, then uploaded,
// skipped, mounted or failed), bytes and rate; log lines print above the
// bars". A front on the destination holds a large layer's check until the
// terminal shows it checking, and its upload, a MiB in, until it shows it
// uploading with bytes and rate. The screen each run leaves has the log
// lines written during the copy (-debug's, the last request's included)
// above one bar per blob in its final state, and then the canonical log
// line and the result (stdout on the terminal too) or the failure's line,
// which no frame draws over.
func TestProgressBarsOnATerminal(t *testing.T) {
	m, err := readImage(t, srcRef("big")).Manifest()
	if err != nil {
		t.Fatal(err)
	}
	layer := m.Layers[0].Digest
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	repo := front.Host + "/" + freshRepo(t)
	lastLine := func(sent string) string {
		lines := replay(t, sent)
		if len(lines) == 0 {
			return ""
		}
		return lines[len(lines)-1]
	}

	t.Run("uploaded", func(t *testing.T) {
		scr := newScreen()
		checking := barLine(shortDigest(layer), "checking", noRate)
		uploading := barLine(shortDigest(layer), "uploading", withRate)
		// The holds are bounded: a screen that never shows the state
		// fails the test rather than hang it.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		defer cancel()
		var mu sync.Mutex
		seen := map[string]bool{}
		front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
			switch {
			case r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/blobs/"+layer.String()):
				ok := scr.waitFor(ctx, checking)
				mu.Lock()
				seen["checking"] = ok
				mu.Unlock()
			case testenv.IsUpload(r) && r.URL.Query().Get("digest") == layer.String():
				head := make([]byte, 1<<20)
				if _, err := io.ReadFull(r.Body, head); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return true
				}
				ok := scr.waitFor(ctx, uploading)
				mu.Lock()
				seen["uploading"] = ok
				mu.Unlock()
				r.Body = struct {
					io.Reader
					io.Closer
				}{io.MultiReader(bytes.NewReader(head), r.Body), r.Body}
			}
			return false
		})
		defer front.SetHook(nil)
		r := onTerminal(t, scr, false, nil, "-source", srcRef("big"), "-destination", repo+":v1", "-sign=false", "-debug")
		if r.code != 0 {
			t.Fatalf("exit %d\n%s\n%q", r.code, r.stdout, r.stderr)
		}
		for _, state := range []string{"checking", "uploading"} {
			if !seen[state] {
				t.Errorf("the terminal never showed %s %s while the registry held it:\n%q", shortDigest(layer), state, r.stderr)
			}
		}
		bars := map[string]*regexp.Regexp{}
		for _, d := range []v1.Hash{m.Config.Digest, m.Layers[0].Digest, m.Layers[1].Digest, m.Layers[2].Digest} {
			bars[shortDigest(d)] = barLine(shortDigest(d), "uploaded", withRate)
		}
		above, below := finalScreen(t, r.stderr, bars, "")
		// The manifest's PUT is the copy's last request.
		putManifest := "level=DEBUG msg=http method=PUT url=http://" + repo[:strings.Index(repo, "/")] + "/v2/" + repo[strings.Index(repo, "/")+1:] + "/manifests/v1 "
		if len(above) == 0 || !strings.Contains(above[len(above)-1], putManifest) {
			t.Errorf("the last log line above the bars is not the manifest's PUT (%q):\n%s", putManifest, strings.Join(above, "\n"))
		}
		if len(below) != 1 || !strings.Contains(below[0], "method=Copy") || !strings.Contains(below[0], "blobs_copied=4") {
			t.Errorf("log lines below the bars: %q, want the canonical Copy line", below)
		}
		if !strings.HasPrefix(r.stdout, "promoted ") || strings.Contains(r.stdout, "\x1b") {
			t.Errorf("stdout (a pipe) is not the plain result: %q", r.stdout)
		}
	})
	t.Run("skipped", func(t *testing.T) {
		// Stamped, the image gets a new config; its layers are there.
		// stdout is the terminal too: the result prints below the bars.
		r := onTerminal(t, newScreen(), true, nil, "-source", srcRef("big"), "-destination", repo+":v2", "-sign=false", "-annotations", "team=platform")
		if r.code != 0 {
			t.Fatalf("exit %d\n%q", r.code, r.stderr)
		}
		stamped, err := readImage(t, repo+":v2").Manifest()
		if err != nil {
			t.Fatal(err)
		}
		bars := map[string]*regexp.Regexp{shortDigest(stamped.Config.Digest): barLine(shortDigest(stamped.Config.Digest), "uploaded", withRate)}
		for _, l := range m.Layers {
			bars[shortDigest(l.Digest)] = barLine(shortDigest(l.Digest), "skipped", noRate)
		}
		last := lastLine(r.stderr)
		if !strings.HasPrefix(last, "promoted ") || !strings.Contains(last, "1 blobs copied") || !strings.Contains(last, "3 skipped") {
			t.Errorf("the result is not the last line of the screen: %q", last)
		}
		finalScreen(t, r.stderr, bars, last)
	})
	t.Run("mounted", func(t *testing.T) {
		r := onTerminal(t, newScreen(), false, nil, "-source", repo+":v1", "-destination", front.Host+"/"+freshRepo(t)+":v1", "-sign=false")
		if r.code != 0 {
			t.Fatalf("exit %d\n%q", r.code, r.stderr)
		}
		bars := map[string]*regexp.Regexp{}
		for _, d := range []v1.Hash{m.Config.Digest, m.Layers[0].Digest, m.Layers[1].Digest, m.Layers[2].Digest} {
			bars[shortDigest(d)] = barLine(shortDigest(d), "mounted", noRate)
		}
		finalScreen(t, r.stderr, bars, "")
	})
	t.Run("failed", func(t *testing.T) {
		front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
			if testenv.IsUpload(r) {
				http.Error(w, `{"errors":[{"code":"DENIED","message":"refused by the test"}]}`, http.StatusForbidden)
				return true
			}
			return false
		})
		defer front.SetHook(nil)
		other, err := readImage(t, srcRef("other")).Manifest()
		if err != nil {
			t.Fatal(err)
		}
		r := onTerminal(t, newScreen(), false, nil, "-source", srcRef("other"), "-destination", front.Host+"/"+freshRepo(t)+":v1", "-sign=false")
		if r.code != exitFailed {
			t.Fatalf("exit %d, want %d\n%q", r.code, exitFailed, r.stderr)
		}
		last := lastLine(r.stderr)
		if !strings.HasPrefix(last, "ocistow: ") || !strings.Contains(last, "refused by the test") {
			t.Errorf("the failure is not the last line of the screen: %q", last)
		}
		bars := map[string]*regexp.Regexp{}
		for _, d := range []v1.Hash{other.Config.Digest, other.Layers[0].Digest} {
			bars[shortDigest(d)] = barLine(shortDigest(d), "failed", maybeRate)
		}
		finalScreen(t, r.stderr, bars, last)
	})
}

// TestNoBarsQuietOrPiped holds the README's -quiet row, "no progress bars
// (they show only when stderr is a terminal anyway)", and "Piped or
// redirected, stderr carries only the log lines": with -quiet on a
// terminal, and without it on a pipe, stderr has the log lines and no bar
// or escape sequence, and the copy is done.
func TestNoBarsQuietOrPiped(t *testing.T) {
	repo := e2e.dst.Host + "/" + freshRepo(t) // blobs to upload on every run
	quiet := onTerminal(t, newScreen(), false, nil, "-source", srcRef("big"), "-destination", repo+":quiet", "-sign=false", "-quiet")
	piped := ocistow(t, nil, "-source", srcRef("big"), "-destination", repo+":piped", "-sign=false")
	for name, r := range map[string]result{"-quiet on a terminal": quiet, "piped": piped} {
		if r.code != 0 {
			t.Fatalf("%s: exit %d\n%s", name, r.code, r.stderr)
		}
		out := strings.ReplaceAll(r.stderr, "\r\n", "\n")
		if strings.Contains(out, "\x1b") {
			t.Errorf("%s: stderr has escape sequences:\n%q", name, out)
		}
		lines := strings.Split(strings.TrimSuffix(out, "\n"), "\n")
		for _, l := range lines {
			if !strings.HasPrefix(l, "time=") {
				t.Errorf("%s: stderr has a line that is not a log line: %q", name, l)
			}
		}
		if !strings.Contains(out, "method=Copy") {
			t.Errorf("%s: no canonical log line:\n%s", name, out)
		}
	}
	for _, tag := range []string{"quiet", "piped"} {
		if got := get(t, repo+":"+tag, nil).Digest.String(); got != e2e.fixtures["big"] {
			t.Errorf("%s: promoted %s, want %s", tag, got, e2e.fixtures["big"])
		}
	}
}

// TestBarProgressAtOnce holds the Progress paragraph for the bars
// themselves, driven from many goroutines at once as a copy drives them
// (run it with -race): on a terminal, after Finish, every log line written
// before it is above the bars and every blob's bar shows how it ended.
func TestBarProgressAtOnce(t *testing.T) {
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Fatalf("opening a pseudo-terminal: %v", err)
	}
	defer ptmx.Close()
	if err := pty.Setsize(ptmx, &pty.Winsize{Rows: 50, Cols: 1000}); err != nil {
		t.Fatal(err)
	}
	scr := newScreen()
	read := make(chan struct{})
	go func() {
		_, _ = io.Copy(scr, ptmx) // until tty is closed (EIO)
		close(read)
	}()
	bars := newBarProgress(tty)
	outcomes := []promote.Outcome{promote.Uploaded, promote.Skipped, promote.Mounted, promote.Failed}
	const blobs = 12
	var wg sync.WaitGroup
	want := map[string]*regexp.Regexp{}
	for i := range blobs {
		digest := fmt.Sprintf("sha256:%02d%062d", i+1, 0)
		outcome := outcomes[i%len(outcomes)]
		rate := noRate
		if outcome == promote.Uploaded || outcome == promote.Failed {
			rate = withRate
		}
		want[digest[:19]] = barLine(digest[:19], string(outcome), rate)
		wg.Go(func() {
			bars.BlobStarted(digest, 3000)
			if rate == withRate {
				for range 3 {
					bars.BlobBytes(digest, 1000)
				}
			}
			fmt.Fprintf(bars, "time=0 log line of blob %d\n", i)
			bars.BlobDone(digest, outcome)
		})
	}
	wg.Wait()
	// Like the manifest's PUT after the last blob: a log line when every
	// bar is done.
	fmt.Fprintln(bars, "time=0 the last log line before Finish")
	bars.Finish()
	fmt.Fprintln(bars, "time=1 after Finish")
	tty.Close()
	<-read
	above, below := finalScreen(t, scr.String(), want, "")
	if len(above) != blobs+1 || above[blobs] != "time=0 the last log line before Finish" {
		t.Errorf("log lines above the bars:\n%s\nwant %d, the last written last", strings.Join(above, "\n"), blobs+1)
	}
	if !slices.Equal(below, []string{"time=1 after Finish"}) {
		t.Errorf("below the bars: %q, want the line written after Finish", below)
	}
}
