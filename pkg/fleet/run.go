package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/google/go-containerregistry/pkg/name"

	"github.com/ocistow/ocistow/internal/oneline"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/policy"
	"github.com/ocistow/ocistow/pkg/promote"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/service"
	"github.com/ocistow/ocistow/pkg/sign"
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
// and writes nothing: each costs its source a HEAD, not a pull. An item
// with a source policy (LoadPolicies) has its source digest's signatures
// checked too, and is RefusedPolicy when it has none that passes; the
// children of an index are left to the sync.
func Plan(ctx context.Context, svc service.Service, items []Item, n int) {
	parallel(ctx, items, n, func(ctx context.Context, it *Item) {
		if it.Status != "" {
			return
		}
		req := it.copyRequest()
		req.Policy = it.policy
		res, err := svc.Check(ctx, req)
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

// LoadPolicies loads the source policies the items name, each key and
// trusted root once, before anything is promoted: a policy that cannot be
// loaded (a key that does not load, an invalid identity, a trusted root
// that cannot be read) refuses the whole sync. An item's Verify without a
// trusted root takes defaultRoot (the sync's -trusted-root).
func LoadPolicies(ctx context.Context, items []Item, l *policy.Loader, defaultRoot string) error {
	for i := range items {
		it := &items[i]
		if it.Verify == nil {
			continue
		}
		if it.Verify.Identity != "" && it.Verify.TrustedRoot == "" {
			it.Verify.TrustedRoot = defaultRoot
		}
		p, err := l.Load(ctx, it.Verify)
		if err != nil {
			return fmt.Errorf("line %d: verify: %w", it.Line, err)
		}
		it.policy = p
	}
	return nil
}

// RunOptions configure Run.
type RunOptions struct {
	// Keys are the signing keys the items name, as LoadKeys loaded them.
	Keys map[string]*keys.Key
	// Parallel is how many images are written at once.
	Parallel int
	// Checks is how many images are checked at once before any is
	// promoted, and how many are promoted at once (at least Parallel), of
	// which Parallel write at once while the others read their manifests.
	// Checks and reads are small requests, so the registry client's cap
	// on requests per registry is what bounds them.
	Checks int
	// Pulls, when not nil, tells how many pulls a source registry has
	// left (registry.Client remembers its rate-limit headers); an image
	// that needs pulls is deferred when fewer than MinPulls are left.
	Pulls    PullCounter
	MinPulls int
	// Started and Done, when not nil, are called as each image's
	// promotion starts and settles.
	Started, Done func(*Item)
}

// PullCounter tells how many pulls a registry said it has left;
// registry.Client is one.
type PullCounter interface {
	PullsRemaining(reg name.Registry) (int, bool)
}

// Run promotes every item that has no status yet, through service.Promote
// (copy, then sign with the item's key). One item failing does not stop
// the others.
//
// Every image is checked first (service.Check: a HEAD at the source, which
// costs no pull, and a GET of the destination tag), opts.Checks at once.
// Each image is then promoted as soon as its own check is in, starting
// from it instead of asking again: opts.Checks of them read their
// manifests at once (round trips), and opts.Parallel of those write at
// once (bandwidth). An unchanged fleet thus costs about one round trip per
// opts.Checks images, and images are read while others are written. An
// image whose check failed is promoted as if it had not been checked, so
// that its failure is the promotion's. When a source registry has said
// that fewer than opts.MinPulls pulls are left, an image that is not up to
// date is deferred.
//
// Where a registry's requests are capped, an image's requests (its check
// included) wait behind those of the images before it in the file: the
// images being written are not held up by the next ones' reads.
func Run(ctx context.Context, svc service.Service, items []Item, opts RunOptions) {
	ahead := max(opts.Checks, opts.Parallel)
	budget := newPullBudget(opts, items)
	checked, checking := checkAll(ctx, svc, items, ahead, budget.order)
	readAhead := promote.NewReadAhead(readAheadBytes)
	writing := make(chan struct{}, max(1, opts.Parallel))
	gate := func(ctx context.Context) (func(), error) {
		select {
		case writing <- struct{}{}:
			return func() { <-writing }, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	parallel(ctx, items, ahead, func(ctx context.Context, it *Item) {
		i := budget.order[it]
		ctx = registry.WithPriority(ctx, i)
		<-checked[i]
		if it.Status == "" && opts.Started != nil {
			opts.Started(it)
		}
		if release, ok := budget.reserve(ctx, svc, it); ok {
			it.promote(ctx, svc, opts.Keys[it.Key], gate, readAhead)
			release()
		}
		if opts.Done != nil {
			opts.Done(it)
		}
	})
	<-checking
	notStarted(ctx, items)
}

// checkAll checks every item that has no status yet, n at once, in the
// background, each with its place in the file as its requests' priority.
// The channel at an item's index is closed once its check is in (or was
// not made: the item has a status, or ctx ended); the last one is closed
// when every check is.
func checkAll(ctx context.Context, svc service.Service, items []Item, n int, order map[*Item]int) ([]chan struct{}, chan struct{}) {
	checked := make([]chan struct{}, len(items))
	for i := range checked {
		checked[i] = make(chan struct{})
	}
	all := make(chan struct{})
	go func() {
		defer close(all)
		sem := make(chan struct{}, max(1, n))
		var wg sync.WaitGroup
		for i := range items {
			sem <- struct{}{} // a check ends promptly once ctx has
			wg.Add(1)
			go func() {
				defer func() { <-sem; close(checked[i]); wg.Done() }()
				it := &items[i]
				if it.Status != "" || ctx.Err() != nil {
					return
				}
				if res, err := svc.Check(registry.WithPriority(ctx, order[it]), it.copyRequest()); err == nil {
					it.Check = res
				}
			}()
		}
		wg.Wait()
	}()
	return checked, all
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

// pullBudget keeps images from starting when their source registry's
// pulls are nearly spent. Images decide in the file's order. Each image
// that needs pulls reserves MinPulls of them while it is promoted, so that
// images promoted at once do not all count on the same pulls; one that
// finds too few left waits for those under way to settle (the registry's
// count is then up to date), and is deferred when none are under way.
type pullBudget struct {
	opts     RunOptions
	order    map[*Item]int
	mu       sync.Mutex
	turn     int            // the index of the item that decides next
	reserved map[string]int // pulls reserved per source registry
	changed  chan struct{}  // closed when the turn passes or a reservation ends
}

func newPullBudget(opts RunOptions, items []Item) *pullBudget {
	b := &pullBudget{opts: opts, order: map[*Item]int{}, reserved: map[string]int{}, changed: make(chan struct{})}
	for i := range items {
		b.order[&items[i]] = i
	}
	return b
}

// reserve decides whether it may start: ok with a release to call when it
// is done, or not ok (it has a status already, or is now deferred). An
// item without a check is checked now (a HEAD, which costs no pull).
func (b *pullBudget) reserve(ctx context.Context, svc service.Service, it *Item) (release func(), ok bool) {
	nothing := func() {}
	if !b.waitTurn(ctx, b.order[it]) {
		return nothing, it.Status == "" // the promotion reports the context's end
	}
	defer b.pass()
	if it.Status != "" {
		return nothing, false
	}
	if b.opts.Pulls == nil || b.opts.MinPulls <= 0 {
		return nothing, true
	}
	src, err := name.ParseReference(it.SrcImageRef)
	if err != nil {
		return nothing, true // the promotion reports it
	}
	reg := src.Context().RegistryStr()
	for {
		left, known := b.opts.Pulls.PullsRemaining(src.Context().Registry)
		b.mu.Lock()
		if !known || left-b.reserved[reg] >= b.opts.MinPulls {
			b.reserved[reg] += b.opts.MinPulls
			b.mu.Unlock()
			return func() { b.end(reg) }, true
		}
		busy, changed := b.reserved[reg] > 0, b.changed
		b.mu.Unlock()
		if it.Check == nil {
			res, err := svc.Check(ctx, it.copyRequest())
			if err != nil {
				return nothing, true // the promotion reports the error
			}
			it.Check = res
		}
		if it.Check.UpToDate {
			return nothing, true // costs no pull
		}
		if !busy {
			it.Status = Deferred
			it.Error = fmt.Sprintf("%s has %d pulls left, fewer than the %d an image may need (-min-pulls): deferred to the next sync", reg, left, b.opts.MinPulls)
			return nil, false
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nothing, true // the promotion reports the context's end
		}
	}
}

// waitTurn waits until the item at index i may decide.
func (b *pullBudget) waitTurn(ctx context.Context, i int) bool {
	for {
		b.mu.Lock()
		turn, changed := b.turn, b.changed
		b.mu.Unlock()
		if turn >= i {
			return true
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return false
		}
	}
}

// pass gives the turn to the next item.
func (b *pullBudget) pass() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.turn++
	b.wake()
}

// end ends a reservation on reg.
func (b *pullBudget) end(reg string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reserved[reg] -= b.opts.MinPulls
	b.wake()
}

// wake wakes those waiting; b.mu is held.
func (b *pullBudget) wake() {
	close(b.changed)
	b.changed = make(chan struct{})
}

func (it *Item) promote(ctx context.Context, svc service.Service, key *keys.Key, gate promote.Gate, ra *promote.ReadAhead) {
	req := it.copyRequest()
	req.Checked, req.Gate, req.ReadAhead, req.Policy = it.Check, gate, ra, it.policy
	res, err := service.Promote(ctx, svc, service.PromoteRequest{CopyRequest: req, Copy: true, Sign: it.Sign, Attest: it.Attest, Key: key,
		SignatureFormat: sign.Format(it.SignatureFormat), Referrers: it.Referrers, ReferrersTypes: it.ReferrersTypes})
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
	case service.KindPolicyRefused:
		it.Status = RefusedPolicy
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
			if r.Referrers != nil {
				s.SourcePulls += r.Referrers.SourcePulls
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
	return s.Statuses[Missing] + s.Statuses[Refused] + s.Statuses[RefusedPolicy] + s.Statuses[Failed]
}

// Deferred counts the images deferred for rate limits.
func (s Summary) Deferred() int { return s.Statuses[Deferred] }

// Order lists the statuses s counted, in a stable order.
func (s Summary) Order() []Status {
	order := []Status{Promoted, New, Moves, UpToDate, Deferred, Missing, Refused, RefusedPolicy, Failed}
	return slices.DeleteFunc(order, func(st Status) bool { return s.Statuses[st] == 0 })
}
