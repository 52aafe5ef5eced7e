// Package fleet promotes a fleet of images: the entries of a promotion
// file, expanded into single promotions (one per selected tag), checked
// without pulling (a plan), and run in parallel through the same Service a
// single promotion uses, so that each image gets the same copy, stamp,
// signature and canonical log lines.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/ocistow/ocistow/pkg/policy"
	"github.com/ocistow/ocistow/pkg/promofile"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/service"
	"github.com/ocistow/ocistow/pkg/sign"
)

// DefaultParallel is how many images a sync promotes at once by default:
// each promotion moves several blobs at once already.
const DefaultParallel = 4

// DefaultRegistryRequests caps the requests in flight to one registry
// during a sync, across all its images.
const DefaultRegistryRequests = 16

// readAheadBytes is the memory a sync may hold in small blobs made ready
// for the images waiting for their turn to write (promote.ReadAhead).
const readAheadBytes = 4 << 20

// DefaultMinPulls is how many pulls a registry that meters them must have
// left for a sync to start an image that needs some: enough for an index
// of eight platforms.
const DefaultMinPulls = 10

// Request is one single promotion, in the shape of the Lambda function's
// payload (the original ocistow's SrcImageRef, DstImageRef and
// Annotations, and the options a promotion file adds), so that any engine
// can fan a plan out.
type Request struct {
	SrcImageRef         string            `json:"SrcImageRef"`
	DstImageRef         string            `json:"DstImageRef"`
	Annotations         map[string]string `json:"Annotations,omitempty"`
	ManifestAnnotations map[string]string `json:"ManifestAnnotations,omitempty"`
	Labels              map[string]string `json:"Labels,omitempty"`
	Platforms           []string          `json:"Platforms,omitempty"`
	Immutable           bool              `json:"Immutable,omitempty"`
	// Sign is false when the entry turned signing off.
	Sign bool `json:"Sign"`
	// Key is the signing key's reference, when Sign or Attest.
	Key string `json:"Key,omitempty"`
	// SignatureFormat is how signatures and attestations are stored
	// (bundle or both), when Sign or Attest; absent, the signer's default
	// (legacy unless configured).
	SignatureFormat string `json:"SignatureFormat,omitempty"`
	// Referrers is false when the entry left the source's referrers and
	// cosign tags behind (referrers: false); a sync copies them by default.
	Referrers bool `json:"Referrers"`
	// ReferrersTypes keeps only referrers of these artifact types.
	ReferrersTypes []string `json:"ReferrersTypes,omitempty"`
	// Attest is true when the entry asks for a promotion attestation.
	Attest bool `json:"Attest,omitempty"`
	// Verify is the source policy the entry asks for.
	Verify *policy.Spec `json:"Verify,omitempty"`
}

// Status is where one image of a fleet stands.
type Status string

// The statuses of an image. A plan says UpToDate, New, Moves, Missing,
// Refused or Failed; a sync says UpToDate, Promoted, Missing, Refused,
// Failed or Deferred.
const (
	UpToDate Status = "up to date"
	New      Status = "new"
	Moves    Status = "tag moves"
	Promoted Status = "promoted"
	Missing  Status = "source missing"
	Refused  Status = "refused (immutable)"
	// RefusedPolicy: the source policy refused the source; nothing was
	// written for it.
	RefusedPolicy Status = "refused (policy)"
	Failed        Status = "failed"
	// Deferred: not started, or given up, because the source registry's
	// pulls are (nearly) spent; the next sync picks it up.
	Deferred Status = "deferred"
)

// Item is one image of a fleet: its request, and what a plan or a sync
// found.
type Item struct {
	Request
	// Line is the promotion file line of the entry it comes from.
	Line int `json:"line"`
	// Status is set by Plan and Run.
	Status Status `json:"status,omitempty"`
	// Previous is the digest the destination tag pointed at, when it
	// moves (or would).
	Previous string `json:"previousDigest,omitempty"`
	// Error says why the image failed.
	Error string `json:"error,omitempty"`
	// ErrorType is the failure's stable kind (service.Kind).
	ErrorType string `json:"errorType,omitempty"`
	// Check is what Plan found, or Run before promoting; Result what Run
	// did.
	Check  *service.CheckResult   `json:"check,omitempty"`
	Result *service.PromoteResult `json:"result,omitempty"`

	// policy is the loaded Verify (LoadPolicies).
	policy *policy.Policy
}

// TagLister lists the tags of a repository; registry.Client is one.
type TagLister interface {
	ListTags(ctx context.Context, repository string) ([]string, error)
}

// Expand turns resolved promotion-file entries into one request per image:
// an entry naming one image is one request; an entry with tags is one
// request per selected tag, listed from the source repository unless the
// entry lists them. A destination without a tag takes the source's tag.
// defaultKey signs entries that name no key of their own. A source
// repository whose tags cannot be listed becomes one item that failed
// (status Missing when the repository does not exist, Deferred when its
// registry asks to be retried later), and the other entries go on. Two
// selections that pick the same destination tag are refused: the file
// would promote two images to one tag (parsing refuses what it can see
// without the registry; this is what only the tag lists show).
func Expand(ctx context.Context, tl TagLister, entries []promofile.Entry, defaultKey string) ([]Item, error) {
	var items []Item
	for _, e := range entries {
		got, err := expand(ctx, tl, e, defaultKey)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", e.Line, err)
		}
		items = append(items, got...)
	}
	if err := sameDestination(items); err != nil {
		return nil, err
	}
	return items, nil
}

