package main

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/ocistow/ocistow/internal/testenv"
)

// writeKeyFile writes key to dir as a PEM private key file name+".pem" of
// pemType ("PRIVATE KEY": PKCS#8, "EC PRIVATE KEY": SEC 1, "RSA PRIVATE
// KEY": PKCS#1), and its public key as name+".pub", and returns both paths.
func writeKeyFile(t *testing.T, dir, name string, key crypto.Signer, pemType string) (priv, pub string) {
	t.Helper()
	var der []byte
	var err error
	switch pemType {
	case "PRIVATE KEY":
		der, err = x509.MarshalPKCS8PrivateKey(key)
	case "EC PRIVATE KEY":
		der, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	case "RSA PRIVATE KEY":
		der = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	default:
		t.Fatalf("no encoding for PEM type %q", pemType)
	}
	if err != nil {
		t.Fatalf("encoding %s: %v", name, err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		t.Fatalf("encoding the public key of %s: %v", name, err)
	}
	priv, pub = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".pub")
	if err := os.WriteFile(priv, pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pub, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

// importKeyPair turns the PEM private key file priv into cosign's
// encrypted format with the real cosign (import-key-pair), as
// prefix.key and prefix.pub in dir, under password.
func importKeyPair(t *testing.T, dir, priv, prefix, password string) string {
	t.Helper()
	if r := cosign(t, dir, []string{"COSIGN_PASSWORD=" + password}, "import-key-pair", "--key", priv, "--output-key-prefix", prefix); r.code != 0 {
		t.Fatalf("cosign import-key-pair --key %s: exit %d\n%s", priv, r.code, r.stderr)
	}
	return filepath.Join(dir, prefix+".key")
}

// cosignVerifyFile runs cosign verify with the public key file pub and,
// when alg is not "", --signature-digest-algorithm alg.
func cosignVerifyFile(t *testing.T, pub, alg, image string) result {
	t.Helper()
	args := []string{"verify", "--insecure-ignore-tlog=true", "--trusted-root", e2e.trustedRoot, "--key", pub}
	if alg != "" {
		args = append(args, "--signature-digest-algorithm", alg)
	}
	return cosign(t, "", nil, append(args, image)...)
}

// TestKeyFileFormatsSignForCosign holds the README's -key row ("a PEM
// private key file (PKCS#8, EC, RSA, …)") and Signing's "An ECDSA key file
// signs with the same hash for its curve, as cosign does". An EC key in
// SEC 1 form ("EC PRIVATE KEY"), an RSA key in PKCS#1 form ("RSA PRIVATE
// KEY") and in PKCS#8, a P-384 key in SEC 1 form and a P-521 key in PKCS#8
// each sign a promotion through the binary, and the real cosign verifies
// the signature with the public key and the curve's hash (sha384, sha512),
// and for P-384 and P-521 refuses it under its default SHA-256. cosign's
// own signature with the same P-384 and P-521 key (imported with cosign
// import-key-pair) verifies with the same hash, and ocistow verify accepts
// it: cosign and ocistow hash alike. (cosign's encrypted format is
// TestCosignAndOcistowVerifyEachOther's; a P-384 key in PKCS#8
// TestP384AndP521KeysVerifyWithTheirPublicKey's.)
func TestKeyFileFormatsSignForCosign(t *testing.T) {
	ecKeyOf := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	rsaKeyOf := func() crypto.Signer {
		k, err := rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	dir := t.TempDir()
	repo := dstRepo(t, e2e.dst.Host)
	digest := e2e.fixtures["other"]
	for _, c := range []struct {
		name, pemType string
		key           crypto.Signer
		// alg is the hash cosign must be told; "" for its default,
		// SHA-256.
		alg string
	}{
		{"ec-p256-sec1", "EC PRIVATE KEY", ecKeyOf(elliptic.P256()), ""},
		{"rsa-pkcs1", "RSA PRIVATE KEY", rsaKeyOf(), ""},
		{"rsa-pkcs8", "PRIVATE KEY", rsaKeyOf(), ""},
		{"ec-p384-sec1", "EC PRIVATE KEY", ecKeyOf(elliptic.P384()), "sha384"},
		{"ec-p521-pkcs8", "PRIVATE KEY", ecKeyOf(elliptic.P521()), "sha512"},
	} {
		t.Run(c.name, func(t *testing.T) {
			priv, pub := writeKeyFile(t, dir, c.name, c.key, c.pemType)
			dst := repo + ":" + c.name
			r := ocistow(t, nil, "-source", srcRef("other"), "-destination", dst, "-key", priv).mustSucceed(t)
			if !strings.Contains(r.stdout, "signed 1 digests with "+priv+": 1 added") {
				t.Errorf("the result does not say the key file signed: %s", r.stdout)
			}
			if v := cosignVerifyFile(t, pub, c.alg, dst); v.code != 0 {
				t.Errorf("cosign verify --key %s (hash %q) of ocistow's signature: exit %d\n%s", filepath.Base(pub), c.alg, v.code, v.stderr)
			} else if !strings.Contains(v.stdout, `"docker-manifest-digest":"`+digest+`"`) {
				t.Errorf("cosign verify printed %s, want the digest %s", v.stdout, digest)
			}
			if c.alg == "" {
				return
			}
			// Not a SHA-256 signature: cosign's default refuses it.
			if v := cosignVerifyFile(t, pub, "", dst); v.code == 0 {
				t.Errorf("cosign verify --key %s with its default SHA-256 passed: the key file did not sign with %s", filepath.Base(pub), c.alg)
			}
			// cosign signs with the same key file (imported into its own
			// format) with the same hash, and ocistow verifies that.
			cosignRepo := dstRepo(t, e2e.dst.Host)
			ocistow(t, nil, "-source", srcRef("other"), "-destination", cosignRepo+":v1", "-sign=false").mustSucceed(t)
			imported := importKeyPair(t, dir, priv, c.name+"-cosign", "imported")
			if s := cosign(t, dir, []string{"COSIGN_PASSWORD=imported"}, "sign", "--key", imported, "--tlog-upload=false", "--yes", cosignRepo+"@"+digest); s.code != 0 {
				t.Fatalf("cosign sign --key %s: exit %d\n%s", filepath.Base(imported), s.code, s.stderr)
			}
			if v := cosignVerifyFile(t, pub, c.alg, cosignRepo+":v1"); v.code != 0 {
				t.Errorf("cosign's own signature with %s does not verify with %s: %s", c.name, c.alg, v.stderr)
			}
			ocistow(t, nil, "verify", "-key", pub, cosignRepo+":v1").mustSucceed(t)
		})
	}
}

// TestUnsupportedKMSKeySpecIsRefused holds Signing's "The key is checked
// before anything is copied: it must … have … a supported spec; a key that
// fails is reported with exit code 2 and nothing is written" for the
// spec: an enabled SIGN_VERIFY key of spec ECC_SECG_P256K1, which cosign
// cannot verify, is refused with one line naming the key and its spec, and
// nothing is read from the source's blobs or written at the destination.
func TestUnsupportedKMSKeySpecIsRefused(t *testing.T) {
	id, _, err := e2e.kms.CreateKey(t.Context(), kmstypes.KeySpecEccSecgP256k1, kmstypes.KeyUsageTypeSignVerify, "")
	if err != nil {
		t.Fatal(err)
	}
	src := testenv.NewFront(e2e.src.Host)
	defer src.Close()
	repo := dstRepo(t, e2e.dstFront.Host)
	r := ocistow(t, e2e.kms.Env(), "-source", src.Host+"/src/single:v1", "-destination", repo+":v1", "-aws-kms-key-arn", id)
	if r.code != exitInvalid {
		t.Fatalf("exit %d, want %d\n%s", r.code, exitInvalid, r.stderr)
	}
	r.refused(t, []string{id, "key spec ECC_SECG_P256K1"}, repo)
	if n := src.Count(func(q testenv.Request) bool { return strings.Contains(q.Path, "/blobs/") }); n != 0 {
		t.Errorf("the source served %d blob requests for a refused key", n)
	}
}

// sigV4Region is the region of a SigV4 Authorization header's credential
// scope (Credential=AKID/DATE/REGION/kms/aws4_request).
var sigV4Region = regexp.MustCompile(`Credential=[^/]+/[0-9]{8}/([^/]+)/kms/aws4_request`)

// kmsRegions puts a Front before local-kms that records, for each KMS
// operation, the region each request was signed for ("unsigned" when it
// carries no SigV4 credential scope), and returns the recording and the
// environment that sends ocistow through the front.
func kmsRegions(t *testing.T) (*regionLog, []string) {
	t.Helper()
	front := testenv.NewFront(strings.TrimPrefix(e2e.kms.Endpoint, "http://"))
	t.Cleanup(front.Close)
	l := &regionLog{ops: map[string][]string{}}
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		region := "unsigned"
		if m := sigV4Region.FindStringSubmatch(r.Header.Get("Authorization")); m != nil {
			region = m[1]
		}
		op := r.Header.Get("X-Amz-Target")
		op = op[strings.LastIndex(op, ".")+1:]
		l.mu.Lock()
		l.ops[op] = append(l.ops[op], region)
		l.mu.Unlock()
		return false
	})
	return l, append(e2e.kms.Env(), "AWS_ENDPOINT_URL_KMS=http://"+front.Host)
}

// regionLog is what kmsRegions records: per KMS operation, the regions of
// its requests.
type regionLog struct {
	mu  sync.Mutex
	ops map[string][]string
}

// take returns what was recorded and starts over.
func (l *regionLog) take() map[string][]string {
	l.mu.Lock()
	defer l.mu.Unlock()
	ops := l.ops
	l.ops = map[string][]string{}
	return ops
}

// TestKeyARNRegionWins holds Signing's "KMS endpoint, region and
// credentials follow the AWS SDK: -aws-region, AWS_REGION, … ; a key ARN's
// own region wins". With AWS_REGION or -aws-region naming eu-west-1, a key
// named by its key ARN or alias ARN (whose region is local-kms's
// us-east-1) is described, fetched and signed with (and, by ocistow
// verify, described and fetched) in the ARN's region: every KMS request's
// SigV4 credential scope names us-east-1. A key named by alias, which
// names no region, is asked for in eu-west-1, the configured region: the
// recording tells the two apart.
func TestKeyARNRegionWins(t *testing.T) {
	const elsewhere = "eu-west-1"
	if e2e.kms.Region == elsewhere {
		t.Fatalf("local-kms's region is %s: the test needs another", elsewhere)
	}
	regions, env := kmsRegions(t)
	aliasARN := "arn:aws:kms:" + e2e.kms.Region + ":" + e2e.kms.AccountID + ":alias/" + ecKey
	for _, c := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"key ARN over AWS_REGION", []string{"AWS_REGION=" + elsewhere}, []string{"-aws-kms-key-arn", e2e.keyARN[ecKey]}, e2e.kms.Region},
		{"key ARN over -aws-region", []string{"AWS_REGION="}, []string{"-aws-region", elsewhere, "-key", "awskms:///" + e2e.keyARN[rsaKey]}, e2e.kms.Region},
		{"alias ARN over AWS_REGION", []string{"AWS_REGION=" + elsewhere}, []string{"-aws-kms-key-arn", aliasARN}, e2e.kms.Region},
		{"alias in AWS_REGION", []string{"AWS_REGION=" + elsewhere}, []string{"-aws-kms-key-arn", "alias/" + ecKey}, elsewhere},
	} {
		t.Run(c.name, func(t *testing.T) {
			env := append(slices.Clone(env), c.env...)
			// A repository of its own, new on every run, so that there is
			// a signature to make.
			dst := e2e.dst.Host + "/" + freshRepo(t) + ":v1"
			regions.take()
			ocistow(t, env, append([]string{"-source", srcRef("other"), "-destination", dst}, c.args...)...).mustSucceed(t)
			checkRegions(t, "promotion", regions.take(), []string{"DescribeKey", "GetPublicKey", "Sign"}, c.want)
			ocistow(t, env, append(append([]string{"verify"}, c.args...), dst)...).mustSucceed(t)
			checkRegions(t, "ocistow verify", regions.take(), []string{"DescribeKey", "GetPublicKey"}, c.want)
		})
	}
}

