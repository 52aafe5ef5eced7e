package main

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/internal/testenv"
)

// cosign runs the real cosign CLI (v2) with the local-kms environment.
func cosign(t *testing.T, dir string, env []string, args ...string) result {
	t.Helper()
	return cosignBin(t, e2e.cosign, dir, env, args...)
}

// cosignBin runs the cosign binary bin with the local-kms environment.
func cosignBin(t *testing.T, bin, dir string, env []string, args ...string) result {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	home := t.TempDir()
	cmd.Env = append(append([]string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + home,
		"TUF_ROOT=" + filepath.Join(home, "tuf"),
		"DOCKER_CONFIG=" + filepath.Join(home, ".docker"),
		"AWS_EC2_METADATA_DISABLED=true",
	}, e2e.kms.Env()...), env...)
	r := runCmd(t, cmd)
	// The tests run offline: cosign must never have tried the internet.
	if strings.Contains(r.stderr, "TUF") || strings.Contains(r.stderr, "sigstore.dev") {
		t.Fatalf("cosign %s reached for the internet:\n%s", args[0], r.stderr)
	}
	return r
}

// cosignVerify runs cosign verify with a KMS key and the given annotations.
func cosignVerify(t *testing.T, keyRef, image string, annotations ...string) result {
	t.Helper()
	args := []string{"verify", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", keyRef}
	for _, a := range annotations {
		args = append(args, "-a", a)
	}
	return cosign(t, "", nil, append(args, image)...)
}

// sigCount counts the signatures in the .sig tag of digest.
func sigCount(t *testing.T, repo, digest string) int {
	t.Helper()
	tag := repo + ":" + strings.Replace(digest, ":", "-", 1) + ".sig"
	ref, err := name.ParseReference(tag)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, remote.WithContext(t.Context()))
	if err != nil {
		if strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
			return 0
		}
		t.Fatalf("reading %s: %v", tag, err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	return len(m.Layers)
}

func TestSignedPromotionVerifiesWithCosign(t *testing.T) {
	for _, k := range []struct{ alias, flag string }{
		{rsaKey, "alias/" + rsaKey},
		{ecKey, e2e.keyARN[ecKey]},
	} {
		t.Run(k.alias, func(t *testing.T) {
			repo := dstRepo(t, e2e.dst.Host)
			// A single image and a multi-platform index.
			for _, fixture := range []string{"single", "multi"} {
				dst := repo + ":" + fixture
				res := ocistow(t, e2e.kms.Env(), "-source", srcRef(fixture), "-destination", dst,
					"-annotations", "team=foo", "-aws-kms-key-arn", k.flag, "-output", "json").mustSucceed(t)
				var out struct {
					copyResultJSON
					Signatures struct {
						Key     string `json:"key"`
						Added   int    `json:"added"`
						Present int    `json:"present"`
					} `json:"signatures"`
				}
				if err := json.Unmarshal([]byte(res.stdout), &out); err != nil {
					t.Fatal(err)
				}
				digests := []string{out.DestinationDigest}
				for _, m := range out.Manifests {
					digests = append(digests, m.DestinationDigest)
				}
				if out.Signatures.Added != len(digests) || out.Signatures.Key != "awskms:///"+k.flag {
					t.Errorf("signatures %+v, want %d added with awskms:///%s", out.Signatures, len(digests), k.flag)
				}
				for _, want := range []string{"method=Sign", "key=awskms:///" + k.flag, "signatures_added=" + strconv.Itoa(len(digests))} {
					if !strings.Contains(res.stderr, want) {
						t.Errorf("canonical Sign line lacks %q:\n%s", want, res.stderr)
					}
				}
				// cosign verifies the tag and every child digest, with the
				// annotation in the payload's optional section.
				for i, d := range digests {
					image := dst
					if i > 0 {
						image = repo + "@" + d
					}
					v := cosignVerify(t, "awskms:///alias/"+k.alias, image, "team=foo")
					if v.code != 0 {
						t.Fatalf("cosign verify %s: exit %d\n%s\n%s", image, v.code, v.stdout, v.stderr)
					}
					if !strings.Contains(v.stdout, `"docker-manifest-digest":"`+d+`"`) || !strings.Contains(v.stdout, `"team":"foo"`) {
						t.Errorf("cosign verify %s printed %s", image, v.stdout)
					}
				}
				// And cosign refuses an annotation that is not there.
				if v := cosignVerify(t, "awskms:///alias/"+k.alias, dst, "team=bar"); v.code == 0 {
					t.Error("cosign verify accepted -a team=bar on a team=foo signature")
				}
				// ocistow verify agrees, recursively.
				v := ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", "alias/"+k.alias, "-annotations", "team=foo", "-recursive", dst).mustSucceed(t)
				for _, d := range digests {
					if !strings.Contains(v.stdout, d) {
						t.Errorf("ocistow verify output lacks %s: %s", d, v.stdout)
					}
				}
			}
		})
	}
}

func TestSigningIsIdempotent(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	dst := repo + ":v1"
	// The annotations go into the signature payloads only (-copy=false),
	// so the image digest stays the same across runs.
	ocistow(t, nil, "-source", srcRef("single"), "-destination", dst, "-sign=false").mustSucceed(t)
	digest := e2e.fixtures["single"]
	run := func(key string, ann string) result {
		return ocistow(t, e2e.kms.Env(), "-copy=false", "-destination", dst, "-aws-kms-key-arn", key, "-annotations", ann).mustSucceed(t)
	}
	run("alias/"+ecKey, "team=foo")
	if n := sigCount(t, repo, digest); n != 1 {
		t.Fatalf("%d signatures after the first run, want 1", n)
	}
	r := run("alias/"+ecKey, "team=foo")
	if n := sigCount(t, repo, digest); n != 1 {
		t.Errorf("%d signatures after re-running, want still 1", n)
	}
	if !strings.Contains(r.stderr, "signatures_present=1") || !strings.Contains(r.stdout, "0 added, 1 already present") {
		t.Errorf("re-run does not report the signature as present:\n%s\n%s", r.stdout, r.stderr)
	}
	// A whole promotion re-run (copy and sign) adds nothing either.
	ocistow(t, e2e.kms.Env(), "-source", srcRef("single"), "-destination", repo+":again", "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo").mustSucceed(t)
	r = ocistow(t, e2e.kms.Env(), "-source", srcRef("single"), "-destination", repo+":again", "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo").mustSucceed(t)
	again := get(t, repo+":again", nil).Digest.String()
	if n := sigCount(t, repo, again); n != 1 || !strings.Contains(r.stdout, "0 added, 1 already present") {
		t.Errorf("re-run does not report the signature as present:\n%s\n%s", r.stdout, r.stderr)
	}
	run("alias/"+ecKey, "team=bar")
	if n := sigCount(t, repo, digest); n != 2 {
		t.Errorf("%d signatures after other annotations, want 2", n)
	}
	run("alias/"+rsaKey, "team=foo")
	if n := sigCount(t, repo, digest); n != 3 {
		t.Errorf("%d signatures after another key, want 3", n)
	}
	for _, c := range []struct{ key, ann string }{{ecKey, "team=foo"}, {ecKey, "team=bar"}, {rsaKey, "team=foo"}} {
		if v := cosignVerify(t, "awskms:///alias/"+c.key, dst, c.ann); v.code != 0 {
			t.Errorf("cosign verify %s %s: %s", c.key, c.ann, v.stderr)
		}
	}
}

func TestConcurrentSignersKeepEverySignature(t *testing.T) {
	path := freshRepo(t)
	repo := e2e.dst.Host + "/" + path
	dst := repo + ":v1"
	ocistow(t, nil, "-source", srcRef("single"), "-destination", dst, "-sign=false").mustSucceed(t)

	// Eight signers at once on one digest: four with each key, two
	// annotation sets per key. A front holds their reads of the signature
	// tag until all eight have read it, so all of them read the same (empty)
	// tag and their first writes overwrite each other.
	const signers = 8
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	barrier := holdSigReads(front, e2e.dst.Host, signers, 2*time.Minute)
	viaFront := front.Host + "/" + path + ":v1"
	var wg sync.WaitGroup
	results := make([]result, signers)
	for i := range results {
		key, ann := ecKey, "team=a"
		if i%2 == 1 {
			key = rsaKey
		}
		if i%4 >= 2 {
			ann = "team=b"
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i] = ocistow(t, e2e.kms.Env(), "-copy=false", "-destination", viaFront, "-aws-kms-key-arn", "alias/"+key, "-annotations", ann)
		}()
	}
	wg.Wait()
	barrier.check(t)
	for i, r := range results {
		if r.code != 0 {
			t.Errorf("signer %d exited %d: %s", i, r.code, r.stderr)
		}
	}
	t.Logf("%d signers read the empty tag together; %d writes of the tag to keep 4 signatures", signers, sigWrites(front))
	// Exactly one signature per key and payload: 2 keys x 2 annotation sets.
	if n := sigCount(t, repo, e2e.fixtures["single"]); n != 4 {
		t.Errorf("%d signatures after 8 concurrent signers, want 4", n)
	}
	for _, key := range []string{ecKey, rsaKey} {
		for _, ann := range []string{"team=a", "team=b"} {
			if v := cosignVerify(t, "awskms:///alias/"+key, dst, ann); v.code != 0 {
				t.Errorf("cosign verify %s %s failed: %s", key, ann, v.stderr)
			}
		}
	}
}

