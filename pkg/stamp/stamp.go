// Package stamp adds an organisation's metadata to images and indexes: OCI
// annotations on manifests and indexes, and labels in image configs.
//
// Unlike go-containerregistry's mutate package, stamp edits the raw JSON of
// manifests and configs, so that fields the library's structs do not model
// (for example container_config in older Docker configs) survive untouched.
// Layers are never read, touched or recompressed; the results keep pointing
// at the base's layers, so a promotion can still mount or stream them.
package stamp

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Stamp says what to add. Keys present in the base are overwritten.
//
// Stamping is deterministic: the same base and the same Stamp always give
// the same bytes, so the same digests.
type Stamp struct {
	// Annotations are set on every manifest and index.
	Annotations map[string]string
	// Labels are set in the config of every image whose config is a Docker
	// or OCI image config. Artifacts with other configs get annotations only.
	Labels map[string]string
	// TopAnnotations are set on the manifest or index stamped, not on the
	// children of an index; they win over Annotations.
	TopAnnotations map[string]string
	// ChildSourceAnnotation, when not empty, is the annotation key under
	// which an index records, on the descriptor of each child it rewrote,
	// the digest that child had before.
	ChildSourceAnnotation string
}

// Empty reports whether s adds nothing, in which case Image and Index
// return their input unchanged.
func (s Stamp) Empty() bool {
	return len(s.Annotations) == 0 && len(s.Labels) == 0 && len(s.TopAnnotations) == 0
}

// children is the stamp applied to the children of an index.
func (s Stamp) children() Stamp {
	return Stamp{Annotations: s.Annotations, Labels: s.Labels, ChildSourceAnnotation: s.ChildSourceAnnotation}
}

// top is what is set on the manifest or index itself.
func (s Stamp) top() map[string]string {
	if len(s.TopAnnotations) == 0 {
		return s.Annotations
	}
	out := maps.Clone(s.Annotations)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, s.TopAnnotations)
	return out
}

// Image returns base with s applied.
func Image(base v1.Image, s Stamp) (v1.Image, error) {
	if s.Empty() {
		return base, nil
	}
	rawManifest, err := base.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("reading manifest: %w", err)
	}
	m, err := decodeObject(rawManifest)
	if err != nil {
		return nil, fmt.Errorf("parsing manifest: %w", err)
	}
	if err := mergeStringMap(m, "annotations", s.top()); err != nil {
		return nil, fmt.Errorf("manifest annotations: %w", err)
	}

	img := &image{base: base}
	if len(s.Labels) > 0 {
		mf, err := base.Manifest()
		if err != nil {
			return nil, fmt.Errorf("parsing manifest: %w", err)
		}
		if isImageConfig(mf.Config.MediaType) {
			rawConfig, err := base.RawConfigFile()
			if err != nil {
				return nil, fmt.Errorf("reading config: %w", err)
			}
			cfg, err := decodeObject(rawConfig)
			if err != nil {
				return nil, fmt.Errorf("parsing config: %w", err)
			}
			inner := map[string]json.RawMessage{}
			if b, ok := cfg["config"]; ok && !isNull(b) {
				if inner, err = decodeObject(b); err != nil {
					return nil, fmt.Errorf("parsing config.config: %w", err)
				}
			}
			if err := mergeStringMap(inner, "Labels", s.Labels); err != nil {
				return nil, fmt.Errorf("config labels: %w", err)
			}
			if cfg["config"], err = encodeObject(inner); err != nil {
				return nil, err
			}
			if img.rawConfig, err = encodeObject(cfg); err != nil {
				return nil, err
			}
			desc := mf.Config
			desc.Digest, desc.Size, err = v1.SHA256(bytes.NewReader(img.rawConfig))
			if err != nil {
				return nil, err
			}
			img.configDesc = desc
			if err := replaceDescriptor(m, "config", desc); err != nil {
				return nil, err
			}
		}
	}
	if img.rawManifest, err = encodeObject(m); err != nil {
		return nil, err
	}
	return img, nil
}

