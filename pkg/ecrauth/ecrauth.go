// Package ecrauth is an authn.Keychain for Amazon ECR: it exchanges the AWS
// SDK's default credential chain for registry credentials with ECR's
// GetAuthorizationToken API, so no `docker login` is needed.
//
// Hostnames are recognised with amazon-ecr-credential-helper's own parser
// (every partition, FIPS endpoints). Tokens are fetched through
// aws-sdk-go-v2 rather than the helper's client because that client writes a
// token cache under $HOME, calls AWS without the caller's context and logs
// through a global logger; this keychain keeps its cache in memory, per
// Keychain, refreshed before the token expires.
package ecrauth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ecr"
	"github.com/awslabs/amazon-ecr-credential-helper/ecr-login/api"
	"github.com/google/go-containerregistry/pkg/authn"
)

// refreshMargin is how long before its expiry a token is replaced.
const refreshMargin = 15 * time.Minute

// ErrNoCredentials is wrapped by the error of an authenticator when the AWS
// SDK found no credentials to ask ECR for a token with, so that a caller may
// look for the registry's credentials elsewhere (a Docker config).
var ErrNoCredentials = errors.New("no AWS credentials")

// ConfigLoader returns the AWS configuration to use for a region; region is
// empty when the registry's hostname does not name one.
type ConfigLoader func(ctx context.Context, region string) (aws.Config, error)

// Keychain resolves credentials for Amazon ECR registries and returns
// anonymous for every other registry, so that it composes with other
// keychains (ocistow's pkg/keychain puts it before the Docker config).
type Keychain struct {
	load  ConfigLoader
	hosts map[string]bool

	mu    sync.Mutex
	cache map[string]token
}

type token struct {
	user, pass string
	expires    time.Time
}

// Option configures a Keychain.
type Option func(*Keychain)

// WithRegistries names registry hosts that are ECR although their names do
// not say so: VPC endpoint-specific DNS names, or a proxy in front of ECR.
// Their token is the caller's default registry token in the configured
// region.
func WithRegistries(hosts ...string) Option {
	return func(k *Keychain) {
		for _, h := range hosts {
			k.hosts[h] = true
		}
	}
}

// New returns a Keychain that loads AWS configuration with load.
func New(load ConfigLoader, opts ...Option) *Keychain {
	k := &Keychain{load: load, hosts: map[string]bool{}, cache: map[string]token{}}
	for _, o := range opts {
		o(k)
	}
	return k
}

// IsECR reports whether host is an Amazon ECR private registry by its name.
func IsECR(host string) bool {
	r, err := api.ExtractRegistry(host)
	return err == nil && r.Service == api.ServiceECR
}

// Resolve implements authn.Keychain.
func (k *Keychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	return k.ResolveContext(context.Background(), r)
}

// ResolveContext implements authn.ContextKeychain. The token is fetched
// lazily, when the registry first asks for credentials.
func (k *Keychain) ResolveContext(_ context.Context, r authn.Resource) (authn.Authenticator, error) {
	host := r.RegistryStr()
	var registryID, region string
	if reg, err := api.ExtractRegistry(host); err == nil && reg.Service == api.ServiceECR {
		registryID, region = reg.ID, reg.Region
	} else if !k.hosts[host] {
		return authn.Anonymous, nil
	}
	return &authenticator{k: k, host: host, registryID: registryID, region: region}, nil
}

type authenticator struct {
	k                        *Keychain
	host, registryID, region string
}

func (a *authenticator) Authorization() (*authn.AuthConfig, error) {
	return a.AuthorizationContext(context.Background())
}

func (a *authenticator) AuthorizationContext(ctx context.Context) (*authn.AuthConfig, error) {
	t, err := a.k.token(ctx, a.registryID, a.region)
	if err != nil {
		return nil, fmt.Errorf("amazon ECR credentials for %s: %w", a.host, err)
	}
	return &authn.AuthConfig{Username: t.user, Password: t.pass}, nil
}

func (k *Keychain) token(ctx context.Context, registryID, region string) (token, error) {
	key := region + "/" + registryID
	k.mu.Lock()
	defer k.mu.Unlock()
	if t, ok := k.cache[key]; ok && time.Until(t.expires) > refreshMargin {
		return t, nil
	}
	cfg, err := k.load(ctx, region)
	if err != nil {
		return token{}, err
	}
	// Retrieve the credentials before the call, to tell "none" from a
	// refused call; the SDK caches them, so the call does not fetch them
	// again.
	if cfg.Credentials == nil {
		return token{}, ErrNoCredentials
	}
	if _, err := cfg.Credentials.Retrieve(ctx); err != nil {
		return token{}, fmt.Errorf("%w: %w", ErrNoCredentials, err)
	}
	in := &ecr.GetAuthorizationTokenInput{}
	if registryID != "" {
		in.RegistryIds = []string{registryID}
	}
	out, err := ecr.NewFromConfig(cfg).GetAuthorizationToken(ctx, in)
	if err != nil {
		return token{}, fmt.Errorf("ecr GetAuthorizationToken: %w", err)
	}
	for _, d := range out.AuthorizationData {
		if d.AuthorizationToken == nil {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(aws.ToString(d.AuthorizationToken))
		if err != nil {
			return token{}, fmt.Errorf("ecr GetAuthorizationToken: token is not base64: %w", err)
		}
		user, pass, ok := strings.Cut(string(raw), ":")
		if !ok {
			return token{}, errors.New("ecr GetAuthorizationToken: token is not user:password")
		}
		t := token{user: user, pass: pass, expires: aws.ToTime(d.ExpiresAt)}
		if t.expires.IsZero() {
			t.expires = time.Now().Add(time.Hour)
		}
		k.cache[key] = t
		return t, nil
	}
	return token{}, errors.New("ecr GetAuthorizationToken: no authorization data in the answer")
}
