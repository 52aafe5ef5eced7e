package main

import (
	"strings"
	"testing"
	"time"

	"github.com/ocistow/ocistow/internal/testenv"
)

// TestSequentialRoundTrips counts the chain of requests each sent after
// the answer to the one before, with 25 ms added to every answer.
func TestSequentialRoundTrips(t *testing.T) {
	t0 := time.Unix(0, 0)
	at := func(startMS, endMS int) testenv.Request {
		return testenv.Request{Start: t0.Add(time.Duration(startMS) * time.Millisecond), End: t0.Add(time.Duration(endMS) * time.Millisecond)}
	}
	lat := 25 * time.Millisecond
	for _, tc := range []struct {
		name string
		reqs []testenv.Request
		want int
	}{
		{"none", nil, 0},
		{"one", []testenv.Request{at(0, 1)}, 1},
		{"at once", []testenv.Request{at(0, 1), at(1, 2), at(2, 3)}, 1},
		// Pings at once, then the HEAD and the GET, then the blobs, then the
		// manifest: three waits for an answer, four requests in sequence.
		{"waves", []testenv.Request{at(0, 1), at(0, 1), at(27, 28), at(27, 29), at(55, 57), at(56, 58), at(84, 86)}, 4},
		// Sent before the answer could have arrived: not after it.
		{"too soon", []testenv.Request{at(0, 1), at(10, 11)}, 1},
		// Out of order in the log (two fronts' logs appended).
		{"two logs", []testenv.Request{at(56, 57), at(0, 1), at(28, 29)}, 3},
	} {
		if got := sequentialRoundTrips(tc.reqs, lat); got != tc.want {
			t.Errorf("%s: %d round trips in sequence, want %d", tc.name, got, tc.want)
		}
	}
}

func TestLatencyRoundTripsTable(t *testing.T) {
	sums := []summary{
		{scenario: "12 small 2-platform +25ms", tool: "ocistow", srcRequests: 11, requests: 25, sequential: 6},
		{scenario: "12 small 2-platform +25ms", tool: "regctl", srcRequests: 9, requests: 24, sequential: 9},
		{scenario: "1 full copy", tool: "ocistow", srcRequests: 16, requests: 42},
	}
	got := latencyRoundTrips(sums)
	for _, want := range []string{"| 12 small 2-platform +25ms | ocistow | 11 + 25 | 6 |", "| 12 small 2-platform +25ms | regctl | 9 + 24 | 9 |"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "full copy") {
		t.Errorf("table has a scenario without latency:\n%s", got)
	}
}