func TestCosignAndOcistowVerifyEachOther(t *testing.T) {
	dir := t.TempDir()
	const password = "correct horse battery staple"
	if r := cosign(t, dir, []string{"COSIGN_PASSWORD=" + password}, "generate-key-pair"); r.code != 0 {
		t.Fatalf("cosign generate-key-pair: %s", r.stderr)
	}
	repo := dstRepo(t, e2e.dst.Host)
	digest := e2e.fixtures["single"]

	// cosign signs with its encrypted key file; ocistow verifies with the
	// public key file.
	ocistow(t, nil, "-source", srcRef("single"), "-destination", repo+":a", "-sign=false").mustSucceed(t)
	if r := cosign(t, dir, []string{"COSIGN_PASSWORD=" + password}, "sign", "--key", "cosign.key", "--tlog-upload=false", "--yes", "-a", "team=bar", repo+"@"+digest); r.code != 0 {
		t.Fatalf("cosign sign: %s", r.stderr)
	}
	v := ocistow(t, nil, "verify", "-key", filepath.Join(dir, "cosign.pub"), "-annotations", "team=bar", repo+":a").mustSucceed(t)
	if !strings.Contains(v.stdout, digest) || !strings.Contains(v.stdout, `"team":"bar"`) {
		t.Errorf("ocistow verify printed %s", v.stdout)
	}
	// A private key file verifies too (its public half is used).
	ocistow(t, []string{"COSIGN_PASSWORD=" + password}, "verify", "-key", filepath.Join(dir, "cosign.key"), repo+":a").mustSucceed(t)

	// cosign signs with the KMS key; ocistow verifies with it.
	if r := cosign(t, dir, nil, "sign", "--key", "awskms:///alias/"+ecKey, "--tlog-upload=false", "--yes", repo+"@"+digest); r.code != 0 {
		t.Fatalf("cosign sign with KMS: %s", r.stderr)
	}
	ocistow(t, e2e.kms.Env(), "verify", "-aws-kms-key-arn", e2e.keyID[ecKey], repo+":a").mustSucceed(t)

	// ocistow signs with cosign's encrypted key file; cosign verifies.
	ocistow(t, []string{"COSIGN_PASSWORD=" + password}, "-source", srcRef("other"), "-destination", repo+":b", "-key", filepath.Join(dir, "cosign.key"), "-annotations", "team=baz").mustSucceed(t)
	if r := cosign(t, dir, nil, "verify", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", "cosign.pub", "-a", "team=baz", repo+":b"); r.code != 0 {
		t.Fatalf("cosign verify of an ocistow signature made with a key file: %s", r.stderr)
	}

	// A wrong password is one clear line, before anything is copied.
	r := ocistow(t, []string{"COSIGN_PASSWORD=wrong"}, "-source", srcRef("other"), "-destination", repo+":c", "-key", filepath.Join(dir, "cosign.key"))
	if line := r.errLine(t); r.code != exitInvalid || !strings.Contains(line, "wrong password") {
		t.Errorf("exit %d, line %q: want exit 2 and wrong password", r.code, line)
	}
	if ts := tags(t, repo, nil); contains(ts, "c") {
		t.Errorf("a refused key left tag c: %v", ts)
	}
}

