package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/testenv"
)

// The credential tests: ECR tokens before the Docker config for ECR
// registries, and credential helpers that fail only their own registries.

// brokenHelper is a docker-credential-* helper, installed by
// credentialHelpers, that fails every request with helperFailure on stdout
// (where the helper protocol puts errors).
const (
	brokenHelper  = "ocistow-broken"
	missingHelper = "ocistow-missing" // never installed
	helperFailure = "helper exploded"
)

// credentialHelpers installs docker-credential-ocistow-broken in a new
// directory and returns the PATH that finds it, and the file to which it
// appends every server URL it is asked about.
func credentialHelpers(t *testing.T) (path, calls string) {
	t.Helper()
	dir := t.TempDir()
	calls = filepath.Join(dir, "calls")
	script := "#!/bin/sh\ncat >> '" + calls + "'\necho >> '" + calls + "'\necho '" + helperFailure + "'\nexit 1\n"
	if err := os.WriteFile(filepath.Join(dir, "docker-credential-"+brokenHelper), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return "PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH"), calls
}

// rawDockerConfig writes config as config.json of a new directory and
// returns the DOCKER_CONFIG setting for it.
func rawDockerConfig(t *testing.T, config any) string {
	t.Helper()
	dir := t.TempDir()
	b, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return "DOCKER_CONFIG=" + dir
}

// fakeECRAPI answers GetAuthorizationToken for requests signed with the
// access key AKIDCREDS with the Bed's ECR token, counting them.
func fakeECRAPI(t *testing.T) (env []string, calls *atomic.Int32) {
	t.Helper()
	return fakeECRTokenAPI(t, ecrUser, ecrPass)
}

// fakeECRTokenAPI is fakeECRAPI answering with the token user:pass.
func fakeECRTokenAPI(t *testing.T, user, pass string) (env []string, calls *atomic.Int32) {
	t.Helper()
	calls = &atomic.Int32{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".GetAuthorizationToken") {
			http.Error(w, `{"__type":"UnknownOperationException"}`, http.StatusBadRequest)
			return
		}
		if !strings.HasPrefix(r.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential=AKIDCREDS/") {
			http.Error(w, `{"__type":"UnrecognizedClientException"}`, http.StatusForbidden)
			return
		}
		calls.Add(1)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_ = json.NewEncoder(w).Encode(map[string]any{"authorizationData": []map[string]any{{
			"authorizationToken": encodeToken(user, pass),
			"expiresAt":          4102444800, // 2100-01-01
			"proxyEndpoint":      "https://111111111111.dkr.ecr.us-east-1.amazonaws.com",
		}}})
	}))
	t.Cleanup(srv.Close)
	return []string{"AWS_ENDPOINT_URL_ECR=" + srv.URL, "AWS_REGION=us-east-1"}, calls
}

// awsKeys are AWS credentials the fake ECR API accepts.
var awsKeys = []string{"AWS_ACCESS_KEY_ID=AKIDCREDS", "AWS_SECRET_ACCESS_KEY=" + awsSecretKey}

// awsSecretKey must never show in any output.
const awsSecretKey = "creds-secret-key-never-logged"

func TestStaleDockerLoginLosesToTheECRToken(t *testing.T) {
	// `docker login` for the ECR registry, with a token long expired: the
	// registry refuses it.
	stale := "DOCKER_CONFIG=" + dockerConfig(t, e2e.auth.Host, ecrUser, "expired-ecr-token")
	ecrEnv, calls := fakeECRAPI(t)
	dst := dstRepo(t, e2e.auth.Host) + ":v1"

	r := ocistow(t, append(append(ecrEnv, awsKeys...), stale),
		"-source", srcRef("single"), "-destination", dst, "-sign=false", "-ecr-registry", e2e.auth.Host, "-debug").mustSucceed(t)
	if calls.Load() == 0 {
		t.Error("the ECR API was never asked for a token")
	}
	if got := get(t, dst, basic(ecrUser, ecrPass)); got.Digest.String() != e2e.fixtures["single"] {
		t.Errorf("copy digest %s", got.Digest)
	}
	for _, secret := range []string{ecrPass, "expired-ecr-token", "creds-secret-key-never-logged"} {
		if strings.Contains(r.stderr+r.stdout, secret) {
			t.Errorf("output contains the secret %q", secret)
		}
	}
}