// checkRegions fails the test unless every operation of want was called,
// and every KMS request of ops was signed for region.
func checkRegions(t *testing.T, what string, ops map[string][]string, want []string, region string) {
	t.Helper()
	for _, op := range want {
		if len(ops[op]) == 0 {
			t.Errorf("%s made no KMS %s call (calls: %v)", what, op, ops)
		}
	}
	for op, rs := range ops {
		for _, r := range rs {
			if r != region {
				t.Errorf("%s: KMS %s was signed for region %s, want %s", what, op, r, region)
			}
		}
	}
}

// TestSourcePolicyPrivateKeyFile holds "Verify before you promote"'s
// policy keys "(public key PEM, key file or KMS key)" for a private key
// file: a source the real cosign signed upstream passes when -source-key
// names the private key it signed with, in cosign's encrypted format (with
// COSIGN_PASSWORD) or as a plain PEM file (SEC 1, imported into cosign to
// sign); the result names the file; and the plain file refuses what the
// other key signed.
func TestSourcePolicyPrivateKeyFile(t *testing.T) {
	s := newPolicySource(t)
	byCosignKey := s.image(t, "cosign-key", 11)
	s.sign(t, "cosign.key", byCosignKey)
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	plain, _ := writeKeyFile(t, s.keyDir, "vendor", k, "EC PRIVATE KEY")
	byPlainKey := s.image(t, "plain-key", 12)
	s.sign(t, importKeyPair(t, s.keyDir, plain, "vendor-cosign", upstreamPassword), byPlainKey)

	t.Run("encrypted cosign key", func(t *testing.T) {
		encrypted := filepath.Join(s.keyDir, "cosign.key")
		r := ocistow(t, []string{"COSIGN_PASSWORD=" + upstreamPassword}, "-source", s.repo+":cosign-key", "-destination", dstRepo(t, e2e.dst.Host)+":v1",
			"-sign=false", "-o", "json", "-source-key", encrypted).mustSucceed(t)
		if got := r.policy(t).Policy.Digests; len(got) != 1 || got[0].Digest != byCosignKey || got[0].Key != encrypted || got[0].Format != "legacy" {
			t.Errorf("policy satisfied by %+v, want %s by %s (legacy)", got, byCosignKey, encrypted)
		}
	})
	t.Run("plain PEM key", func(t *testing.T) {
		r := ocistow(t, nil, "-source", s.repo+":plain-key", "-destination", dstRepo(t, e2e.dst.Host)+":v1",
			"-sign=false", "-o", "json", "-source-key", plain).mustSucceed(t)
		if got := r.policy(t).Policy.Digests; len(got) != 1 || got[0].Digest != byPlainKey || got[0].Key != plain || got[0].Format != "legacy" {
			t.Errorf("policy satisfied by %+v, want %s by %s (legacy)", got, byPlainKey, plain)
		}
	})
	t.Run("another key's signature refused", func(t *testing.T) {
		repo := dstRepo(t, e2e.dstFront.Host)
		r := ocistow(t, nil, "-source", s.repo+":cosign-key", "-destination", repo+":v1", "-sign=false", "-source-key", plain)
		if r.code != exitInvalid {
			t.Fatalf("exit %d, want %d\n%s", r.code, exitInvalid, r.stderr)
		}
		r.refused(t, []string{byCosignKey, "none by these keys", plain}, repo)
	})
}

