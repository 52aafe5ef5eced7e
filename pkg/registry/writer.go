package registry

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// A Writer writes blobs and manifests to one repository in as few round
// trips as the registry allows.
//
// go-containerregistry's writer always uploads a blob in three requests
// (POST to open an upload, PATCH with the bytes, PUT to commit), after a
// HEAD. Between regions (Docker Hub into ECR, say) each request costs a
// round trip, and round trips, not bandwidth, decide how long a small
// image takes. A Writer opens the upload while the source blob is being
// opened, and sends the bytes with the committing PUT (the distribution
// specification's monolithic upload): two round trips after the HEAD. A
// registry that refuses a monolithic PUT gets the three-request upload,
// from then on. The requests go over go-containerregistry's authenticated
// transport (its ping and token exchange) and its errors are
// go-containerregistry's transport.Error, as for every other request.
//
// Uploads of one blob share what another upload of it on the same Writer
// did (two images of a sync that share a layer, written into one
// repository): while one is under way the later ones wait for it, and
// report the blob Found when it succeeds (if it fails, they upload it
// themselves); and an upload whose caller found the blob missing
// (Blob.MissingAt) before another upload of it finished reports it Found
// without sending it.
//
// A Writer is safe for concurrent use.
type Writer struct {
	repo    name.Repository
	client  *http.Client
	chunked atomic.Bool // the registry refused a monolithic upload

	mu       sync.Mutex
	inflight map[v1.Hash]*flight   // uploads under way, by digest
	landed   map[v1.Hash]time.Time // when uploads of this Writer succeeded
}

// maxLanded bounds Writer.landed: past it the memory starts over (later
// uploads then send what they would have found).
const maxLanded = 4096

// flight is an upload under way, which later uploads of its blob wait for.
type flight struct {
	done    chan struct{}
	err     error
	waiters int // uploads waiting for this one (for tests to see them wait)
}

// join returns, for an upload of d whose caller found it missing at
// missingAt (zero: not asked), whether an upload of d by this Writer has
// succeeded since (landed), or else the upload of d under way, or, when
// there is none, a new one for the caller to make (first).
func (w *Writer) join(d v1.Hash, missingAt time.Time) (f *flight, first, landed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if t, ok := w.landed[d]; ok && !missingAt.IsZero() && t.After(missingAt) {
		return nil, false, true
	}
	if f, ok := w.inflight[d]; ok {
		f.waiters++
		return f, false, false
	}
	if w.inflight == nil {
		w.inflight = map[v1.Hash]*flight{}
	}
	f = &flight{done: make(chan struct{})}
	w.inflight[d] = f
	return f, true, false
}

// land ends the upload f of d with err.
func (w *Writer) land(d v1.Hash, f *flight, err error) {
	w.mu.Lock()
	delete(w.inflight, d)
	if err == nil {
		if w.landed == nil || len(w.landed) >= maxLanded {
			w.landed = map[v1.Hash]time.Time{}
		}
		w.landed[d] = time.Now()
	}
	w.mu.Unlock()
	f.err = err
	close(f.done)
}

// share makes the upload of b with do, unless another upload of it on
// this Writer makes it needless (see Writer): then it reports Found.
func (w *Writer) share(ctx context.Context, b Blob, do func() (Stored, error)) (Stored, error) {
	for {
		f, first, landed := w.join(b.Digest, b.MissingAt)
		switch {
		case landed:
			return Found, nil
		case first:
			stored, err := do()
			w.land(b.Digest, f, err)
			return stored, err
		}
		select {
		case <-f.done:
		case <-ctx.Done():
			return Sent, ctx.Err()
		}
		if f.err == nil {
			return Found, nil
		}
	}
}

// Writer returns the Writer for repo, authenticated for pushing (and
// pulling, which mounting needs). The first call for a repository fetches
// a token (the registry's ping is the Client's, once per registry);
// concurrent callers wait for that one, later callers reuse it. A failure
// is not kept: the next call tries again.
func (c *Client) Writer(ctx context.Context, repo name.Repository) (*Writer, error) {
	return c.writers.get(ctx, repo.String(), func() (*Writer, error) { return c.newWriter(ctx, repo) }, nil)
}

