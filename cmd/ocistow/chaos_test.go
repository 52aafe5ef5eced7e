package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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

// toxiproxy starts Toxiproxy with a proxy per name/upstream pair and
// returns it with the proxies' addresses, in order.
func toxiproxy(t *testing.T, nameUpstream ...string) (*testenv.Toxiproxy, []string) {
	t.Helper()
	tp, err := testenv.StartToxiproxy(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tp.Close() })
	var addrs []string
	for i := 0; i+1 < len(nameUpstream); i += 2 {
		addr, err := tp.Proxy(t.Context(), nameUpstream[i], nameUpstream[i+1])
		if err != nil {
			t.Fatal(err)
		}
		addrs = append(addrs, addr)
	}
	return tp, addrs
}

// Connections through a real TCP proxy (Toxiproxy) are cut in the middle of
// blob transfers, on about 10 % of connections, both from the source and to
// the destination: every promotion still succeeds, byte for byte.
func TestChaosConnectionResets(t *testing.T) {
	ctx := t.Context()
	tp, proxies := toxiproxy(t, "src", e2e.src.Host, "dst", e2e.dst.Host)
	src, dst := proxies[0], proxies[1]
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

// Latency and a bandwidth limit on every connection, then connections that
// stop carrying data, then blob bodies that stop in the middle: the
// promotion completes under the first two, and every stall is abandoned
// and retried instead of hanging.
func TestChaosSlowAndStalledConnections(t *testing.T) {
	ctx := t.Context()
	tp, proxies := toxiproxy(t, "src", e2e.src.Host)
	src := proxies[0]
	if err := tp.Toxic(ctx, "src", "latency", "latency", "downstream", 1, map[string]any{"latency": 50, "jitter": 20}); err != nil {
		t.Fatal(err)
	}
	if err := tp.Toxic(ctx, "src", "bandwidth", "bandwidth", "downstream", 1, map[string]any{"rate": 8192}); err != nil { // KB/s
		t.Fatal(err)
	}
	repo := dstRepo(t, e2e.dst.Host)
	r := ocistow(t, nil, "-source", src+"/src/big:v1", "-destination", repo+":slow", "-sign=false")
	if r.code != 0 || get(t, repo+":slow", nil).Digest.String() != e2e.fixtures["big"] {
		t.Fatalf("promotion over a slow link failed: %s", r.stderr)
	}
	// "timeout" stops all data on a third of connections and closes them
	// after a second: the requests are retried, nothing hangs. It holds
	// back the headers too, so this is the toxic's close at work, not
	// -stall-timeout: a GET whose headers never come is bounded by the HTTP
	// client's 2-minute header timeout and by -timeout (docs/RELIABILITY.md).
	if err := tp.RemoveToxic(ctx, "src", "bandwidth"); err != nil {
		t.Fatal(err)
	}
	if err := tp.Toxic(ctx, "src", "stall", "timeout", "downstream", 0.3, map[string]any{"timeout": 1000}); err != nil {
		t.Fatal(err)
	}
	stalls := 0
	for i := range chaosRuns() {
		dst := fmt.Sprintf("%s:stall-%d", repo, i)
		r := ocistow(t, nil, "-source", src+"/src/big:v1", "-destination", dst, "-sign=false", "-stall-timeout", "500ms", "-debug")
		stalls += strings.Count(r.stderr, "msg=http") - strings.Count(r.stderr, "status=")
		stalls += strings.Count(r.stderr, "level=WARN")
		if r.code != 0 {
			t.Errorf("promotion %d failed over stalling connections: %s", i, r.stderr)
			continue
		}
		if get(t, dst, nil).Digest.String() != e2e.fixtures["big"] {
			t.Errorf("promotion %d has another digest", i)
		}
	}
	t.Logf("chaos: 50 ms latency and 8 MB/s, then a third of connections stalled: every promotion succeeded; %d requests stalled and retried", stalls)
	if stalls == 0 {
		t.Error("no connection stalled: the scenario tested nothing")
	}

	// Mid-body stalls: a front before the source sends the first 256 KiB of
	// each layer's first download, then nothing. -stall-timeout abandons
	// each, and the blob is uploaded again from a new download.
	midBody, ok := 0, 0
	for i := range chaosRuns() {
		front := testenv.NewFront(e2e.src.Host)
		stop := make(chan struct{})
		// Counted here, as the answers start: a stalled request reaches the
		// front's log only once its handler notices the client left.
		var mu sync.Mutex
		stalled, gets := map[string]bool{}, map[string]int{}
		front.SetModify(func(resp *http.Response) error {
			if !isBlobGet(resp.Request) {
				return nil
			}
			mu.Lock()
			gets[resp.Request.URL.Path]++
			first := gets[resp.Request.URL.Path] == 1 && resp.ContentLength > 256<<10 // not the small config
			if first {
				stalled[resp.Request.URL.Path] = true
			}
			mu.Unlock()
			if first {
				resp.Body = &stallAfter{ReadCloser: resp.Body, left: 256 << 10, done: resp.Request.Context().Done(), stop: stop}
			}
			return nil
		})
		// A repository of its own each time: the blobs must be uploaded.
		dst := fmt.Sprintf("%s-mid-body-%d:v1", repo, i)
		r := ocistow(t, nil, "-source", front.Host+"/src/big:v1", "-destination", dst, "-sign=false", "-stall-timeout", "500ms", "-timeout", "30s")
		close(stop)
		front.Close() // waits for its handlers: the counts are final
		if r.code != 0 {
			t.Errorf("promotion %d failed over mid-body stalls: %s", i, r.stderr)
			continue
		}
		if get(t, dst, nil).Digest.String() != e2e.fixtures["big"] {
			t.Errorf("promotion %d has another digest", i)
		}
		if len(stalled) == 0 {
			t.Errorf("promotion %d downloaded no layer: the scenario tested nothing", i)
		}
		ok++
		for path := range stalled {
			if gets[path] < 2 {
				t.Errorf("promotion %d: %s stalled mid-body and was downloaded %d times, want a retry", i, path, gets[path])
			}
			midBody++
		}
	}
	t.Logf("chaos: every layer's first download stalled after 256 KiB: %d of %d promotions succeeded; %d downloads abandoned after -stall-timeout and retried", ok, chaosRuns(), midBody)
}

// stallAfter passes on left bytes of a body, then sends nothing until done
// (the client hung up) or stop (the test ends).
type stallAfter struct {
	io.ReadCloser
	left       int
	done, stop <-chan struct{}
}

func (s *stallAfter) Read(p []byte) (int, error) {
	if s.left <= 0 {
		select {
		case <-s.done:
		case <-s.stop:
		}
		return 0, errors.New("stalled on purpose")
	}
	if len(p) > s.left {
		p = p[:s.left]
	}
	n, err := s.ReadCloser.Read(p)
	s.left -= n
	return n, err
}

// KMS throttles every other Sign call: the AWS SDK's retries absorb it.
func TestKMSThrottlingIsRetried(t *testing.T) {
	front := testenv.NewFront(strings.TrimPrefix(e2e.kms.Endpoint, "http://"))
	defer front.Close()
	var signs, throttled atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".Sign") || signs.Add(1)%2 == 0 {
			return false
		}
		throttled.Add(1)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		w.WriteHeader(http.StatusBadRequest)
		_, _ = w.Write([]byte(`{"__type":"ThrottlingException","message":"Rate exceeded"}`))
		return true
	})
	env := append(e2e.kms.Env(), "AWS_ENDPOINT_URL_KMS=http://"+front.Host)
	dst := dstRepo(t, e2e.dst.Host) + ":v1"
	ocistow(t, env, "-source", srcRef("multi"), "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	if throttled.Load() == 0 {
		t.Fatal("KMS never throttled: the test tested nothing")
	}
	if v := cosignVerify(t, "awskms:///alias/"+ecKey, dst); v.code != 0 {
		t.Errorf("signature made through throttling does not verify: %s", v.stderr)
	}
	t.Logf("chaos: KMS throttled %d of %d Sign calls; promotion and signing succeeded", throttled.Load(), signs.Load())
}

