package attest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/sign"
)

// subjectBed is an in-process registry, with or without the referrers API,
// holding one image to attest, and a Store on it.
func subjectBed(t *testing.T, referrers bool) (*Store, name.Digest) {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(referrers)))
	t.Cleanup(srv.Close)
	st, err := NewStore(registry.New(registry.WithKeychain(authn.NewMultiKeychain())))
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(strings.TrimPrefix(srv.URL, "http://") + "/app:v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	h, _ := img.Digest()
	return st, ref.Context().Digest(h.String())
}

// countingSigner counts the signatures a key makes.
type countingSigner struct {
	signature.Signer
	n *atomic.Int32
}

func (c countingSigner) SignMessage(m io.Reader, opts ...signature.SignOption) ([]byte, error) {
	c.n.Add(1)
	return c.Signer.SignMessage(m, opts...)
}

func counting(k *keys.Key) (*keys.Key, *atomic.Int32) {
	n := &atomic.Int32{}
	return &keys.Key{Ref: k.Ref, Verifier: k.Verifier, Signer: countingSigner{k.Signer, n}}, n
}

// referrerManifests returns the manifests of subject's referrers.
func referrerManifests(t *testing.T, subject name.Digest) []v1.Manifest {
	t.Helper()
	idx, err := remote.Referrers(subject, remote.WithContext(t.Context()))
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []v1.Manifest
	for _, d := range im.Manifests {
		desc, err := remote.Get(subject.Context().Digest(d.Digest.String()), remote.WithContext(t.Context()))
		if err != nil {
			t.Fatal(err)
		}
		m, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, *m)
	}
	return out
}

func TestBundleStoresAsCosign3AndIsIdempotent(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		t.Run(map[bool]string{true: "referrers API", false: "referrers tag"}[referrers], func(t *testing.T) {
			st, d := subjectBed(t, referrers)
			key, signs := counting(fileKey(t))
			ctx := t.Context()
			p := predicate("platform")
			// Both forms from one Promotion: one signature.
			pr := NewPromotion(d, p, key)
			if s, err := pr.Legacy(ctx, st); err != nil || s != Added {
				t.Fatalf("legacy: %s, %v", s, err)
			}
			if s, err := pr.Bundle(ctx, st); err != nil || s != Added {
				t.Fatalf("bundle: %s, %v", s, err)
			}
			if n := signs.Load(); n != 1 {
				t.Errorf("%d signatures for both forms, want 1", n)
			}
			ms := referrerManifests(t, d)
			if len(ms) != 1 {
				t.Fatalf("%d referrers, want 1", len(ms))
			}
			m := ms[0]
			if m.ArtifactType != bundle.MediaType || m.Config.MediaType != bundle.EmptyMediaType || len(m.Layers) != 1 || m.Layers[0].MediaType != bundle.MediaType ||
				m.Subject == nil || m.Subject.Digest.String() != d.DigestStr() {
				t.Errorf("referrer manifest %+v", m)
			}
			if m.Annotations[bundle.AnnotationPredicateType] != PredicateType || m.Annotations[bundle.AnnotationContent] != bundle.ContentDSSE || m.Annotations[bundle.AnnotationCreated] == "" {
				t.Errorf("referrer annotations %v", m.Annotations)
			}
			// The bundle holds the legacy form's envelope: the same
			// payload and signature, and the key's hint.
			found, err := st.bundles.Find(ctx, d)
			if err != nil || len(found) != 1 {
				t.Fatalf("Find: %d, %v", len(found), err)
			}
			pb, err := bundle.Parse(found[0].JSON)
			if err != nil {
				t.Fatal(err)
			}
			var env struct {
				Payload    []byte `json:"payload"`
				Signatures []struct {
					Sig []byte `json:"sig"`
				} `json:"signatures"`
			}
			if err := json.Unmarshal(mustRead(t, &bed{st: st}, d)[0], &env); err != nil {
				t.Fatal(err)
			}
			got := pb.GetDsseEnvelope()
			if !bytes.Equal(got.GetPayload(), env.Payload) || len(got.GetSignatures()) != 1 || !bytes.Equal(got.GetSignatures()[0].GetSig(), env.Signatures[0].Sig) ||
				got.GetPayloadType() != PayloadType {
				t.Errorf("bundle envelope differs from the .att envelope")
			}
			pub, _ := key.PublicKey(options.WithContext(ctx))
			if hint, _ := bundle.Hint(pub); pb.GetVerificationMaterial().GetPublicKey().GetHint() != hint || len(pb.GetVerificationMaterial().GetTlogEntries()) != 0 {
				t.Errorf("verification material %v, want hint %s and no tlog entry", pb.GetVerificationMaterial(), hint)
			}

			// The same promotion later, by another version: present, no
			// signature made.
			later := p
			later.PromotedAt, later.Ocistow.Version = "2026-12-01T00:00:00Z", "v2"
			if s, err := NewPromotion(d, later, key).Bundle(ctx, st); err != nil || s != Present {
				t.Fatalf("re-run: %s, %v", s, err)
			}
			if n := signs.Load(); n != 1 {
				t.Errorf("the re-run signed (%d signatures)", n)
			}
			// Another stamp, and another key, each add one.
			if s, err := NewPromotion(d, predicate("other"), key).Bundle(ctx, st); err != nil || s != Added {
				t.Fatalf("other stamp: %s, %v", s, err)
			}
			if s, err := NewPromotion(d, p, fileKey(t)).Bundle(ctx, st); err != nil || s != Added {
				t.Fatalf("other key: %s, %v", s, err)
			}
			if n := len(referrerManifests(t, d)); n != 3 {
				t.Errorf("%d referrers, want 3", n)
			}
		})
	}
}

