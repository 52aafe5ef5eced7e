package service

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/sign"
)

// PromoteRequest is one whole promotion: copy, then sign what was pushed.
// Both transports (CLI and Lambda) run it through Promote.
type PromoteRequest struct {
	CopyRequest
	// Copy and Sign say which steps run; with Copy false, Sign signs what
	// the destination already holds (and its children).
	Copy, Sign bool
	// Key signs; required when Sign is set.
	Key *keys.Key
	// SignatureFormat is how signatures are stored: legacy (when empty),
	// bundle or both.
	SignatureFormat sign.Format
	// Referrers copies, after the copy and signing, the OCI 1.1 referrers
	// and cosign legacy tags of every source digest promoted (see
	// ReferrersFor); ReferrersTypes keeps only these artifact types.
	Referrers      bool
	ReferrersTypes []string
}

// PromoteResult is the machine-readable result of a promotion: what the
// CLI prints with -output json and what the Lambda function returns.
type PromoteResult struct {
	*CopyResult
	Signatures *SignResult      `json:"signatures,omitempty"`
	Referrers  *ReferrersResult `json:"referrers,omitempty"`
}

// CopySucceededError wraps a signing failure that followed a successful
// copy, so that callers can tell the user the image is in place unsigned.
type CopySucceededError struct {
	Image string
	Err   error
}

func (e *CopySucceededError) Error() string {
	return fmt.Sprintf("copy succeeded (%s) but signing failed: %v", e.Image, e.Err)
}

func (e *CopySucceededError) Unwrap() error { return e.Err }

// Promote runs the steps req asks for through svc, so that every step gets
// svc's middleware (canonical log lines, tracing).
func Promote(ctx context.Context, svc Service, req PromoteRequest) (*PromoteResult, error) {
	if !req.Copy && !req.Sign {
		return nil, Errorf(KindInvalidRequest, "nothing to do: both copy and sign are off")
	}
	if req.Sign && req.Key == nil {
		return nil, Errorf(KindInvalidRequest, "signing needs a key")
	}
	if req.Referrers && !req.Copy {
		return nil, Errorf(KindInvalidRequest, "referrers travel with a copy: turn copying on, or referrers off")
	}
	res := &PromoteResult{}
	sreq := SignRequest{Image: req.Destination, Annotations: req.Annotations, Key: req.Key, Recursive: true, Format: req.SignatureFormat}
	if req.Copy {
		cres, err := svc.Copy(ctx, req.CopyRequest)
		res.CopyResult = cres
		if err != nil {
			return res, err
		}
		// Sign what was pushed, by digest. An index is walked at the
		// destination for its children at every depth (a child may be an
		// index itself, which Manifests does not look into); only indexes
		// are read, and an image is not read at all.
		sreq.Digests = append(sreq.Digests, cres.DestinationDigest)
		for _, m := range cres.Manifests {
			sreq.Digests = append(sreq.Digests, m.DestinationDigest)
		}
		sreq.Recursive = types.MediaType(cres.MediaType).IsIndex()
	} else if err := ValidateKeyValues("annotation", req.Annotations); err != nil {
		return nil, err
	}
	if req.Sign {
		sres, err := svc.Sign(ctx, sreq)
		res.Signatures = sres
		if err != nil && req.Copy {
			var e *Error
			kind := KindSigningFailed
			if errors.As(err, &e) {
				kind = e.Kind
			}
			return res, &Error{Kind: kind, Err: &CopySucceededError{Image: res.CopyResult.Destination + "@" + res.CopyResult.DestinationDigest, Err: err}}
		}
		if err != nil {
			return res, err
		}
	}
	if !req.Referrers {
		return res, nil
	}
	// Its own step, after signing: what travels with the image is not
	// what makes it usable, and a failure here leaves it in place, signed.
	rres, err := svc.Referrers(ctx, ReferrersFor(req.CopyRequest, res.CopyResult, req.ReferrersTypes))
	res.Referrers = rres
	if err != nil {
		done := "copy"
		if req.Sign {
			done = "copy and signing"
		}
		return res, &Error{Kind: KindOf(err), Err: fmt.Errorf("%s succeeded (%s@%s) but %w", done, res.CopyResult.Destination, res.CopyResult.DestinationDigest, err)}
	}
	return res, nil
}
