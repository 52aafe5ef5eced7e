package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/testenv"
)

// The end-to-end tests run the real ocistow binary against real CNCF
// Distribution registries and local-kms on loopback, started here.
var e2e struct {
	bin      string
	bed      *testenv.Bed
	src, dst *testenv.Registry
	// dstFront is a recording front on dst: destinations named through it
	// can be checked for what was written.
	dstFront *testenv.Front
	auth     *testenv.Registry
	fixtures map[string]string // name -> digest
	kms      *testenv.KMS
	cosign   string
	// cosign3 is cosign v3, which signs in the bundle format by default.
	cosign3 string
	// signingConfig names no service: cosign v3 signs with a key alone,
	// offline, with no transparency log.
	signingConfig string
	// trustedRoot keeps cosign verify offline.
	trustedRoot string
	// keys by alias name (without "alias/"): id and ARN.
	keyID, keyARN map[string]string
}

const (
	aliceUser   = testenv.AliceUser
	alicePass   = testenv.AlicePass
	ecrUser     = testenv.ECRUser
	ecrPass     = testenv.ECRPass
	rsaKey      = testenv.RSAKey
	ecKey       = testenv.ECKey
	encryptKey  = testenv.EncryptKey
	disabledKey = testenv.DisabledKey
)

func TestMain(m *testing.M) {
	// Nothing in these tests may reach for the EC2 metadata service (a
	// non-loopback address) when an AWS SDK finds no credentials.
	os.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	code, err := testMain(m)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		code = 1
	}
	os.Exit(code)
}

func testMain(m *testing.M) (int, error) {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "ocistow-e2e-")
	if err != nil {
		return 1, err
	}
	defer os.RemoveAll(dir)
	e2e.bin = filepath.Join(dir, "ocistow")
	if out, err := exec.Command("go", "build", "-o", e2e.bin, ".").CombinedOutput(); err != nil {
		return 1, fmt.Errorf("building ocistow: %v\n%s", err, out)
	}
	bed, err := testenv.StartBed(ctx, dir)
	if err != nil {
		return 1, err
	}
	defer bed.Close()
	e2e.bed, e2e.src, e2e.dst, e2e.auth, e2e.kms = bed, bed.Src, bed.Dst, bed.Auth, bed.KMS
	e2e.fixtures, e2e.keyID, e2e.keyARN = bed.Fixtures, bed.KeyID, bed.KeyARN
	e2e.dstFront = testenv.NewFront(e2e.dst.Host)
	defer e2e.dstFront.Close()
	if e2e.cosign, err = testenv.Tool("cosign"); err != nil {
		return 1, err
	}
	if e2e.cosign3, err = testenv.Tool("cosign3"); err != nil {
		return 1, err
	}
	if e2e.trustedRoot, err = testenv.WriteEmptyTrustedRoot(dir); err != nil {
		return 1, err
	}
	e2e.signingConfig = filepath.Join(dir, "signing_config.json")
	if err := os.WriteFile(e2e.signingConfig, []byte(testenv.EmptySigningConfig), 0o644); err != nil {
		return 1, err
	}
	return m.Run(), nil
}

// srcRef names a fixture on the source registry.
func srcRef(fixture string) string { return e2e.bed.SrcRef(fixture) }

// dstRepo returns a destination repository unique to the test.
func dstRepo(t *testing.T, host string) string {
	return host + "/" + testenv.RepoName(t.Name())
}

type result struct {
	stdout, stderr string
	code           int
}

// ocistow runs the binary with a clean environment: no Docker config, no
// AWS credentials, and no ocistow variables unless env gives them.
func ocistow(t *testing.T, env []string, args ...string) result {
	t.Helper()
	return runCmd(t, ocistowCmd(t, env, args...))
}

// ocistowCmd is the command ocistow runs, for a test that must run it
// itself (on a terminal, say).
func ocistowCmd(t *testing.T, env []string, args ...string) *exec.Cmd {
	home := t.TempDir()
	cmd := exec.Command(e2e.bin, args...)
	cmd.Env = append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"DOCKER_CONFIG=" + filepath.Join(home, ".docker"),
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_CONFIG_FILE=" + filepath.Join(home, "aws-config"),
		"AWS_SHARED_CREDENTIALS_FILE=" + filepath.Join(home, "aws-credentials"),
	}, env...)
	return cmd
}

// runCmd runs cmd and returns its result, failing the test when it cannot
// run at all.
func runCmd(t *testing.T, cmd *exec.Cmd) result {
	t.Helper()
	stdout, stderr, code, err := testenv.Run(cmd)
	if err != nil {
		t.Fatalf("running %s: %v", cmd.Path, err)
	}
	return result{stdout: stdout, stderr: stderr, code: code}
}

