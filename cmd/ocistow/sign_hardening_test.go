package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ocistow/ocistow/internal/testenv"
)

// An index whose child is an index: a promotion signs every manifest at
// every depth, as cosign sign --recursive does, so that ocistow verify
// -recursive and cosign verify of a grandchild pass.
func TestNestedIndexIsSignedAtEveryDepth(t *testing.T) {
	src := pushNestedIndex(t)
	repo := e2e.dst.Host + "/" + freshRepo(t)
	dst := repo + ":v1"
	r := ocistow(t, e2e.kms.Env(), "-source", src, "-destination", dst, "-annotations", "team=foo",
		"-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)

	// Every digest at the destination, at every depth: the outer index, the
	// inner index, its two images, and the outer index's own image.
	var all, grandchildren []string
	top := get(t, dst, nil)
	all = append(all, top.Digest.String())
	idx, err := top.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range im.Manifests {
		all = append(all, m.Digest.String())
		if !m.MediaType.IsIndex() {
			continue
		}
		child, err := idx.ImageIndex(m.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cm, err := child.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range cm.Manifests {
			all = append(all, g.Digest.String())
			grandchildren = append(grandchildren, g.Digest.String())
		}
	}
	if len(all) != 5 || len(grandchildren) != 2 {
		t.Fatalf("destination holds %d manifests, %d of them grandchildren; want 5 and 2", len(all), len(grandchildren))
	}
	if !strings.Contains(r.stdout, "signed 5 digests") || !strings.Contains(r.stderr, "signatures_added=5") {
		t.Errorf("want 5 digests signed:\n%s\n%s", r.stdout, r.stderr)
	}
	for _, d := range all {
		if n := sigCount(t, repo, d); n != 1 {
			t.Errorf("%s has %d signatures, want 1", d, n)
		}
	}
	v := ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo", "-recursive", dst).mustSucceed(t)
	for _, d := range all {
		if !strings.Contains(v.stdout, d) {
			t.Errorf("ocistow verify -recursive does not list %s: %s", d, v.stdout)
		}
	}
	for _, g := range grandchildren {
		if c := cosignVerify(t, "awskms:///alias/"+ecKey, repo+"@"+g, "team=foo"); c.code != 0 {
			t.Errorf("cosign verify of grandchild %s: exit %d\n%s", g, c.code, c.stderr)
		}
	}
}

// freshRepo returns a repository path unique to this run of the test, so
// that every run (-count=N) starts from an empty repository: a signature
// payload names the repository by the host it was pushed through, and a
// front's port changes from run to run.
func freshRepo(t *testing.T) string {
	return fmt.Sprintf("%s-%d", testenv.RepoName(t.Name()), time.Now().UnixNano())
}

// kmsSignCounter puts a Front before local-kms that counts Sign calls, and
// returns the environment that sends ocistow through it.
func kmsSignCounter(t *testing.T) (*atomic.Int32, []string) {
	t.Helper()
	front := testenv.NewFront(strings.TrimPrefix(e2e.kms.Endpoint, "http://"))
	t.Cleanup(front.Close)
	var signs atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("X-Amz-Target") == "TrentService.Sign" {
			signs.Add(1)
		}
		return false
	})
	return &signs, append(e2e.kms.Env(), "AWS_ENDPOINT_URL_KMS=http://"+front.Host)
}

// A re-run that finds every signature present calls KMS Sign not once: the
// stored signatures are checked with the public key before anything is
// signed.
func TestRerunMakesNoKMSSignCalls(t *testing.T) {
	signs, env := kmsSignCounter(t)
	dst := e2e.dst.Host + "/" + freshRepo(t) + ":v1"
	args := []string{"-source", srcRef("multi"), "-destination", dst, "-annotations", "team=foo", "-aws-kms-key-arn", "alias/" + ecKey}
	ocistow(t, env, args...).mustSucceed(t)
	if n := signs.Load(); n != 3 {
		t.Fatalf("first run made %d KMS Sign calls, want 3 (index and two images)", n)
	}
	signs.Store(0)
	r := ocistow(t, env, args...).mustSucceed(t)
	if n := signs.Load(); n != 0 {
		t.Errorf("identical re-run made %d KMS Sign calls, want 0", n)
	}
	if !strings.Contains(r.stdout, "0 added, 3 already present") {
		t.Errorf("re-run does not report 3 signatures present: %s", r.stdout)
	}
	// Other annotations are another payload: signed, once per digest.
	ocistow(t, env, "-copy=false", "-destination", dst, "-annotations", "team=bar", "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	if n := signs.Load(); n != 3 {
		t.Errorf("signing with other annotations made %d KMS Sign calls, want 3", n)
	}
}

