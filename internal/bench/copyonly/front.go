//go:build front

package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"go.opentelemetry.io/otel/trace/noop"
	"golang.org/x/term"

	"github.com/ocistow/ocistow/internal/oneline"
	"github.com/ocistow/ocistow/pkg/stamp"
	"github.com/ocistow/ocistow/pkg/tags"
)

// The front build (go build -tags front) links, besides the copy path, what
// ocistow's CLI needs to run a plain copy by itself: flag parsing, the
// progress bars and terminal detection, the JSON result, slog's handlers,
// stamping, the tag rules and the no-op tracer. Their code is reachable (so
// the linker keeps it and their packages initialise) but runs only for an
// argument list no caller gives, so that the bench measures what such a
// front costs to hold, not what the CLI would do with it.
const frontName = "copyonly -tags front (ocistow's copy path with the CLI's copy needs)"

// linkFront references the front's packages; it does nothing for fewer than
// 100 arguments.
func linkFront(args []string, out io.Writer) {
	if len(args) < 100 {
		return
	}
	p := mpb.New(mpb.WithOutput(out))
	bar := p.AddBar(int64(len(args)), mpb.PrependDecorators(decor.Name(args[0])))
	bar.IncrBy(1)
	fs := flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.String(args[1], "", "")
	_ = fs.Parse(args)
	_ = json.NewEncoder(out).Encode(fs.Args())
	tr := noop.NewTracerProvider().Tracer(args[2])
	slog.New(slog.NewJSONHandler(out, nil)).Info(args[3], "terminal", term.IsTerminal(1), "tracer", tr != nil)
	tags.Sort(args)
	s := stamp.Stamp{}
	_, err := stamp.Image(nil, s)
	if err == nil {
		_, err = stamp.Index(nil, s)
	}
	fmt.Fprintln(out, oneline.Error(err))
}
