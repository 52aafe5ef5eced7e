package registry_test

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/registry"
)

// writerServer is go-containerregistry's in-process registry, recording
// each request, with a hook that may answer instead.
type writerServer struct {
	host string
	mu   sync.Mutex
	log  []string
	hook func(w http.ResponseWriter, r *http.Request) bool
}

func newWriterServer(t *testing.T) *writerServer {
	s := &writerServer{}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.log = append(s.log, r.Method+" "+r.URL.Path)
		hook := s.hook
		s.mu.Unlock()
		if hook == nil || !hook(w, r) {
			reg.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	s.host = strings.TrimPrefix(srv.URL, "http://")
	return s
}

func (s *writerServer) methods() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var m []string
	for _, l := range s.log {
		if !strings.HasSuffix(l, " /v2/") { // the ping
			m = append(m, strings.Fields(l)[0])
		}
	}
	return strings.Join(m, " ")
}

func (s *writerServer) reset() {
	s.mu.Lock()
	s.log = nil
	s.mu.Unlock()
}

func testBlob(data string) registry.Blob {
	d, _, _ := v1.SHA256(strings.NewReader(data))
	return registry.Blob{Digest: d, Size: int64(len(data)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(data)), nil
	}}
}

func newWriter(t *testing.T, s *writerServer) *registry.Writer {
	repo, err := name.NewRepository(s.host + "/app")
	if err != nil {
		t.Fatal(err)
	}
	w, err := registry.New().Writer(t.Context(), repo)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

// A blob goes up in two requests, its bytes with the committing PUT; the
// same blob again, with Check, is found and its upload abandoned.
func TestWriterUploadsInTwoRequests(t *testing.T) {
	s := newWriterServer(t)
	w := newWriter(t, s)
	b := testBlob("hello")
	stored, err := w.Upload(t.Context(), b)
	if err != nil || stored != registry.Sent {
		t.Fatalf("upload: %v, %v", stored, err)
	}
	if got := s.methods(); got != "POST PUT" {
		t.Errorf("requests %q, want POST PUT", got)
	}
	if ok, err := w.HasBlob(t.Context(), b.Digest); !ok || err != nil {
		t.Errorf("HasBlob after upload: %v, %v", ok, err)
	}

	s.reset()
	b.Check = true
	stored, err = w.Upload(t.Context(), b)
	if err != nil || stored != registry.Found {
		t.Fatalf("upload of a blob the registry has: %v, %v; want Found", stored, err)
	}
	waitFor(t, func() bool { return strings.Contains(s.methods(), "DELETE") })
	if got := s.methods(); strings.Contains(got, "PUT") {
		t.Errorf("requests %q: the found blob was sent", got)
	}
}

// A registry that refuses the bytes with the committing PUT gets them in a
// PATCH, from then on.
func TestWriterFallsBackToChunkedUploads(t *testing.T) {
	s := newWriterServer(t)
	s.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/blobs/uploads/") && r.ContentLength > 0 {
			http.Error(w, "monolithic uploads not supported", http.StatusMethodNotAllowed)
			return true
		}
		return false
	}
	w := newWriter(t, s)
	for i, data := range []string{"first", "second"} {
		s.reset()
		if _, err := w.Upload(t.Context(), testBlob(data)); err != nil {
			t.Fatalf("upload %d: %v", i, err)
		}
		want := map[int]string{0: "POST PUT POST PATCH PUT", 1: "POST PATCH PUT"}[i]
		if got := s.methods(); got != want {
			t.Errorf("upload %d: requests %q, want %q", i, got, want)
		}
		if ok, _ := w.HasBlob(t.Context(), testBlob(data).Digest); !ok {
			t.Errorf("upload %d: blob not there", i)
		}
	}
}

// A registry that fails a mount request is asked again without it.
func TestWriterRetriesWithoutAFailedMount(t *testing.T) {
	s := newWriterServer(t)
	s.hook = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPost && r.URL.Query().Get("mount") != "" {
			http.Error(w, "no mounts here", http.StatusBadRequest)
			return true
		}
		return false
	}
	w := newWriter(t, s)
	from, _ := name.NewRepository(s.host + "/other")
	b := testBlob("mount me")
	b.MountFrom = &from
	stored, err := w.Upload(t.Context(), b)
	if err != nil || stored != registry.Sent {
		t.Fatalf("upload: %v, %v; want Sent", stored, err)
	}
	if got := s.methods(); got != "POST POST PUT" {
		t.Errorf("requests %q, want POST POST PUT", got)
	}
}

// A failing source is reported, and the opened upload abandoned.
func TestWriterAbandonsUploadWhenTheSourceFails(t *testing.T) {
	s := newWriterServer(t)
	w := newWriter(t, s)
	b := testBlob("x")
	b.Open = func() (io.ReadCloser, error) { return nil, io.ErrUnexpectedEOF }
	if _, err := w.Upload(t.Context(), b); err != io.ErrUnexpectedEOF {
		t.Fatalf("upload: %v, want the source's error", err)
	}
	waitFor(t, func() bool { return s.methods() == "POST DELETE" })
}

func TestWriterPutsManifests(t *testing.T) {
	s := newWriterServer(t)
	w := newWriter(t, s)
	cfg := testBlob("{}")
	if _, err := w.Upload(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	raw := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + cfg.Digest.String() + `","size":2},"layers":[]}`)
	ref, _ := name.NewTag(s.host + "/app:v1")
	if err := w.PutManifest(t.Context(), ref, types.OCIManifestSchema1, raw); err != nil {
		t.Fatal(err)
	}
	d, _, _ := v1.SHA256(bytes.NewReader(raw))
	if ok, err := w.HasManifest(t.Context(), d); !ok || err != nil {
		t.Errorf("HasManifest: %v, %v", ok, err)
	}
	other, _ := name.NewTag(s.host + "/elsewhere:v1")
	if err := w.PutManifest(t.Context(), other, types.OCIManifestSchema1, raw); err == nil {
		t.Error("wrote to another repository")
	}
}

// waitFor polls cond, for what a Writer does in the background.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition never held")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// The Client's shared Puller lets more blob streams run at once than
// -jobs: promotions sharing it (a fleet) are bounded by ocistow's own
// limits, not by one process-wide count.
func TestSharedPullerDoesNotCapBlobStreamsAtJobs(t *testing.T) {
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	const streams = 3
	var inFlight atomic.Int32
	all := make(chan struct{}) // closed when streams blob reads were in flight at once
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			if inFlight.Add(1) == streams {
				once.Do(func() { close(all) })
			}
			select { // answer once all are in flight together
			case <-all:
			case <-time.After(5 * time.Second):
			}
			inFlight.Add(-1)
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	var digests []v1.Hash
	for i := range streams {
		b := testBlob(strings.Repeat("x", i+1))
		repo, _ := name.NewRepository(host + "/app")
		w, err := registry.New().Writer(t.Context(), repo)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Upload(t.Context(), b); err != nil {
			t.Fatal(err)
		}
		digests = append(digests, b.Digest)
	}
	c := registry.New(registry.WithJobs(1))
	p, err := c.Puller()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, d := range digests {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ref, _ := name.NewDigest(host + "/app@" + d.String())
			l, err := p.Layer(t.Context(), ref)
			if err != nil {
				t.Error(err)
				return
			}
			rc, err := l.Compressed()
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, rc)
			rc.Close()
		}()
	}
	wg.Wait()
	select {
	case <-all:
	default:
		t.Errorf("%d blob reads never reached the registry at once with -jobs 1", streams)
	}
}
