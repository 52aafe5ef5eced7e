package sign

import (
	"fmt"
	"maps"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	intoto "github.com/in-toto/attestation/go/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"
)

// SignPredicateType is the predicate type of the in-toto statement cosign
// v3 signs for `cosign sign` in the bundle format.
const SignPredicateType = "https://sigstore.dev/cosign/sign/v1"

// Statement returns the in-toto statement cosign v3 signs for an image in
// the bundle format: one subject, the digest, carrying the annotations (as
// cosign's -a), the predicate type SignPredicateType and an empty
// predicate. It is built from in-toto's own types and encoded with
// protojson, as cosign does.
func Statement(digest name.Digest, annotations map[string]string) ([]byte, error) {
	alg, hex, ok := strings.Cut(digest.DigestStr(), ":")
	if !ok {
		return nil, fmt.Errorf("invalid digest %q", digest.DigestStr())
	}
	fields := make(map[string]any, len(annotations))
	for k, v := range annotations {
		fields[k] = v
	}
	ann, err := structpb.NewStruct(fields)
	if err != nil {
		return nil, fmt.Errorf("annotations: %w", err)
	}
	st := &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		Subject:       []*intoto.ResourceDescriptor{{Digest: map[string]string{alg: hex}, Annotations: ann}},
		PredicateType: SignPredicateType,
		Predicate:     &structpb.Struct{},
	}
	return protojson.Marshal(st)
}

// CheckStatement checks the payload of a verified bundle: an in-toto
// statement of SignPredicateType whose subject names digest and carries
// every required annotation. It returns the subject's annotations, or why
// the statement does not pass.
func CheckStatement(p []byte, digest string, required map[string]string) (map[string]any, string) {
	var st intoto.Statement
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(p, &st); err != nil {
		return nil, "bundle payload is not an in-toto statement"
	}
	if st.GetPredicateType() != SignPredicateType {
		return nil, fmt.Sprintf("bundle predicate type %q", st.GetPredicateType())
	}
	alg, hex, _ := strings.Cut(digest, ":")
	for _, s := range st.GetSubject() {
		if s.GetDigest()[alg] != hex {
			continue
		}
		ann := s.GetAnnotations().AsMap()
		if missing := missingAnnotations(ann, required); missing != "" {
			return ann, "annotation " + missing + " missing or different"
		}
		return ann, ""
	}
	return nil, "bundle statement names another digest"
}

// sameAnnotations reports whether a statement's subject annotations are
// exactly want: the bundle that signing with want would make.
func sameAnnotations(have map[string]any, want map[string]string) bool {
	if len(have) != len(want) {
		return false
	}
	return maps.EqualFunc(have, want, func(h any, w string) bool { s, ok := h.(string); return ok && s == w })
}