// Index returns base with s applied to the index and, recursively, to every
// image and index it lists; the descriptors are updated to the new digests.
// Children of other media types are kept as they are.
func Index(base v1.ImageIndex, s Stamp) (v1.ImageIndex, error) {
	if s.Empty() {
		return base, nil
	}
	raw, err := base.RawManifest()
	if err != nil {
		return nil, fmt.Errorf("reading index: %w", err)
	}
	m, err := decodeObject(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing index: %w", err)
	}
	im, err := base.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("parsing index: %w", err)
	}
	var rawDescs []json.RawMessage
	if err := json.Unmarshal(m["manifests"], &rawDescs); err != nil || len(rawDescs) != len(im.Manifests) {
		return nil, fmt.Errorf("parsing index manifests: %v", err)
	}

	idx := &index{base: base, children: map[v1.Hash]partial.Describable{}}
	renamed := map[string]string{} // old child digest -> new
	cs := s.children()
	for i, d := range im.Manifests {
		if cs.Empty() {
			break // only the index itself changes
		}
		var child partial.Describable
		switch {
		case d.MediaType.IsImage():
			ci, err := base.Image(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("child %s: %w", d.Digest, err)
			}
			if child, err = Image(ci, cs); err != nil {
				return nil, fmt.Errorf("child %s: %w", d.Digest, err)
			}
		case d.MediaType.IsIndex():
			ci, err := base.ImageIndex(d.Digest)
			if err != nil {
				return nil, fmt.Errorf("child %s: %w", d.Digest, err)
			}
			if child, err = Index(ci, cs); err != nil {
				return nil, fmt.Errorf("child %s: %w", d.Digest, err)
			}
		default:
			continue
		}
		nd := d
		if nd.Digest, err = child.Digest(); err != nil {
			return nil, err
		}
		if nd.Size, err = child.Size(); err != nil {
			return nil, err
		}
		idx.children[nd.Digest] = child
		renamed[d.Digest.String()] = nd.Digest.String()
		dm, err := decodeObject(rawDescs[i])
		if err != nil {
			return nil, fmt.Errorf("parsing index manifests: %w", err)
		}
		if err := setDescriptorFields(dm, nd); err != nil {
			return nil, err
		}
		if s.ChildSourceAnnotation != "" {
			if err := mergeStringMap(dm, "annotations", map[string]string{s.ChildSourceAnnotation: d.Digest.String()}); err != nil {
				return nil, fmt.Errorf("index manifests: %w", err)
			}
		}
		if rawDescs[i], err = encodeObject(dm); err != nil {
			return nil, err
		}
	}
	// Build attestations (buildx) name the image they describe by digest in
	// an annotation; stamping renamed those images, so follow the renaming.
	for i, d := range im.Manifests {
		old, ok := d.Annotations[referenceDigestAnnotation]
		if !ok || renamed[old] == "" {
			continue
		}
		dm, err := decodeObject(rawDescs[i])
		if err != nil {
			return nil, fmt.Errorf("parsing index manifests: %w", err)
		}
		anns := map[string]json.RawMessage{}
		if err := json.Unmarshal(dm["annotations"], &anns); err != nil {
			return nil, fmt.Errorf("parsing index manifests: %w", err)
		}
		if anns[referenceDigestAnnotation], err = json.Marshal(renamed[old]); err != nil {
			return nil, err
		}
		if dm["annotations"], err = encodeObject(anns); err != nil {
			return nil, err
		}
		if rawDescs[i], err = encodeObject(dm); err != nil {
			return nil, err
		}
	}
	if m["manifests"], err = json.Marshal(rawDescs); err != nil {
		return nil, err
	}
	if err := mergeStringMap(m, "annotations", s.top()); err != nil {
		return nil, fmt.Errorf("index annotations: %w", err)
	}
	if idx.raw, err = encodeObject(m); err != nil {
		return nil, err
	}
	return idx, nil
}

// referenceDigestAnnotation is how a buildx attestation manifest names the
// image it describes.
const referenceDigestAnnotation = "vnd.docker.reference.digest"

func isImageConfig(mt types.MediaType) bool {
	return mt == types.DockerConfigJSON || mt == types.OCIConfigJSON
}

func isNull(b json.RawMessage) bool { return string(bytes.TrimSpace(b)) == "null" }

func decodeObject(b []byte) (map[string]json.RawMessage, error) {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	return m, nil
}

