package registry

import (
	"bytes"
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"sync"
)

// DefaultManifestCacheSize is how many bytes of manifests one operation
// keeps in memory (WithManifestCache).
const DefaultManifestCacheSize = 8 << 20

type manifestCacheKey struct{}

// WithManifestCache returns ctx with a new cache of up to size bytes of
// manifests (the least recently used go first): a GET of a manifest by
// digest that a request made with ctx (or a context derived from it) has
// had answered is answered again from memory. The cache lives as long as
// the operation that holds ctx (a promotion), never longer: a manifest
// deleted since an earlier operation is not found in it.
func WithManifestCache(ctx context.Context, size int64) context.Context {
	return context.WithValue(ctx, manifestCacheKey{}, newManifestCache(size))
}

// manifestCache answers a GET of a manifest by digest that the operation
// (WithManifestCache) has had answered before, from memory: what a digest names cannot change, so a
// promotion that reads a manifest again (the referrers step writing the
// source manifests a stamped copy read, a sync reading what its checks
// read) neither waits for the registry nor spends a pull where pulls are
// metered. It is keyed by scheme, host, repository and digest, holds only
// bodies whose digest it checked, never answers a HEAD (which asks whether
// the registry has the manifest now), and sits above the transport's
// observers, so that what it answers is not counted as a pull.
type manifestCache struct {
	mu      sync.Mutex
	max     int64
	size    int64
	order   *list.List // of *cachedManifest, most recently used first
	entries map[string]*list.Element
}

type cachedManifest struct {
	key         string
	contentType string
	body        []byte
}

func newManifestCache(max int64) *manifestCache {
	return &manifestCache{max: max, order: list.New(), entries: map[string]*list.Element{}}
}

// byDigest matches the path of a manifest named by its sha256 digest.
var byDigest = regexp.MustCompile(`^/v2/.+/manifests/sha256:([0-9a-f]{64})$`)

// manifestCacheTransport answers from the cache of the request's context,
// when it has one.
type manifestCacheTransport struct {
	next http.RoundTripper
}

func (t *manifestCacheTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	cache, _ := req.Context().Value(manifestCacheKey{}).(*manifestCache)
	match := byDigest.FindStringSubmatch(req.URL.Path)
	if cache == nil || cache.max <= 0 || req.Method != http.MethodGet || match == nil {
		return t.next.RoundTrip(req)
	}
	key := req.URL.Scheme + "://" + req.URL.Host + req.URL.Path
	if c := cache.get(key); c != nil {
		return c.response(req), nil
	}
	resp, err := t.next.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusOK || resp.ContentLength > MaxManifestSize {
		return resp, err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if sum := sha256.Sum256(body); len(body) <= MaxManifestSize && hex.EncodeToString(sum[:]) == match[1] {
		cache.put(&cachedManifest{key: key, contentType: resp.Header.Get("Content-Type"), body: body})
	}
	return resp, nil
}

// response is the answer c gives to req.
func (c *cachedManifest) response(req *http.Request) *http.Response {
	h := http.Header{}
	h.Set("Content-Type", c.contentType)
	h.Set("Content-Length", strconv.Itoa(len(c.body)))
	h.Set("Docker-Content-Digest", "sha256:"+byDigest.FindStringSubmatch(req.URL.Path)[1])
	return &http.Response{
		Status: fmt.Sprintf("%d %s", http.StatusOK, http.StatusText(http.StatusOK)), StatusCode: http.StatusOK,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: h, Body: io.NopCloser(bytes.NewReader(c.body)), ContentLength: int64(len(c.body)), Request: req,
	}
}

func (m *manifestCache) get(key string) *cachedManifest {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.entries[key]
	if !ok {
		return nil
	}
	m.order.MoveToFront(e)
	return e.Value.(*cachedManifest)
}

func (m *manifestCache) put(c *cachedManifest) {
	n := int64(len(c.body))
	if n > m.max {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.entries[c.key]; ok {
		return
	}
	for m.size+n > m.max {
		last := m.order.Back()
		old := last.Value.(*cachedManifest)
		m.order.Remove(last)
		delete(m.entries, old.key)
		m.size -= int64(len(old.body))
	}
	m.entries[c.key] = m.order.PushFront(c)
	m.size += n
}
