package attest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
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

// maxAttempts bounds the read-modify-write retries of one .att tag.
const maxAttempts = 10

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
	tag := AttestationTag(digest)
	status := Present
	for attempt := range maxAttempts {
		if attempt > 0 {
			if err := registry.Sleep(ctx, backoff(attempt)); err != nil {
				return "", err
			}
		}
		start := time.Now()
		base, existing, err := st.read(ctx, tag)
		if err != nil {
			return "", fmt.Errorf("reading attestations %s: %s", tag, registry.Describe(err))
		}
		if found := has(existing, digest, p, key); found && status == Present {
			return Present, nil
		} else if !found {
			envelope, err := pr.Envelope(ctx)
			if err != nil {
				return "", err
			}
			if err := st.write(ctx, tag, base, envelope); err != nil {
				return "", tagWriteError(tag, err)
			}
			status = Added
		}
		ok, err := confirm(ctx, st, tag, digest, p, key, max(20*time.Millisecond, 3*time.Since(start)))
		if err != nil {
			return "", err
		}
		if ok {
			return status, nil
		}
	}
	return "", fmt.Errorf("attestation of %s kept disappearing from %s after %d attempts: too many concurrent writers", digest.DigestStr(), tag, maxAttempts)
}

// confirm reports whether an attestation of p is in the tag now and still
// after pause.
func confirm(ctx context.Context, st *Store, tag name.Tag, digest name.Digest, p Predicate, key *keys.Key, pause time.Duration) (bool, error) {
	for i := range 2 {
		if i > 0 {
			if err := registry.Sleep(ctx, pause+time.Duration(rand.Int64N(int64(pause)))); err != nil {
				return false, err
			}
		}
		_, envs, err := st.read(ctx, tag)
		if err != nil {
			return false, fmt.Errorf("reading back attestations %s: %s", tag, registry.Describe(err))
		}
		if !has(envs, digest, p, key) {
			return false, nil
		}
	}
	return true, nil
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

// tagWriteError explains a refused write of the .att tag.
func tagWriteError(tag name.Tag, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusBadRequest || terr.StatusCode == http.StatusConflict || terr.StatusCode == http.StatusForbidden) {
		msg := strings.ToLower(err.Error())
		if strings.Contains(msg, "immutab") || strings.Contains(msg, "already exists") || strings.Contains(msg, "tag_invalid") {
			return fmt.Errorf("registry refused to overwrite attestation tag %s (tag immutability): make the repository's tags mutable, or exclude *.att with an ECR tag-mutability exclusion filter; %s", tag, registry.Describe(err))
		}
	}
	return fmt.Errorf("writing attestation tag %s: %s", tag, registry.Describe(err))
}

func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 5)
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}