// mustSucceed fails the test unless r exited 0.
func (r result) mustSucceed(t *testing.T) result {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("ocistow exited %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	return r
}

// errLine returns the single "ocistow: " line of stderr, failing the test
// unless there is exactly one and no panic or stack trace.
func (r result) errLine(t *testing.T) string {
	t.Helper()
	if strings.Contains(r.stderr, "panic") || strings.Contains(r.stderr, "goroutine ") {
		t.Fatalf("stderr has a panic or stack trace:\n%s", r.stderr)
	}
	var lines []string
	for _, l := range strings.Split(r.stderr, "\n") {
		if strings.HasPrefix(l, "ocistow: ") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 {
		t.Fatalf("want exactly one error line on stderr, got %d:\n%s", len(lines), r.stderr)
	}
	return lines[0]
}

// refused checks what every refused promotion owes the user: one error
// line naming each of wants, and (when repo is not "") nothing written at
// the destination repository, which must be named through e2e.dstFront: no
// manifest at all, and for a refusal before the copy (exit 2) no request
// that writes anything (POST, PATCH, PUT, DELETE). A copy that fails
// mid-way (exit 1) may leave blobs, which the next run reuses.
func (r result) refused(t *testing.T, wants []string, repo string) {
	t.Helper()
	line := r.errLine(t)
	for _, w := range wants {
		if !strings.Contains(line, w) {
			t.Errorf("error line %q lacks %q", line, w)
		}
	}
	if repo == "" {
		return
	}
	host, path, _ := strings.Cut(repo, "/")
	if host != e2e.dstFront.Host {
		t.Fatalf("refusal checks need the destination named through e2e.dstFront, not %s", host)
	}
	for _, req := range e2e.dstFront.Requests() {
		if !strings.HasPrefix(req.Path, "/v2/"+path+"/") || req.Method == http.MethodGet || req.Method == http.MethodHead {
			continue
		}
		if r.code == exitInvalid || strings.Contains(req.Path, "/manifests/") {
			t.Errorf("refused promotion (exit %d) wrote at the destination: %s %s", r.code, req.Method, req.Path)
		}
	}
	if ts := tags(t, repo, nil); len(ts) != 0 {
		t.Errorf("destination has tags %v after a refused promotion", ts)
	}
}

// copyResult parses the -output json result.
func (r result) copyResult(t *testing.T) copyResultJSON {
	t.Helper()
	var out copyResultJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("parsing -output json: %v\n%s", err, r.stdout)
	}
	return out
}

type copyResultJSON struct {
	Source            string `json:"source"`
	Destination       string `json:"destination"`
	SourceDigest      string `json:"sourceDigest"`
	DestinationDigest string `json:"destinationDigest"`
	MediaType         string `json:"mediaType"`
	Manifests         []struct {
		Platform          string `json:"platform"`
		SourceDigest      string `json:"sourceDigest"`
		DestinationDigest string `json:"destinationDigest"`
	} `json:"manifests"`
	BlobsCopied      int    `json:"blobsCopied"`
	BlobsSkipped     int    `json:"blobsSkipped"`
	BlobsMounted     int    `json:"blobsMounted"`
	BytesCopied      int64  `json:"bytesCopied"`
	ManifestsWritten int    `json:"manifestsWritten"`
	UpToDate         bool   `json:"upToDate"`
	SourcePulls      int    `json:"sourcePulls"`
	PreviousDigest   string `json:"previousDigest"`
}

// get reads ref from a registry, with basic auth when auth is not nil.
func get(t *testing.T, ref string, auth authn.Authenticator) *remote.Descriptor {
	t.Helper()
	if auth == nil {
		auth = authn.Anonymous
	}
	d, err := testenv.Get(t.Context(), ref, remote.WithAuth(auth))
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	return d
}

// tags lists the tags of repo, or nil when the repository does not exist.
func tags(t *testing.T, repo string, auth authn.Authenticator) []string {
	t.Helper()
	r, err := name.NewRepository(repo)
	if err != nil {
		t.Fatal(err)
	}
	if auth == nil {
		auth = authn.Anonymous
	}
	ts, err := remote.List(r, remote.WithAuth(auth), remote.WithContext(t.Context()))
	if err != nil {
		if strings.Contains(err.Error(), "NAME_UNKNOWN") {
			return nil
		}
		t.Fatalf("listing %s: %v", repo, err)
	}
	return ts
}

// dockerConfig writes a Docker config with credentials for host and returns
// the DOCKER_CONFIG value.
func dockerConfig(t *testing.T, host, user, pass string) string {
	t.Helper()
	dir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(user + ":" + pass))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, host, auth)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func basic(user, pass string) authn.Authenticator {
	return &authn.Basic{Username: user, Password: pass}
}

func base64Std(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// drain reads rc to its end and closes it.
func drain(rc io.ReadCloser) (int64, error) {
	defer rc.Close()
	return io.Copy(io.Discard, rc)
}
