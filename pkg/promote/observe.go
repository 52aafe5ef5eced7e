package promote

import (
	"net/http"
	"strings"
	"sync"
)

// observer watches the requests of one promotion on the wire, below
// go-containerregistry's retries, and records what happened to each blob at
// the destination: found (HEAD 200), mounted (POST ?mount= answered 201) or
// uploaded (PUT ?digest= answered 201), and how many manifests were written.
type observer struct {
	blobsPath     string // /v2/<dst repo>/blobs/
	manifestsPath string // /v2/<dst repo>/manifests/

	mu        sync.Mutex
	existing  map[string]bool
	mounted   map[string]bool
	uploaded  map[string]bool
	checks    map[string]int // existence checks per blob: one per attempt
	manifests int
}

func newObserver(dstRepo string) *observer {
	return &observer{
		blobsPath:     "/v2/" + dstRepo + "/blobs/",
		manifestsPath: "/v2/" + dstRepo + "/manifests/",
		existing:      map[string]bool{},
		mounted:       map[string]bool{},
		uploaded:      map[string]bool{},
		checks:        map[string]int{},
	}
}

func (o *observer) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		resp, err := next.RoundTrip(req)
		if err == nil {
			o.record(req, resp.StatusCode)
		}
		return resp, err
	})
}

func (o *observer) record(req *http.Request, status int) {
	path := req.URL.Path
	o.mu.Lock()
	defer o.mu.Unlock()
	if req.Method == http.MethodHead && strings.HasPrefix(path, o.blobsPath) {
		o.checks[strings.TrimPrefix(path, o.blobsPath)]++
	}
	switch {
	case req.Method == http.MethodHead && status == http.StatusOK && strings.HasPrefix(path, o.blobsPath):
		o.existing[strings.TrimPrefix(path, o.blobsPath)] = true
	case req.Method == http.MethodPost && status == http.StatusCreated && strings.HasPrefix(path, o.blobsPath+"uploads/"):
		if d := req.URL.Query().Get("mount"); d != "" {
			o.mounted[d] = true
		} else if d := req.URL.Query().Get("digest"); d != "" {
			o.uploaded[d] = true
		}
	case req.Method == http.MethodPut && status == http.StatusCreated && req.URL.Query().Get("digest") != "":
		// The commit URL is the upload location the registry chose, which
		// may be on another path or host.
		o.uploaded[req.URL.Query().Get("digest")] = true
	case req.Method == http.MethodPut && status == http.StatusCreated && strings.HasPrefix(path, o.manifestsPath):
		o.manifests++
	}
}

// outcome says what happened to one blob, and in how many attempts.
func (o *observer) outcome(digest string) (Outcome, int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.uploaded[digest]:
		return Uploaded, o.checks[digest]
	case o.mounted[digest]:
		return Mounted, o.checks[digest]
	case o.existing[digest]:
		return Skipped, o.checks[digest]
	}
	return Failed, o.checks[digest]
}

// fill copies the counts into res; sizes gives each blob's size.
func (o *observer) fill(res *Result, sizes map[string]int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for d := range o.uploaded {
		res.BlobsCopied++
		res.BytesCopied += sizes[d]
	}
	for d := range o.mounted {
		if !o.uploaded[d] {
			res.BlobsMounted++
		}
	}
	for d := range o.existing {
		if !o.uploaded[d] && !o.mounted[d] {
			res.BlobsSkipped++
		}
	}
	res.ManifestsWritten = o.manifests
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
