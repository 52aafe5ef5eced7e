package attest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
)

// bed is an in-process registry and a Store on it.
type bed struct {
	host string
	st   *Store
}

func newBed(t *testing.T) *bed {
	t.Helper()
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	t.Cleanup(srv.Close)
	st, err := NewStore(registry.New(registry.WithKeychain(authn.NewMultiKeychain())))
	if err != nil {
		t.Fatal(err)
	}
	return &bed{host: strings.TrimPrefix(srv.URL, "http://"), st: st}
}

func (b *bed) digest(t *testing.T, c byte) name.Digest {
	t.Helper()
	d, err := name.NewDigest(b.host + "/app@sha256:" + strings.Repeat(string(c), 64))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// fileKey writes a new P-256 private key file and loads it.
func fileKey(t *testing.T) *keys.Key {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key.pem")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	k, err := keys.LoadSigner(t.Context(), path, keys.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func predicate(team string) Predicate {
	return Predicate{
		Source:      Image{Reference: "src.example/app:1", Digest: "sha256:" + strings.Repeat("1", 64)},
		Destination: Image{Reference: "dst.example/app:1", Digest: "sha256:" + strings.Repeat("2", 64)},
		Stamp:       Stamp{Annotations: map[string]string{"team": team}},
		Ocistow:     Program{Version: "test"},
		PromotedAt:  "2026-11-27T12:00:00Z",
	}
}

func TestStatementIsInTotoV1(t *testing.T) {
	d, err := name.NewDigest("registry.example/team/app@sha256:" + strings.Repeat("a", 64))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Statement(d, predicate("platform"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Type    string `json:"_type"`
		Subject []struct {
			Name   string            `json:"name"`
			Digest map[string]string `json:"digest"`
		} `json:"subject"`
		PredicateType string    `json:"predicateType"`
		Predicate     Predicate `json:"predicate"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if st.Type != "https://in-toto.io/Statement/v1" || st.PredicateType != PredicateType {
		t.Errorf("type %q, predicate type %q", st.Type, st.PredicateType)
	}
	if len(st.Subject) != 1 || st.Subject[0].Name != "registry.example/team/app" || st.Subject[0].Digest["sha256"] != strings.Repeat("a", 64) {
		t.Errorf("subject %+v", st.Subject)
	}
	if !st.Predicate.Same(predicate("platform")) || st.Predicate.PromotedAt != "2026-11-27T12:00:00Z" || st.Predicate.Ocistow.Version != "test" {
		t.Errorf("predicate %+v", st.Predicate)
	}
}

func TestSameIgnoresTimeAndVersionOnly(t *testing.T) {
	p := predicate("platform")
	q := p
	q.PromotedAt, q.Ocistow.Version = "2030-01-01T00:00:00Z", "v9"
	q.Stamp.Labels = map[string]string{} // empty is absent
	if !p.Same(q) {
		t.Error("time, version or an empty map made two records of one promotion differ")
	}
	for what, change := range map[string]func(*Predicate){
		"source digest":       func(r *Predicate) { r.Source.Digest = "sha256:" + strings.Repeat("9", 64) },
		"source reference":    func(r *Predicate) { r.Source.Reference = "src.example/app:2" },
		"destination":         func(r *Predicate) { r.Destination.Reference = "dst.example/app:2" },
		"annotation":          func(r *Predicate) { r.Stamp.Annotations = map[string]string{"team": "other"} },
		"manifest annotation": func(r *Predicate) { r.Stamp.ManifestAnnotations = map[string]string{"a": "b"} },
		"label":               func(r *Predicate) { r.Stamp.Labels = map[string]string{"a": "b"} },
		"platforms":           func(r *Predicate) { r.Platforms = []string{"linux/amd64"} },
	} {
		r := predicate("platform")
		change(&r)
		if p.Same(r) {
			t.Errorf("a different %s is the same promotion", what)
		}
	}
}

func TestDigestStoresAsCosignAndIsIdempotent(t *testing.T) {
	b := newBed(t)
	key := fileKey(t)
	d := b.digest(t, 'a')
	ctx := t.Context()
	p := predicate("platform")
	if s, err := Digest(ctx, b.st, d, p, key); err != nil || s != Added {
		t.Fatalf("first: %s, %v", s, err)
	}
	// The same promotion later, by another version: present.
	later := p
	later.PromotedAt, later.Ocistow.Version = "2026-12-01T00:00:00Z", "v2"
	if s, err := Digest(ctx, b.st, d, later, key); err != nil || s != Present {
		t.Fatalf("re-run: %s, %v", s, err)
	}
	desc, err := remote.Get(AttestationTag(d), remote.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	img, err := desc.Image()
	if err != nil {
		t.Fatal(err)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.Layers) != 1 {
		t.Fatalf("%d layers after a re-run, want 1", len(m.Layers))
	}
	l := m.Layers[0]
	if l.MediaType != "application/vnd.dsse.envelope.v1+json" || l.Annotations["predicateType"] != PredicateType {
		t.Errorf("layer %+v", l)
	}
	if v, ok := l.Annotations["dev.cosignproject.cosign/signature"]; !ok || v != "" {
		t.Errorf("cosign's empty signature annotation: %q, %v", v, ok)
	}
	if m.Config.MediaType != "application/vnd.oci.image.config.v1+json" || m.MediaType != "application/vnd.oci.image.manifest.v1+json" {
		t.Errorf("manifest %s, config %s", m.MediaType, m.Config.MediaType)
	}
	// Another stamp, and another key, each add one.
	if s, err := Digest(ctx, b.st, d, predicate("other"), key); err != nil || s != Added {
		t.Fatalf("other stamp: %s, %v", s, err)
	}
	if s, err := Digest(ctx, b.st, d, p, fileKey(t)); err != nil || s != Added {
		t.Fatalf("other key: %s, %v", s, err)
	}
	_, envs, err := b.st.read(ctx, AttestationTag(d))
	if err != nil || len(envs) != 3 {
		t.Fatalf("%d envelopes, %v; want 3", len(envs), err)
	}
}

func TestVerifyDigest(t *testing.T) {
	b := newBed(t)
	key := fileKey(t)
	ctx := t.Context()
	d := b.digest(t, 'a')
	p := predicate("platform")
	if _, err := Digest(ctx, b.st, d, p, key); err != nil {
		t.Fatal(err)
	}
	v, err := VerifyDigest(ctx, b.st, d, key, map[string]string{"team": "platform"})
	if err != nil || len(v) != 1 || !v[0].Predicate.Same(p) || v[0].Digest != d.DigestStr() || v[0].PredicateType != PredicateType {
		t.Fatalf("verify: %+v, %v", v, err)
	}

	refused := func(t *testing.T, d name.Digest, key *keys.Key, required map[string]string, want string) {
		t.Helper()
		_, err := VerifyDigest(ctx, b.st, d, key, required)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("err %v, want %q", err, want)
		}
	}
	refused(t, d, fileKey(t), nil, "signature does not verify with")
	refused(t, d, key, map[string]string{"team": "other"}, "annotation team=other missing or different")
	refused(t, b.digest(t, 'b'), key, nil, "no promotion attestation found")

	// The envelope of d stored for another digest: it verifies, but
	// names d.
	_, envs, err := b.st.read(ctx, AttestationTag(d))
	if err != nil {
		t.Fatal(err)
	}
	other := b.digest(t, 'c')
	if err := b.st.write(ctx, AttestationTag(other), nil, envs[0]); err != nil {
		t.Fatal(err)
	}
	refused(t, other, key, nil, "attestation names another subject, "+d.DigestStr())

	// A tampered payload: the team changed, the signature kept.
	var env map[string]any
	if err := json.Unmarshal(envs[0], &env); err != nil {
		t.Fatal(err)
	}
	payload, err := base64.StdEncoding.DecodeString(env["payload"].(string))
	if err != nil {
		t.Fatal(err)
	}
	env["payload"] = base64.StdEncoding.EncodeToString([]byte(strings.Replace(string(payload), `"platform"`, `"intruder"`, 1)))
	tampered, err := json.Marshal(env)
	if err != nil {
		t.Fatal(err)
	}
	td := b.digest(t, 'd')
	if err := b.st.write(ctx, AttestationTag(td), nil, tampered); err != nil {
		t.Fatal(err)
	}
	refused(t, td, key, nil, "signature does not verify with")
}

// Another attestation in the tag (an upstream's, of another predicate
// type) is kept beside ours, and passed over by verification.
func TestForeignAttestationsAreKept(t *testing.T) {
	b := newBed(t)
	key := fileKey(t)
	ctx := t.Context()
	d := b.digest(t, 'a')
	stmt := `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":"` + strings.Repeat("a", 64) + `"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{}}`
	foreign, err := Envelope(ctx, fileKey(t), []byte(stmt))
	if err != nil {
		t.Fatal(err)
	}
	if err := b.st.write(ctx, AttestationTag(d), nil, foreign); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyDigest(ctx, b.st, d, key, nil); err == nil || !strings.Contains(err.Error(), "no promotion attestation found") {
		t.Errorf("an SLSA attestation alone: %v", err)
	}
	if s, err := Digest(ctx, b.st, d, predicate("platform"), key); err != nil || s != Added {
		t.Fatalf("%s, %v", s, err)
	}
	envs := mustRead(t, b, d)
	if len(envs) != 2 || string(envs[0]) != string(foreign) {
		t.Errorf("%d envelopes, the first kept: %v", len(envs), len(envs) > 0 && string(envs[0]) == string(foreign))
	}
	if v, err := VerifyDigest(ctx, b.st, d, key, nil); err != nil || len(v) != 1 {
		t.Errorf("verify beside an SLSA attestation: %d, %v", len(v), err)
	}
}

// Concurrent attesters of one digest, each with its own promotion, all end
// up in the tag.
func TestDigestConcurrentWriters(t *testing.T) {
	b := newBed(t)
	key := fileKey(t)
	d := b.digest(t, 'a')
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = Digest(t.Context(), b.st, d, predicate(fmt.Sprint("team-", i)), key)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("writer %d: %v", i, err)
		}
	}
	for i := range n {
		if !has(mustRead(t, b, d), d, predicate(fmt.Sprint("team-", i)), key) {
			t.Errorf("attestation %d lost", i)
		}
	}
}

func mustRead(t *testing.T, b *bed, d name.Digest) [][]byte {
	t.Helper()
	_, envs, err := b.st.read(t.Context(), AttestationTag(d))
	if err != nil {
		t.Fatal(err)
	}
	return envs
}