// Signatures made with ECC_NIST_P384 and P521 KMS keys verify with the
// key's exported public key (which needs the hash the curve implies), and
// with cosign.
func TestP384AndP521KeysVerifyWithTheirPublicKey(t *testing.T) {
	dir := t.TempDir()
	repo := e2e.dst.Host + "/" + freshRepo(t)
	for _, c := range []struct{ alias, alg string }{
		{testenv.P384Key, "sha384"},
		{testenv.P521Key, "sha512"},
	} {
		t.Run(c.alias, func(t *testing.T) {
			dst := repo + ":" + c.alias
			ocistow(t, e2e.kms.Env(), "-source", srcRef("single"), "-destination", dst, "-annotations", "team=foo",
				"-aws-kms-key-arn", "alias/"+c.alias).mustSucceed(t)
			// The public key as KMS gives it (GetPublicKey), through cosign.
			pub := cosign(t, dir, nil, "public-key", "--key", "awskms:///alias/"+c.alias)
			if pub.code != 0 || !strings.Contains(pub.stdout, "PUBLIC KEY") {
				t.Fatalf("cosign public-key: exit %d\n%s\n%s", pub.code, pub.stdout, pub.stderr)
			}
			pemFile := filepath.Join(dir, c.alias+".pub")
			if err := os.WriteFile(pemFile, []byte(pub.stdout), 0o600); err != nil {
				t.Fatal(err)
			}
			ocistow(t, nil, "verify", "-key", pemFile, "-annotations", "team=foo", dst).mustSucceed(t)
			if v := cosignVerify(t, "awskms:///alias/"+c.alias, dst, "team=foo"); v.code != 0 {
				t.Errorf("cosign verify --key awskms:///alias/%s: %s", c.alias, v.stderr)
			}
			// cosign verify --key PEM hashes with SHA-256 unless told
			// otherwise (what the README says).
			if v := cosign(t, dir, nil, "verify", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", pemFile, dst); v.code == 0 {
				t.Errorf("cosign verify --key %s.pub with its default SHA-256 passed; the README says it does not", c.alias)
			}
			if v := cosign(t, dir, nil, "verify", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", pemFile, "--signature-digest-algorithm", c.alg, dst); v.code != 0 {
				t.Errorf("cosign verify --key %s.pub --signature-digest-algorithm %s: %s", c.alias, c.alg, v.stderr)
			}
		})
	}
	// A P-384 key file signs as cosign signs with one (SHA-384), so cosign
	// verifies ocistow's signature with the public key.
	t.Run("p384-file", func(t *testing.T) {
		k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		pubDER, err := x509.MarshalPKIXPublicKey(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		keyFile, pubFile := filepath.Join(dir, "p384.key"), filepath.Join(dir, "p384.pub")
		if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
			t.Fatal(err)
		}
		dst := repo + ":file"
		ocistow(t, nil, "-source", srcRef("other"), "-destination", dst, "-key", keyFile).mustSucceed(t)
		ocistow(t, nil, "verify", "-key", pubFile, dst).mustSucceed(t)
		if v := cosign(t, dir, nil, "verify", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", pubFile, "--signature-digest-algorithm", "sha384", dst); v.code != 0 {
			t.Errorf("cosign verify of a P-384 key file signature: %s", v.stderr)
		}
	})
}

