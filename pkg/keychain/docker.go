// Package keychain assembles ocistow's registry credentials: the Docker
// config, read so that a failing credential helper fails only the
// registries it holds credentials for, and Amazon ECR tokens from the AWS
// SDK, which come before the Docker config for ECR registries.
package keychain

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/credentials"
	"github.com/docker/cli/cli/config/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

// Docker is an authn.Keychain over the Docker config, found and read as
// go-containerregistry's authn.DefaultKeychain finds and reads it
// ($HOME/.docker/config.json, DOCKER_CONFIG, then Podman's auth.json), with
// its credential helpers (credHelpers and credsStore).
//
// Unlike authn.DefaultKeychain, a credential helper that fails (exits
// non-zero, or is not installed) fails only the registries that are its
// own: the host a credHelpers entry names, or, for the credsStore, a host
// with an entry under "auths" (where `docker login` records the hosts whose
// credentials it put in the store). For any other host the failure is
// logged at debug level and the host is read anonymously, so that a broken
// Docker Desktop store does not stop promotions between registries that
// need no credentials.
type Docker struct {
	logger *slog.Logger
	// mu serialises lookups, as authn.DefaultKeychain does: credential
	// helpers are processes, and some do not like to be run concurrently.
	mu sync.Mutex
}

// NewDocker returns a Docker keychain that logs skipped helper failures to
// logger at debug level.
func NewDocker(logger *slog.Logger) *Docker {
	return &Docker{logger: logger}
}

// Resolve implements authn.Keychain.
func (d *Docker) Resolve(target authn.Resource) (authn.Authenticator, error) {
	return d.ResolveContext(context.Background(), target)
}

// ResolveContext implements authn.ContextKeychain.
func (d *Docker) ResolveContext(ctx context.Context, target authn.Resource) (authn.Authenticator, error) {
	d.mu.Lock()
	defer d.mu.Unlock()

	cf, err := loadConfig()
	if err != nil {
		return nil, fmt.Errorf("reading the Docker config: %w", err)
	}
	if cf == nil {
		return authn.Anonymous, nil
	}
	host := target.RegistryStr()
	// The repository first, then the registry, as authn.DefaultKeychain
	// looks them up (https://github.com/google/ko/issues/90).
	for _, key := range []string{target.String(), host} {
		key = authKey(key)
		cfg, err := cf.GetAuthConfig(key)
		if err != nil {
			helper := helperFor(cf, key)
			if helper == "" {
				return nil, fmt.Errorf("reading Docker credentials for %s: %w", host, err)
			}
			err = &HelperError{Helper: "docker-credential-" + helper, Host: host, Err: err}
			if owns(cf, helper, host) {
				return nil, err
			}
			d.logger.DebugContext(ctx, "credential helper failed for a registry it holds no login for; going on without it",
				"registry", host, "helper", "docker-credential-"+helper, "err", err.Error())
			continue
		}
		// GetAuthConfig sets ServerAddress, which says nothing about
		// whether there are credentials.
		cfg.ServerAddress = ""
		if cfg != (types.AuthConfig{}) {
			return authn.FromConfig(authn.AuthConfig{
				Username:      cfg.Username,
				Password:      cfg.Password,
				Auth:          cfg.Auth,
				IdentityToken: cfg.IdentityToken,
				RegistryToken: cfg.RegistryToken,
			}), nil
		}
	}
	return authn.Anonymous, nil
}

// HelperError is a credential helper that failed for a registry whose
// credentials it holds.
type HelperError struct {
	Helper, Host string
	Err          error
}

func (e *HelperError) Error() string {
	return fmt.Sprintf("credential helper %s for %s: %v", e.Helper, e.Host, e.Err)
}

func (e *HelperError) Unwrap() error { return e.Err }

// authKey is the Docker config's key for a registry or repository: Docker
// Hub's is historical.
func authKey(key string) string {
	if key == name.DefaultRegistry || key == "docker.io" {
		return authn.DefaultAuthKey
	}
	return key
}

// helperFor is the credential helper Docker runs for key ("" for the
// config file itself).
func helperFor(cf *configfile.ConfigFile, key string) string {
	if h, ok := cf.CredentialHelpers[key]; ok {
		return h
	}
	return cf.CredentialsStore
}

// owns reports whether helper is where host's credentials live: the helper
// Docker runs for the host, named for it under credHelpers, or the
// credsStore when "auths" lists the host.
func owns(cf *configfile.ConfigFile, helper, host string) bool {
	key := authKey(host)
	if h := helperFor(cf, key); h != helper {
		return false
	}
	if _, ok := cf.CredentialHelpers[key]; ok {
		return true
	}
	want := credentials.ConvertToHostname(key)
	for k := range cf.AuthConfigs {
		if k == key || credentials.ConvertToHostname(k) == want {
			return true
		}
	}
	return false
}

// loadConfig finds and reads the Docker config as authn.DefaultKeychain
// does; it returns nil when there is none.
func loadConfig() (*configfile.ConfigFile, error) {
	found := false
	home, err := os.UserHomeDir()
	if err == nil {
		found = fileExists(filepath.Join(home, ".docker", "config.json"))
	}
	if !found && os.Getenv("DOCKER_CONFIG") != "" {
		found = fileExists(filepath.Join(os.Getenv("DOCKER_CONFIG"), "config.json"))
	}
	if found {
		return config.Load(os.Getenv("DOCKER_CONFIG"))
	}
	configDir := os.Getenv("XDG_CONFIG_HOME")
	if configDir == "" && home != "" {
		configDir = filepath.Join(home, ".config")
	}
	podman := filepath.Join(os.Getenv("XDG_RUNTIME_DIR"), "containers", "auth.json")
	if (os.Getenv("XDG_RUNTIME_DIR") == "" || !fileExists(podman)) && configDir != "" {
		podman = filepath.Join(configDir, "containers", "auth.json")
	}
	for _, path := range []string{os.Getenv("REGISTRY_AUTH_FILE"), podman} {
		if path == "" || !fileExists(filepath.Clean(path)) {
			continue
		}
		return loadFile(filepath.Clean(path))
	}
	return nil, nil
}

func loadFile(path string) (*configfile.ConfigFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cf, err := config.LoadFromReader(f)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", path, err)
	}
	return cf, nil
}

func fileExists(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && !fi.IsDir()
}