func contains(s []string, v string) bool { return slices.Contains(s, v) }

func TestVerifyRefusesBadSignatures(t *testing.T) {
	repo := dstRepo(t, e2e.dst.Host)
	env := e2e.kms.Env()
	ocistow(t, env, "-source", srcRef("single"), "-destination", repo+":signed", "-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo").mustSucceed(t)
	ocistow(t, env, "-source", srcRef("other"), "-destination", repo+":other", "-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	ocistow(t, nil, "-source", srcRef("big"), "-destination", repo+":unsigned", "-sign=false").mustSucceed(t)
	sigTag := func(tag string) string {
		d := get(t, repo+":"+tag, nil).Digest.String()
		return repo + ":" + strings.Replace(d, ":", "-", 1) + ".sig"
	}
	verify := func(args ...string) result {
		return ocistow(t, env, append([]string{"verify"}, args...)...)
	}
	expectFail := func(what string, r result, want string) {
		t.Helper()
		line := r.errLine(t)
		if r.code != exitFailed || !strings.Contains(line, want) {
			t.Errorf("%s: exit %d, line %q: want exit 1 with %q", what, r.code, line, want)
		}
		if !strings.Contains(r.stderr, "method=Verify") || !strings.Contains(r.stderr, "error_type=VerificationFailed") {
			t.Errorf("%s: canonical Verify line lacks error_type=VerificationFailed:\n%s", what, r.stderr)
		}
	}

	verify("-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=foo", repo+":signed").mustSucceed(t)
	expectFail("wrong key", verify("-aws-kms-key-arn", "alias/"+rsaKey, repo+":signed"), "does not verify")
	expectFail("missing annotation", verify("-aws-kms-key-arn", "alias/"+ecKey, "-annotations", "team=bar", repo+":signed"), "team=bar")
	expectFail("unsigned image", verify("-aws-kms-key-arn", "alias/"+ecKey, repo+":unsigned"), "no signatures found")

	// Tampered payload: same signature, one byte of the payload changed.
	sig := readImage(t, sigTag("signed"))
	layers, err := sig.Layers()
	if err != nil {
		t.Fatal(err)
	}
	m, err := sig.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(body, []byte(`"team":"foo"`), []byte(`"team":"fox"`), 1)
	if bytes.Equal(tampered, body) {
		t.Fatalf("payload has no team=foo to tamper with: %s", body)
	}
	forged, err := mutate.Append(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), mutate.Addendum{
		Layer:       static.NewLayer(tampered, "application/vnd.dev.cosign.simplesigning.v1+json"),
		Annotations: m.Layers[0].Annotations,
	})
	if err != nil {
		t.Fatal(err)
	}
	writeImage(t, sigTag("signed"), forged)
	expectFail("tampered payload", verify("-aws-kms-key-arn", "alias/"+ecKey, repo+":signed"), "does not verify")

	// A genuine signature of another digest, moved onto this one.
	writeImage(t, sigTag("signed"), readImage(t, sigTag("other")))
	expectFail("signature of another digest", verify("-aws-kms-key-arn", "alias/"+ecKey, repo+":signed"), "names another digest")
	if v := cosignVerify(t, "awskms:///alias/"+ecKey, repo+":signed"); v.code == 0 {
		t.Error("cosign accepted a signature of another digest; the test's forgery is wrong")
	}
}

