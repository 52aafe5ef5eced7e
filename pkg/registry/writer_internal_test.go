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
	var puts atomic.Int32
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	base := roundTripper(func(req *http.Request) (*http.Response, error) {
		if req.Method == http.MethodPut && strings.Contains(req.URL.Path, "/blobs/uploads/") {
			puts.Add(1)
		}
		return http.DefaultTransport.RoundTrip(req)
	})
	repo, err := name.NewRepository(strings.TrimPrefix(srv.URL, "http://") + "/app")
	if err != nil {
		t.Fatal(err)
	}
	w, err := New(WithBaseTransport(base)).Writer(t.Context(), repo)
	if err != nil {
		t.Fatal(err)
	}
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

// roundTripper is a RoundTripper made of a function.
type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
