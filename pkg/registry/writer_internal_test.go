package registry

import (
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// uploadCountingWriter returns a Writer for a repository of an in-process
// registry, and the counts of the blob-upload PUTs and DELETEs it sends.
func uploadCountingWriter(t *testing.T) (w *Writer, puts, deletes *atomic.Int32) {
	t.Helper()
	puts, deletes = new(atomic.Int32), new(atomic.Int32)
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	base := roundTripper(func(req *http.Request) (*http.Response, error) {
		if strings.Contains(req.URL.Path, "/blobs/uploads/") {
			switch req.Method {
			case http.MethodPut:
				puts.Add(1)
			case http.MethodDelete:
				deletes.Add(1)
			}
		}
		return http.DefaultTransport.RoundTrip(req)
	})
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://") + "/app")
	if err != nil {
		t.Fatal(err)
	}
	if w, err = New(WithBaseTransport(base)).Writer(t.Context(), repo); err != nil {
		t.Fatal(err)
	}
	return w, puts, deletes
}

// waitFor polls cond until it holds, failing t after five seconds.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 5 s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestUploadsOfOneBlobShareOne checks that a second upload of a blob while
// the first is under way waits for it instead of sending the bytes again,
// and uploads the blob itself when the first fails.
func TestUploadsOfOneBlobShareOne(t *testing.T) {
	w, puts, _ := uploadCountingWriter(t)
	for _, tc := range []struct {
		name      string
		firstErr  error
		wantFirst Stored
		want      Stored
	}{
		{"first succeeds", nil, Sent, Found},
		{"first fails", errors.New("source gone"), Sent, Sent},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := "blob of " + tc.name
			d, _, _ := v1.SHA256(strings.NewReader(data))
			release := make(chan struct{})
			first := Blob{Digest: d, Size: int64(len(data)), Open: func() (io.ReadCloser, error) {
				<-release
				if tc.firstErr != nil {
					return nil, tc.firstErr
				}
				return io.NopCloser(strings.NewReader(data)), nil
			}}
			var secondOpened atomic.Bool
			second := Blob{Digest: d, Size: int64(len(data)), Open: func() (io.ReadCloser, error) {
				secondOpened.Store(true)
				return io.NopCloser(strings.NewReader(data)), nil
			}}
			before := puts.Load()
			type result struct {
				stored Stored
				err    error
			}
			r1, r2 := make(chan result, 1), make(chan result, 1)
			go func() { s, err := w.Upload(t.Context(), first); r1 <- result{s, err} }()
			waitFor(t, "the first upload under way", func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				return w.inflight[d] != nil
			})
			go func() { s, err := w.Upload(t.Context(), second); r2 <- result{s, err} }()
			waitFor(t, "the second upload waiting for the first", func() bool {
				w.mu.Lock()
				defer w.mu.Unlock()
				return w.inflight[d] != nil && w.inflight[d].waiters == 1
			})
			close(release)
			a, b := <-r1, <-r2
			if a.stored != tc.wantFirst || (a.err == nil) != (tc.firstErr == nil) {
				t.Errorf("first upload: %v, %v; want %v and error %v", a.stored, a.err, tc.wantFirst, tc.firstErr)
			}
			if b.stored != tc.want || b.err != nil {
				t.Errorf("second upload: %v, %v; want %v", b.stored, b.err, tc.want)
			}
			if got := puts.Load() - before; got != 1 {
				t.Errorf("blob PUTs: %d, want 1", got)
			}
			if opened := secondOpened.Load(); opened != (tc.firstErr != nil) {
				t.Errorf("second blob read: %v, want %v", opened, tc.firstErr != nil)
			}
			if has, err := w.HasBlob(t.Context(), d); err != nil || !has {
				t.Errorf("HasBlob = %v, %v; want the blob there", has, err)
			}
		})
	}
}

// TestUploadsSpareWhatLandedSince checks that an upload whose caller found
// the blob missing before another upload of it by the Writer succeeded
// sends nothing (Upload and a Send of an upload opened ahead, which is
// abandoned), and that one whose caller found it missing after that
// upload sends it again.
func TestUploadsSpareWhatLandedSince(t *testing.T) {
	w, puts, deletes := uploadCountingWriter(t)
	data := "shared blob"
	d, _, _ := v1.SHA256(strings.NewReader(data))
	blob := func(missingAt time.Time) Blob {
		return Blob{Digest: d, Size: int64(len(data)), MissingAt: missingAt, Open: func() (io.ReadCloser, error) {
			return io.NopCloser(strings.NewReader(data)), nil
		}}
	}
	before := time.Now() // as if another image's HEAD had found it missing now
	if s, err := w.Upload(t.Context(), blob(time.Time{})); s != Sent || err != nil {
		t.Fatalf("first upload: %v, %v", s, err)
	}
	after := time.Now()
	if s, err := w.Upload(t.Context(), blob(before)); s != Found || err != nil {
		t.Errorf("upload found missing before the first landed: %v, %v; want Found", s, err)
	}
	u, err := w.Open(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if s, err := u.Send(t.Context(), blob(before)); s != Found || err != nil {
		t.Errorf("send found missing before the first landed: %v, %v; want Found", s, err)
	}
	waitFor(t, "the upload opened ahead abandoned", func() bool { return deletes.Load() == 1 })
	if got := puts.Load(); got != 1 {
		t.Errorf("blob PUTs: %d, want the first upload's", got)
	}
	if s, err := w.Upload(t.Context(), blob(after)); s != Sent || err != nil {
		t.Errorf("upload found missing after the first landed: %v, %v; want Sent", s, err)
	}
	if got := puts.Load(); got != 2 {
		t.Errorf("blob PUTs: %d, want 2 (sent again when found missing since)", got)
	}
}

// roundTripper is a RoundTripper made of a function.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// TestPlainPingOnlyWhereTheGuardAllowsIt keeps the ping cache from racing
// a plain-HTTP ping that plainHTTPGuard would refuse (go-containerregistry
// would use plain HTTP for RFC 1918 addresses; ocistow does not).
func TestPlainPingOnlyWhereTheGuardAllowsIt(t *testing.T) {
	p := &pingCache{insecure: map[string]bool{"registry.internal:5000": true, "plain.example": true}}
	for host, want := range map[string]bool{
		"127.0.0.1:5000": true, "localhost:5000": true, "[::1]:5000": true,
		"registry.internal:5000": true, "plain.example:8080": true,
		"10.1.2.3:5000": false, "192.168.1.2": false, "registry.example.com": false,
	} {
		if got := p.plainHTTPAllowed(host); got != want {
			t.Errorf("plainHTTPAllowed(%q) = %v, want %v", host, got, want)
		}
	}
}
