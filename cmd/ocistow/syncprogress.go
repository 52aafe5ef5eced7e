package main

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/ocistow/ocistow/pkg/fleet"
)

// imageProgress shows a sync on a terminal: one line per image in flight
// and a last line with the overall counts. It is also the writer for log
// lines while it shows, so that they print above it.
type imageProgress struct {
	out   io.Writer
	p     *mpb.Progress
	total *mpb.Bar

	mu   sync.Mutex
	bars map[*fleet.Item]*mpb.Bar
	done bool

	// counts has its own lock: the last line's decorator reads it while
	// mu may be held by a Write waiting for that very frame.
	cmu    sync.Mutex
	counts map[fleet.Status]int
}

// start shows the lines, for a sync of images; until then (and after
// Finish) log lines go straight to out.
func (ip *imageProgress) start(images int) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	ip.p = mpb.New(mpb.WithOutput(ip.out), mpb.WithWidth(30), mpb.WithAutoRefresh())
	ip.bars = map[*fleet.Item]*mpb.Bar{}
	ip.cmu.Lock()
	ip.counts = map[fleet.Status]int{}
	ip.cmu.Unlock()
	ip.total = ip.p.AddBar(int64(images),
		mpb.BarPriority(1<<30), // always the last line
		mpb.PrependDecorators(decor.Name("images "), decor.CountersNoUnit("%d/%d", decor.WC{W: 9})),
		mpb.AppendDecorators(decor.Any(func(decor.Statistics) string { return ip.summary() })),
	)
	ip.done = false
}

// Started adds a line for it.
func (ip *imageProgress) Started(it *fleet.Item) {
	bar := ip.p.New(1, mpb.SpinnerStyle(),
		mpb.BarRemoveOnComplete(),
		mpb.PrependDecorators(decor.Name(fmt.Sprintf("%s -> %s", it.SrcImageRef, it.DstImageRef), decor.WC{C: decor.DindentRight | decor.DextraSpace})),
	)
	ip.mu.Lock()
	ip.bars[it] = bar
	ip.mu.Unlock()
}

// Done removes its line and counts it.
func (ip *imageProgress) Done(it *fleet.Item) {
	ip.mu.Lock()
	bar := ip.bars[it]
	delete(ip.bars, it)
	ip.mu.Unlock()
	ip.cmu.Lock()
	ip.counts[it.Status]++
	ip.cmu.Unlock()
	if bar != nil {
		bar.SetCurrent(1)
	}
	ip.total.Increment()
}

func (ip *imageProgress) summary() string {
	ip.cmu.Lock()
	defer ip.cmu.Unlock()
	var parts []string
	for _, st := range []fleet.Status{fleet.Promoted, fleet.UpToDate, fleet.Deferred, fleet.Missing, fleet.Refused, fleet.Failed} {
		if n := ip.counts[st]; n > 0 {
			parts = append(parts, fmt.Sprintf("%d %s", n, st))
		}
	}
	return strings.Join(parts, ", ")
}

// Finish waits for the last frame; log lines go straight out again.
func (ip *imageProgress) Finish() {
	ip.mu.Lock()
	if ip.done || ip.p == nil {
		ip.mu.Unlock()
		return
	}
	ip.done = true
	for _, bar := range ip.bars {
		bar.Abort(true)
	}
	ip.mu.Unlock()
	if !ip.total.Completed() {
		ip.total.Abort(false)
	}
	ip.p.Wait()
}

// Write prints p above the lines while they show, and to out after.
func (ip *imageProgress) Write(p []byte) (int, error) {
	ip.mu.Lock()
	defer ip.mu.Unlock()
	if ip.done {
		return ip.out.Write(p)
	}
	return ip.p.Write(p)
}
