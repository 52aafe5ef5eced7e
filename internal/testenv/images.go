package testenv

import (
	"context"
	"fmt"
	"math/rand"
	rand2 "math/rand/v2"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageOptions describes a test image.
type ImageOptions struct {
	// Layers is the number of layers; each holds one file of LayerSize
	// random (incompressible) bytes, as a gzipped tar.
	Layers    int
	LayerSize int64
	// Platform is recorded in the config; linux/amd64 when empty.
	Platform v1.Platform
	// OCI selects OCI media types; Docker schema 2 otherwise.
	OCI bool
	// Labels go into the config.
	Labels map[string]string
	// Seed makes the content reproducible; images with different seeds
	// share no layers.
	Seed int64
}

// Image builds a runnable-shaped test image: real gzipped tar layers, a
// config whose diff_ids match them, and the requested media types.
func Image(o ImageOptions) (v1.Image, error) {
	layerType, manifestType, configType := types.DockerLayer, types.DockerManifestSchema2, types.DockerConfigJSON
	if o.OCI {
		layerType, manifestType, configType = types.OCILayer, types.OCIManifestSchema1, types.OCIConfigJSON
	}
	if o.Platform.OS == "" {
		o.Platform = v1.Platform{OS: "linux", Architecture: "amd64"}
	}
	src := rand.NewSource(o.Seed)
	img := mutate.MediaType(empty.Image, manifestType)
	img = mutate.ConfigMediaType(img, configType)
	for i := range o.Layers {
		l, err := random.Layer(o.LayerSize, layerType, random.WithSource(src))
		if err != nil {
			return nil, err
		}
		img, err = mutate.Append(img, mutate.Addendum{Layer: l, History: v1.History{CreatedBy: fmt.Sprintf("layer %d", i), Created: v1.Time{Time: time.Unix(0, 0)}}})
		if err != nil {
			return nil, err
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = o.Platform.OS, o.Platform.Architecture, o.Platform.Variant
	cf.Created = v1.Time{Time: time.Unix(0, 0)}
	cf.Config.Labels = o.Labels
	cf.Config.Cmd = []string{"/bin/sh"}
	return mutate.ConfigFile(img, cf)
}

// Index builds a multi-platform index of imgs, each listed with the platform
// in its config. docker selects the Docker manifest list media type.
func Index(docker bool, imgs ...v1.Image) (v1.ImageIndex, error) {
	mt := types.OCIImageIndex
	if docker {
		mt = types.DockerManifestList
	}
	idx := mutate.IndexMediaType(empty.Index, mt)
	for _, img := range imgs {
		cf, err := img.ConfigFile()
		if err != nil {
			return nil, err
		}
		imt, err := img.MediaType()
		if err != nil {
			return nil, err
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{MediaType: imt, Platform: cf.Platform()},
		})
	}
	return idx, nil
}

// MixedIndex builds the canonical multi-platform test index: a Docker
// manifest list holding a Docker schema 2 linux/amd64 image and an OCI
// linux/arm64/v8 image, each with two layers of layerSize bytes and a label
// "existing=keep" that stamping must preserve.
func MixedIndex(seed, layerSize int64) (v1.ImageIndex, error) {
	amd, err := Image(ImageOptions{Layers: 2, LayerSize: layerSize, Seed: seed, Labels: map[string]string{"existing": "keep", "team": "upstream"}})
	if err != nil {
		return nil, err
	}
	arm, err := Image(ImageOptions{Layers: 2, LayerSize: layerSize, Seed: seed + 1, OCI: true,
		Platform: v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}, Labels: map[string]string{"existing": "keep"}})
	if err != nil {
		return nil, err
	}
	return Index(true, amd, arm)
}

// Push writes an image or index to ref on a loopback registry, anonymously.
func Push(ctx context.Context, ref string, m any) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	switch m := m.(type) {
	case v1.ImageIndex:
		return remote.WriteIndex(r, m, remote.WithContext(ctx))
	case v1.Image:
		return remote.Write(r, m, remote.WithContext(ctx))
	default:
		return fmt.Errorf("cannot push %T", m)
	}
}

// BulkImage builds a large test image quickly: n layers of size random
// bytes each, stored as they are (not a real tar+gzip, which copying never
// looks into). For memory and throughput tests.
func BulkImage(n int, size int64, seed uint64) (v1.Image, error) {
	rng := rand2.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16), byte(seed >> 24)})
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for range n {
		b := make([]byte, size)
		_, _ = rng.Read(b)
		var err error
		if img, err = mutate.AppendLayers(img, static.NewLayer(b, types.OCILayer)); err != nil {
			return nil, err
		}
	}
	return img, nil
}