func TestECRWithoutAWSCredentialsUsesTheDockerConfig(t *testing.T) {
	login := "DOCKER_CONFIG=" + dockerConfig(t, e2e.auth.Host, aliceUser, alicePass)
	ecrEnv, calls := fakeECRAPI(t)
	dst := dstRepo(t, e2e.auth.Host) + ":v1"

	r := ocistow(t, append(ecrEnv, login),
		"-source", srcRef("single"), "-destination", dst, "-sign=false", "-ecr-registry", e2e.auth.Host, "-debug").mustSucceed(t)
	if calls.Load() != 0 {
		t.Errorf("the ECR API was called %d times without AWS credentials", calls.Load())
	}
	if got := get(t, dst, basic(aliceUser, alicePass)); got.Digest.String() != e2e.fixtures["single"] {
		t.Errorf("copy digest %s", got.Digest)
	}
	if !strings.Contains(r.stderr, "no AWS credentials for an ECR registry; using its credentials from the Docker config") ||
		!strings.Contains(r.stderr, "registry="+e2e.auth.Host) {
		t.Errorf("no debug line saying the Docker config stood in for ECR:\n%s", r.stderr)
	}
	if strings.Contains(r.stderr+r.stdout, alicePass) {
		t.Error("output contains the password")
	}
}

func TestBrokenCredentialHelperSparesOtherRegistries(t *testing.T) {
	path, helperCalls := credentialHelpers(t)
	// Docker Desktop's shape: a credsStore for everything, with "auths"
	// naming the hosts logged in to; plus a helper for one host that is
	// not installed. Neither is for the Bed's registries.
	cfg := rawDockerConfig(t, map[string]any{
		"credsStore":  brokenHelper,
		"credHelpers": map[string]string{"registry.example:5000": missingHelper},
		"auths":       map[string]any{"registry.example:5000": map[string]any{}, "https://index.docker.io/v1/": map[string]any{}},
	})

	t.Run("anonymous registries", func(t *testing.T) {
		dst := dstRepo(t, e2e.dst.Host) + ":v1"
		r := ocistow(t, []string{path, cfg}, "-source", srcRef("single"), "-destination", dst, "-sign=false", "-debug").mustSucceed(t)
		if got := get(t, dst, nil); got.Digest.String() != e2e.fixtures["single"] {
			t.Errorf("copy digest %s", got.Digest)
		}
		if !strings.Contains(r.stderr, "helper=docker-credential-"+brokenHelper) {
			t.Errorf("no debug line about the helper that was passed over:\n%s", r.stderr)
		}
	})
	t.Run("ECR destination", func(t *testing.T) {
		ecrEnv, calls := fakeECRAPI(t)
		dst := dstRepo(t, e2e.auth.Host) + ":v1"
		ocistow(t, append(append(ecrEnv, awsKeys...), path, cfg),
			"-source", srcRef("single"), "-destination", dst, "-sign=false", "-ecr-registry", e2e.auth.Host).mustSucceed(t)
		if calls.Load() == 0 {
			t.Error("the ECR API was never asked for a token")
		}
		if got := get(t, dst, basic(ecrUser, ecrPass)); got.Digest.String() != e2e.fixtures["single"] {
			t.Errorf("copy digest %s", got.Digest)
		}
	})
	// The scenario is real only if ocistow did run the broken helper.
	if b, err := os.ReadFile(helperCalls); err != nil || !strings.Contains(string(b), e2e.src.Host) {
		t.Errorf("the broken helper was never asked about the source (%v): %q", err, b)
	}
}

func TestBrokenCredentialHelperOfTheSourceIsNamed(t *testing.T) {
	// A private source: the fixture, pushed to the registry that wants
	// credentials.
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 16 << 10, Seed: 71})
	if err != nil {
		t.Fatal(err)
	}
	src := e2e.auth.Host + "/" + testenv.RepoName(t.Name()) + "-src:v1"
	ref, err := name.ParseReference(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, remote.WithAuth(basic(aliceUser, alicePass)), remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	path, _ := credentialHelpers(t)

	for _, tc := range []struct {
		name   string
		config map[string]any
		helper string
	}{
		{"credHelpers entry that fails", map[string]any{"credHelpers": map[string]string{e2e.auth.Host: brokenHelper}}, brokenHelper},
		{"credsStore that fails, logged in", map[string]any{"credsStore": brokenHelper, "auths": map[string]any{e2e.auth.Host: map[string]any{}}}, brokenHelper},
		{"credHelpers entry not installed", map[string]any{"credHelpers": map[string]string{e2e.auth.Host: missingHelper}}, missingHelper},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := dstRepo(t, e2e.dstFront.Host)
			r := ocistow(t, []string{path, rawDockerConfig(t, tc.config)}, "-source", src, "-destination", dst+":v1", "-sign=false")
			if r.code != exitFailed {
				t.Errorf("exit %d with a broken credential helper for the source, want %d", r.code, exitFailed)
			}
			r.refused(t, []string{"docker-credential-" + tc.helper, e2e.auth.Host}, dst)
			if !strings.Contains(r.stderr, "error_type=Unauthorized") {
				t.Errorf("canonical line lacks error_type=Unauthorized:\n%s", r.stderr)
			}
			if tc.helper == brokenHelper && !strings.Contains(r.errLine(t), helperFailure) {
				t.Errorf("error line %q does not say what the helper answered", r.errLine(t))
			}
		})
	}
}
