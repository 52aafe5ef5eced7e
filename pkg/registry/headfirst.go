package registry

import (
	"context"
	"net/http"
	"regexp"
)

type headFirstKey struct{}

// WithHeadFirst returns ctx with digest-tag reads made cheap: a GET of a
// manifest tagged as the referrers tag schema names them (sha256-<hex>,
// the index of a subject's referrers on a registry without the referrers
// API) or as cosign names its signatures, attestations and SBOMs
// (sha256-<hex>.sig, .att, .sbom), made with the returned context, is
// preceded by a HEAD, and when the HEAD says 404 that answer is returned
// without the GET. Registries that meter pulls (Docker Hub counts manifest
// GETs) do not count HEADs, so an artifact that is not there costs no
// pull; one that is costs a round trip more. go-containerregistry's
// remote.Referrers reads the tag with a GET of its own; this is how it is
// made to look first.
func WithHeadFirst(ctx context.Context) context.Context {
	return context.WithValue(ctx, headFirstKey{}, true)
}

// digestTag matches the path of a manifest under a digest tag: the
// referrers tag, or one of cosign's.
var digestTag = regexp.MustCompile(`^/v2/.+/manifests/sha256-[0-9a-f]{64}(\.(sig|att|sbom))?$`)

// headFirst is the transport side of WithHeadFirst.
type headFirst struct {
	next http.RoundTripper
}

func (t *headFirst) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.Method != http.MethodGet || req.Context().Value(headFirstKey{}) == nil || !digestTag.MatchString(req.URL.Path) {
		return t.next.RoundTrip(req)
	}
	head := req.Clone(req.Context())
	head.Method, head.Body, head.GetBody, head.ContentLength = http.MethodHead, nil, nil, 0
	resp, err := t.next.RoundTrip(head)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		return resp, nil // no body: go-containerregistry reads a 404 without one
	}
	resp.Body.Close()
	return t.next.RoundTrip(req)
}