// Eight whole promotions (copy and sign) of one image into one repository
// at once, four to one tag and four to tags of their own: all succeed, and
// the digest carries exactly one signature. A front holds their reads of
// the signature tag until all eight have read it, so that all of them find
// it empty and write.
func TestConcurrentPromotions(t *testing.T) {
	const promotions = 8
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	barrier := holdSigReads(front, e2e.dst.Host, promotions, 2*time.Minute)
	path := freshRepo(t)
	repo := e2e.dst.Host + "/" + path
	viaFront := front.Host + "/" + path
	var wg sync.WaitGroup
	results := make([]result, promotions)
	for i := range results {
		tag := "shared"
		if i%2 == 1 {
			tag = fmt.Sprintf("own-%d", i)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = ocistow(t, e2e.kms.Env(), "-source", srcRef("single"), "-destination", viaFront+":"+tag,
				"-annotations", "team=foo", "-aws-kms-key-arn", "alias/"+ecKey)
		}()
	}
	wg.Wait()
	barrier.check(t)
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("promotion %d exited %d: %s", i, r.code, r.stderr)
		}
	}
	d := get(t, repo+":shared", nil).Digest.String()
	for i := 1; i < 8; i += 2 {
		if got := get(t, fmt.Sprintf("%s:own-%d", repo, i), nil).Digest.String(); got != d {
			t.Errorf("tag own-%d is %s, want the same stamped digest %s", i, got, d)
		}
	}
	if n := sigCount(t, repo, d); n != 1 {
		t.Errorf("%d signatures after 8 concurrent promotions with one key and payload, want 1", n)
	}
	if v := cosignVerify(t, "awskms:///alias/"+ecKey, repo+":shared", "team=foo"); v.code != 0 {
		t.Errorf("cosign verify: %s", v.stderr)
	}
}

// The overall deadline holds over a registry that answers ever more
// slowly: the promotion gives up with one line and the tag stays put.
func TestOverallTimeout(t *testing.T) {
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	// The server notices a client hanging up only once it reads the body,
	// which this front never does: release the handlers at the end.
	stop := make(chan struct{})
	defer close(stop)
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if testenv.IsUpload(r) {
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return true
		}
		return false
	})
	repo := dstRepo(t, front.Host)
	r := ocistow(t, nil, "-source", srcRef("big"), "-destination", repo+":v1", "-sign=false", "-timeout", "2s")
	line := r.errLine(t)
	if r.code != exitFailed || !strings.Contains(line, "deadline exceeded") {
		t.Errorf("exit %d, line %q: want exit 1 saying the deadline passed", r.code, line)
	}
	if ts := tags(t, dstRepo(t, e2e.dst.Host), nil); len(ts) != 0 {
		t.Errorf("tags %v after a timed-out promotion", ts)
	}
}