// encodeObject marshals m with sorted keys and without HTML escaping, the
// way registries and other tools expect to see manifests.
func encodeObject(m map[string]json.RawMessage) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range slices.Sorted(maps.Keys(m)) {
		if i > 0 {
			buf.WriteByte(',')
		}
		kb, err := marshalNoEscape(k)
		if err != nil {
			return nil, err
		}
		buf.Write(kb)
		buf.WriteByte(':')
		if err := json.Compact(&buf, m[k]); err != nil {
			return nil, err
		}
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

func marshalNoEscape(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(buf.Bytes(), "\n"), nil
}

// mergeStringMap sets add's entries in the string map at m[key], creating it
// when absent or null.
func mergeStringMap(m map[string]json.RawMessage, key string, add map[string]string) error {
	if len(add) == 0 {
		return nil
	}
	cur := map[string]string{}
	if b, ok := m[key]; ok && !isNull(b) {
		if err := json.Unmarshal(b, &cur); err != nil {
			return err
		}
		if cur == nil {
			cur = map[string]string{}
		}
	}
	maps.Copy(cur, add)
	b, err := marshalNoEscape(cur)
	if err != nil {
		return err
	}
	m[key] = b
	return nil
}

// replaceDescriptor updates digest and size of the descriptor at m[key].
func replaceDescriptor(m map[string]json.RawMessage, key string, d v1.Descriptor) error {
	dm, err := decodeObject(m[key])
	if err != nil {
		return fmt.Errorf("parsing %s descriptor: %w", key, err)
	}
	if err := setDescriptorFields(dm, d); err != nil {
		return err
	}
	m[key], err = encodeObject(dm)
	return err
}

func setDescriptorFields(dm map[string]json.RawMessage, d v1.Descriptor) error {
	var err error
	if dm["digest"], err = json.Marshal(d.Digest.String()); err != nil {
		return err
	}
	dm["size"], err = json.Marshal(d.Size)
	return err
}

// image is a v1.Image whose manifest (and possibly config) were rewritten;
// its layers are the base's.
type image struct {
	base        v1.Image
	rawManifest []byte
	rawConfig   []byte // nil when the config is the base's
	configDesc  v1.Descriptor
}

var _ v1.Image = (*image)(nil)

func (i *image) Layers() ([]v1.Layer, error)               { return i.base.Layers() }
func (i *image) MediaType() (types.MediaType, error)       { return i.base.MediaType() }
func (i *image) Size() (int64, error)                      { return int64(len(i.rawManifest)), nil }
func (i *image) RawManifest() ([]byte, error)              { return i.rawManifest, nil }
func (i *image) Digest() (v1.Hash, error)                  { return partial.Digest(i) }
func (i *image) Manifest() (*v1.Manifest, error)           { return partial.Manifest(i) }
func (i *image) ConfigFile() (*v1.ConfigFile, error)       { return partial.ConfigFile(i) }
func (i *image) LayerByDiffID(h v1.Hash) (v1.Layer, error) { return i.base.LayerByDiffID(h) }

func (i *image) ConfigName() (v1.Hash, error) {
	if i.rawConfig == nil {
		return i.base.ConfigName()
	}
	return i.configDesc.Digest, nil
}

func (i *image) RawConfigFile() ([]byte, error) {
	if i.rawConfig == nil {
		return i.base.RawConfigFile()
	}
	return i.rawConfig, nil
}

// ConfigLayer returns the config as a blob. When the config is the base's,
// the base's own config layer is returned, so that it can still be mounted.
func (i *image) ConfigLayer() (v1.Layer, error) {
	if i.rawConfig == nil {
		return partial.ConfigLayer(i.base)
	}
	return static.NewLayer(i.rawConfig, i.configDesc.MediaType), nil
}

func (i *image) LayerByDigest(h v1.Hash) (v1.Layer, error) {
	if i.rawConfig != nil && h == i.configDesc.Digest {
		return i.ConfigLayer()
	}
	return i.base.LayerByDigest(h)
}

// index is a v1.ImageIndex whose manifest was rewritten; children that were
// rewritten are served from children, others from the base.
type index struct {
	base     v1.ImageIndex
	raw      []byte
	children map[v1.Hash]partial.Describable
}

var _ v1.ImageIndex = (*index)(nil)

func (x *index) MediaType() (types.MediaType, error) { return x.base.MediaType() }
func (x *index) Size() (int64, error)                { return int64(len(x.raw)), nil }
func (x *index) RawManifest() ([]byte, error)        { return x.raw, nil }
func (x *index) Digest() (v1.Hash, error)            { return partial.Digest(x) }
func (x *index) IndexManifest() (*v1.IndexManifest, error) {
	return v1.ParseIndexManifest(bytes.NewReader(x.raw))
}

func (x *index) Image(h v1.Hash) (v1.Image, error) {
	if c, ok := x.children[h].(v1.Image); ok {
		return c, nil
	}
	return x.base.Image(h)
}

func (x *index) ImageIndex(h v1.Hash) (v1.ImageIndex, error) {
	if c, ok := x.children[h].(v1.ImageIndex); ok {
		return c, nil
	}
	return x.base.ImageIndex(h)
}

// Layer serves children that are neither images nor indexes, as
// go-containerregistry's remote index does.
func (x *index) Layer(h v1.Hash) (v1.Layer, error) {
	if wl, ok := x.base.(interface {
		Layer(v1.Hash) (v1.Layer, error)
	}); ok {
		return wl.Layer(h)
	}
	return nil, fmt.Errorf("no child %s", h)
}
