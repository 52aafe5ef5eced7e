package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ocistow/ocistow/internal/oneline"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/service"
)

// copyRequest is the Service's form of r.
func (r Request) copyRequest() service.CopyRequest {
	return service.CopyRequest{
		Source:              r.SrcImageRef,
		Destination:         r.DstImageRef,
		Annotations:         r.Annotations,
		ManifestAnnotations: r.ManifestAnnotations,
		Labels:              r.Labels,
		Platforms:           r.Platforms,
		Immutable:           r.Immutable,
	}
}

// Plan checks every item that has no status yet, at most parallel at once,
// and writes nothing: each costs its source a HEAD, not a pull.
func Plan(ctx context.Context, svc service.Service, items []Item, n int) {
	parallel(ctx, items, n, func(ctx context.Context, it *Item) {
		if it.Status != "" {
			return
		}
		res, err := svc.Check(ctx, it.copyRequest())
		it.Check = res
		switch {
		case err != nil:
			it.fail(err)
		case res.UpToDate:
			it.Status = UpToDate
		case res.PreviousDigest != "" && it.Immutable:
			it.Status, it.Previous = Refused, res.PreviousDigest
		case res.PreviousDigest != "":
			it.Status, it.Previous = Moves, res.PreviousDigest
		default:
			it.Status = New
		}
	})
	notStarted(ctx, items)
}

// LoadKeys loads, once each, the signing keys the items name, before
// anything is promoted: a key that cannot sign refuses the whole sync.
func LoadKeys(ctx context.Context, items []Item, load func(context.Context, string) (*keys.Key, error)) (map[string]*keys.Key, error) {
	out := map[string]*keys.Key{}
	for _, it := range items {
		if !(it.Sign || it.Attest) || it.Key == "" || out[it.Key] != nil {
			continue
		}
		k, err := load(ctx, it.Key)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", it.Line, err)
		}
		out[it.Key] = k
	}
	return out, nil
}

// RunOptions configure Run.
type RunOptions struct {
	// Keys are the signing keys the items name, as LoadKeys loaded them.
	Keys map[string]*keys.Key
	// Parallel is how many images are promoted at once.
	Parallel int
	// Pulls, when not nil, tells how many pulls a source registry has
	// left (registry.Client remembers its rate-limit headers); an image
	// that needs pulls is deferred when fewer than MinPulls are left.
	Pulls    PullCounter
	MinPulls int
	// Started and Done, when not nil, are called as each image starts
	// and settles.
	Started, Done func(*Item)
}

// PullCounter tells how many pulls a registry said it has left;
// registry.Client is one.
type PullCounter interface {
	PullsRemaining(reg name.Registry) (int, bool)
}

// Run promotes every item that has no status yet, through service.Promote
// (copy, then sign with the item's key). One item failing does not stop
// the others. When a source registry has said that fewer than
// opts.MinPulls pulls are left, an image is checked first (a HEAD, which
// costs none) and deferred unless it is up to date.
func Run(ctx context.Context, svc service.Service, items []Item, opts RunOptions) {
	parallel(ctx, items, opts.Parallel, func(ctx context.Context, it *Item) {
		if it.Status == "" && opts.Started != nil {
			opts.Started(it)
		}
		if it.Status == "" && !it.deferred(ctx, svc, opts) {
			it.promote(ctx, svc, opts.Keys[it.Key])
		}
		if opts.Done != nil {
			opts.Done(it)
		}
	})
	notStarted(ctx, items)
}

// notStarted marks the items a cancelled or expired ctx kept from
// starting.
func notStarted(ctx context.Context, items []Item) {
	if ctx.Err() == nil {
		return
	}
	for i := range items {
		if items[i].Status == "" {
			items[i].fail(&service.Error{Kind: service.KindTimeout, Err: fmt.Errorf("not started: %w", ctx.Err())})
		}
	}
}

