package keychain

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/ocistow/ocistow/pkg/ecrauth"
)

// New returns ocistow's keychain. For the registries ecr resolves (Amazon
// ECR by hostname, and hosts named ECR registries) the ECR token comes
// first, and the Docker config (docker) is consulted only when the AWS SDK
// has no credentials (ecrauth.ErrNoCredentials): a stale `docker login` for
// an ECR registry never hides a fresh token. Every other registry gets the
// Docker config. Fallbacks are logged to logger at debug level.
//
// ecr must resolve registries that are not its own to authn.Anonymous, as
// ecrauth.Keychain does.
func New(ecr, docker authn.Keychain, logger *slog.Logger) authn.Keychain {
	return &keychain{ecr: ecr, docker: docker, logger: logger}
}

type keychain struct {
	ecr, docker authn.Keychain
	logger      *slog.Logger
}

// Resolve implements authn.Keychain.
func (k *keychain) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), target)
}

// ResolveContext implements authn.ContextKeychain.
func (k *keychain) ResolveContext(ctx context.Context, target authn.Resource) (authn.Authenticator, error) {
	a, err := authn.Resolve(ctx, k.ecr, target)
	if err != nil {
		return nil, err
	}
	if a == authn.Anonymous {
		return authn.Resolve(ctx, k.docker, target)
	}
	return &ecrFirst{ecr: a, docker: k.docker, target: target, logger: k.logger}, nil
}

// ecrFirst authenticates with an ECR token, or with the Docker config's
// credentials when there are no AWS credentials to fetch a token with.
type ecrFirst struct {
	ecr    authn.Authenticator
	docker authn.Keychain
	target authn.Resource
	logger *slog.Logger

	mu sync.Mutex
	// fallback, once set, is the Docker config's authenticator, used
	// from then on without asking AWS again.
	fallback authn.Authenticator
}

// Authorization implements authn.Authenticator.
func (a *ecrFirst) Authorization() (*authn.AuthConfig, error) {
	return a.AuthorizationContext(context.Background())
}

// AuthorizationContext implements authn.ContextAuthenticator.
func (a *ecrFirst) AuthorizationContext(ctx context.Context) (*authn.AuthConfig, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fallback != nil {
		return authn.Authorization(ctx, a.fallback)
	}
	cfg, err := authn.Authorization(ctx, a.ecr)
	if err == nil || !errors.Is(err, ecrauth.ErrNoCredentials) {
		return cfg, err
	}
	d, derr := authn.Resolve(ctx, a.docker, a.target)
	if derr != nil {
		return nil, fmt.Errorf("%w; and from the Docker config: %w", err, derr)
	}
	if d == authn.Anonymous {
		return nil, err
	}
	a.logger.DebugContext(ctx, "no AWS credentials for an ECR registry; using its credentials from the Docker config",
		"registry", a.target.RegistryStr())
	a.fallback = d
	return authn.Authorization(ctx, d)
}
