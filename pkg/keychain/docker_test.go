package keychain

import (
	"testing"

	"github.com/docker/cli/cli/config/configfile"
	"github.com/docker/cli/cli/config/types"
)

func TestOwns(t *testing.T) {
	cf := &configfile.ConfigFile{
		CredentialsStore:  "desktop",
		CredentialHelpers: map[string]string{"gcr.io": "gcloud", "private.example": "desktop"},
		AuthConfigs: map[string]types.AuthConfig{
			"https://index.docker.io/v1/": {},
			"https://registry.example/":   {},
		},
	}
	for _, c := range []struct {
		helper, host string
		want         bool
	}{
		{"gcloud", "gcr.io", true},             // named for the host
		{"desktop", "private.example", true},   // named for the host, same as the store
		{"desktop", "index.docker.io", true},   // the store, Docker Hub logged in
		{"desktop", "registry.example", true},  // the store, logged in under a URL
		{"desktop", "127.0.0.1:5000", false},   // the store, never logged in
		{"desktop", "gcr.io", false},           // gcr.io has its own helper
		{"gcloud", "registry.example", false},  // not the helper Docker runs for it
		{"desktop", "quay.io/org/repo", false}, // a repository key is no host of the store's
	} {
		if got := owns(cf, c.helper, c.host); got != c.want {
			t.Errorf("owns(%s, %s) = %v, want %v", c.helper, c.host, got, c.want)
		}
	}
}
