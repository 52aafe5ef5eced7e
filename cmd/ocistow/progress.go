package main

import (
	"fmt"
	"io"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/ocistow/ocistow/pkg/promote"
)

// barProgress shows one bar per blob on a terminal: its digest, its state
// (checking, uploading, then uploaded, skipped, mounted or failed), bytes
// and rate. It is also the writer for log lines while bars are shown, so
// that a log line prints above the bars instead of through them.
//
// A bar completes when its blob is done, not when its bytes have all been
// read (the upload is not committed then), and Finish (when the copy
// ends) draws a last frame before it returns: the bars end with every
// blob's outcome, under every log line written before Finish.
type barProgress struct {
	out      io.Writer
	p        *mpb.Progress
	refresh  chan any      // a frame is drawn at every value
	shutdown chan any      // closed when p has shut down
	stop     chan struct{} // closed to stop tick
	ticking  sync.WaitGroup

	mu   sync.Mutex
	bars map[string]*blobBar
	done bool
}

type blobBar struct {
	bar   *mpb.Bar
	size  int64
	start time.Time
	state atomic.Value // string
	bytes atomic.Int64 // streamed from the source so far
	took  atomic.Int64 // from start to done, in nanoseconds; 0 until done
}

// refreshRate is how often a frame is drawn.
const refreshRate = 150 * time.Millisecond

func newBarProgress(out io.Writer) *barProgress {
	b := &barProgress{
		out:      out,
		refresh:  make(chan any),
		shutdown: make(chan any),
		stop:     make(chan struct{}),
		bars:     map[string]*blobBar{},
	}
	b.p = mpb.New(mpb.WithOutput(out), mpb.WithWidth(40), mpb.WithManualRefresh(b.refresh), mpb.WithShutdownNotifier(b.shutdown))
	b.ticking.Add(1)
	go b.tick()
	return b
}

// tick asks for a frame every refreshRate until stop is closed.
func (b *barProgress) tick() {
	defer b.ticking.Done()
	t := time.NewTicker(refreshRate)
	defer t.Stop()
	for {
		select {
		case now := <-t.C:
			select {
			case b.refresh <- now:
			case <-b.shutdown:
				return
			case <-b.stop:
				return
			}
		case <-b.stop:
			return
		}
	}
}

var (
	_ promote.Progress  = (*barProgress)(nil)
	_ promote.Restarter = (*barProgress)(nil)
)

func (b *barProgress) BlobStarted(digest string, size int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	bb := &blobBar{size: size, start: time.Now()}
	bb.state.Store("checking")
	short := digest
	if len(short) > 19 {
		short = short[:19]
	}
	// A total of 0 keeps the bytes from completing the bar; its size is
	// set as the total it shows.
	bb.bar = b.p.AddBar(0,
		mpb.PrependDecorators(
			decor.Name(short, decor.WC{C: decor.DindentRight | decor.DextraSpace}),
			decor.Any(func(decor.Statistics) string { return bb.state.Load().(string) }, decor.WC{W: 10, C: decor.DindentRight}),
		),
		mpb.AppendDecorators(
			decor.Counters(decor.SizeB1024(0), "% .1f / % .1f", decor.WC{W: 22}),
			decor.Any(func(decor.Statistics) string { return bb.rate() }, decor.WC{W: 14}),
		),
	)
	bb.bar.SetTotal(size, false)
	b.bars[digest] = bb
}

// rate is the average rate at which the blob's bytes streamed, up to now
// or to when it was done; empty when none did.
func (bb *blobBar) rate() string {
	n := bb.bytes.Load()
	if n == 0 {
		return ""
	}
	d := time.Duration(bb.took.Load())
	if d == 0 {
		d = time.Since(bb.start)
	}
	perSecond := float64(n) / max(d.Seconds(), 1e-9)
	return fmt.Sprintf(" % .1f", decor.FmtAsSpeed(decor.SizeB1024(math.Round(perSecond))))
}

func (b *barProgress) get(digest string) *blobBar {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bars[digest]
}

func (b *barProgress) BlobBytes(digest string, n int64) {
	if bb := b.get(digest); bb != nil {
		bb.state.CompareAndSwap("checking", "uploading")
		bb.bytes.Add(n)
		bb.bar.IncrInt64(n)
	}
}

// BlobRestarted counts the blob's bytes from zero again: its upload
// starts over.
func (b *barProgress) BlobRestarted(digest string) {
	if bb := b.get(digest); bb != nil {
		bb.bytes.Store(0)
		bb.bar.SetCurrent(0)
	}
}

func (b *barProgress) BlobDone(digest string, outcome promote.Outcome) {
	bb := b.get(digest)
	if bb == nil {
		return
	}
	bb.took.Store(int64(max(time.Since(bb.start), 1)))
	if outcome == promote.Uploaded && bb.bytes.Load() < bb.size {
		// Its bytes went up, whether streamed or made here (a stamped
		// config).
		bb.bytes.Store(bb.size)
	}
	bb.state.Store(string(outcome))
	if outcome == promote.Failed {
		bb.bar.Abort(false)
		return
	}
	bb.bar.SetTotal(bb.size, true) // full, and complete
}

// Finish draws the last frame and stops the bars; log lines go straight
// to out from then on.
func (b *barProgress) Finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done {
		return
	}
	b.done = true
	close(b.stop)
	b.ticking.Wait()
	for _, bb := range b.bars {
		if !bb.bar.Completed() {
			bb.bar.Abort(false)
		}
	}
	// The last frame: log lines written so far, and each blob as it ended.
	select {
	case b.refresh <- time.Now():
	case <-b.shutdown: // it could not draw (the terminal went away)
	}
	b.p.Wait()
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
