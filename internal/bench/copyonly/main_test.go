package main

import (
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestCopy checks that the program copies an image byte for byte, as the
// benchmark counts on.
func TestCopy(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	src, _ := name.ParseReference(host + "/src:v1")
	if err := remote.Write(src, img); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	// No Docker config, wherever the keychain would look for one.
	for _, v := range []string{"HOME", "DOCKER_CONFIG", "XDG_CONFIG_HOME"} {
		t.Setenv(v, t.TempDir())
	}
	if err := run(t.Context(), []string{host + "/src:v1", host + "/dst:v1"}, &out); err != nil {
		t.Fatal(err)
	}
	want, _ := img.Digest()
	if got := strings.TrimSpace(out.String()); got != want.String() {
		t.Errorf("printed %q, want %s", got, want)
	}
	dst, _ := name.ParseReference(host + "/dst:v1")
	d, err := remote.Head(dst)
	if err != nil || d.Digest != want {
		t.Errorf("destination %v, %v; want %s", d, err, want)
	}
	if err := run(t.Context(), []string{"only-one"}, &out); err == nil {
		t.Error("one argument accepted")
	}
}

// TestFrontBuilds builds the front variant the bench measures as
// ocistow-front (go build -tags front, which go vet and go test do not
// otherwise see) and checks that it runs and says which program it is, so
// that the variant cannot rot between benchmark runs.
func TestFrontBuilds(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "ocistow-front")
	if out, err := exec.Command("go", "build", "-tags", "front", "-o", exe, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build -tags front: %v\n%s", err, out)
	}
	out, err := exec.Command(exe, "-version").Output()
	if err != nil {
		t.Fatalf("ocistow-front -version: %v", err)
	}
	if got := strings.TrimSpace(string(out)); !strings.Contains(got, "-tags front") {
		t.Errorf("the front build says %q, want its name with -tags front", got)
	}
}
