package policy

import (
	"encoding/base64"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	protobundle "github.com/sigstore/protobuf-specs/gen/pb-go/bundle/v1"
	protocommon "github.com/sigstore/protobuf-specs/gen/pb-go/common/v1"
	protodsse "github.com/sigstore/protobuf-specs/gen/pb-go/dsse"
	protorekor "github.com/sigstore/protobuf-specs/gen/pb-go/rekor/v1"
	"github.com/sigstore/sigstore-go/pkg/testing/ca"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/bundle"
	"github.com/ocistow/ocistow/pkg/sign"
)

// TestKeylessTimestampAuthorityAndTheRequiredLogEntry holds the README's
// "Keyless" item: the time of signing is attested by the log's signed entry
// timestamp "(or a timestamp authority the root names)", and a log entry
// "is required". A keyless bundle as Rekor v2 makes them (a hashedrekord
// 0.0.2 entry with an inclusion proof and checkpoint, no integrated time
// and no signed entry timestamp) with an RFC 3161 timestamp from the
// virtual Sigstore's timestamping authority passes: the timestamp is the
// only time the certificate is checked at. The same bundle without its log
// entry is refused, its timestamp notwithstanding; and without its
// timestamp too, since then nothing attests the time.
func TestKeylessTimestampAuthorityAndTheRequiredLogEntry(t *testing.T) {
	const (
		identity = "https://github.com/example/app/.github/workflows/release.yml@refs/heads/main"
		issuer   = "https://token.actions.githubusercontent.com"
	)
	ctx := t.Context()
	vs, err := ca.NewVirtualSigstore()
	if err != nil {
		t.Fatal(err)
	}
	tr, err := testenv.VirtualTrustedRoot(vs)
	if err != nil {
		t.Fatal(err)
	}
	if len(tr.TimestampingAuthorities()) == 0 {
		t.Fatal("the virtual Sigstore's trusted root names no timestamping authority")
	}
	p := &Policy{Identity: `^https://github\.com/example/app/`, Issuer: issuer, TrustedRoot: tr}
	b := newBed(t)
	puller, _ := remote.NewPuller()
	pusher, _ := remote.NewPusher()
	store := bundle.NewStore(puller, pusher)

	// signed attaches to a new image a keyless bundle of its statement,
	// with or without the log entry and the timestamp.
	signed := func(t *testing.T, tag string, withLog, withTimestamp bool) name.Digest {
		t.Helper()
		d := b.image(t, tag)
		stmt, err := sign.Statement(d, nil)
		if err != nil {
			t.Fatal(err)
		}
		ent, err := vs.AttestHashedRekordV2(identity, issuer, stmt)
		if err != nil {
			t.Fatal(err)
		}
		vc, _ := ent.VerificationContent()
		sc, _ := ent.SignatureContent()
		env := sc.EnvelopeContent().RawEnvelope()
		payload, err := base64.StdEncoding.DecodeString(env.Payload)
		if err != nil {
			t.Fatal(err)
		}
		sig, err := base64.StdEncoding.DecodeString(env.Signatures[0].Sig)
		if err != nil {
			t.Fatal(err)
		}
		vm := &protobundle.VerificationMaterial{
			Content: &protobundle.VerificationMaterial_Certificate{Certificate: &protocommon.X509Certificate{RawBytes: vc.Certificate().Raw}},
		}
		if withLog {
			entries, err := ent.TlogEntries()
			if err != nil || len(entries) != 1 {
				t.Fatalf("tlog entries: %v, %d", err, len(entries))
			}
			tle := entries[0].TransparencyLogEntry()
			// Rekor v2: no integrated time, no signed entry timestamp;
			// the time comes from the timestamping authority alone.
			tle.IntegratedTime = 0
			tle.InclusionPromise = nil
			vm.TlogEntries = []*protorekor.TransparencyLogEntry{tle}
		}
		if withTimestamp {
			tss, err := ent.Timestamps()
			if err != nil || len(tss) != 1 {
				t.Fatalf("timestamps: %v, %d", err, len(tss))
			}
			vm.TimestampVerificationData = &protobundle.TimestampVerificationData{
				Rfc3161Timestamps: []*protocommon.RFC3161SignedTimestamp{{SignedTimestamp: tss[0]}},
			}
		}
		raw, err := protojson.Marshal(&protobundle.Bundle{
			MediaType:            bundle.MediaType,
			VerificationMaterial: vm,
			Content: &protobundle.Bundle_DsseEnvelope{DsseEnvelope: &protodsse.Envelope{
				Payload: payload, PayloadType: env.PayloadType, Signatures: []*protodsse.Signature{{Sig: sig}},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := store.Attach(ctx, d, raw, map[string]string{bundle.AnnotationPredicateType: sign.SignPredicateType}); err != nil {
			t.Fatal(err)
		}
		return d
	}

	ok := signed(t, "tsa", true, true)
	r, err := Check(ctx, b.st, p, ok, nil)
	if err != nil {
		t.Fatalf("a Rekor v2 entry timed by the root's timestamping authority: %v", err)
	}
	if got := r.Digests[0]; got.Format != sign.Bundle || got.Identity != identity || got.Issuer != issuer {
		t.Errorf("satisfied by %+v, want the bundle by %s (issuer %s)", got, identity, issuer)
	}

	noLog := signed(t, "no-log", false, true)
	_, err = Check(ctx, b.st, p, noLog, nil)
	if re := refusal(t, err); !strings.Contains(re.Reason, "keyless: ") || !strings.Contains(re.Reason, "not enough verified log entries") {
		t.Errorf("a timestamped bundle without its log entry: %q, want it refused for the missing log entry", re.Reason)
	}

	noTime := signed(t, "no-time", true, false)
	_, err = Check(ctx, b.st, p, noTime, nil)
	if re := refusal(t, err); !strings.Contains(re.Reason, "keyless: ") || !strings.Contains(re.Reason, "threshold not met for verified signed & log entry integrated timestamps") {
		t.Errorf("a Rekor v2 entry with no timestamp: %q, want it refused for want of a time", re.Reason)
	}
}
