package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/testenv"
)

// The end-to-end tests run the real ocistow binary against real CNCF
// Distribution registries on loopback, started here.
var e2e struct {
	bin       string
	src, dst  *testenv.Registry
	auth      *testenv.Registry
	fixtures  map[string]string // name -> digest
	workDir   string
	authUsers map[string]string
	kms       *testenv.KMS
	cosign    string
	// trustedRoot keeps cosign verify offline.
	trustedRoot string
	// keys by alias name (without "alias/"): id and ARN.
	keyID, keyARN map[string]string
}

// The KMS keys the tests sign with, by alias.
const (
	rsaKey      = "ocistow-rsa"      // RSA_4096, SIGN_VERIFY
	ecKey       = "ocistow-ec"       // ECC_NIST_P256, SIGN_VERIFY
	encryptKey  = "ocistow-encrypt"  // RSA_2048, ENCRYPT_DECRYPT
	disabledKey = "ocistow-disabled" // ECC_NIST_P256, disabled
)

const (
	aliceUser = "alice"
	alicePass = "wonderland-s3cret-pw"
	ecrUser   = "AWS"
	ecrPass   = "ecr-token-0123456789abcdef"
)

func TestMain(m *testing.M) {
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
	e2e.workDir = dir
	e2e.bin = filepath.Join(dir, "ocistow")
	if out, err := exec.Command("go", "build", "-o", e2e.bin, ".").CombinedOutput(); err != nil {
		return 1, fmt.Errorf("building ocistow: %v\n%s", err, out)
	}
	e2e.authUsers = map[string]string{aliceUser: alicePass, ecrUser: ecrPass}
	for _, r := range []struct {
		p    **testenv.Registry
		name string
		opts testenv.RegistryOptions
	}{
		{&e2e.src, "src", testenv.RegistryOptions{}},
		{&e2e.dst, "dst", testenv.RegistryOptions{}},
		{&e2e.auth, "auth", testenv.RegistryOptions{Users: e2e.authUsers}},
	} {
		reg, err := testenv.StartRegistry(ctx, filepath.Join(dir, r.name), r.opts)
		if err != nil {
			return 1, err
		}
		defer reg.Close()
		*r.p = reg
	}
	if err := pushFixtures(ctx); err != nil {
		return 1, err
	}
	kms, err := testenv.StartKMS(ctx, filepath.Join(dir, "kms"))
	if err != nil {
		return 1, err
	}
	defer kms.Close()
	e2e.kms = kms
	if err := createKeys(ctx); err != nil {
		return 1, err
	}
	if e2e.cosign, err = testenv.Tool("cosign"); err != nil {
		return 1, err
	}
	if e2e.trustedRoot, err = testenv.WriteEmptyTrustedRoot(dir); err != nil {
		return 1, err
	}
	return m.Run(), nil
}

// pushFixtures builds the test images and pushes them to the source.
func pushFixtures(ctx context.Context) error {
	e2e.fixtures = map[string]string{}
	single, err := testenv.Image(testenv.ImageOptions{Layers: 2, LayerSize: 64 << 10, Seed: 1, Labels: map[string]string{"team": "upstream"}})
	if err != nil {
		return err
	}
	multi, err := testenv.MixedIndex(10, 128<<10)
	if err != nil {
		return err
	}
	big, err := testenv.Image(testenv.ImageOptions{Layers: 3, LayerSize: 3 << 20, Seed: 20, OCI: true})
	if err != nil {
		return err
	}
	other, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 32 << 10, Seed: 30})
	if err != nil {
		return err
	}
	for name, m := range map[string]interface {
		Digest() (v1.Hash, error)
	}{"single": single, "multi": multi, "big": big, "other": other} {
		if err := testenv.Push(ctx, e2e.src.Host+"/src/"+name+":v1", m); err != nil {
			return fmt.Errorf("pushing fixture %s: %w", name, err)
		}
		d, err := m.Digest()
		if err != nil {
			return err
		}
		e2e.fixtures[name] = d.String()
	}
	return nil
}

func createKeys(ctx context.Context) error {
	e2e.keyID, e2e.keyARN = map[string]string{}, map[string]string{}
	for _, k := range []struct {
		alias string
		spec  kmstypes.KeySpec
		usage kmstypes.KeyUsageType
	}{
		{rsaKey, kmstypes.KeySpecRsa4096, kmstypes.KeyUsageTypeSignVerify},
		{ecKey, kmstypes.KeySpecEccNistP256, kmstypes.KeyUsageTypeSignVerify},
		{encryptKey, kmstypes.KeySpecRsa2048, kmstypes.KeyUsageTypeEncryptDecrypt},
		{disabledKey, kmstypes.KeySpecEccNistP256, kmstypes.KeyUsageTypeSignVerify},
	} {
		id, arn, err := e2e.kms.CreateKey(ctx, k.spec, k.usage, k.alias)
		if err != nil {
			return err
		}
		e2e.keyID[k.alias], e2e.keyARN[k.alias] = id, arn
	}
	return e2e.kms.DisableKey(ctx, e2e.keyID[disabledKey])
}

// srcRef names a fixture on the source registry.
func srcRef(fixture string) string { return e2e.src.Host + "/src/" + fixture + ":v1" }

// dstRepo returns a destination repository unique to the test.
func dstRepo(t *testing.T, host string) string {
	repo := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, t.Name())
	for strings.Contains(repo, "--") {
		repo = strings.ReplaceAll(repo, "--", "-")
	}
	return host + "/" + strings.Trim(repo, "-")
}

type result struct {
	stdout, stderr string
	code           int
}

// ocistow runs the binary with a clean environment: no Docker config, no
// AWS credentials, and no ocistow variables unless env gives them.
func ocistow(t *testing.T, env []string, args ...string) result {
	t.Helper()
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
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("running ocistow: %v", err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: code}
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
	BlobsCopied      int   `json:"blobsCopied"`
	BlobsSkipped     int   `json:"blobsSkipped"`
	BlobsMounted     int   `json:"blobsMounted"`
	BytesCopied      int64 `json:"bytesCopied"`
	ManifestsWritten int   `json:"manifestsWritten"`
}

// get reads ref from a registry, with basic auth when auth is not nil.
func get(t *testing.T, ref string, auth authn.Authenticator) *remote.Descriptor {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if auth == nil {
		auth = authn.Anonymous
	}
	d, err := remote.Get(r, remote.WithAuth(auth), remote.WithContext(t.Context()))
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