func TestVerifyDigestReadsBothForms(t *testing.T) {
	st, d := subjectBed(t, false)
	key := fileKey(t)
	ctx := t.Context()
	// A signature bundle (cosign's sign predicate) of the same key is
	// not an attestation.
	stmt := fmt.Sprintf(`{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":%q}}],"predicateType":"https://sigstore.dev/cosign/sign/v1","predicate":{}}`, d.DigestStr()[7:])
	sig, err := bundle.SignDSSE(ctx, key.Signer, PayloadType, []byte(stmt))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.bundles.Attach(ctx, d, sig, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyDigest(ctx, st, d, key, nil); err == nil || !strings.Contains(err.Error(), "no promotion attestation found") {
		t.Fatalf("a signature bundle counted as an attestation: %v", err)
	}

	// The bundle form alone.
	if _, err := NewPromotion(d, predicate("platform"), key).Bundle(ctx, st); err != nil {
		t.Fatal(err)
	}
	v, err := VerifyDigest(ctx, st, d, key, map[string]string{"team": "platform"})
	if err != nil || len(v) != 1 || v[0].Format != sign.Bundle || v[0].Digest != d.DigestStr() || v[0].Predicate.Stamp.Annotations["team"] != "platform" {
		t.Fatalf("bundle form: %+v, %v", v, err)
	}
	if _, err := VerifyDigest(ctx, st, d, key, map[string]string{"team": "other"}); err == nil || !strings.Contains(err.Error(), "annotation team=other missing") {
		t.Errorf("a missing annotation: %v", err)
	}
	if _, err := VerifyDigest(ctx, st, d, fileKey(t), nil); err == nil || !strings.Contains(err.Error(), "signature does not verify") {
		t.Errorf("another key: %v", err)
	}
	// And the legacy form beside it: both found, legacy first.
	if _, err := NewPromotion(d, predicate("platform"), key).Legacy(ctx, st); err != nil {
		t.Fatal(err)
	}
	v, err = VerifyDigest(ctx, st, d, key, nil)
	if err != nil || len(v) != 2 || v[0].Format != sign.Legacy || v[1].Format != sign.Bundle {
		t.Fatalf("both forms: %+v, %v", v, err)
	}

	// A bundle whose payload was changed, its signature kept, is refused.
	st2, d2 := subjectBed(t, true)
	env, err := NewPromotion(d2, predicate("platform"), key).Envelope(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(env, &raw); err != nil {
		t.Fatal(err)
	}
	payload, _ := base64.StdEncoding.DecodeString(raw["payload"].(string))
	raw["payload"] = base64.StdEncoding.EncodeToString(bytes.Replace(payload, []byte(`"platform"`), []byte(`"mallory"`), 1))
	tampered, _ := json.Marshal(raw)
	pub, _ := key.PublicKey()
	b, err := bundle.FromDSSE(pub, tampered)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st2.bundles.Attach(ctx, d2, b, map[string]string{bundle.AnnotationPredicateType: PredicateType}); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyDigest(ctx, st2, d2, key, nil); err == nil || !strings.Contains(err.Error(), "signature does not verify") {
		t.Errorf("a tampered bundle: %v", err)
	}
}

func TestBundleConcurrentWriters(t *testing.T) {
	st, d := subjectBed(t, false)
	key := fileKey(t)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = NewPromotion(d, predicate(fmt.Sprint("team-", i)), key).Bundle(t.Context(), st)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	v, err := VerifyDigest(t.Context(), st, d, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	teams := map[string]bool{}
	for _, a := range v {
		teams[a.Predicate.Stamp.Annotations["team"]] = true
	}
	for i := range n {
		if !teams[fmt.Sprint("team-", i)] {
			t.Errorf("attestation %d lost: %v", i, teams)
		}
	}
}