func (c *Client) newWriter(ctx context.Context, repo name.Repository) (*Writer, error) {
	auth, err := authn.Resolve(ctx, c.keychain, repo)
	if err != nil {
		return nil, fmt.Errorf("credentials for %s: %w", repo, err)
	}
	rt := transport.NewUserAgent(c.roundTripper(), c.userAgent)
	scopes := []string{repo.Scope(transport.PushScope)}
	t, err := transport.NewWithContext(ctx, repo.Registry, auth, rt, scopes)
	if err != nil {
		return nil, err
	}
	return &Writer{repo: repo, client: &http.Client{Transport: t}}, nil
}

// Repository returns the repository the Writer writes to.
func (w *Writer) Repository() name.Repository { return w.repo }

func (w *Writer) url(path string) *url.URL {
	return &url.URL{Scheme: w.repo.Scheme(), Host: w.repo.RegistryStr(), Path: "/v2/" + w.repo.RepositoryStr() + path}
}

func (w *Writer) do(ctx context.Context, method string, u *url.URL, body io.Reader, want ...int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return nil, err
	}
	return w.send(req, want...)
}

func (w *Writer) send(req *http.Request, want ...int) (*http.Response, error) {
	resp, err := w.client.Do(req)
	if err != nil {
		return nil, err
	}
	if err := transport.CheckError(resp, want...); err != nil {
		resp.Body.Close()
		return nil, err
	}
	return resp, nil
}

