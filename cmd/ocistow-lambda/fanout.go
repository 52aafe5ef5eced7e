package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"

	lambdapayload "github.com/ocistow/ocistow/cmd/ocistow-lambda/internal/payload"
	"github.com/ocistow/ocistow/pkg/fleet"
	"github.com/ocistow/ocistow/pkg/promofile"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/service"
)

// promotionFileName names the payload's promotion file in messages:
// "PromotionFile:LINE: what is wrong".
const promotionFileName = "PromotionFile"

// plan plans a promotion file as `ocistow sync -dry-run` does (parse,
// resolve, expand with the function's key as the default, check every
// image through the Service, writing nothing), and returns the requests to
// promote: the images that are new or whose tag moves. An entry's verify
// block is not checked here but by its promotion. Images that cannot
// be promoted (source missing, refused as immutable, failed to check) are
// returned as failures; those up to date only counted.
func (h *handler) plan(ctx context.Context, text string) (*lambdapayload.PlanResult, error) {
	f, err := promofile.Parse(promotionFileName, []byte(text))
	if err != nil {
		return nil, service.Errorf(service.KindInvalidRequest, "%w", err)
	}
	items, err := fleet.Expand(ctx, h.client, f.Resolve(), h.keyRef)
	if err != nil {
		return nil, service.Errorf(expandKind(err), "%s: %w", promotionFileName, err)
	}
	// The function signs with its own key only: refuse, before checking
	// anything, a file that asks for another.
	for _, it := range items {
		if (it.Sign || it.Attest) && normalKey(it.Key) != normalKey(h.keyRef) {
			return nil, service.Errorf(service.KindInvalidRequest, "%s:%d: key %s: this function signs with %s", promotionFileName, it.Line, it.Key, h.keyRef)
		}
	}
	fleet.Plan(ctx, h.svc, items, fleet.DefaultParallel)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("planning: %w", err)
	}
	res := &lambdapayload.PlanResult{Items: []fleet.Request{}, Failures: []fleet.Item{}, Summary: fleet.Summarize(items)}
	for _, it := range items {
		switch it.Status {
		case fleet.New, fleet.Moves:
			res.Items = append(res.Items, it.Request)
		case fleet.Missing, fleet.Refused, fleet.RefusedPolicy, fleet.Failed, fleet.Deferred:
			// Not sent to be promoted: each says why (a source whose tags
			// could not be listed is one failed or deferred entry).
			it.Check, it.Result = nil, nil
			res.Failures = append(res.Failures, it)
		}
	}
	return res, nil
}

// expandKind is the kind of an error expanding a promotion file: what the
// file says (an entry that cannot be expanded, two selections writing one
// tag), or a registry's answer that reached it some other way. A source
// repository whose tags cannot be listed is not an error here but one
// entry of the plan's Failures (fleet.Expand), so the others go on.
func expandKind(err error) service.Kind {
	var uerr *url.Error
	var nerr *net.OpError
	switch code := registry.StatusCode(err); {
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return service.KindUnauthorized
	case code != 0, errors.As(err, &uerr), errors.As(err, &nerr):
		return service.KindSourceFailed
	}
	return service.KindInvalidRequest
}

// FanoutSummary is what a fan-out did: every image of the promotion file
// by its final status, and the ones that failed, with why.
type FanoutSummary struct {
	// Images counts the images of the plan.
	Images int `json:"Images"`
	// Succeeded counts the images promoted or up to date; Deferred those
	// the plan deferred for rate limits (to the next run); Failed the
	// others.
	Succeeded int `json:"Succeeded"`
	Deferred  int `json:"Deferred"`
	Failed    int `json:"Failed"`
	// Statuses counts the images by status, as `ocistow sync` does.
	Statuses map[fleet.Status]int `json:"Statuses"`
	// BytesCopied and SourcePulls add up the promotions'.
	BytesCopied int64 `json:"BytesCopied"`
	SourcePulls int   `json:"SourcePulls"`
	// Failures are the images that failed, at the plan or when promoted:
	// request, status, error type and message.
	Failures []fleet.Item `json:"Failures"`
}

// summarize adds up a fan-out: the plan's counts of images it did not send
// to be promoted (up to date, or failed at the plan), and each promotion's
// result or caught error.
func summarize(plan *lambdapayload.PlanResult, results []lambdapayload.Result) FanoutSummary {
	s := FanoutSummary{Statuses: map[fleet.Status]int{}, Failures: []fleet.Item{}}
	if plan != nil {
		s.Images = plan.Summary.Images
		for st, n := range plan.Summary.Statuses {
			if st != fleet.New && st != fleet.Moves {
				s.Statuses[st] += n
			}
		}
		s.SourcePulls += plan.Summary.SourcePulls
		s.Failures = append(s.Failures, plan.Failures...)
	} else {
		s.Images = len(results)
	}
	for _, r := range results {
		switch {
		case r.Error != nil:
			it := fleet.Item{Request: r.Request, ErrorType: r.Error.Error, Error: causeMessage(r.Error.Cause), Status: statusOf(r.Error.Error)}
			s.Statuses[it.Status]++
			s.Failures = append(s.Failures, it)
		case r.Result != nil && r.Result.UpToDate:
			s.Statuses[fleet.UpToDate]++
		default:
			s.Statuses[fleet.Promoted]++
		}
		if r.Result != nil {
			s.BytesCopied += r.Result.BytesCopied
			s.SourcePulls += r.Result.SourcePulls
		}
	}
	s.Succeeded = s.Statuses[fleet.Promoted] + s.Statuses[fleet.UpToDate]
	s.Deferred = s.Statuses[fleet.Deferred]
	s.Failed = s.Statuses[fleet.Missing] + s.Statuses[fleet.Refused] + s.Statuses[fleet.RefusedPolicy] + s.Statuses[fleet.Failed]
	return s
}

// statusOf is the status a promotion that failed with errorType ends in.
func statusOf(errorType string) fleet.Status {
	switch service.Kind(errorType) {
	case service.KindSourceNotFound:
		return fleet.Missing
	case service.KindTagImmutable:
		return fleet.Refused
	case service.KindPolicyRefused:
		return fleet.RefusedPolicy
	}
	return fleet.Failed
}

// causeMessage is the errorMessage of a caught Lambda function error,
// whose Cause Step Functions gives as the function's error object in a
// JSON string; any other cause as it is.
func causeMessage(cause string) string {
	var e struct {
		ErrorMessage string `json:"errorMessage"`
	}
	if json.Unmarshal([]byte(cause), &e) == nil && e.ErrorMessage != "" {
		return e.ErrorMessage
	}
	return cause
}