func TestSigningBadInput(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a key\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	closed, err := testenv.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	noCreds := []string{"AWS_ENDPOINT_URL_KMS=" + e2e.kms.Endpoint, "AWS_REGION=us-east-1"}
	unreachable := []string{"AWS_ENDPOINT_URL_KMS=http://" + closed, "AWS_REGION=us-east-1", "AWS_ACCESS_KEY_ID=x", "AWS_SECRET_ACCESS_KEY=y", "AWS_MAX_ATTEMPTS=1"}
	cases := []struct {
		name string
		env  []string
		key  []string
		want []string
	}{
		{"key not found", e2e.kms.Env(), []string{"-aws-kms-key-arn", "alias/does-not-exist"}, []string{"alias/does-not-exist", "NotFoundException"}},
		{"key disabled", e2e.kms.Env(), []string{"-aws-kms-key-arn", "alias/" + disabledKey}, []string{disabledKey, "Disabled"}},
		{"encrypt key", e2e.kms.Env(), []string{"-aws-kms-key-arn", "alias/" + encryptKey}, []string{encryptKey, "ENCRYPT_DECRYPT", "SIGN_VERIFY"}},
		{"not a KMS key", e2e.kms.Env(), []string{"-aws-kms-key-arn", "my-key"}, []string{"my-key", "not a KMS key"}},
		{"no credentials", noCreds, []string{"-aws-kms-key-arn", "alias/" + ecKey}, []string{"no AWS credentials"}},
		{"KMS unreachable", unreachable, []string{"-aws-kms-key-arn", "alias/" + ecKey}, []string{"KMS unreachable"}},
		{"key file missing", nil, []string{"-key", filepath.Join(dir, "nope.key")}, []string{"nope.key", "does not exist"}},
		{"key file garbage", nil, []string{"-key", garbage}, []string{"garbage.pem", "not a PEM"}},
		{"both keys", nil, []string{"-key", garbage, "-aws-kms-key-arn", "alias/x"}, []string{"not both"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			repo := dstRepo(t, e2e.dstFront.Host)
			args := append([]string{"-source", srcRef("single"), "-destination", repo + ":v1"}, c.key...)
			r := ocistow(t, c.env, args...)
			if r.code != exitInvalid {
				t.Errorf("exit %d, want %d: %s", r.code, exitInvalid, r.stderr)
			}
			r.refused(t, c.want, repo)
		})
	}
}

