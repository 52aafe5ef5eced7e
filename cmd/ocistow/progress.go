package main

import (
	"io"
	"sync"
	"sync/atomic"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/ocistow/ocistow/pkg/promote"
)

// barProgress shows one bar per blob on a terminal: its digest, its state
// (checking, uploading, then uploaded, skipped, mounted or failed), bytes
// and rate. It is also the writer for log lines while bars are shown, so
// that a log line prints above the bars instead of through them.
type barProgress struct {
	out io.Writer
	p   *mpb.Progress

	mu   sync.Mutex
	bars map[string]*blobBar
	done bool
}

type blobBar struct {
	bar   *mpb.Bar
	size  int64
	state atomic.Value // string
}

func newBarProgress(out io.Writer) *barProgress {
	return &barProgress{
		out:  out,
		p:    mpb.New(mpb.WithOutput(out), mpb.WithWidth(40), mpb.WithAutoRefresh()),
		bars: map[string]*blobBar{},
	}
}

var _ promote.Progress = (*barProgress)(nil)

func (b *barProgress) BlobStarted(digest string, size int64) {
	bb := &blobBar{size: size}
	bb.state.Store("checking")
	short := digest
	if len(short) > 19 {
		short = short[:19]
	}
	bb.bar = b.p.AddBar(size,
		mpb.PrependDecorators(
			decor.Name(short, decor.WC{C: decor.DindentRight | decor.DextraSpace}),
			decor.Any(func(decor.Statistics) string { return bb.state.Load().(string) }, decor.WC{W: 10, C: decor.DindentRight}),
		),
		mpb.AppendDecorators(
			decor.Counters(decor.SizeB1024(0), "% .1f / % .1f", decor.WC{W: 22}),
			decor.AverageSpeed(decor.SizeB1024(0), " % .1f", decor.WC{W: 14}),
		),
	)
	b.mu.Lock()
	b.bars[digest] = bb
	b.mu.Unlock()
}

func (b *barProgress) get(digest string) *blobBar {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bars[digest]
}

func (b *barProgress) BlobBytes(digest string, n int64) {
	if bb := b.get(digest); bb != nil {
		bb.state.Store("uploading")
		bb.bar.IncrInt64(n)
	}
}

func (b *barProgress) BlobDone(digest string, outcome promote.Outcome) {
	bb := b.get(digest)
	if bb == nil {
		return
	}
	bb.state.Store(string(outcome))
	if outcome == promote.Failed {
		bb.bar.Abort(false)
		return
	}
	bb.bar.SetCurrent(bb.size)
	bb.bar.SetTotal(bb.size, true)
}

// Finish waits for the last frame; log lines go straight out again.
func (b *barProgress) Finish() {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return
	}
	b.done = true
	b.mu.Unlock()
	for _, bb := range b.snapshot() {
		if !bb.bar.Completed() {
			bb.bar.Abort(false)
		}
	}
	b.p.Wait()
}

func (b *barProgress) snapshot() []*blobBar {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]*blobBar, 0, len(b.bars))
	for _, bb := range b.bars {
		out = append(out, bb)
	}
	return out
}

// Write prints p above the bars while they show, and to out after.
func (b *barProgress) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return b.out.Write(p)
	}
	return b.p.Write(p)
}
