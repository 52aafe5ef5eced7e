package bundle

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/sigstore/pkg/signature"
	sigdsse "github.com/sigstore/sigstore/pkg/signature/dsse"
)

func newKey(t *testing.T) signature.SignerVerifier {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadSignerVerifier(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	return sv
}

func TestSignDSSEVerifies(t *testing.T) {
	key, other := newKey(t), newKey(t)
	b, err := SignDSSE(t.Context(), key, InTotoPayloadType, []byte(`{"hello":"world"}`))
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if raw["mediaType"] != MediaType {
		t.Errorf("mediaType %v", raw["mediaType"])
	}
	vm, _ := raw["verificationMaterial"].(map[string]any)
	pub, _ := key.PublicKey()
	hint, _ := Hint(pub)
	if pk, _ := vm["publicKey"].(map[string]any); pk["hint"] != hint || vm["tlogEntries"] != nil {
		t.Errorf("verification material %v, want the key's hint %s and no tlog entries", vm, hint)
	}
	pb, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	pt, p, err := VerifyDSSE(t.Context(), pb, key)
	if err != nil || pt != InTotoPayloadType || string(p) != `{"hello":"world"}` {
		t.Errorf("VerifyDSSE: %q %q %v", pt, p, err)
	}
	if _, _, err := VerifyDSSE(t.Context(), pb, other); err == nil {
		t.Error("another key verified the bundle")
	}
	pb.GetDsseEnvelope().Payload = []byte(`{"hello":"mallory"}`)
	if _, _, err := VerifyDSSE(t.Context(), pb, key); err == nil {
		t.Error("a tampered payload verified")
	}
	if _, err := Parse([]byte(strings.Replace(string(b), "v0.3", "v0.2", 1))); err == nil {
		t.Error("Parse accepted a v0.2 media type")
	}
}

// registry serves go-containerregistry's in-process registry, with or
// without the referrers API, and counts manifest PUTs.
func testRegistry(t *testing.T, referrers bool) (host string, puts *atomic.Int32) {
	t.Helper()
	puts = &atomic.Int32{}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(referrers))
	srv := httptest.NewServer(countPuts(reg, puts))
	t.Cleanup(srv.Close)
	return strings.TrimPrefix(srv.URL, "http://"), puts
}

func newStore(t *testing.T) *Store {
	t.Helper()
	puller, err := remote.NewPuller()
	if err != nil {
		t.Fatal(err)
	}
	pusher, err := remote.NewPusher()
	if err != nil {
		t.Fatal(err)
	}
	return NewStore(puller, pusher, WithClock(func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC) }))
}

func pushImage(t *testing.T, host string) name.Digest {
	t.Helper()
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(host + "/app:v1")
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	h, _ := img.Digest()
	return ref.Context().Digest(h.String())
}