// TestSourceKeyIsLoadedBeforeAnyRegistryRead holds "Verify before you
// promote"'s "Loaded first": a -source-key KMS key that cannot be
// described (an alias local-kms does not have) is exit 2, with one line
// naming the key and what KMS answered, before anything is read from a
// registry: neither the source's nor the destination's front sees a
// request.
func TestSourceKeyIsLoadedBeforeAnyRegistryRead(t *testing.T) {
	src := testenv.NewFront(e2e.src.Host)
	defer src.Close()
	dst := testenv.NewFront(e2e.dst.Host)
	defer dst.Close()
	const missing = "alias/ocistow-no-such-source-key"
	r := ocistow(t, e2e.kms.Env(), "-source", src.Host+"/src/single:v1", "-destination", dst.Host+"/"+testenv.RepoName(t.Name())+":v1",
		"-sign=false", "-source-key", missing)
	if r.code != exitInvalid {
		t.Fatalf("exit %d, want %d\n%s", r.code, exitInvalid, r.stderr)
	}
	line := r.errLine(t)
	for _, want := range []string{"source key", "awskms:///" + missing, "NotFoundException"} {
		if !strings.Contains(line, want) {
			t.Errorf("error line %q lacks %q", line, want)
		}
	}
	for _, f := range []struct {
		what  string
		front *testenv.Front
	}{{"source", src}, {"destination", dst}} {
		if reqs := f.front.Requests(); len(reqs) != 0 {
			t.Errorf("the %s registry saw %d requests before the source key was found missing, first %s %s", f.what, len(reqs), reqs[0].Method, reqs[0].Path)
		}
	}
}
