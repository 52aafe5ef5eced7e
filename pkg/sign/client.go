package sign

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/registry"
)

// Store reads and writes signatures in registries. One Store serves a whole
// Sign or Verify call: its puller and pusher each keep one transport per
// repository, so the registry is pinged and a token fetched once per
// repository (once for reading, once for writing) rather than for every
// request of every digest.
type Store struct {
	rc      *registry.Client
	puller  *remote.Puller
	pusher  *remote.Pusher
	bundles *bundle.Store
}

// NewStore returns a Store that talks to registries through rc, for
// requests bound to ctx.
func NewStore(ctx context.Context, rc *registry.Client) (*Store, error) {
	puller, err := rc.Puller()
	if err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	pusher, err := rc.Pusher()
	if err != nil {
		return nil, fmt.Errorf("registry client: %w", err)
	}
	return &Store{rc: rc, puller: puller, pusher: pusher, bundles: bundle.NewStore(puller, pusher, bundle.WithRetry(rc.Retry))}, nil
}

// retry runs f with the registry client's retry schedule: for operations
// the transport cannot replay, such as a signature image's upload.
func (s *Store) retry(ctx context.Context, f func(ctx context.Context, attempt int) error) error {
	return s.rc.Retry(ctx, f)
}

// Get reads the manifest ref names over the Store's transport, so that
// finding what to sign shares its ping and token with the signing.
func (s *Store) Get(ctx context.Context, ref name.Reference) (*remote.Descriptor, error) {
	return s.puller.Get(ctx, ref)
}
