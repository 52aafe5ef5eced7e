package stamp_test

import (
	"fmt"

	"github.com/google/go-containerregistry/pkg/v1/random"

	"github.com/ocistow/ocistow/pkg/stamp"
)

// Stamp an image with a team annotation and label. Layers are untouched;
// the manifest and config get new digests.
func ExampleImage() {
	base, err := random.Image(1024, 1)
	if err != nil {
		panic(err)
	}
	img, err := stamp.Image(base, stamp.Stamp{
		Annotations: map[string]string{"org.example.team": "platform"},
		Labels:      map[string]string{"org.example.team": "platform"},
	})
	if err != nil {
		panic(err)
	}
	m, _ := img.Manifest()
	cf, _ := img.ConfigFile()
	baseLayers, _ := base.Layers()
	baseDigest, _ := baseLayers[0].Digest()
	fmt.Println(m.Annotations["org.example.team"], cf.Config.Labels["org.example.team"], m.Layers[0].Digest == baseDigest)
	// Output: platform platform true
}
