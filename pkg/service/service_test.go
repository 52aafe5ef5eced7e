package service_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/signature"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/service"
)

// These unit tests run the Service against go-containerregistry's
// in-process registry, for a quick inner loop; cmd/ocistow and
// cmd/ocistow-lambda hold the same behaviours against the real
// Distribution registry, local-kms and cosign.

// newRegistry starts an in-process registry whose answers hook may
// replace; it returns the registry's host.
func newRegistry(t *testing.T, hook func(w http.ResponseWriter, r *http.Request) bool) string {
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hook == nil || !hook(w, r) {
			reg.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://")
}

func newService() service.Service {
	return service.New(registry.New(
		registry.WithKeychain(authn.NewMultiKeychain()),
		registry.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 2}),
	))
}

func newKey(t *testing.T) *keys.Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return &keys.Key{Ref: "test-key", Verifier: sv, Signer: sv}
}

func pushIndex(t *testing.T, ref string) {
	t.Helper()
	idx, err := testenv.MixedIndex(1, 512)
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Push(t.Context(), ref, idx); err != nil {
		t.Fatal(err)
	}
}

func status(code int, match func(r *http.Request) bool) func(w http.ResponseWriter, r *http.Request) bool {
	return func(w http.ResponseWriter, r *http.Request) bool {
		if !match(r) {
			return false
		}
		w.WriteHeader(code)
		return true
	}
}

func manifests(r *http.Request) bool { return strings.Contains(r.URL.Path, "/manifests/") }
func uploads(r *http.Request) bool   { return strings.Contains(r.URL.Path, "/blobs/uploads/") }

func TestCopyErrorKinds(t *testing.T) {
	src := newRegistry(t, nil)
	pushIndex(t, src+"/lib/app:1")
	wrongType := newRegistry(t, func(w http.ResponseWriter, r *http.Request) bool {
		if !manifests(r) {
			return false
		}
		w.Header().Set("Content-Type", "text/html")
		w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("a", 64))
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte("{}"))
		return true
	})
	for _, tc := range []struct {
		name     string
		src, dst string
		req      func(*service.CopyRequest)
		want     service.Kind
	}{
		{"bad reference", "UPPER/case", newRegistry(t, nil) + "/x:1", nil, service.KindInvalidRequest},
		{"bad platform", src + "/lib/app:1", newRegistry(t, nil) + "/x:1", func(r *service.CopyRequest) { r.Platforms = []string{"linux"} }, service.KindInvalidRequest},
		{"no such platform", src + "/lib/app:1", newRegistry(t, nil) + "/x:1", func(r *service.CopyRequest) { r.Platforms = []string{"windows/amd64"} }, service.KindInvalidRequest},
		{"source missing", src + "/lib/none:1", newRegistry(t, nil) + "/x:1", nil, service.KindSourceNotFound},
		{"source refuses", newRegistry(t, status(http.StatusUnauthorized, manifests)) + "/lib/app:1", newRegistry(t, nil) + "/x:1", nil, service.KindUnauthorized},
		{"source fails", newRegistry(t, status(http.StatusInternalServerError, manifests)) + "/lib/app:1", newRegistry(t, nil) + "/x:1", nil, service.KindSourceFailed},
		{"wrong content type", wrongType + "/lib/app:1", newRegistry(t, nil) + "/x:1", nil, service.KindSourceFailed},
		{"destination refuses", src + "/lib/app:1", newRegistry(t, status(http.StatusForbidden, uploads)) + "/x:1", nil, service.KindUnauthorized},
		{"destination fails", src + "/lib/app:1", newRegistry(t, status(http.StatusInternalServerError, uploads)) + "/x:1", nil, service.KindCopyFailed},
		{"immutable, destination unsure", src + "/lib/app:1", newRegistry(t, status(http.StatusServiceUnavailable, manifests)) + "/x:1", func(r *service.CopyRequest) { r.Immutable = true }, service.KindCopyFailed},
		{"immutable, destination refuses", src + "/lib/app:1", newRegistry(t, status(http.StatusForbidden, manifests)) + "/x:1", func(r *service.CopyRequest) { r.Immutable = true }, service.KindUnauthorized},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := service.CopyRequest{Source: tc.src, Destination: tc.dst}
			if tc.req != nil {
				tc.req(&req)
			}
			_, err := newService().Copy(t.Context(), req)
			if got := service.KindOf(err); got != tc.want {
				t.Errorf("kind %q (%v), want %q", got, err, tc.want)
			}
			if err != nil && strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestImmutableRefusal(t *testing.T) {
	src, dst := newRegistry(t, nil), newRegistry(t, nil)
	pushIndex(t, src+"/lib/app:1")
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 64, Seed: 9})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Push(t.Context(), dst+"/x:1", img); err != nil {
		t.Fatal(err)
	}
	_, err = newService().Copy(t.Context(), service.CopyRequest{Source: src + "/lib/app:1", Destination: dst + "/x:1", Immutable: true})
	if service.KindOf(err) != service.KindTagImmutable {
		t.Errorf("kind %q (%v), want TagImmutable", service.KindOf(err), err)
	}
}

func TestPromoteSignsAndVerifies(t *testing.T) {
	src, dst := newRegistry(t, nil), newRegistry(t, nil)
	pushIndex(t, src+"/lib/app:1")
	svc, key := newService(), newKey(t)
	req := service.PromoteRequest{
		CopyRequest: service.CopyRequest{Source: src + "/lib/app:1", Destination: dst + "/app:1", Annotations: map[string]string{"team": "platform"}},
		Copy:        true, Sign: true, Key: key,
	}
	res, err := service.Promote(t.Context(), svc, req)
	if err != nil {
		t.Fatal(err)
	}
	if res.Signatures.Added != 3 || res.UpToDate {
		t.Errorf("first promotion: %+v signatures %+v", res.CopyResult, res.Signatures)
	}
	again, err := service.Promote(t.Context(), svc, req)
	if err != nil {
		t.Fatal(err)
	}
	if !again.UpToDate || again.SourcePulls != 0 || again.Signatures.Present != 3 || again.Signatures.Added != 0 {
		t.Errorf("second promotion: %+v signatures %+v", again.CopyResult, again.Signatures)
	}
	v, err := svc.Verify(t.Context(), service.VerifyRequest{Image: dst + "/app:1", Recursive: true, Key: key, Annotations: map[string]string{"team": "platform"}})
	if err != nil || len(v.Verified) != 3 {
		t.Errorf("verify: %v, %+v", err, v)
	}
	_, err = svc.Verify(t.Context(), service.VerifyRequest{Image: dst + "/app:1", Key: newKey(t)})
	if service.KindOf(err) != service.KindVerificationFailed {
		t.Errorf("verify with another key: kind %q (%v), want VerificationFailed", service.KindOf(err), err)
	}
}
