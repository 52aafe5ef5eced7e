package main

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/sign"
)

// policySource is an upstream repository for the source-policy tests: an
// index of two platforms and single images, signed (or not) by the test.
type policySource struct {
	repo     string
	index    string
	children []string
	keyDir   string // cosign.key / cosign.pub (cosign v2), other.pub
}

const upstreamPassword = "upstream"

func newPolicySource(t *testing.T) *policySource {
	t.Helper()
	s := &policySource{repo: e2e.src.Host + "/" + testenv.RepoName(t.Name()), keyDir: t.TempDir()}
	idx, err := testenv.MixedIndex(int64(len(t.Name())*7907), 256)
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Push(t.Context(), s.repo+":index", idx); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	s.index = d.String()
	im, _ := idx.IndexManifest()
	for _, m := range im.Manifests {
		s.children = append(s.children, m.Digest.String())
	}
	env := []string{"COSIGN_PASSWORD=" + upstreamPassword}
	if r := cosign(t, s.keyDir, env, "generate-key-pair"); r.code != 0 {
		t.Fatalf("cosign generate-key-pair: %s", r.stderr)
	}
	other := t.TempDir()
	if r := cosign(t, other, env, "generate-key-pair"); r.code != 0 {
		t.Fatalf("cosign generate-key-pair: %s", r.stderr)
	}
	if err := os.Rename(filepath.Join(other, "cosign.pub"), filepath.Join(s.keyDir, "other.pub")); err != nil {
		t.Fatal(err)
	}
	return s
}

// image pushes a single image as tag and returns its digest.
func (s *policySource) image(t *testing.T, tag string, seed int64) string {
	t.Helper()
	img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 128, Seed: seed})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.Push(t.Context(), s.repo+":"+tag, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d.String()
}

func (s *policySource) pub() string { return filepath.Join(s.keyDir, "cosign.pub") }

// sign signs digest with cosign v2 (legacy format) with key (cosign.key,
// or a KMS reference) and annotations.
func (s *policySource) sign(t *testing.T, key, digest string, args ...string) {
	t.Helper()
	a := append([]string{"sign", "--key", key, "--tlog-upload=false", "--yes"}, args...)
	if r := cosign(t, s.keyDir, []string{"COSIGN_PASSWORD=" + upstreamPassword}, append(a, s.repo+"@"+digest)...); r.code != 0 {
		t.Fatalf("cosign sign: %s", r.stderr)
	}
}

// policyJSON is the part of the -output json result the policy adds.
type policyJSON struct {
	SourceDigest string `json:"sourceDigest"`
	SourcePulls  int    `json:"sourcePulls"`
	UpToDate     bool   `json:"upToDate"`
	Policy       *struct {
		Digests []struct {
			Digest   string `json:"digest"`
			Format   string `json:"format"`
			Key      string `json:"key"`
			Identity string `json:"identity"`
			Issuer   string `json:"issuer"`
		} `json:"digests"`
	} `json:"policy"`
}

func (r result) policy(t *testing.T) policyJSON {
	t.Helper()
	var out policyJSON
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil {
		t.Fatalf("parsing -output json: %v\n%s", err, r.stdout)
	}
	if out.Policy == nil || len(out.Policy.Digests) == 0 {
		t.Fatalf("the result says nothing of the source policy:\n%s", r.stdout)
	}
	return out
}

