package stamp_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/stamp"
)

// rawImage is an image given as raw JSON, so the test controls every byte.
type rawImage struct{ manifest, config string }

func (r rawImage) RawConfigFile() ([]byte, error)      { return []byte(r.config), nil }
func (r rawImage) RawManifest() ([]byte, error)        { return []byte(r.manifest), nil }
func (r rawImage) MediaType() (types.MediaType, error) { return types.DockerManifestSchema2, nil }
func (r rawImage) LayerByDigest(v1.Hash) (partial.CompressedLayer, error) {
	return nil, errors.New("layers are never read")
}

func newRawImage(t testing.TB, config string) v1.Image {
	t.Helper()
	h, n, err := v1.SHA256(strings.NewReader(config))
	if err != nil {
		t.Fatal(err)
	}
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",`+
		`"config":{"mediaType":"application/vnd.docker.container.image.v1+json","size":%d,"digest":%q},`+
		`"layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":3,"digest":"sha256:%s"}],`+
		`"x-vendor":{"kept":true}}`, n, h, strings.Repeat("a", 64))
	img, err := partial.CompressedToImage(rawImage{manifest: manifest, config: config})
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func TestImageKeepsWhatItDoesNotModel(t *testing.T) {
	base := newRawImage(t, `{"architecture":"amd64","os":"linux","container_config":{"Hostname":"builder"},`+
		`"config":{"Labels":{"team":"upstream","existing":"keep"},"Env":["A=<b>"]},"rootfs":{"type":"layers","diff_ids":[]}}`)
	img, err := stamp.Image(base, stamp.Stamp{
		Annotations: map[string]string{"team": "foo"},
		Labels:      map[string]string{"team": "foo", "owner": "martin"},
	})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := img.RawConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		ContainerConfig map[string]any `json:"container_config"`
		Config          struct {
			Labels map[string]string
			Env    []string
		} `json:"config"`
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.ContainerConfig["Hostname"] != "builder" {
		t.Errorf("container_config lost: %s", raw)
	}
	if cfg.Config.Labels["team"] != "foo" || cfg.Config.Labels["owner"] != "martin" || cfg.Config.Labels["existing"] != "keep" {
		t.Errorf("labels %v", cfg.Config.Labels)
	}
	if !bytes.Contains(raw, []byte(`"A=<b>"`)) {
		t.Errorf("config was HTML-escaped: %s", raw)
	}
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	if m.Annotations["team"] != "foo" {
		t.Errorf("manifest annotations %v", m.Annotations)
	}
	cd, _ := img.ConfigName()
	if m.Config.Digest != cd {
		t.Errorf("manifest names config %s, config is %s", m.Config.Digest, cd)
	}
	rawManifest, _ := img.RawManifest()
	if !bytes.Contains(rawManifest, []byte(`"x-vendor":{"kept":true}`)) {
		t.Errorf("manifest lost a field it does not model: %s", rawManifest)
	}
	baseManifest, _ := base.Manifest()
	if m.Layers[0].Digest != baseManifest.Layers[0].Digest {
		t.Error("layer changed")
	}
}

func TestEmptyStampIsIdentity(t *testing.T) {
	base := newRawImage(t, `{"config":{}}`)
	img, err := stamp.Image(base, stamp.Stamp{})
	if err != nil {
		t.Fatal(err)
	}
	if img != base {
		t.Error("an empty stamp rewrote the image")
	}
}

func TestLabelsSkipNonImageConfigs(t *testing.T) {
	// An artifact (here: a config of another media type) gets annotations
	// but its config is left alone.
	config := `{"chart":"demo"}`
	h, n, _ := v1.SHA256(strings.NewReader(config))
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","size":%d,"digest":%q},"layers":[]}`, n, h)
	base, err := partial.CompressedToImage(rawImage{manifest: manifest, config: config})
	if err != nil {
		t.Fatal(err)
	}
	img, err := stamp.Image(base, stamp.Stamp{Annotations: map[string]string{"a": "1"}, Labels: map[string]string{"a": "1"}})
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := img.RawConfigFile()
	if string(raw) != config {
		t.Errorf("artifact config changed: %s", raw)
	}
	m, _ := img.Manifest()
	if m.Annotations["a"] != "1" {
		t.Errorf("annotations %v", m.Annotations)
	}
}

func TestIndexFollowsAttestationsToRenamedImages(t *testing.T) {
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	att, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	base := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: att, Descriptor: v1.Descriptor{
			Platform:    &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.digest": d.String(), "vnd.docker.reference.type": "attestation-manifest"},
		}},
	)
	idx, err := stamp.Index(base, stamp.Stamp{Annotations: map[string]string{"team": "foo"}})
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if im.Manifests[0].Digest == d {
		t.Fatal("the image was not restamped")
	}
	if got := im.Manifests[1].Annotations["vnd.docker.reference.digest"]; got != im.Manifests[0].Digest.String() {
		t.Errorf("attestation names %s, want the stamped image %s", got, im.Manifests[0].Digest)
	}
	if im.Manifests[1].Annotations["vnd.docker.reference.type"] != "attestation-manifest" {
		t.Errorf("other annotations lost: %v", im.Manifests[1].Annotations)
	}
}
