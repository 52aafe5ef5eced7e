package policy

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/tuf"
)

// LoadTrustedRoot reads a Sigstore trusted root (the JSON `cosign
// --trusted-root` takes) from path, or, when path is empty, fetches the
// public-good instance's through TUF (sigstore-go's client, with its
// embedded trust anchor), caching the TUF metadata under cacheDir, which
// must be writable (the Lambda function's /tmp); empty, DefaultCacheDir.
func LoadTrustedRoot(path, cacheDir string) (root.TrustedMaterial, error) {
	if path != "" {
		tr, err := root.NewTrustedRootFromPath(path)
		if err != nil {
			return nil, fmt.Errorf("trusted root %s: %w", path, err)
		}
		return tr, nil
	}
	if cacheDir == "" {
		cacheDir = DefaultCacheDir()
	}
	if err := os.MkdirAll(cacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("TUF cache %s: %w", cacheDir, err)
	}
	tr, err := root.FetchTrustedRootWithOptions(tuf.DefaultOptions().WithCachePath(cacheDir))
	if err != nil {
		return nil, fmt.Errorf("fetching the public-good Sigstore trusted root through TUF (give -trusted-root FILE offline): %w", err)
	}
	return tr, nil
}

// DefaultCacheDir is where the public-good root's TUF metadata is cached:
// ocistow/sigstore-tuf under the user's cache directory when it is
// writable, and under the temporary directory otherwise (the Lambda
// function's /tmp, its only writable place).
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		dir := filepath.Join(d, "ocistow", "sigstore-tuf")
		if os.MkdirAll(dir, 0o700) == nil {
			return dir
		}
	}
	return filepath.Join(os.TempDir(), "ocistow", "sigstore-tuf")
}
