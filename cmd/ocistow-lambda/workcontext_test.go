package main

import (
	"context"
	"testing"
	"time"
)

// TestWorkContextLeavesATenthForTheAnswer: work stops a tenth of the time
// left before the function's deadline, never less than 0.25 s nor more
// than 10 s before it, so that the answer is sent before Lambda kills the
// process.
func TestWorkContextLeavesATenthForTheAnswer(t *testing.T) {
	for _, tc := range []struct {
		left, margin time.Duration
	}{
		{30 * time.Second, 3 * time.Second},
		{time.Second, 250 * time.Millisecond},            // a tenth would be 0.1 s
		{15 * time.Minute, 10 * time.Second},             // a tenth would be 90 s
		{100 * time.Millisecond, 250 * time.Millisecond}, // nothing left to work with
	} {
		deadline := time.Now().Add(tc.left)
		ctx, cancel := context.WithDeadline(context.Background(), deadline)
		wctx, wcancel, margin := workContext(ctx)
		// time.Until moved on a little between the deadline and the call.
		if margin > tc.margin || margin < tc.margin-tc.margin/50 {
			t.Errorf("%s left: margin %s, want %s", tc.left, margin, tc.margin)
		}
		if got, ok := wctx.Deadline(); !ok || !got.Equal(deadline.Add(-margin)) {
			t.Errorf("%s left: work deadline %v, want %v", tc.left, got, deadline.Add(-margin))
		}
		wcancel()
		cancel()
	}
	wctx, wcancel, margin := workContext(context.Background())
	defer wcancel()
	if _, ok := wctx.Deadline(); ok || margin != 0 {
		t.Errorf("without a deadline: deadline set %v, margin %s; want none", ok, margin)
	}
}
