package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/bcrypt"
)

// Registry is a running CNCF Distribution registry on loopback, storing on
// the filesystem.
type Registry struct {
	// Host is host:port, as image references name it.
	Host string
	proc *Process
}

// RegistryOptions configures StartRegistry.
type RegistryOptions struct {
	// Users, when not empty, turns on htpasswd authentication with these
	// user names and passwords.
	Users map[string]string
}

// StartRegistry builds (if needed) and starts a registry storing under dir.
func StartRegistry(ctx context.Context, dir string, opts RegistryOptions) (*Registry, error) {
	bin, err := Tool("registry")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	auth := ""
	if len(opts.Users) > 0 {
		var lines []string
		for u, p := range opts.Users {
			h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.MinCost)
			if err != nil {
				return nil, err
			}
			lines = append(lines, u+":"+string(h))
		}
		pw := filepath.Join(dir, "htpasswd")
		if err := os.WriteFile(pw, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			return nil, err
		}
		auth = fmt.Sprintf("auth:\n  htpasswd:\n    realm: ocistow-test\n    path: %s\n", pw)
	}
	cfgPath := filepath.Join(dir, "config.yml")
	p, addrs, err := startListening(ctx, 1, func(addrs []string) (*exec.Cmd, error) {
		cfg := fmt.Sprintf(`version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: ocistow-test-secret
%s`, filepath.Join(dir, "data"), addrs[0], auth)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "serve", cfgPath)
		cmd.Env = append(os.Environ(), "OTEL_TRACES_EXPORTER=none", "OTEL_SDK_DISABLED=true")
		return cmd, nil
	}, func(p *Process, addrs []string) error {
		return p.waitHTTP(ctx, "http://"+addrs[0]+"/v2/", func(code int) bool { return code == 200 || code == 401 })
	})
	if err != nil {
		return nil, err
	}
	return &Registry{Host: addrs[0], proc: p}, nil
}

// Close stops the registry.
func (r *Registry) Close() error { return r.proc.Close() }

// Output returns what the registry logged.
func (r *Registry) Output() string { return r.proc.Output() }
