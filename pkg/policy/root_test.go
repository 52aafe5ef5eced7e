package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// TestDefaultCacheDir holds the README's "cached under the user's cache
// directory, or, where that is not writable (the Lambda function), under
// $TMPDIR": with a writable cache directory the TUF cache goes under it;
// with none writable (a cache directory under a file, as a read-only home
// leaves it), under the temporary directory.
func TestDefaultCacheDir(t *testing.T) {
	cache, tmp := t.TempDir(), t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	t.Setenv("TMPDIR", tmp)
	if got, want := DefaultCacheDir(), filepath.Join(cache, "ocistow", "sigstore-tuf"); got != want {
		t.Errorf("with a writable cache directory: %s, want %s", got, want)
	}
	if fi, err := os.Stat(filepath.Join(cache, "ocistow", "sigstore-tuf")); err != nil || !fi.IsDir() {
		t.Errorf("the cache directory was not made: %v", err)
	}

	file := filepath.Join(t.TempDir(), "not-a-directory")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CACHE_HOME", filepath.Join(file, "cache"))
	if got, want := DefaultCacheDir(), filepath.Join(tmp, "ocistow", "sigstore-tuf"); got != want {
		t.Errorf("with no writable cache directory: %s, want %s", got, want)
	}
}
