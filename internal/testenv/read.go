package testenv

import (
	"bytes"
	"context"
	"encoding/json"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// Get reads the manifest or index at ref, anonymously unless opts say
// otherwise: what the tests read back from a registry to check it.
func Get(ctx context.Context, ref string, opts ...remote.Option) (*remote.Descriptor, error) {
	r, err := name.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	return remote.Get(r, append([]remote.Option{remote.WithContext(ctx)}, opts...)...)
}

// Annotations returns the annotations of the manifest or index d.
func Annotations(d *remote.Descriptor) (map[string]string, error) {
	var m struct {
		Annotations map[string]string `json:"annotations"`
	}
	err := json.NewDecoder(bytes.NewReader(d.Manifest)).Decode(&m)
	return m.Annotations, err
}