func TestSigningFailureAfterCopy(t *testing.T) {
	// A KMS front that answers everything but Sign, which it refuses.
	front := testenv.NewFront(strings.TrimPrefix(e2e.kms.Endpoint, "http://"))
	defer front.Close()
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if strings.HasSuffix(r.Header.Get("X-Amz-Target"), ".Sign") {
			w.Header().Set("Content-Type", "application/x-amz-json-1.1")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"__type":"KMSInvalidStateException","message":"key pending import"}`))
			return true
		}
		return false
	})
	env := append(e2e.kms.Env(), "AWS_ENDPOINT_URL_KMS=http://"+front.Host)
	repo := dstRepo(t, e2e.dst.Host)
	r := ocistow(t, env, "-source", srcRef("single"), "-destination", repo+":v1", "-aws-kms-key-arn", "alias/"+ecKey)
	line := r.errLine(t)
	if r.code != exitSignFailed || !strings.Contains(line, "copy succeeded") || !strings.Contains(line, "signing failed") || !strings.Contains(line, "KMSInvalidStateException") {
		t.Errorf("exit %d, line %q: want exit 3 saying the copy succeeded and signing failed", r.code, line)
	}
	if get(t, repo+":v1", nil).Digest.String() != e2e.fixtures["single"] {
		t.Error("the copy is not in place")
	}
	if !strings.Contains(r.stderr, "error_type=SigningFailed") {
		t.Errorf("canonical Sign line lacks error_type=SigningFailed:\n%s", r.stderr)
	}
}

func TestImmutableSignatureTag(t *testing.T) {
	front := testenv.NewFront(e2e.dst.Host)
	defer front.Close()
	// Like ECR with immutable tags: a tag that exists cannot be moved.
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPut && strings.HasSuffix(r.URL.Path, ".sig") {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusBadRequest)
			_, _ = w.Write([]byte(`{"errors":[{"code":"TAG_INVALID","message":"The image tag 'sha256-abc.sig' already exists in the repository and cannot be overwritten because the repository is immutable."}]}`))
			return true
		}
		return false
	})
	repo := dstRepo(t, front.Host)
	r := ocistow(t, e2e.kms.Env(), "-source", srcRef("single"), "-destination", repo+":v1", "-aws-kms-key-arn", "alias/"+ecKey)
	line := r.errLine(t)
	if r.code != exitSignFailed || !strings.Contains(line, "immutab") || !strings.Contains(line, "exclusion filter") {
		t.Errorf("exit %d, line %q: want exit 3 explaining tag immutability", r.code, line)
	}
}

func readImage(t *testing.T, ref string) v1.Image {
	t.Helper()
	img, err := get(t, ref, nil).Image()
	if err != nil {
		t.Fatalf("reading %s: %v", ref, err)
	}
	return img
}

func writeImage(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, remote.WithContext(t.Context())); err != nil {
		t.Fatalf("writing %s: %v", ref, err)
	}
}

func TestDebugShowsAWSCallsWithoutSecrets(t *testing.T) {
	r := ocistow(t, e2e.kms.Env(), "-debug", "-source", srcRef("single"), "-destination", dstRepo(t, e2e.dst.Host)+":v1",
		"-aws-kms-key-arn", "alias/"+ecKey).mustSucceed(t)
	for _, want := range []string{"msg=aws service=KMS operation=DescribeKey", "service=KMS operation=Sign", "msg=http method=HEAD"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("debug output lacks %q:\n%s", want, r.stderr)
		}
	}
	// local-kms's credentials (see testenv.KMS.Env) never show.
	for _, secret := range []string{"local-kms-secret", "AKIDLOCALKMS", "AWS4-HMAC-SHA256", "Authorization"} {
		if strings.Contains(r.stderr+r.stdout, secret) {
			t.Errorf("debug output contains %q", secret)
		}
	}
}
