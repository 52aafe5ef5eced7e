package registry

import (
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/name"
)

// A PullMeter counts what registries that limit pulls count: GETs of a
// repository's manifests that the registry answered (HEADs are free on
// Docker Hub, and blob GETs are not counted there). It watches the wire,
// as the Observer of an operation's context (WithObserver), because
// go-containerregistry fetches child manifests lazily, wherever an image's
// layers are first asked for.
type PullMeter struct {
	host, path string // the registry, and /v2/<repo>/manifests/
	n          atomic.Int64
}

// NewPullMeter returns a PullMeter of the manifests of repo.
func NewPullMeter(repo name.Repository) *PullMeter {
	return &PullMeter{host: repo.RegistryStr(), path: "/v2/" + repo.RepositoryStr() + "/manifests/"}
}

// Observe counts req when it is a pull of the meter's repository that the
// registry served; it is an Observer.
func (m *PullMeter) Observe(req *http.Request, resp *http.Response) {
	if req.Method == http.MethodGet && resp.StatusCode < 300 && m.isOfRepo(req) {
		m.n.Add(1)
	}
}

func (m *PullMeter) isOfRepo(req *http.Request) bool {
	return strings.HasPrefix(req.URL.Path, m.path) && (req.URL.Host == m.host || m.host == name.DefaultRegistry && req.URL.Host == "registry-1.docker.io")
}

// Pulls returns the pulls counted so far.
func (m *PullMeter) Pulls() int { return int(m.n.Load()) }
