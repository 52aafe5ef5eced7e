package main

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/promote"
)

// TestBadInput: each case exits non-zero with one clear line naming what
// was wrong, and leaves nothing at the destination.
func TestBadInput(t *testing.T) {
	corrupt := testenv.NewFront(e2e.src.Host)
	defer corrupt.Close()
	// Flip one byte of every blob the source serves: the bytes no longer
	// match the digest the manifest names.
	corrupt.SetModify(func(resp *http.Response) error {
		if resp.Request.Method != http.MethodGet || !strings.Contains(resp.Request.URL.Path, "/blobs/sha256:") {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if len(b) > 0 {
			b[len(b)/2] ^= 0xff
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		return nil
	})

	good := srcRef("single")
	cases := []struct {
		name     string
		env      []string
		args     []string
		code     int
		want     []string
		checkDst bool
	}{
		{"no source", nil, []string{"-destination", "DST", "-sign=false"}, exitInvalid, []string{"no source"}, true},
		{"no destination", nil, []string{"-source", good, "-sign=false"}, exitInvalid, []string{"no destination"}, false},
		{"malformed source", nil, []string{"-source", "Not A Ref!!", "-destination", "DST", "-sign=false"}, exitInvalid, []string{"source", "invalid image reference", "Not A Ref!!"}, true},
		{"malformed destination", nil, []string{"-source", good, "-destination", "DST@sha256:nothex", "-sign=false"}, exitInvalid, []string{"destination", "invalid image reference"}, true},
		{"unknown tag", nil, []string{"-source", e2e.src.Host + "/src/single:nope", "-destination", "DST", "-sign=false"}, exitFailed, []string{"source", "single:nope", "404 Not Found"}, true},
		{"unknown repository", nil, []string{"-source", e2e.src.Host + "/src/missing:v1", "-destination", "DST", "-sign=false"}, exitFailed, []string{"source", "src/missing", "404"}, true},
		{"unauthorized source", nil, []string{"-source", e2e.auth.Host + "/private/img:v1", "-destination", "DST", "-sign=false"}, exitFailed, []string{"source", e2e.auth.Host, "401"}, true},
		{"annotation without =", nil, []string{"-source", good, "-destination", "DST", "-sign=false", "-annotations", "team"}, exitInvalid, []string{"team", "key=value"}, true},
		{"annotation with empty key", nil, []string{"-source", good, "-destination", "DST", "-sign=false", "-annotations", "=foo"}, exitInvalid, []string{"empty key"}, true},
		{"annotation env without =", []string{"ANNOTATIONS=team"}, []string{"-source", good, "-destination", "DST", "-sign=false"}, exitInvalid, []string{"ANNOTATIONS", "key=value"}, true},
		{"bad platform", nil, []string{"-source", good, "-destination", "DST", "-sign=false", "-platform", "linux"}, exitInvalid, []string{"invalid platform", "linux"}, true},
		{"platform of single image", nil, []string{"-source", good, "-destination", "DST", "-sign=false", "-platform", "linux/s390x"}, exitInvalid, []string{"single-platform", "linux/amd64"}, true},
		{"sign without key", nil, []string{"-source", good, "-destination", "DST"}, exitInvalid, []string{"signing needs a key", "-sign=false"}, true},
		{"nothing to do", nil, []string{"-source", good, "-destination", "DST", "-copy=false", "-sign=false"}, exitInvalid, []string{"nothing to do"}, true},
		{"stray argument", nil, []string{"-source", good, "-destination", "DST", "-sign=false", "extra"}, exitInvalid, []string{"unexpected argument", "extra"}, true},
		{"bad bool in env", []string{"COPY=maybe"}, []string{"-source", good, "-destination", "DST", "-sign=false"}, exitInvalid, []string{"COPY", "maybe"}, true},
		{"digest mismatch", nil, []string{"-source", corrupt.Host + "/src/single:v1", "-destination", "DST", "-sign=false"}, exitFailed, []string{"source", "blob sha256:", "checksum"}, true},
		{"source annotations without a key", nil, []string{"-source", good, "-destination", "DST", "-sign=false", "-source-annotations", "a=b"}, exitInvalid, []string{"give -source-key or -source-identity"}, true},
		{"source identity without issuer", nil, []string{"-source", good, "-destination", "DST", "-sign=false", "-source-identity", "x"}, exitInvalid, []string{"needs its OIDC issuer"}, true},
		{"source identity not a regexp", []string{"SOURCE_ISSUER=https://x"}, []string{"-source", good, "-destination", "DST", "-sign=false", "-source-identity", "("}, exitInvalid, []string{"not a regular expression"}, true},
		{"source key missing", []string{"SOURCE_KEY=/nonexistent/upstream.pub"}, []string{"-source", good, "-destination", "DST", "-sign=false"}, exitInvalid, []string{"source key", "/nonexistent/upstream.pub", "does not exist"}, true},
		{"trusted root unreadable", nil, []string{"-source", good, "-destination", "DST", "-sign=false", "-source-identity", "x", "-source-issuer", "https://x", "-trusted-root", "/nonexistent/root.json"}, exitInvalid, []string{"trusted root", "/nonexistent/root.json"}, true},
		{"source policy without copy", nil, []string{"-destination", "DST", "-copy=false", "-key", "k.pem", "-source-key", "upstream.pub"}, exitInvalid, []string{"-copy=false"}, true},
		{"destination digest mismatch", nil, []string{"-source", good, "-destination", "DST@sha256:" + strings.Repeat("0", 64), "-sign=false"}, exitInvalid, []string{"destination", "names digest"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			repo := dstRepo(t, e2e.dstFront.Host)
			args := make([]string, len(c.args))
			for i, a := range c.args {
				args[i] = strings.Replace(a, "DST", repo+":v1", 1)
			}
			r := ocistow(t, c.env, args...)
			if r.code != c.code {
				t.Errorf("exit %d, want %d\nstderr: %s", r.code, c.code, r.stderr)
			}
			if !c.checkDst {
				repo = ""
			}
			r.refused(t, c.want, repo)
		})
	}
}

// TestUnsupportedSourceIsRefused: a source ocistow refuses by design (here
// an image whose config is over the 8 MiB ocistow reads into memory, to be
// stamped with labels) exits 2 with one line naming it and the limit,
// before anything is written at the destination.
func TestUnsupportedSourceIsRefused(t *testing.T) {
	big := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	big, err := mutate.Config(big, v1.Config{Labels: map[string]string{"pad": strings.Repeat("x", promote.MaxConfigSize)}})
	if err != nil {
		t.Fatal(err)
	}
	src := e2e.src.Host + "/unsupported/big-config:1"
	if err := testenv.Push(t.Context(), src, big); err != nil {
		t.Fatal(err)
	}
	repo := dstRepo(t, e2e.dstFront.Host)
	r := ocistow(t, nil, "-source", src, "-destination", repo+":1", "-annotations", "team=platform", "-sign=false")
	if r.code != exitInvalid {
		t.Fatalf("exit %d for a source whose config is over the limit, want %d\n%s", r.code, exitInvalid, r.stderr)
	}
	r.refused(t, []string{src, "over the 8388608-byte limit on configs"}, repo)
}

// TestTLSIsVerifiedUnlessNamedInsecure: a registry whose certificate does
// not verify is refused, naming the certificate; named with
// -insecure-registry, it is used.
func TestTLSIsVerifiedUnlessNamedInsecure(t *testing.T) {
	srv := httptest.NewTLSServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "https://")
	src := host + "/self-signed/app:v1"
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 256, Seed: 81})
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithTransport(srv.Client().Transport)); err != nil {
		t.Fatal(err)
	}
	repo := dstRepo(t, e2e.dstFront.Host)
	refused := ocistow(t, nil, "-source", src, "-destination", repo+":v1", "-sign=false")
	if refused.code != exitFailed {
		t.Errorf("exit %d from a registry whose certificate does not verify, want %d", refused.code, exitFailed)
	}
	refused.refused(t, []string{host, "certificate"}, repo)
	ocistow(t, nil, "-source", src, "-destination", repo+":v1", "-sign=false", "-insecure-registry", host).mustSucceed(t)
	want, _ := img.Digest()
	if got := get(t, repo+":v1", nil).Digest; got != want {
		t.Errorf("destination at %s, want %s", got, want)
	}
}

// TestReferrersNeedTheCopy: -referrers with -copy=false is refused.
func TestReferrersNeedTheCopy(t *testing.T) {
	repo := dstRepo(t, e2e.dstFront.Host)
	r := ocistow(t, e2e.kms.Env(), "-source", srcRef("single"), "-destination", repo+":v1", "-copy=false", "-referrers", "-aws-kms-key-arn", "alias/"+ecKey)
	if r.code != exitInvalid {
		t.Errorf("exit %d, want %d", r.code, exitInvalid)
	}
	r.refused(t, []string{"-referrers", "-copy=false"}, repo)
}
