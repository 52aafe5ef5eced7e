package attest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	intoto "github.com/in-toto/attestation/go/v1"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/ocistow/ocistow/pkg/keys"
)

// PayloadType is the DSSE payload type of an in-toto statement.
const PayloadType = "application/vnd.in-toto+json"

// Statement returns the in-toto v1 statement, as JSON, whose subject is
// digest (named by its repository, as cosign names it) and whose predicate
// is p. It is built with the in-toto attestation framework's Go bindings
// and checked with their Validate.
func Statement(digest name.Digest, p Predicate) ([]byte, error) {
	h, err := v1.NewHash(digest.DigestStr())
	if err != nil {
		return nil, fmt.Errorf("subject %s: %w", digest, err)
	}
	pj, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	pred := &structpb.Struct{}
	if err := protojson.Unmarshal(pj, pred); err != nil {
		return nil, fmt.Errorf("predicate: %w", err)
	}
	st := &intoto.Statement{
		Type:          intoto.StatementTypeUri,
		Subject:       []*intoto.ResourceDescriptor{{Name: digest.Context().Name(), Digest: map[string]string{h.Algorithm: h.Hex}}},
		PredicateType: PredicateType,
		Predicate:     pred,
	}
	if err := st.Validate(); err != nil {
		return nil, fmt.Errorf("in-toto statement: %w", err)
	}
	return protojson.Marshal(st)
}

// Envelope signs statement with key as a DSSE envelope (payload type
// PayloadType, signature over DSSE's pre-authentication encoding) and
// returns the envelope's JSON: what cosign's legacy .att layer holds, and
// what a Sigstore bundle's dsseEnvelope is. It uses sigstore's DSSE
// wrapper, the one cosign signs attestations with, so KMS keys sign as
// cosign signs with them.
func Envelope(ctx context.Context, key *keys.Key, statement []byte) ([]byte, error) {
	if key == nil || key.Signer == nil {
		return nil, errors.New("the key cannot sign")
	}
	env, err := dsse.WrapSigner(key.Signer, PayloadType).SignMessage(bytes.NewReader(statement), options.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("signing with %s: %s", key.Ref, keys.DescribeAWSError(err))
	}
	return env, nil
}

// Attestation is an envelope opened with a key: its statement's subject
// digests, predicate type and predicate.
type Attestation struct {
	// Subjects are the statement's subject digests (algorithm:hex).
	Subjects      []string
	PredicateType string
	Predicate     Predicate
}

// Reasons an envelope is refused, as Open reports them.
var (
	// ErrSignature: the envelope's signature does not verify with the key
	// (another key, or a changed payload or signature).
	ErrSignature = errors.New("signature does not verify")
	// ErrNotStatement: the verified payload is not an in-toto statement
	// with a predicate of this type.
	ErrNotStatement = errors.New("not a promotion statement")
)

// Open verifies envelope with key and returns what its statement says. It
// checks the payload type, the signature over the pre-authentication
// encoding, and that the payload is an in-toto statement (v1, or v0.1 as
// cosign v2 writes them) with a promotion predicate; the caller checks the
// subject and the predicate.
func Open(envelope []byte, key *keys.Key) (*Attestation, error) {
	var payload []byte
	v := dsse.WrapVerifier(key, dsse.WithExpectedPayloadType(PayloadType), dsse.WithDecodedPayload(&payload))
	if err := v.VerifySignature(bytes.NewReader(envelope), nil); err != nil {
		return nil, fmt.Errorf("%w with %s", ErrSignature, key.Ref)
	}
	return parseStatement(payload)
}

// statementJSON is the part of an in-toto statement (v1 or v0.1) Open
// reads.
type statementJSON struct {
	Type    string `json:"_type"`
	Subject []struct {
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
	PredicateType string          `json:"predicateType"`
	Predicate     json.RawMessage `json:"predicate"`
}

func parseStatement(payload []byte) (*Attestation, error) {
	var st statementJSON
	if err := json.Unmarshal(payload, &st); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotStatement, err)
	}
	if !slices.Contains([]string{intoto.StatementTypeUri, "https://in-toto.io/Statement/v0.1"}, st.Type) {
		return nil, fmt.Errorf("%w: statement type %q", ErrNotStatement, st.Type)
	}
	a := &Attestation{PredicateType: st.PredicateType}
	for _, s := range st.Subject {
		for alg, hex := range s.Digest {
			a.Subjects = append(a.Subjects, alg+":"+hex)
		}
	}
	slices.Sort(a.Subjects)
	if st.PredicateType != PredicateType {
		return a, fmt.Errorf("%w: predicate type %q", ErrNotStatement, st.PredicateType)
	}
	dec := json.NewDecoder(bytes.NewReader(st.Predicate))
	if err := dec.Decode(&a.Predicate); err != nil {
		return a, fmt.Errorf("%w: predicate: %v", ErrNotStatement, err)
	}
	return a, nil
}

// Names reports whether a's subjects include digest.
func (a *Attestation) Names(digest string) bool { return slices.Contains(a.Subjects, digest) }

// peekPredicateType returns the predicate type an envelope's payload
// claims, without verifying anything: to tell other attestations in the
// same tag (an upstream's SLSA provenance, an SBOM) from promotion ones.
func peekPredicateType(envelope []byte) string {
	var env struct {
		Payload []byte `json:"payload"` // base64, which encoding/json decodes
	}
	if json.Unmarshal(envelope, &env) != nil {
		return ""
	}
	var st struct {
		PredicateType string `json:"predicateType"`
	}
	if json.Unmarshal(env.Payload, &st) != nil {
		return ""
	}
	return st.PredicateType
}
