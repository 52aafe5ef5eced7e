package promote

import (
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
)

// pullMeter counts what registries that limit pulls count: GETs of the
// source repository's manifests that the registry answered (HEADs are free
// on Docker Hub, and blob GETs are not counted there). It watches the wire
// (as the registry.Observer of the promotion's context) because
// go-containerregistry fetches child manifests lazily, wherever an image's
// layers are first asked for.
type pullMeter struct {
	host, path string // the source registry, and /v2/<repo>/manifests/
	n          atomic.Int64
}

func newPullMeter(src name.Repository) *pullMeter {
	return &pullMeter{host: src.RegistryStr(), path: "/v2/" + src.RepositoryStr() + "/manifests/"}
}

// observe counts req when it is a pull the source served; it is the
// registry.Observer of a promotion's requests.
func (m *pullMeter) observe(req *http.Request, resp *http.Response) {
	if req.Method == http.MethodGet && resp.StatusCode < 300 && m.isSource(req) {
		m.n.Add(1)
	}
}

func (m *pullMeter) isSource(req *http.Request) bool {
	return strings.HasPrefix(req.URL.Path, m.path) && (req.URL.Host == m.host || m.host == name.DefaultRegistry && req.URL.Host == "registry-1.docker.io")
}

func (m *pullMeter) pulls() int { return int(m.n.Load()) }