// sameDestination refuses two items that write one destination tag.
func sameDestination(items []Item) error {
	first := map[string]int{}
	for _, it := range items {
		if it.Status != "" {
			continue // not promoted
		}
		dst, err := name.ParseReference(it.DstImageRef)
		if err != nil {
			continue // the promotion reports it
		}
		if line, ok := first[dst.Name()]; ok {
			return fmt.Errorf("line %d: destination %s is also written by the promotion at line %d (their tag selections overlap)", it.Line, dst.Name(), line)
		}
		first[dst.Name()] = it.Line
	}
	return nil
}

// DefaultSignatureFormat gives the signing (or attesting) items that name
// no signature format f (a sync's -signature-format), unless f is legacy,
// which an absent format means anyway.
func DefaultSignatureFormat(items []Item, f sign.Format) {
	if f == "" || f == sign.Legacy {
		return
	}
	for i := range items {
		if (items[i].Sign || items[i].Attest) && items[i].SignatureFormat == "" {
			items[i].SignatureFormat = string(f)
		}
	}
}

func expand(ctx context.Context, tl TagLister, e promofile.Entry, defaultKey string) ([]Item, error) {
	base := Request{
		Annotations:         e.Annotations,
		ManifestAnnotations: e.ManifestAnnotations,
		Labels:              e.Labels,
		Platforms:           e.Platforms,
		Immutable:           e.Immutable != nil && *e.Immutable,
		Sign:                e.Sign == nil || *e.Sign,
		Referrers:           e.Referrers == nil || *e.Referrers,
		ReferrersTypes:      e.ReferrersTypes,
		Attest:              e.Attest != nil && *e.Attest,
		Verify:              specOf(e.Verify),
	}
	if base.Sign || base.Attest {
		// Attestations are stored in the signature format too.
		base.SignatureFormat = e.SignatureFormat
		base.Key = e.Key
		if base.Key == "" {
			base.Key = defaultKey
		}
		if base.Key == "" && base.Sign {
			return nil, errors.New("signing needs a key: give key in the entry or in defaults, or -key / -aws-kms-key-arn, or sign: false")
		}
		if base.Key == "" {
			return nil, errors.New("attest needs a key: give key in the entry or in defaults, or -key / -aws-kms-key-arn")
		}
	}
	if e.Tags == nil {
		tag, ok := promofile.DestinationTag(e)
		if !ok {
			return nil, fmt.Errorf("destination %s names no tag, and source %s is by digest", e.Destination, e.Source)
		}
		return []Item{{Request: withRefs(base, e.Source, tag.String()), Line: e.Line}}, nil
	}
	selected, err := selectTags(ctx, tl, e)
	if err != nil {
		return []Item{listFailed(ctx, withRefs(base, e.Source, e.Destination), e.Line, err)}, nil
	}
	items := make([]Item, len(selected))
	for i, tag := range selected {
		items[i] = Item{Request: withRefs(base, e.Source+":"+tag, e.Destination+":"+tag), Line: e.Line}
	}
	return items, nil
}

// listFailed is the item of an entry whose source tags could not be
// listed: failed with the kind the registry's answer implies.
func listFailed(ctx context.Context, r Request, line int, err error) Item {
	kind := service.KindSourceFailed
	switch code := registry.StatusCode(err); {
	case ctx.Err() != nil:
		kind = service.KindTimeout // the sync's end, not the registry's
	case code == http.StatusNotFound:
		kind = service.KindSourceNotFound
	case code == http.StatusUnauthorized, code == http.StatusForbidden:
		kind = service.KindUnauthorized
	}
	it := Item{Request: r, Line: line}
	it.fail(&service.Error{Kind: kind, Err: err})
	it.Error = registry.Describe(err)
	return it
}

// specOf is the policy spec of a promotion file's verify block.
func specOf(v *promofile.Verify) *policy.Spec {
	if v == nil {
		return nil
	}
	return &policy.Spec{Keys: v.Keys, Identity: v.Identity, Issuer: v.Issuer, TrustedRoot: v.TrustedRoot, Annotations: v.Annotations, Children: v.Children != nil && *v.Children}
}

func selectTags(ctx context.Context, tl TagLister, e promofile.Entry) ([]string, error) {
	if len(e.Tags.List) > 0 {
		return e.Tags.Select(nil)
	}
	available, err := tl.ListTags(ctx, e.Source)
	if err != nil {
		return nil, fmt.Errorf("listing the tags of %s: %w", e.Source, err)
	}
	return e.Tags.Select(available)
}

func withRefs(r Request, src, dst string) Request {
	r.SrcImageRef, r.DstImageRef = src, dst
	return r
}

// parallel runs f on every item, at most n at once.
func parallel(ctx context.Context, items []Item, n int, f func(context.Context, *Item)) {
	sem := make(chan struct{}, max(1, n))
	var wg sync.WaitGroup
	for i := range items {
		if ctx.Err() != nil {
			break
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(ctx, &items[i])
		}()
	}
	wg.Wait()
}
