package fleet

import (
	"context"
	"fmt"
	"slices"

	"github.com/ocistow/ocistow/internal/oneline"
	"github.com/ocistow/ocistow/pkg/keys"
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
}

// LoadKeys loads, once each, the signing keys the items name, before
// anything is promoted: a key that cannot sign refuses the whole sync.
func LoadKeys(ctx context.Context, items []Item, load func(context.Context, string) (*keys.Key, error)) (map[string]*keys.Key, error) {
	out := map[string]*keys.Key{}
	for _, it := range items {
		if !it.Sign || it.Key == "" || out[it.Key] != nil {
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

// Run promotes every item that has no status yet, at most n at once,
// through service.Promote (copy, then sign with the item's key), and calls
// done as each settles. One item failing does not stop the others.
func Run(ctx context.Context, svc service.Service, items []Item, keys map[string]*keys.Key, n int, done func(*Item)) {
	parallel(ctx, items, n, func(ctx context.Context, it *Item) {
		if it.Status == "" {
			it.promote(ctx, svc, keys[it.Key])
		}
		if done != nil {
			done(it)
		}
	})
}

func (it *Item) promote(ctx context.Context, svc service.Service, key *keys.Key) {
	res, err := service.Promote(ctx, svc, service.PromoteRequest{CopyRequest: it.copyRequest(), Copy: true, Sign: it.Sign, Key: key})
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
		}
	}
	return s
}

// Failures counts the images that did not end up promoted or up to date
// (or, in a plan, that would not).
func (s Summary) Failures() int {
	return s.Statuses[Missing] + s.Statuses[Refused] + s.Statuses[Failed]
}

// Order lists the statuses s counted, in a stable order.
func (s Summary) Order() []Status {
	order := []Status{Promoted, New, Moves, UpToDate, Missing, Refused, Failed}
	return slices.DeleteFunc(order, func(st Status) bool { return s.Statuses[st] == 0 })
}
