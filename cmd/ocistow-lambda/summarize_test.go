package main

import (
	"testing"

	lambdapayload "github.com/ocistow/ocistow/cmd/ocistow-lambda/internal/payload"
	"github.com/ocistow/ocistow/pkg/fleet"
)

// TestSummarizeAddsUpAFanout: the plan's counts of what it did not send
// (up to date, failed at the plan), each promotion's outcome or caught
// error, and the bytes and pulls of both.
func TestSummarizeAddsUpAFanout(t *testing.T) {
	missing := fleet.Item{Request: fleet.Request{SrcImageRef: "src/gone:v1"}, Status: fleet.Missing, ErrorType: "SourceNotFound"}
	deferred := fleet.Item{Request: fleet.Request{SrcImageRef: "src/later:v1"}, Status: fleet.Deferred}
	plan := &lambdapayload.PlanResult{
		Items:    []fleet.Request{{SrcImageRef: "src/a:v1"}, {SrcImageRef: "src/b:v1"}, {SrcImageRef: "src/c:v1"}},
		Failures: []fleet.Item{missing, deferred},
		Summary: fleet.Summary{Images: 6, SourcePulls: 2,
			Statuses: map[fleet.Status]int{fleet.New: 3, fleet.UpToDate: 1, fleet.Missing: 1, fleet.Deferred: 1}},
	}
	results := []lambdapayload.Result{
		{Request: plan.Items[0], Result: &lambdapayload.Outcome{BytesCopied: 100, SourcePulls: 3}},
		{Request: plan.Items[1], Result: &lambdapayload.Outcome{UpToDate: true}},
		{Request: plan.Items[2], Error: &lambdapayload.CaughtError{Error: "TagImmutable", Cause: `{"errorType":"TagImmutable","errorMessage":"would move"}`}},
	}
	s := summarize(plan, results)
	if s.Images != 6 || s.Succeeded != 3 || s.Failed != 2 || s.Deferred != 1 || s.BytesCopied != 100 || s.SourcePulls != 5 {
		t.Errorf("summary %+v: want 6 images, 3 succeeded (1 promoted, 2 up to date), 2 failed, 1 deferred, 100 bytes, 5 pulls", s)
	}
	if s.Succeeded+s.Failed+s.Deferred != s.Images {
		t.Errorf("summary %+v: succeeded, failed and deferred do not add up to the images", s)
	}
	if s.Statuses[fleet.Promoted] != 1 || s.Statuses[fleet.UpToDate] != 2 || s.Statuses[fleet.Refused] != 1 || s.Statuses[fleet.Missing] != 1 || s.Statuses[fleet.New] != 0 {
		t.Errorf("statuses %v", s.Statuses)
	}
	if len(s.Failures) != 3 || s.Failures[0].SrcImageRef != "src/gone:v1" || s.Failures[1].Status != fleet.Deferred || s.Failures[2].Error != "would move" || s.Failures[2].Status != fleet.Refused {
		t.Errorf("failures %+v: want the plan's and the caught one, with its message", s.Failures)
	}
}