// A Sign or Verify call reuses one transport per repository: the registry
// is pinged a constant number of times, not once per digest and request.
func TestSigningReusesTheRegistryConnection(t *testing.T) {
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	dst := front.Host + "/" + freshRepo(t) + ":v1"
	ocistow(t, nil, "-source", srcRef("multi"), "-destination", dst, "-sign=false").mustSucceed(t)
	pings := func(from int) int {
		n := 0
		for _, r := range front.Requests()[from:] {
			if r.Method == http.MethodGet && r.Path == "/v2/" {
				n++
			}
		}
		return n
	}
	before := len(front.Requests())
	r := ocistow(t, e2e.kms.Env(), "-copy=false", "-destination", dst, "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	if !strings.Contains(r.stdout, "3 added") {
		t.Fatalf("want 3 digests signed: %s", r.stdout)
	}
	// One ping per registry and process, reading and writing alike
	// (README, Signing: "ocistow pings a registry once per process").
	signPings := pings(before)
	if signPings != 1 {
		t.Errorf("signing 3 digests pinged the registry %d times, want 1", signPings)
	}
	before = len(front.Requests())
	ocistow(t, e2e.kms.Env(), "verify", "-recursive", "-aws-kms-key-arn", "alias/"+ecKey, dst).mustSucceed(t)
	verifyPings := pings(before)
	if verifyPings != 1 {
		t.Errorf("verifying 3 digests pinged the registry %d times, want 1", verifyPings)
	}
	t.Logf("signing 3 digests pinged the registry %d times, verifying them %d", signPings, verifyPings)
}

// sigManifestPath matches the path of a cosign signature manifest.
var sigManifestPath = regexp.MustCompile(`^/v2/.+/manifests/sha256-[0-9a-f]{64}\.sig$`)

// sigReadBarrier holds the answers to the first n GETs of .sig manifests at
// a Front until all n have been read from the registry, and then hands them
// over together: n concurrent signers all see the same state before any of
// them writes, so that their writes overwrite each other and only the
// read-back and retry can keep every signature. Answers held past the
// deadline are handed over anyway, and the barrier counts as missed.
type sigReadBarrier struct {
	upstream string
	n        int
	deadline time.Time
	release  chan struct{}
	mu       sync.Mutex
	arrived  int
	missed   atomic.Bool
}

// holdSigReads installs a sigReadBarrier for n readers on front, before
// the registry at upstream, waiting at most wait from now.
func holdSigReads(front *testenv.Front, upstream string, n int, wait time.Duration) *sigReadBarrier {
	b := &sigReadBarrier{upstream: upstream, n: n, deadline: time.Now().Add(wait), release: make(chan struct{})}
	front.SetHook(b.hook)
	return b
}

func (b *sigReadBarrier) hook(w http.ResponseWriter, r *http.Request) bool {
	if r.Method != http.MethodGet || !sigManifestPath.MatchString(r.URL.Path) {
		return false
	}
	b.mu.Lock()
	if b.arrived >= b.n {
		b.mu.Unlock()
		return false
	}
	b.arrived++
	if b.arrived == b.n {
		close(b.release)
	}
	b.mu.Unlock()
	// Read the registry's answer now; hand it over once all have read.
	req := r.Clone(r.Context())
	req.URL.Scheme, req.URL.Host, req.Host, req.RequestURI = "http", b.upstream, b.upstream, ""
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return true
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return true
	}
	timer := time.NewTimer(time.Until(b.deadline))
	defer timer.Stop()
	select {
	case <-b.release:
	case <-timer.C:
		b.missed.Store(true)
	case <-r.Context().Done():
	}
	for k, vs := range resp.Header {
		w.Header()[k] = vs
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(body)
	return true
}

// check fails the test unless all n readers met at the barrier.
func (b *sigReadBarrier) check(t *testing.T) {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.arrived < b.n || b.missed.Load() {
		t.Errorf("only %d of %d signers read the signature tag together before the deadline: the test did not race them", b.arrived, b.n)
	}
}

// sigWrites counts the writes of .sig manifests a Front saw.
func sigWrites(f *testenv.Front) int {
	return f.Count(func(r testenv.Request) bool {
		return r.Method == http.MethodPut && sigManifestPath.MatchString(r.Path)
	})
}