// deferred reports whether it was deferred because its source registry's
// pulls are nearly spent and it would need some.
func (it *Item) deferred(ctx context.Context, svc service.Service, opts RunOptions) bool {
	if opts.Pulls == nil || opts.MinPulls <= 0 {
		return false
	}
	src, err := name.ParseReference(it.SrcImageRef)
	if err != nil {
		return false
	}
	left, ok := opts.Pulls.PullsRemaining(src.Context().Registry)
	if !ok || left >= opts.MinPulls {
		return false
	}
	res, err := svc.Check(ctx, it.copyRequest())
	if err != nil || res.UpToDate {
		return false // the promotion reports the error, or costs no pull
	}
	it.Check = res
	it.Status = Deferred
	it.Error = fmt.Sprintf("%s has %d pulls left, fewer than the %d an image may need (-min-pulls): deferred to the next sync", src.Context().RegistryStr(), left, opts.MinPulls)
	return true
}

func (it *Item) promote(ctx context.Context, svc service.Service, key *keys.Key) {
	res, err := service.Promote(ctx, svc, service.PromoteRequest{CopyRequest: it.copyRequest(), Copy: true, Sign: it.Sign, Attest: it.Attest, Key: key})
	it.Result = res
	if res != nil && res.CopyResult != nil {
		it.Previous = res.PreviousDigest
	}
	switch {
	case err != nil:
		it.fail(err)
	case res.CopyResult != nil && res.UpToDate:
		it.Status = UpToDate
	default:
		it.Status = Promoted
	}
}

// fail records err on it, with the status its kind implies.
func (it *Item) fail(err error) {
	it.Error, it.ErrorType = oneline.Error(err), string(service.KindOf(err))
	var rl *registry.RateLimitError
	switch {
	case errors.As(err, &rl):
		it.Status = Deferred
		return
	}
	switch service.KindOf(err) {
	case service.KindSourceNotFound:
		it.Status = Missing
	case service.KindTagImmutable:
		it.Status = Refused
	default:
		it.Status = Failed
	}
}

// Summary counts what a plan or a sync found.
type Summary struct {
	Images int `json:"images"`
	// Statuses counts the images by status.
	Statuses map[Status]int `json:"statuses"`
	// BytesCopied, SourcePulls and SignaturesAdded add up what the
	// images' promotions did; SourcePulls what their checks cost, in a
	// plan.
	BytesCopied     int64 `json:"bytesCopied"`
	SourcePulls     int   `json:"sourcePulls"`
	SignaturesAdded int   `json:"signaturesAdded"`
	// AttestationsAdded adds up the promotion attestations written.
	AttestationsAdded int `json:"attestationsAdded,omitempty"`
}

// Summarize adds up items.
func Summarize(items []Item) Summary {
	s := Summary{Images: len(items), Statuses: map[Status]int{}}
	for _, it := range items {
		s.Statuses[it.Status]++
		if it.Check != nil {
			s.SourcePulls += it.Check.SourcePulls
		}
		if r := it.Result; r != nil {
			if r.CopyResult != nil {
				s.BytesCopied += r.BytesCopied
				s.SourcePulls += r.SourcePulls
			}
			if r.Signatures != nil {
				s.SignaturesAdded += r.Signatures.Added
			}
			if r.Attestations != nil {
				s.AttestationsAdded += r.Attestations.Added
			}
		}
	}
	return s
}

// Failures counts the images that did not end up promoted or up to date
// (or, in a plan, that would not).
func (s Summary) Failures() int {
	return s.Statuses[Missing] + s.Statuses[Refused] + s.Statuses[Failed]
}

// Deferred counts the images deferred for rate limits.
func (s Summary) Deferred() int { return s.Statuses[Deferred] }

// Order lists the statuses s counted, in a stable order.
func (s Summary) Order() []Status {
	order := []Status{Promoted, New, Moves, UpToDate, Deferred, Missing, Refused, Failed}
	return slices.DeleteFunc(order, func(st Status) bool { return s.Statuses[st] == 0 })
}
