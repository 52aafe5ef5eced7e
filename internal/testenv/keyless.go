package testenv

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/sigstore/sigstore-go/pkg/root"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"github.com/sigstore/sigstore-go/pkg/tlog"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// VirtualTrustedRoot is the trusted root of the virtual Sigstore vs: its
// certificate authority, timestamping authority and log, and no CT logs
// (the virtual CA's certificates carry no SCTs).
func VirtualTrustedRoot(vs *ca.VirtualSigstore) (*root.TrustedRoot, error) {
	// The virtual Sigstore names its log by the hex of its key id, which
	// a trusted root holds as the raw id.
	logs := vs.RekorLogs()
	for _, l := range logs {
		id, err := hex.DecodeString(string(l.ID))
		if err != nil {
			return nil, err
		}
		l.ID = id
	}
	return root.NewTrustedRoot(root.TrustedRootMediaType01, vs.FulcioCertificateAuthorities(), nil, vs.TimestampingAuthorities(), logs)
}

// LegacyKeyless is a keyless signature as cosign v2 stores it in the .sig
// tag: the simple-signing payload as the layer, and on its descriptor the
// base64 signature, the Fulcio certificate and its chain (PEM) and the
// Rekor bundle (the log's signed entry timestamp over the entry's body,
// integrated time, log index and log id). Tests change its fields to
// forge one.
type LegacyKeyless struct {
	Payload, Signature, Certificate, Chain []byte
	// SET is the log's signed entry timestamp over Rekor.
	SET   []byte
	Rekor tlog.RekorPayload
	// NoRekorBundle leaves the Rekor bundle annotation out, as cosign
	// sign --tlog-upload=false does.
	NoRekorBundle bool
}

// NewLegacyKeyless signs payload with a certificate the virtual Sigstore
// fulcio issues to identity and issuer, logs it, and has the log of rekor
// sign its entry timestamp (rekor is fulcio, but for forgeries).
func NewLegacyKeyless(fulcio, rekor *ca.VirtualSigstore, payload []byte, identity, issuer string) (*LegacyKeyless, error) {
	ent, err := fulcio.SignAtTime(identity, issuer, payload, time.Now().Add(time.Minute))
	if err != nil {
		return nil, err
	}
	vc, err := ent.VerificationContent()
	if err != nil {
		return nil, err
	}
	cert, err := cryptoutils.MarshalCertificateToPEM(vc.Certificate())
	if err != nil {
		return nil, err
	}
	fca, ok := fulcio.FulcioCertificateAuthorities()[0].(*root.FulcioCertificateAuthority)
	if !ok {
		return nil, errors.New("the virtual Sigstore's CA is not a Fulcio CA")
	}
	chain, err := cryptoutils.MarshalCertificatesToPEM(append(fca.Intermediates, fca.Root))
	if err != nil {
		return nil, err
	}
	sc, err := ent.SignatureContent()
	if err != nil {
		return nil, err
	}
	entries, err := ent.TlogEntries()
	if err != nil || len(entries) != 1 {
		return nil, fmt.Errorf("tlog entries: %v, %d", err, len(entries))
	}
	tle := entries[0].TransparencyLogEntry()
	logID, err := rekor.RekorLogID()
	if err != nil {
		return nil, err
	}
	l := &LegacyKeyless{
		Payload:     payload,
		Signature:   sc.MessageSignatureContent().Signature(),
		Certificate: cert,
		Chain:       chain,
		Rekor: tlog.RekorPayload{
			Body:           base64.StdEncoding.EncodeToString(tle.GetCanonicalizedBody()),
			IntegratedTime: tle.GetIntegratedTime(),
			LogIndex:       tle.GetLogIndex(),
			LogID:          logID,
		},
	}
	if l.SET, err = rekor.RekorSignPayload(l.Rekor); err != nil {
		return nil, err
	}
	return l, nil
}

// Push stores l as the only signature in digest's .sig tag, with cosign
// v2's annotations.
func (l *LegacyKeyless) Push(ctx context.Context, digest name.Digest, opts ...remote.Option) error {
	ann := map[string]string{
		"dev.cosignproject.cosign/signature": base64.StdEncoding.EncodeToString(l.Signature),
		"dev.sigstore.cosign/certificate":    string(l.Certificate),
		"dev.sigstore.cosign/chain":          string(l.Chain),
	}
	if !l.NoRekorBundle {
		// cosign's RekorBundle: the SET as base64 (a []byte in JSON), the
		// payload with lower-case keys.
		j, err := json.Marshal(map[string]any{"SignedEntryTimestamp": l.SET, "Payload": l.Rekor})
		if err != nil {
			return err
		}
		ann["dev.sigstore.cosign/bundle"] = string(j)
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:       static.NewLayer(l.Payload, "application/vnd.dev.cosign.simplesigning.v1+json"),
		Annotations: ann,
	})
	if err != nil {
		return err
	}
	tag := digest.Context().Tag(strings.Replace(digest.DigestStr(), ":", "-", 1) + ".sig")
	return remote.Write(tag, img, append([]remote.Option{remote.WithContext(ctx)}, opts...)...)
}
