package promote

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"maps"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ocistow/ocistow/pkg/stamp"
)

// The annotations with which ocistow records, on what it writes, where it
// came from. They are set on the top-level manifest or index whenever the
// promotion rewrites it (stamping or platform selection), so that a later
// promotion of the same source can tell from a HEAD of the source and a
// read of the destination that nothing changed. Annotations the source
// carries (org.opencontainers.image.base.* and the like) are never
// overwritten by these.
const (
	// AnnotationSourceDigest is the digest of the source manifest or index
	// the destination was made from. On the child descriptors of a stamped
	// index it names each child's source digest.
	AnnotationSourceDigest = "dev.ocistow.source.digest"
	// AnnotationSourceReference is the source reference as it was given
	// (busybox:1.36 stays busybox:1.36). The up-to-date check compares it
	// by what it names, so another spelling of the same reference
	// (docker.io/library/busybox:1.36) finds the destination up to date;
	// recording it as given keeps every digest stamped before the same.
	AnnotationSourceReference = "dev.ocistow.source.reference"
	// AnnotationStamp is a digest of what the promotion added and kept
	// (annotations, labels, platforms): another stamp promotes again.
	AnnotationStamp = "dev.ocistow.stamp"
)

// rewrites reports whether req makes the destination differ from the
// source, so that its digest cannot be compared with the source's.
func rewrites(req Request) bool {
	return !req.Stamp.Empty() || len(req.Platforms) > 0
}

// provenance returns the annotations that record req's source at sourceDigest.
func provenance(req Request, sourceDigest string) map[string]string {
	return map[string]string{
		AnnotationSourceDigest:    sourceDigest,
		AnnotationSourceReference: req.Source.String(),
		AnnotationStamp:           stampDigest(req),
	}
}

// stampDigest is a digest of the canonical form of what req adds and keeps.
func stampDigest(req Request) string {
	platforms := make([]string, len(req.Platforms))
	for i := range req.Platforms {
		platforms[i] = FormatPlatform(&req.Platforms[i])
	}
	slices.Sort(platforms)
	b, _ := json.Marshal(struct { // maps marshal with sorted keys
		Annotations map[string]string `json:"annotations"`
		Labels      map[string]string `json:"labels"`
		Platforms   []string          `json:"platforms"`
	}{req.Stamp.Annotations, req.Stamp.Labels, slices.Compact(platforms)})
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// sameProvenance reports whether annotations record what provenance(req,
// sourceDigest) would: the source digest and the stamp exactly, and the
// source reference by what it names (name.Reference.Name), not how it was
// spelled: busybox:1.36 and index.docker.io/library/busybox:1.36, or
// host/app and host/app:latest, are one source.
func sameProvenance(annotations map[string]string, req Request, sourceDigest string) bool {
	want := provenance(req, sourceDigest)
	recorded, ok := annotations[AnnotationSourceReference]
	delete(want, AnnotationSourceReference)
	if !ok || !matches(annotations, want) {
		return false
	}
	if recorded == req.Source.String() {
		return true
	}
	r, err := name.ParseReference(recorded)
	return err == nil && r.Name() == req.Source.Name()
}

// matches reports whether annotations record exactly want.
func matches(annotations, want map[string]string) bool {
	for k, v := range want {
		if annotations[k] != v {
			return false
		}
	}
	return true
}

// withProvenance returns req's stamp with the provenance annotations added
// to the top-level manifest and each rewritten child's source digest to
// its descriptor.
func withProvenance(req Request, sourceDigest v1.Hash) stamp.Stamp {
	s := req.Stamp
	s.TopAnnotations = maps.Clone(s.TopAnnotations)
	if s.TopAnnotations == nil {
		s.TopAnnotations = map[string]string{}
	}
	maps.Copy(s.TopAnnotations, provenance(req, sourceDigest.String()))
	s.ChildSourceAnnotation = AnnotationSourceDigest
	return s
}
