package attest

import (
	"context"
	"errors"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ocistow/ocistow/pkg/digesttag"
	"github.com/ocistow/ocistow/pkg/keys"
)

// Status says what attesting one digest did.
type Status string

const (
	// Added: a new attestation was written.
	Added Status = "added"
	// Present: an attestation of the same promotion (Predicate.Same) by
	// the same key was already there; nothing was written.
	Present Status = "present"
)

// Digest attests the promotion p of digest with key and stores the
// attestation in cosign's .att tag, through st: Promotion.Legacy for one
// format.
func Digest(ctx context.Context, st *Store, digest name.Digest, p Predicate, key *keys.Key) (Status, error) {
	return NewPromotion(digest, p, key).Legacy(ctx, st)
}

// Promotion is the attestation of one promoted digest, to be stored in one
// format or more: its envelope is signed the first time a format lacks it
// and shared by every format after, so that storing the legacy and the
// bundle form costs one signature (one KMS call). Its methods are safe for
// concurrent use.
type Promotion struct {
	digest    name.Digest
	predicate Predicate
	key       *keys.Key

	mu       sync.Mutex
	envelope []byte
}

// NewPromotion returns the attestation of the promotion p of digest,
// signed with key when a format needs it.
func NewPromotion(digest name.Digest, p Predicate, key *keys.Key) *Promotion {
	return &Promotion{digest: digest, predicate: p, key: key}
}

// Envelope returns the signed DSSE envelope of the promotion's statement,
// signing it the first time: an ECDSA signature differs each time, so it
// is made once and stored (and rewritten) as it is.
func (pr *Promotion) Envelope(ctx context.Context) ([]byte, error) {
	pr.mu.Lock()
	defer pr.mu.Unlock()
	if pr.envelope != nil {
		return pr.envelope, nil
	}
	stmt, err := Statement(pr.digest, pr.predicate)
	if err != nil {
		return nil, err
	}
	env, err := Envelope(ctx, pr.key, stmt)
	if err != nil {
		return nil, err
	}
	pr.envelope = env
	return env, nil
}

// Legacy stores the attestation in cosign's .att tag, as cosign v2's
// `attest --key` does. It is idempotent: when the tag already holds an
// attestation of the same promotion (Predicate.Same: the time and
// ocistow's version aside) that verifies with the key and names the
// digest, nothing is written, and finding it costs no call to the key
// (KMS).
//
// The .att tag is a read-modify-write of one manifest, which registries
// cannot do atomically; as pkg/sign does for .sig tags, Legacy reads the
// tag back after writing and again after a pause long enough for a
// concurrent writer to have finished, and rewrites its attestation, up to
// a bound, until it stays.
func (pr *Promotion) Legacy(ctx context.Context, st *Store) (Status, error) {
	digest, p, key := pr.digest, pr.predicate, pr.key
	if key == nil || key.Signer == nil {
		return "", errors.New("the key cannot sign")
	}
	found := func(layers []digesttag.Layer) bool { return has(envelopesOf(layers), digest, p, key) }
	envelope := func(ctx context.Context) (digesttag.Layer, error) {
		env, err := pr.Envelope(ctx)
		return envelopeLayer(env), err
	}
	added, err := Attestations().Ensure(ctx, st.rc, st.puller, st.pusher, AttestationTag(digest), found, envelope)
	switch {
	case err != nil:
		return "", err
	case added:
		return Added, nil
	}
	return Present, nil
}

// has reports whether envs holds an attestation of the promotion p of
// digest that key verifies. It checks with the key's public half and never
// asks a KMS key to sign.
func has(envs [][]byte, digest name.Digest, p Predicate, key *keys.Key) bool {
	for _, e := range envs {
		if peekPredicateType(e) != PredicateType {
			continue
		}
		a, err := Open(e, key)
		if err == nil && a.Names(digest.DigestStr()) && a.Predicate.Same(p) {
			return true
		}
	}
	return false
}