// HasBlob reports whether the repository holds blob d (a HEAD).
func (w *Writer) HasBlob(ctx context.Context, d v1.Hash) (bool, error) {
	resp, err := w.do(ctx, http.MethodHead, w.url("/blobs/"+d.String()), nil, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// HasManifest reports whether the repository holds the manifest with
// digest d (a HEAD).
func (w *Writer) HasManifest(ctx context.Context, d v1.Hash) (bool, error) {
	resp, err := w.do(ctx, http.MethodHead, w.url("/manifests/"+d.String()), nil, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, nil
}

// Blob is a blob to upload: its digest and size, and how to read it (once
// per attempt).
type Blob struct {
	Digest v1.Hash
	Size   int64
	Open   func() (io.ReadCloser, error)
	// MountFrom, when set, names a repository of the same registry that
	// holds the blob: the request that opens the upload asks the registry
	// to mount it from there, and the blob is read only if it does not.
	MountFrom *name.Repository
	// Check asks whether the repository has the blob (a HEAD) while the
	// upload and the blob are being opened, and abandons the upload when
	// it has: one round trip instead of two, at the price of an upload
	// opened and a read started for nothing when the blob is there. Worth
	// it for small blobs. Ignored with MountFrom.
	Check bool
	// MissingAt, when set, is when the caller learnt that the repository
	// lacks the blob (the answer to its HEAD): if an upload of it by the
	// same Writer has succeeded since, the blob is reported Found and not
	// sent.
	MissingAt time.Time
}

// Stored says how a blob came to be in the repository.
type Stored int

// How a blob came to be in the repository.
const (
	Sent    Stored = iota // its bytes were uploaded
	Found                 // the repository had it (Blob.Check), or got it from another upload of the Writer
	Mounted               // mounted from Blob.MountFrom
)

// Upload writes b to the repository. Unless b.Check, it does not first ask
// whether the blob is there (HasBlob does that). While another Upload of
// the same blob is under way it waits for that one instead (see Writer).
//
// Without MountFrom, the upload is opened while b is opened, and the bytes
// go with the PUT that commits the upload. A failure is returned as is:
// retrying a whole upload is the caller's (Client.Retry), since a streamed
// body cannot be sent twice.
func (w *Writer) Upload(ctx context.Context, b Blob) (Stored, error) {
	return w.share(ctx, b, func() (Stored, error) { return w.upload(ctx, b) })
}

// upload is Upload's own upload of b.
func (w *Writer) upload(ctx context.Context, b Blob) (Stored, error) {
	if b.MountFrom != nil {
		loc, mounted, err := w.start(ctx, b)
		if err != nil || mounted {
			return Mounted, err
		}
		return Sent, w.put(ctx, b, loc)
	}
	// The upload, the blob, and the question whether it is needed, at once.
	type started struct {
		loc *url.URL
		err error
	}
	ch := make(chan started, 1)
	go func() {
		loc, _, err := w.start(ctx, b)
		ch <- started{loc, err}
	}()
	type checked struct {
		has bool
		err error
	}
	chk := make(chan checked, 1)
	if b.Check {
		go func() {
			has, err := w.HasBlob(ctx, b.Digest)
			chk <- checked{has, err}
		}()
	} else {
		chk <- checked{}
	}
	body, oerr := b.Open()
	s, c := <-ch, <-chk
	if c.err != nil || c.has || s.err != nil || oerr != nil {
		if oerr == nil {
			body.Close()
		}
		if s.err == nil {
			w.abandon(s.loc)
		}
		switch {
		case c.err != nil:
			return Sent, c.err
		case c.has:
			return Found, nil
		case s.err != nil:
			return Sent, s.err
		}
		return Sent, oerr
	}
	return Sent, w.putBody(ctx, b, s.loc, body)
}

// An Upload is an upload opened before its blob is sent (Writer.Open): a
// promotion that waits for its turn to write opens the uploads of the blobs
// it will send, so that sending each costs one round trip, the PUT with the
// bytes. An Upload is sent or abandoned, once.
type Upload struct {
	w   *Writer
	loc *url.URL
}

// Open opens an upload (POST) for a blob to send later.
func (w *Writer) Open(ctx context.Context) (*Upload, error) {
	loc, _, err := w.start(ctx, Blob{})
	if err != nil {
		return nil, err
	}
	return &Upload{w: w, loc: loc}, nil
}

// Send sends b to the upload: with the PUT that commits it, or, for a
// registry that refuses the bytes that way, as Writer.Upload falls back.
// b.MountFrom and b.Check are ignored. Like Writer.Upload, it shares what
// another upload of the blob on the Writer did: when that makes it
// needless, the upload is abandoned and the blob reported Found. A failure
// is returned as is: the upload may be gone (expired), and trying again is
// Writer.Upload's.
func (u *Upload) Send(ctx context.Context, b Blob) (Stored, error) {
	stored, err := u.w.share(ctx, b, func() (Stored, error) {
		body, err := b.Open()
		if err != nil {
			u.Abandon()
			return Sent, err
		}
		return Sent, u.w.putBody(ctx, b, u.loc, body)
	})
	if stored == Found || (err != nil && ctx.Err() != nil) {
		u.Abandon()
	}
	return stored, err
}

// Abandon cancels the upload, in the background (best effort).
func (u *Upload) Abandon() { u.w.abandon(u.loc) }

// start opens an upload (POST), asking for a mount when b says where
// from. It returns the upload's location, or mounted when the registry
// mounted the blob instead. A registry that fails the request with the
// mount is asked again without it, as go-containerregistry does (some
// refuse mounts rather than ignore them).
func (w *Writer) start(ctx context.Context, b Blob) (*url.URL, bool, error) {
	u := w.url("/blobs/uploads/")
	if b.MountFrom != nil {
		u.RawQuery = url.Values{"mount": {b.Digest.String()}, "from": {b.MountFrom.RepositoryStr()}}.Encode()
	}
	resp, err := w.do(ctx, http.MethodPost, u, nil, http.StatusCreated, http.StatusAccepted)
	if err != nil && b.MountFrom != nil && StatusCode(err) != 0 {
		return w.start(ctx, Blob{Digest: b.Digest})
	}
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusCreated && b.MountFrom != nil {
		return nil, true, nil
	}
	loc, err := resp.Location()
	if err != nil {
		return nil, false, fmt.Errorf("the registry opened an upload without saying where: %w", err)
	}
	return loc, false, nil
}

// put opens b and sends it to the upload at loc.
func (w *Writer) put(ctx context.Context, b Blob, loc *url.URL) error {
	body, err := b.Open()
	if err != nil {
		w.abandon(loc)
		return err
	}
	return w.putBody(ctx, b, loc, body)
}

// putBody sends body to the upload at loc: with the committing PUT, or
// (for a registry that refused that) in a PATCH before it. A registry that
// refuses the monolithic PUT gets the blob again, in a fresh upload.
func (w *Writer) putBody(ctx context.Context, b Blob, loc *url.URL, body io.ReadCloser) error {
	if w.chunked.Load() {
		return w.patchAndCommit(ctx, b, loc, body)
	}
	err := w.commit(ctx, b, loc, body)
	if !refusesMonolithic(err) {
		return err
	}
	w.chunked.Store(true)
	loc, _, err = w.start(ctx, Blob{Digest: b.Digest})
	if err != nil {
		return err
	}
	return w.put(ctx, b, loc)
}

// refusesMonolithic reports whether a registry's answer to a PUT with the
// blob's bytes says it does not take them that way (rather than that the
// bytes or the credentials are wrong).
func refusesMonolithic(err error) bool {
	switch StatusCode(err) {
	case http.StatusMethodNotAllowed, http.StatusLengthRequired, http.StatusRequestEntityTooLarge,
		http.StatusUnsupportedMediaType, http.StatusRequestedRangeNotSatisfiable, http.StatusNotImplemented:
		return true
	}
	return false
}

// commit sends body with the PUT that commits the upload at loc.
func (w *Writer) commit(ctx context.Context, b Blob, loc *url.URL, body io.ReadCloser) error {
	u := withDigest(loc, b.Digest)
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, u.String(), body)
	if err != nil {
		body.Close()
		return err
	}
	req.ContentLength = b.Size
	if b.Size == 0 {
		body.Close()
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := w.send(req, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// patchAndCommit is the three-request upload: the bytes in a PATCH, then
// an empty PUT to commit.
func (w *Writer) patchAndCommit(ctx context.Context, b Blob, loc *url.URL, body io.ReadCloser) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc.String(), body)
	if err != nil {
		body.Close()
		return err
	}
	req.ContentLength = b.Size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := w.send(req, http.StatusNoContent, http.StatusAccepted, http.StatusCreated)
	if err != nil {
		return err
	}
	resp.Body.Close()
	next, err := resp.Location()
	if err != nil {
		next = loc // a registry may keep the location
	}
	return w.commit(ctx, Blob{Digest: b.Digest}, next, io.NopCloser(bytes.NewReader(nil)))
}

// abandon cancels an upload that will not be sent, so that the registry
// need not wait for it to expire. Best effort, in the background.
func (w *Writer) abandon(loc *url.URL) {
	if loc == nil {
		return
	}
	go func() {
		if resp, err := w.do(context.Background(), http.MethodDelete, loc, nil); err == nil {
			resp.Body.Close()
		}
	}()
}

func withDigest(loc *url.URL, d v1.Hash) *url.URL {
	u := *loc
	q := u.Query()
	q.Set("digest", d.String())
	u.RawQuery = q.Encode()
	return &u
}

// PutManifest writes raw, of media type mt, as ref (a tag or a digest of
// the Writer's repository).
func (w *Writer) PutManifest(ctx context.Context, ref name.Reference, mt types.MediaType, raw []byte) error {
	if ref.Context().String() != w.repo.String() {
		return fmt.Errorf("writing %s with the writer of %s", ref, w.repo)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, w.url("/manifests/"+ref.Identifier()).String(), bytes.NewReader(raw))
	if err != nil {
		return err
	}
	req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw)), nil }
	req.ContentLength = int64(len(raw))
	req.Header.Set("Content-Type", string(mt))
	resp, err := w.send(req, http.StatusOK, http.StatusCreated, http.StatusAccepted)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
