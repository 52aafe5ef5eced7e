package main

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ocistow/ocistow/internal/testenv"
)

// A destination that stops reading an upload is abandoned after
// -stall-timeout and the upload started over, instead of hanging until the
// HTTP client's 2-minute header timeout (here: until -timeout).
func TestStalledUploadIsRetried(t *testing.T) {
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	// The server notices a client hanging up only once it reads the body,
	// which this front does not: release the handler at the end.
	stop := make(chan struct{})
	defer close(stop)
	var stalled atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if !testenv.IsUpload(r) || stalled.Add(1) > 1 {
			return false
		}
		select { // never reads the body, never answers
		case <-stop:
		case <-time.After(time.Minute):
		}
		return true
	})
	repo := dstRepo(t, front.Host)
	r := ocistow(t, nil, "-source", srcRef("big"), "-destination", repo+":v1", "-sign=false",
		"-stall-timeout", "1s", "-timeout", "30s", "-debug", "-output", "json")
	r.mustSucceed(t)
	if got := get(t, repo+":v1", nil).Digest.String(); got != e2e.fixtures["big"] {
		t.Errorf("digest %s after a stalled upload, want %s", got, e2e.fixtures["big"])
	}
	if !strings.Contains(r.stderr, "gave up on a stalled upload") {
		t.Errorf("the debug log does not show the stalled upload:\n%s", r.stderr)
	}
	// The stalled blob was uploaded twice (its upload started over), every
	// other once.
	res := r.copyResult(t)
	// (The stalled request is in the front's log only once released.)
	if uploads := int(stalled.Load()); uploads != res.BlobsCopied+1 {
		t.Errorf("%d uploads for %d blobs copied, want one more (the stalled one, retried)", uploads, res.BlobsCopied)
	}
	opened := front.Count(func(r testenv.Request) bool {
		return r.Method == http.MethodPost && strings.HasSuffix(r.Path, "/blobs/uploads/")
	})
	if opened != res.BlobsCopied+1 {
		t.Errorf("%d uploads opened for %d blobs copied, want one more (the stalled one, started over)", opened, res.BlobsCopied)
	}
}

// A manifest whose body breaks off after the headers (the connection cut,
// or nothing more sent) is asked for again, like a blob.
func TestManifestCutMidBodyIsRetried(t *testing.T) {
	manifest := get(t, srcRef("big"), nil).Manifest
	for _, mode := range []string{"cut", "stall"} {
		t.Run(mode, func(t *testing.T) {
			front := testenv.NewFront(e2e.src.Host)
			defer front.Close()
			stop := make(chan struct{})
			defer close(stop)
			var gets atomic.Int32
			front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
				if !isFixtureManifestGet(r, "big") || gets.Add(1) > 1 {
					return false
				}
				w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
				w.Header().Set("Content-Length", strconv.Itoa(len(manifest)))
				_, _ = w.Write(manifest[:len(manifest)/2])
				w.(http.Flusher).Flush()
				if mode == "stall" {
					select {
					case <-r.Context().Done():
					case <-stop:
					}
					return true
				}
				if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
					conn.Close()
				}
				return true
			})
			dst := dstRepo(t, e2e.dst.Host) + ":v1"
			ocistow(t, nil, "-source", front.Host+"/src/big:v1", "-destination", dst, "-sign=false",
				"-stall-timeout", "1s", "-timeout", "30s").mustSucceed(t)
			if got := get(t, dst, nil).Digest.String(); got != e2e.fixtures["big"] {
				t.Errorf("digest %s, want %s", got, e2e.fixtures["big"])
			}
			if n := front.Count(func(q testenv.Request) bool {
				return q.Method == http.MethodGet && strings.HasPrefix(q.Path, "/v2/src/big/manifests/")
			}); n != 2 {
				t.Errorf("the front saw %d manifest GETs, want 2 (the broken one and its retry)", n)
			}
		})
	}
}

// A promotion whose deadline passes while it waits to retry returns at the
// deadline, not after the backoff's sleep.
func TestTimeoutEndsRetrySleeps(t *testing.T) {
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	var refused atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost || !strings.Contains(r.URL.Path, "/blobs/uploads/") {
			return false
		}
		refused.Add(1)
		http.Error(w, `{"errors":[{"code":"UNAVAILABLE","message":"try later"}]}`, http.StatusServiceUnavailable)
		return true
	})
	repo := dstRepo(t, front.Host)
	// Sleeps of about 0.5, 1, 2 and 4 s: the 2 s deadline falls inside the
	// third, which would end about 3.5 s in.
	const timeout = 2 * time.Second
	start := time.Now()
	r := ocistow(t, nil, "-source", srcRef("big"), "-destination", repo+":v1", "-sign=false", "-timeout", timeout.String(), "-debug")
	took := time.Since(start)
	line := r.errLine(t)
	if r.code != exitFailed || !strings.Contains(line, "deadline exceeded") || !strings.Contains(line, "503") {
		t.Errorf("exit %d, line %q: want exit 1 saying the deadline passed while retrying a 503\n%s", r.code, line, r.stderr)
	}
	if took > timeout+time.Second {
		t.Errorf("returned %v after start with -timeout %v: the retry sleep outlived the deadline", took, timeout)
	}
	if refused.Load() < 2 {
		t.Errorf("%d uploads refused: the retries never ran", refused.Load())
	}
	if ts := tags(t, dstRepo(t, e2e.dst.Host), nil); len(ts) != 0 {
		t.Errorf("tags %v after a timed-out promotion", ts)
	}
}

// fault is one request a front answered badly, and when.
type fault struct {
	method, path string
	at           time.Time
}

// frontFaults keeps the faults a hook injected.
type frontFaults struct {
	mu   sync.Mutex
	list []fault
}

func (f *frontFaults) add(r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.list = append(f.list, fault{r.Method, r.URL.Path, time.Now()})
}

func (f *frontFaults) all() []fault {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]fault(nil), f.list...)
}

// retriedAfter returns when the front next saw the request of f after it
// was answered, or the zero time.
func retriedAfter(front *testenv.Front, f fault) time.Time {
	for _, q := range front.Requests() {
		if q.Method == f.method && q.Path == f.path && q.Start.After(f.at) {
			return q.Start
		}
	}
	return time.Time{}
}