func TestAttachFindEnsure(t *testing.T) {
	for _, referrers := range []bool{true, false} {
		t.Run(map[bool]string{true: "referrers API", false: "referrers tag"}[referrers], func(t *testing.T) {
			host, puts := testRegistry(t, referrers)
			subject := pushImage(t, host)
			st := newStore(t)
			key := newKey(t)
			ctx := t.Context()
			made := 0
			payload := []byte(`{"n":1}`)
			make := func(ctx context.Context) ([]byte, map[string]string, error) {
				made++
				b, err := SignDSSE(ctx, key, InTotoPayloadType, payload)
				return b, map[string]string{AnnotationPredicateType: "https://example.com/p"}, err
			}
			match := func(s Stored) bool {
				pb, err := Parse(s.JSON)
				if err != nil {
					return false
				}
				_, p, err := VerifyDSSE(ctx, pb, key)
				return err == nil && string(p) == string(payload)
			}
			added, err := st.Ensure(ctx, subject, match, make)
			if err != nil || !added || made != 1 {
				t.Fatalf("first Ensure: added %v, made %d, err %v", added, made, err)
			}
			found, err := st.Find(ctx, subject)
			if err != nil || len(found) != 1 {
				t.Fatalf("Find: %d bundles, %v", len(found), err)
			}
			ann := found[0].Annotations
			if ann[AnnotationContent] != ContentDSSE || ann[AnnotationPredicateType] != "https://example.com/p" || ann[AnnotationCreated] != "2026-01-02T03:04:05Z" {
				t.Errorf("annotations %v", ann)
			}
			// The manifest is laid out as cosign's BUNDLE_SPEC.md says.
			desc, err := remote.Get(found[0].Manifest)
			if err != nil {
				t.Fatal(err)
			}
			var m v1.Manifest
			if err := json.Unmarshal(desc.Manifest, &m); err != nil {
				t.Fatal(err)
			}
			if m.ArtifactType != MediaType || m.Config.MediaType != EmptyMediaType || m.Config.Size != 2 ||
				m.Config.Digest.String() != "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a" ||
				len(m.Layers) != 1 || m.Layers[0].MediaType != MediaType || m.Subject == nil || m.Subject.Digest.String() != subject.DigestStr() {
				t.Errorf("referrer manifest %s", desc.Manifest)
			}
			// The referrers tag exists exactly when the registry has no
			// referrers API, and lists the bundle with its annotations.
			fallback := subject.Context().Tag(strings.Replace(subject.DigestStr(), ":", "-", 1))
			idx, err := remote.Index(fallback)
			var terr *transport.Error
			switch {
			case referrers && err == nil:
				t.Error("a referrers tag was written although the registry has the referrers API")
			case referrers && !(asTransport(err, &terr) && terr.StatusCode == 404):
				t.Errorf("reading the referrers tag: %v", err)
			case !referrers && err != nil:
				t.Errorf("no referrers tag: %v", err)
			case !referrers:
				im, _ := idx.IndexManifest()
				if len(im.Manifests) != 1 || im.Manifests[0].ArtifactType != MediaType || im.Manifests[0].Annotations[AnnotationContent] != ContentDSSE {
					t.Errorf("referrers tag %+v", im)
				}
			}
			// A second Ensure finds it: nothing signed, nothing written.
			before := puts.Load()
			added, err = st.Ensure(ctx, subject, match, make)
			if err != nil || added || made != 1 || puts.Load() != before {
				t.Errorf("re-run: added %v, made %d, %d manifest PUTs, err %v", added, made, puts.Load()-before, err)
			}
		})
	}
}

func asTransport(err error, terr **transport.Error) bool {
	if err == nil {
		return false
	}
	e, ok := err.(*transport.Error)
	if ok {
		*terr = e
	}
	return ok
}

// countPuts counts the manifest PUTs h serves.
func countPuts(h http.Handler, n *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
			n.Add(1)
		}
		h.ServeHTTP(w, r)
	})
}

func TestFromDSSEKeepsTheSignedEnvelope(t *testing.T) {
	key := newKey(t)
	env, err := sigdsse.WrapSigner(key, InTotoPayloadType).SignMessage(strings.NewReader(`{"hello":"world"}`))
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := key.PublicKey()
	b, err := FromDSSE(pub, env)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	hint, _ := Hint(pub)
	if pb.GetVerificationMaterial().GetPublicKey().GetHint() != hint {
		t.Errorf("hint %q, want %q", pb.GetVerificationMaterial().GetPublicKey().GetHint(), hint)
	}
	if pt, p, err := VerifyDSSE(t.Context(), pb, key); err != nil || pt != InTotoPayloadType || string(p) != `{"hello":"world"}` {
		t.Errorf("VerifyDSSE: %q %q %v", pt, p, err)
	}
	if _, _, err := VerifyDSSE(t.Context(), pb, newKey(t)); err == nil {
		t.Error("another key verified the bundle")
	}
	for _, bad := range []string{`not json`, `{"payloadType":"x","payload":"e30=","signatures":[]}`, `{"payloadType":"","payload":"e30=","signatures":[{"sig":"AAAA"}]}`, `{"payloadType":"x","payload":"e30=","signatures":[{"sig":"!!"}]}`} {
		if _, err := FromDSSE(pub, []byte(bad)); err == nil {
			t.Errorf("FromDSSE accepted %s", bad)
		}
	}
}