// TestSourcePolicyKeys runs the key policies through the real binary:
// sources signed by the real cosign v2 (a key file and a local-kms key,
// legacy .sig) and cosign v3 (a bundle referrer), unsigned, signed by
// another key, with other annotations, tampered with, and an index whose
// children are unsigned. Every refusal exits 2 with one line naming the
// digest and why, and writes nothing at the destination.
func TestSourcePolicyKeys(t *testing.T) {
	s := newPolicySource(t)
	s.sign(t, "cosign.key", s.index, "-a", "team=upstream")
	dst := dstRepo(t, e2e.dstFront.Host)

	t.Run("signed index passes, and says by what", func(t *testing.T) {
		front := testenv.NewFront(e2e.src.Host)
		defer front.Close()
		src := front.Host + strings.TrimPrefix(s.repo, e2e.src.Host) + ":index"
		r := ocistow(t, nil, "-source", src, "-destination", dst+":ok", "-sign=false", "-o", "json",
			"-source-key", s.pub(), "-source-annotations", "team=upstream").mustSucceed(t)
		p := r.policy(t)
		if got := p.Policy.Digests[0]; len(p.Policy.Digests) != 1 || got.Digest != s.index || got.Format != "legacy" || got.Key != s.pub() {
			t.Errorf("policy result %+v, want the index by %s, legacy", p.Policy.Digests, s.pub())
		}
		if !strings.Contains(r.stderr, "policy=\"key "+s.pub()+" (legacy)\"") {
			t.Errorf("the Copy line does not say what satisfied the policy:\n%s", r.stderr)
		}
		// The image's own manifests are read as a copy reads them
		// (the index, its two children) and no more; the policy reads
		// the signature artifacts only.
		imageGETs := func() int {
			return front.Count(func(q testenv.Request) bool {
				if q.Method != http.MethodGet || !strings.Contains(q.Path, "/manifests/") {
					return false
				}
				ref := q.Path[strings.LastIndex(q.Path, "/")+1:]
				return ref == "index" || ref == s.index || ref == s.children[0] || ref == s.children[1]
			})
		}
		if n := imageGETs(); n != 3 {
			t.Errorf("the copy with a policy read the image's manifests %d times, want 3 (index and children, as without)", n)
		}
		// Up to date: the policy is checked again, and still no image
		// manifest is pulled.
		before := imageGETs()
		r = ocistow(t, nil, "-source", src, "-destination", dst+":ok", "-sign=false", "-o", "json", "-source-key", s.pub()).mustSucceed(t)
		if p := r.policy(t); !p.UpToDate || imageGETs() != before {
			t.Errorf("up-to-date re-run: upToDate %v, %d image manifest GETs", p.UpToDate, imageGETs()-before)
		}
		// The signature artifacts are looked for with a HEAD first: the
		// referrers tag, which this source lacks (its registry has no
		// referrers API and it has no bundles), is never pulled.
		if head, get := digestTagReads(front, s.index, ""); head != 2 || get != 0 {
			t.Errorf("the referrers tag of %s: %d HEADs and %d GETs in two runs, want 2 and 0", s.index, head, get)
		}
		if head, get := digestTagReads(front, s.index, ".sig"); head != 2 || get != 2 {
			t.Errorf("the .sig tag of %s: %d HEADs and %d GETs in two runs, want 2 of each", s.index, head, get)
		}
	})

	refusals := []struct {
		name  string
		tag   string
		args  []string
		wants []string
	}{
		{"children unsigned", "index", []string{"-source-key", s.pub(), "-source-verify-children"},
			[]string{s.children[0], "no signatures"}},
		{"another key", "index", []string{"-source-key", filepath.Join(s.keyDir, "other.pub")},
			[]string{s.index, "none by these keys", "other.pub"}},
		{"annotation missing", "index", []string{"-source-key", s.pub(), "-source-annotations", "team=platform"},
			[]string{s.index, "missing annotation", "team=platform"}},
	}
	unsigned := s.image(t, "unsigned", 1)
	refusals = append(refusals, struct {
		name  string
		tag   string
		args  []string
		wants []string
	}{"unsigned", "unsigned", []string{"-source-key", s.pub()}, []string{unsigned, "no signatures"}})
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			repo := dstRepo(t, e2e.dstFront.Host)
			r := ocistow(t, nil, append([]string{"-source", s.repo + ":" + tc.tag, "-destination", repo + ":v1", "-sign=false"}, tc.args...)...)
			if r.code != exitInvalid {
				t.Fatalf("exit %d, want 2\n%s", r.code, r.stderr)
			}
			r.refused(t, append([]string{"refused by the source policy"}, tc.wants...), repo)
			if !strings.Contains(r.stderr, "error_type=PolicyRefused") {
				t.Errorf("the Copy line lacks error_type=PolicyRefused:\n%s", r.stderr)
			}
		})
	}

	t.Run("a policy added later refuses an up-to-date destination", func(t *testing.T) {
		// Promoted without a policy; the re-run with one finds the
		// destination up to date, checks anyway, and refuses: the
		// children come from the destination's index, unsigned.
		repo := dstRepo(t, e2e.dstFront.Host)
		ocistow(t, nil, "-source", s.repo+":index", "-destination", repo+":v1", "-sign=false").mustSucceed(t)
		r := ocistow(t, nil, "-source", s.repo+":index", "-destination", repo+":v1", "-sign=false",
			"-source-key", s.pub(), "-source-verify-children")
		if r.code != exitInvalid {
			t.Fatalf("exit %d, want 2\n%s", r.code, r.stderr)
		}
		if line := r.errLine(t); !strings.Contains(line, "refused by the source policy") || !strings.Contains(line, s.children[0]) {
			t.Errorf("error line %q: want the policy's refusal naming child %s", line, s.children[0])
		}
		if !strings.Contains(r.stderr, "up_to_date=true") {
			t.Errorf("the Copy line does not say the destination was up to date:\n%s", r.stderr)
		}
	})

	t.Run("children signed pass", func(t *testing.T) {
		for _, c := range s.children {
			s.sign(t, "cosign.key", c)
		}
		r := ocistow(t, nil, "-source", s.repo+":index", "-destination", dst+":children", "-sign=false", "-o", "json",
			"-source-key", s.pub(), "-source-verify-children").mustSucceed(t)
		if p := r.policy(t); len(p.Policy.Digests) != 3 {
			t.Errorf("policy checked %d digests, want the index and its 2 children", len(p.Policy.Digests))
		}
	})

	t.Run("KMS key, legacy", func(t *testing.T) {
		d := s.image(t, "kms", 2)
		s.sign(t, "awskms:///alias/"+ecKey, d)
		r := ocistow(t, e2e.kms.Env(), "-source", s.repo+":kms", "-destination", dst+":kms", "-sign=false", "-o", "json",
			"-source-key", s.pub(), "-source-key", "alias/"+ecKey).mustSucceed(t)
		if got := r.policy(t).Policy.Digests[0]; got.Key != "awskms:///alias/"+ecKey || got.Format != "legacy" {
			t.Errorf("policy satisfied by %+v, want the KMS key, legacy", got)
		}
	})

	t.Run("cosign v3 bundle", func(t *testing.T) {
		d := s.image(t, "bundle", 3)
		r := cosign3(t, s.keyDir, []string{"COSIGN_PASSWORD=" + upstreamPassword}, "sign", "--key", "cosign.key",
			"--signing-config", e2e.signingConfig, "--trusted-root", e2e.trustedRoot, "-a", "team=upstream", "-y", s.repo+"@"+d)
		if r.code != 0 {
			t.Fatalf("cosign v3 sign: %s", r.stderr)
		}
		front := testenv.NewFront(e2e.src.Host)
		defer front.Close()
		src := front.Host + strings.TrimPrefix(s.repo, e2e.src.Host) + ":bundle"
		out := ocistow(t, nil, "-source", src, "-destination", dst+":bundle", "-sign=false", "-o", "json",
			"-source-key", s.pub(), "-source-annotations", "team=upstream").mustSucceed(t)
		if got := out.policy(t).Policy.Digests[0]; got.Format != "bundle" || got.Digest != d {
			t.Errorf("policy satisfied by %+v, want cosign v3's bundle", got)
		}
		// No .sig tag: looked for with a HEAD, never pulled.
		if head, get := digestTagReads(front, d, ".sig"); head != 1 || get != 0 {
			t.Errorf("the .sig tag of %s: %d HEADs and %d GETs, want 1 and 0", d, head, get)
		}
		repo := dstRepo(t, e2e.dstFront.Host)
		other := ocistow(t, nil, "-source", s.repo+":bundle", "-destination", repo+":v1", "-sign=false", "-source-key", filepath.Join(s.keyDir, "other.pub"))
		if other.code != exitInvalid {
			t.Fatalf("another key: exit %d\n%s", other.code, other.stderr)
		}
		other.refused(t, []string{d, "none by these keys"}, repo)
	})

	t.Run("tampered", func(t *testing.T) {
		d := s.image(t, "tampered", 4)
		s.sign(t, "cosign.key", d, "-a", "team=upstream")
		tamper(t, s.repo, d)
		repo := dstRepo(t, e2e.dstFront.Host)
		r := ocistow(t, nil, "-source", s.repo+":tampered", "-destination", repo+":v1", "-sign=false", "-source-key", s.pub())
		if r.code != exitInvalid {
			t.Fatalf("exit %d, want 2\n%s", r.code, r.stderr)
		}
		r.refused(t, []string{d, "does not verify", "tampered"}, repo)
	})
}

