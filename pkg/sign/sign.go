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
	"slices"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/ocistow/ocistow/pkg/digesttag"
	"github.com/ocistow/ocistow/pkg/keys"
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
	has := func(layers []digesttag.Layer) bool { return hasSignature(ctx, storedOf(layers), body, key) }
	sign := func(ctx context.Context) (digesttag.Layer, error) {
		raw, err := key.Signer.SignMessage(bytes.NewReader(body), options.WithContext(ctx))
		if err != nil {
			return digesttag.Layer{}, fmt.Errorf("signing with %s: %s", key.Ref, keys.DescribeAWSError(err))
		}
		return signatureLayer(body, base64.StdEncoding.EncodeToString(raw)), nil
	}
	added, err := Signatures().Ensure(ctx, st.rc, st.puller, st.pusher, SignatureTag(digest), has, sign)
	switch {
	case err != nil:
		return "", err
	case added:
		return Added, nil
	}
	return Present, nil
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

func sorted(s []string) []string {
	slices.Sort(s)
	return s
}
