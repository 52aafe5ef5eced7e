// Package sign writes and checks cosign-compatible signatures of image
// digests, so that cosign, policy-controller, Kyverno and Ratify can verify
// what ocistow promoted.
//
// The formats are cosign's: the simple-signing payload from sigstore's
// payload package, the signature layers and the sha256-<hex>.sig tag as
// cosign stores them (store.go). No transparency log entry
// is made: keys are an organisation's own, and a public log would publish
// every promotion. Verify with `cosign verify --insecure-ignore-tlog=true`.
package sign

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
)

// Status says what signing one digest did.
type Status string

const (
	// Added: a new signature was written.
	Added Status = "added"
	// Present: a signature of the same payload by the same key was already
	// there; nothing was written.
	Present Status = "present"
)

// maxAttempts bounds the read-modify-write retries of one .sig tag.
const maxAttempts = 10

// Payload returns cosign's simple-signing payload for digest with the
// annotations in its optional section.
func Payload(digest name.Digest, annotations map[string]string) ([]byte, error) {
	var opt map[string]any
	if len(annotations) > 0 {
		opt = make(map[string]any, len(annotations))
		for k, v := range annotations {
			opt[k] = v
		}
	}
	return payload.Cosign{Image: digest, Annotations: opt}.MarshalJSON()
}

// Digest signs one digest with key and stores the signature beside the
// image, in cosign's .sig tag, through st. It is idempotent: a signature of
// the same payload by the same key is not added twice, and finding one
// costs no call to the key (KMS): the stored signatures are read first and
// checked with the key's public half, and the key signs only when ours is
// missing.
//
// The .sig tag is a read-modify-write of one manifest, which registries
// cannot do atomically. So that concurrent signers do not drop each other's
// signatures, Digest reads the tag back after writing and again after a
// pause long enough for a concurrent writer to have finished, and retries,
// up to a bound, until its signature is there.
func Digest(ctx context.Context, st *Store, digest name.Digest, annotations map[string]string, key *keys.Key) (Status, error) {
	if key.Signer == nil {
		return "", errors.New("the key cannot sign")
	}
	body, err := Payload(digest, annotations)
	if err != nil {
		return "", err
	}
	tag := SignatureTag(digest)
	// b64 is our signature, made the first time one is missing: an ECDSA
	// signature differs each time, so it is made once and rewritten as it
	// is on every attempt.
	var b64 string

	status := Present
	for attempt := 0; attempt < maxAttempts; attempt++ {
		if attempt > 0 {
			if err := registry.Sleep(ctx, backoff(attempt)); err != nil {
				return "", err
			}
		}
		start := time.Now()
		base, existing, err := st.readSignatures(ctx, tag)
		if err != nil {
			return "", fmt.Errorf("reading signatures %s: %s", tag, registry.Describe(err))
		}
		if found := hasSignature(ctx, existing, body, key); found && status == Present {
			// Signed before, by an earlier run or a concurrent signer;
			// whoever wrote it confirms it stays.
			return Present, nil
		} else if !found {
			if b64 == "" {
				raw, err := key.Signer.SignMessage(bytes.NewReader(body), options.WithContext(ctx))
				if err != nil {
					return "", fmt.Errorf("signing with %s: %s", key.Ref, keys.DescribeAWSError(err))
				}
				b64 = base64.StdEncoding.EncodeToString(raw)
			}
			sigs, err := appendSignature(base, body, b64)
			if err != nil {
				return "", err
			}
			// The transport retries what it can replay; a blob upload
			// that fails part-way is started over here.
			push := func(ctx context.Context, _ int) error { return st.pusher.Push(ctx, tag, sigs) }
			if err := st.retry(ctx, push); err != nil {
				return "", tagWriteError(tag, err)
			}
			status = Added
		}
		// Confirm: read back now, and again after a pause of a few times
		// our own read-modify-write, by which a writer that read the tag
		// before our write has written too.
		ok, err := confirm(ctx, st, tag, body, key, max(20*time.Millisecond, 3*time.Since(start)))
		if err != nil {
			return "", err
		}
		if ok {
			return status, nil
		}
	}
	return "", fmt.Errorf("signature of %s kept disappearing from %s after %d attempts: too many concurrent signers", digest.DigestStr(), tag, maxAttempts)
}

// confirm reports whether our signature is in the tag now and still after
// pause.
func confirm(ctx context.Context, st *Store, tag name.Tag, body []byte, key *keys.Key, pause time.Duration) (bool, error) {
	for i := range 2 {
		if i > 0 {
			if err := registry.Sleep(ctx, pause+time.Duration(rand.Int64N(int64(pause)))); err != nil {
				return false, err
			}
		}
		_, sigs, err := st.readSignatures(ctx, tag)
		if err != nil {
			return false, fmt.Errorf("reading back signatures %s: %s", tag, registry.Describe(err))
		}
		if !hasSignature(ctx, sigs, body, key) {
			return false, nil
		}
	}
	return true, nil
}

// hasSignature reports whether sigs holds a signature of body that key
// verifies: ours, or an equivalent one by the same key. It checks with the
// key's public half, and never asks a KMS key to sign.
func hasSignature(ctx context.Context, sigs []stored, body []byte, key *keys.Key) bool {
	for _, s := range sigs {
		if !bytes.Equal(s.payload, body) {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(s.b64)
		if err != nil {
			continue
		}
		if key.VerifySignature(bytes.NewReader(raw), bytes.NewReader(s.payload), options.WithContext(ctx)) == nil {
			return true
		}
	}
	return false
}

// tagWriteError explains a refused write of the .sig tag.
func tagWriteError(tag name.Tag, err error) error {
	var terr *transport.Error
	if errors.As(err, &terr) && (terr.StatusCode == http.StatusBadRequest || terr.StatusCode == http.StatusConflict || terr.StatusCode == http.StatusForbidden) {
		msg := strings.ToLower(err.Error())
		if strings.Contains(msg, "immutab") || strings.Contains(msg, "already exists") || strings.Contains(msg, "tag_invalid") {
			return fmt.Errorf("registry refused to overwrite signature tag %s (tag immutability): make the repository's tags mutable, or exclude *.sig with an ECR tag-mutability exclusion filter; %s", tag, registry.Describe(err))
		}
	}
	return fmt.Errorf("writing signature tag %s: %s", tag, registry.Describe(err))
}

func backoff(attempt int) time.Duration {
	d := 100 * time.Millisecond << min(attempt, 5)
	return d/2 + time.Duration(rand.Int64N(int64(d)))
}

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}