// digestTagReads counts the HEADs and GETs f served of digest's digest tag
// with suffix ("" for the referrers tag, ".sig" for cosign's signatures).
func digestTagReads(f *testenv.Front, digest, suffix string) (head, get int) {
	path := "/manifests/" + strings.Replace(digest, ":", "-", 1) + suffix
	for _, q := range f.Requests() {
		if !strings.HasSuffix(q.Path, path) {
			continue
		}
		switch q.Method {
		case http.MethodHead:
			head++
		case http.MethodGet:
			get++
		}
	}
	return head, get
}

// tamper rewrites the payload of digest's cosign .sig signature (the
// annotation team=upstream becomes team=attacker), keeping the signature.
func tamper(t *testing.T, repo, digest string) {
	t.Helper()
	tag, err := name.NewTag(repo + ":" + strings.Replace(digest, ":", "-", 1) + ".sig")
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(tag, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil || len(m.Layers) != 1 {
		t.Fatalf("signature manifest: %v, %d layers", err, len(m.Layers))
	}
	l, err := img.LayerByDigest(m.Layers[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := l.Compressed()
	if err != nil {
		t.Fatal(err)
	}
	payload, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	forged := strings.Replace(string(payload), `"team":"upstream"`, `"team":"attacker"`, 1)
	if forged == string(payload) {
		t.Fatalf("payload %s has no team annotation to tamper with", payload)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	out, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer([]byte(forged), sign.SimpleSigningMediaType),
		Annotations: m.Layers[0].Annotations,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(tag, out, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
}

// keylessBundle signs digest's cosign sign statement (with annotations)
// keyless with the virtual Sigstore vs, for identity and issuer, and
// returns the v0.3 bundle: the Fulcio-like certificate, the DSSE envelope,
// and the transparency-log entry with its inclusion proof and signed entry
// timestamp, as cosign v3 makes them against the public-good instance.
func keylessBundle(t *testing.T, vs *ca.VirtualSigstore, digest name.Digest, identity, issuer string, annotations map[string]string) []byte {
	t.Helper()
	stmt, err := sign.Statement(digest, annotations)
	if err != nil {
		t.Fatal(err)
	}
	ent, err := vs.AttestAtTime(identity, issuer, stmt, time.Now().Add(time.Minute), true)
	if err != nil {
		t.Fatal(err)
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		t.Fatal(err)
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		t.Fatal(err)
	}
	env := sc.EnvelopeContent().RawEnvelope()
	payload, err := base64.StdEncoding.DecodeString(env.Payload)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := ent.TlogEntries()
	if err != nil || len(entries) != 1 {
		t.Fatalf("tlog entries: %v, %d", err, len(entries))
	}
	tle := entries[0].TransparencyLogEntry()
	tle.KindVersion = &protorekor.KindVersion{Kind: "dsse", Version: "0.0.1"}
	set, err := vs.RekorSignPayload(tlog.RekorPayload{
		LogID:          hex.EncodeToString(tle.GetLogId().GetKeyId()),
		IntegratedTime: tle.GetIntegratedTime(),
		LogIndex:       tle.GetLogIndex(),
		Body:           base64.StdEncoding.EncodeToString(tle.GetCanonicalizedBody()),
	})
	if err != nil {
		t.Fatal(err)
	}
	tle.InclusionPromise = &protorekor.InclusionPromise{SignedEntryTimestamp: set}
	b := &protobundle.Bundle{
		MediaType: bundle.MediaType,
		VerificationMaterial: &protobundle.VerificationMaterial{
			Content:     &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
			TlogEntries: []*protorekor.TransparencyLogEntry{tle},
		},
		Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
			Payload: payload, PayloadType: env.PayloadType, Signatures: []*protodsse.Signature{{Sig: sig}},
		}},
	}
	out, err := protojson.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func digestRef(t *testing.T, s string) name.Digest {
	t.Helper()
	d, err := name.NewDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// attachBundle stores b as a bundle referrer of digest, as cosign v3 does
// (the referrers tag on Distribution).
func attachBundle(t *testing.T, digest name.Digest, b []byte) {
	t.Helper()
	puller, err := remote.NewPuller(remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	pusher, err := remote.NewPusher(remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	st := bundle.NewStore(puller, pusher)
	if _, err := st.Attach(t.Context(), digest, b, map[string]string{bundle.AnnotationPredicateType: sign.SignPredicateType}); err != nil {
		t.Fatal(err)
	}
}

// trustedRootFile writes the trusted root of the virtual Sigstore vs (its
// CA, timestamping authority and log) and returns its path.
func trustedRootFile(t *testing.T, vs *ca.VirtualSigstore) string {
	t.Helper()
	// No CT logs: the virtual CA's certificates carry no SCTs (with CT
	// logs in the root, ocistow requires them, as cosign does).
	tr, err := testenv.VirtualTrustedRoot(vs)
	if err != nil {
		t.Fatal(err)
	}
	trJSON, err := tr.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	trFile := filepath.Join(t.TempDir(), "trusted_root.json")
	if err := os.WriteFile(trFile, trJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	return trFile
}

// TestSourcePolicyKeyless checks keyless signatures against a trusted root
// with sigstore-go's virtual Sigstore: a Fulcio-like CA issues the
// certificate for a GitHub Actions workflow identity, a Rekor-like log
// records the entry, and the trusted root file names both. The right
// identity and issuer pass; a wrong identity, a wrong issuer, a tampered
// bundle and a bundle the trusted root does not know are refused.
func TestSourcePolicyKeyless(t *testing.T) {
	const (
		identity = "https://github.com/example/app/.github/workflows/release.yml@refs/tags/v1.0.0"
		issuer   = "https://token.actions.githubusercontent.com"
		idRegexp = `^https://github\.com/example/app/\.github/workflows/release\.yml@refs/tags/v`
	)
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	trFile := trustedRootFile(t, vs)
	s := &policySource{repo: e2e.src.Host + "/" + testenv.RepoName(t.Name())}
	signed := s.image(t, "signed", 11)
	subject := digestRef(t, s.repo+"@"+signed)
	attachBundle(t, subject, keylessBundle(t, vs, subject, identity, issuer, map[string]string{"team": "upstream"}))
	dst := dstRepo(t, e2e.dstFront.Host)
	policy := []string{"-trusted-root", trFile, "-source-identity", idRegexp, "-source-issuer", issuer}

	r := ocistow(t, nil, append([]string{"-source", s.repo + ":signed", "-destination", dst + ":signed", "-sign=false", "-o", "json",
		"-source-annotations", "team=upstream"}, policy...)...).mustSucceed(t)
	if got := r.policy(t).Policy.Digests[0]; got.Identity != identity || got.Issuer != issuer || got.Format != "bundle" || got.Digest != signed {
		t.Errorf("policy satisfied by %+v, want identity %s issued by %s, bundle", got, identity, issuer)
	}
	if !strings.Contains(r.stderr, "policy=\"identity "+identity+" (issuer "+issuer+") (bundle)\"") {
		t.Errorf("the Copy line does not name the identity:\n%s", r.stderr)
	}
	// A key and an identity together: either suffices (here the identity;
	// the key signed nothing).
	both := ocistow(t, e2e.kms.Env(), append([]string{"-source", s.repo + ":signed", "-destination", dst + ":both", "-sign=false", "-o", "json",
		"-source-key", "alias/" + rsaKey}, policy...)...).mustSucceed(t)
	if got := both.policy(t).Policy.Digests[0]; got.Identity != identity || got.Key != "" {
		t.Errorf("policy with a key and an identity satisfied by %+v, want the identity", got)
	}
	// The text result and the Copy line say on how many digests.
	text := ocistow(t, nil, append([]string{"-source", s.repo + ":signed", "-destination", dst + ":signed", "-sign=false"}, policy...)...).mustSucceed(t)
	if want := "source policy satisfied on 1 digests by identity " + identity + " (issuer " + issuer + ") (bundle)\n"; !strings.Contains(text.stdout, want) {
		t.Errorf("text result lacks %q:\n%s", want, text.stdout)
	}
	if !strings.Contains(text.stderr, "policy_digests=1") {
		t.Errorf("the Copy line lacks policy_digests=1:\n%s", text.stderr)
	}

	// A bundle from another Sigstore (a CA and log the trusted root does
	// not name), and a tampered one.
	rogue, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	untrusted := s.image(t, "untrusted", 12)
	ud := digestRef(t, s.repo+"@"+untrusted)
	attachBundle(t, ud, keylessBundle(t, rogue, ud, identity, issuer, nil))
	tampered := s.image(t, "tampered", 13)
	td := digestRef(t, s.repo+"@"+tampered)
	tb := keylessBundle(t, vs, td, identity, issuer, map[string]string{"team": "upstream"})
	var pb protobundle.Bundle
	if err := protojson.Unmarshal(tb, &pb); err != nil {
		t.Fatal(err)
	}
	env := pb.GetDsseEnvelope()
	env.Payload = []byte(strings.Replace(string(env.Payload), `"team":"upstream"`, `"team":"attacker"`, 1))
	if tb, err = protojson.Marshal(&pb); err != nil {
		t.Fatal(err)
	}
	attachBundle(t, td, tb)
	// Signed with a key only: nothing an identity can be checked on.
	keyOnly := s.image(t, "key-only", 15)
	s.sign(t, "awskms:///alias/"+ecKey, keyOnly)

	for _, tc := range []struct {
		name, tag string
		args      []string
		wants     []string
	}{
		{"wrong identity", "signed", []string{"-trusted-root", trFile, "-source-identity", `^https://github\.com/example/other/`, "-source-issuer", issuer},
			[]string{signed, "identity mismatch"}},
		{"wrong issuer", "signed", []string{"-trusted-root", trFile, "-source-identity", idRegexp, "-source-issuer", "https://accounts.google.com"},
			[]string{signed, "issuer mismatch"}},
		{"annotation missing", "signed", append([]string{"-source-annotations", "team=platform"}, policy...),
			[]string{signed, "missing annotation"}},
		{"untrusted CA and log", "untrusted", policy, []string{untrusted, "keyless"}},
		{"tampered", "tampered", policy, []string{tampered, "tampered"}},
		{"key signatures only", "key-only", policy, []string{keyOnly, "no keyless signature (neither a Sigstore bundle nor a .sig signature with a certificate)"}},
		{"unsigned", "unsigned", policy, []string{"no signatures"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.tag == "unsigned" {
				s.image(t, "unsigned", 14)
			}
			repo := dstRepo(t, e2e.dstFront.Host)
			r := ocistow(t, nil, append([]string{"-source", s.repo + ":" + tc.tag, "-destination", repo + ":v1", "-sign=false"}, tc.args...)...)
			if r.code != exitInvalid {
				t.Fatalf("exit %d, want 2\n%s", r.code, r.stderr)
			}
			r.refused(t, append([]string{"refused by the source policy"}, tc.wants...), repo)
		})
	}
}

// TestSyncSourcePolicy runs a promotion file whose defaults verify with a
// key: the signed image is promoted, the unsigned one is refused (policy)
// with PolicyRefused and nothing written for it; a re-sync pulls only the
// signed image's signature (the refused source's manifest is not read); a
// verify key that does not load refuses the whole sync. (Keyless entries and their trusted roots:
// TestSyncKeylessVerifyTakesTheSyncsTrustedRoot.)
func TestSyncSourcePolicy(t *testing.T) {
	s := newPolicySource(t)
	signed := s.image(t, "signed", 21)
	s.sign(t, "cosign.key", signed, "-a", "team=upstream")
	s.image(t, "unsigned", 22)
	dst := dstRepo(t, e2e.dstFront.Host)
	file := filepath.Join(t.TempDir(), "fleet.yaml")
	yaml := "defaults:\n  sign: false\n  referrers: false\n  verify:\n    keys: [" + s.pub() + "]\n    annotations: {team: upstream}\n" +
		"promotions:\n" +
		"  - {source: " + s.repo + ":signed, destination: " + dst + ":signed}\n" +
		"  - {source: " + s.repo + ":unsigned, destination: " + dst + ":unsigned}\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	// The plan checks the source digests' signatures too.
	plan := ocistow(t, nil, "sync", "-f", file, "-dry-run")
	if plan.code != exitFailed || !regexp.MustCompile(`(?m)^new\s+\S+:signed`).MatchString(plan.stdout) ||
		!regexp.MustCompile(`(?m)^refused \(policy\)\s+\S+:unsigned\s+.*no signatures`).MatchString(plan.stdout) {
		t.Errorf("sync -dry-run: exit %d\n%s\n%s", plan.code, plan.stdout, plan.stderr)
	}
	// The plan's requests carry the verify block, for another engine to
	// check as the sync does.
	var todo []struct {
		DstImageRef string
		Verify      *struct {
			Keys        []string
			Annotations map[string]string
		}
	}
	if err := json.Unmarshal([]byte(ocistow(t, nil, "sync", "-f", file, "-dry-run", "-o", "json").stdout), &todo); err != nil {
		t.Fatal(err)
	}
	if len(todo) != 1 || todo[0].DstImageRef != dst+":signed" || todo[0].Verify == nil ||
		!slices.Equal(todo[0].Verify.Keys, []string{s.pub()}) || todo[0].Verify.Annotations["team"] != "upstream" {
		t.Errorf("plan requests %+v: want the signed image with its verify block", todo)
	}
	r := ocistow(t, nil, "sync", "-f", file, "-o", "json")
	if r.code != exitFailed {
		t.Fatalf("sync exit %d, want 1\n%s\n%s", r.code, r.stdout, r.stderr)
	}
	var out struct {
		Items []struct {
			DstImageRef string `json:"DstImageRef"`
			Status      string `json:"status"`
			ErrorType   string `json:"errorType"`
			Error       string `json:"error"`
		} `json:"items"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &out); err != nil || len(out.Items) != 2 {
		t.Fatalf("sync -o json: %v\n%s", err, r.stdout)
	}
	if it := out.Items[0]; it.Status != "promoted" {
		t.Errorf("signed image: %+v, want promoted", it)
	}
	if it := out.Items[1]; it.Status != "refused (policy)" || it.ErrorType != "PolicyRefused" || !strings.Contains(it.Error, "no signatures") {
		t.Errorf("unsigned image: %+v, want refused (policy), PolicyRefused, no signatures", it)
	}
	if ts := tags(t, dst, nil); len(ts) != 1 || ts[0] != "signed" {
		t.Errorf("destination tags %v, want only signed", ts)
	}
	for _, q := range e2e.dstFront.Requests() {
		if strings.Contains(q.Path, "/manifests/unsigned") && q.Method != http.MethodGet && q.Method != http.MethodHead {
			t.Errorf("the refused image was written: %s %s", q.Method, q.Path)
		}
	}
	// A re-sync finds the signed image up to date, and still reads its
	// signature: the .sig manifest is its one pull. The unsigned image is
	// refused before its manifest is read, and its .sig tag's absence is
	// found by a HEAD: no pull.
	again := parseSync(t, ocistow(t, nil, "sync", "-f", file, "-o", "json"))
	if again.Summary.Statuses["up to date"] != 1 || again.Summary.SourcePulls != 1 {
		t.Errorf("re-sync with a verify block: %+v, want the signed image up to date and 1 source pull (its .sig)", again.Summary)
	}
	// An invalid verify block refuses the whole sync before anything is
	// read: a key that does not load.
	bad := strings.Replace(yaml, s.pub(), filepath.Join(s.keyDir, "missing.pub"), 1)
	if err := os.WriteFile(file, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := ocistow(t, nil, "sync", "-f", file); r.code != exitInvalid || !strings.Contains(r.errLine(t), "missing.pub") {
		t.Errorf("a verify key that does not load: exit %d\n%s", r.code, r.stderr)
	}
}
