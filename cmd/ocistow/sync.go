package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/ocistow/ocistow/internal/app"
	"github.com/ocistow/ocistow/pkg/fleet"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/promofile"
	"golang.org/x/term"
)

const syncUsageHead = `ocistow sync promotes every image of a promotion file: copy, stamp and sign
each exactly as a single promotion does, several at once. One image failing
does not stop the others.

Usage:
  ocistow sync -f FILE [-dry-run] [-parallel N] [-o json] [flags]

With -dry-run it only plans: it reads every image's source and destination
(and, for a verify block, the source's signatures), writes nothing, and says
per image: up to date, new, tag moves from
sha256:…, source missing, refused (immutable), or refused (policy) when a
verify block's keys or identity signed no signature of the source digest
that passes. -dry-run -o json prints the
images to promote as a JSON list of single-promotion requests, in the Lambda
function's payload shape.

-key and -aws-kms-key-arn sign the entries that name no key of their own;
-trusted-root is the trusted root of verify blocks with an identity and no
trustedRoot of their own.

Registries that meter pulls (Docker Hub) say how many are left on every
answer, HEADs included; when fewer than -min-pulls are left, images that need
pulls are deferred to the next sync instead of failing, as are images the
registry refuses with a Retry-After of more than a minute.

Exit codes: 0 every image promoted or up to date; 1 some failed (source
missing, refused, or failed: the others went on); 2 bad flags, an invalid
promotion file, a key that cannot sign or a verify block that cannot be
loaded: nothing was written; 4 nothing
failed but some images were deferred for rate limits.

Flags:
`

// syncOptions are the sync command's own flags.
type syncOptions struct {
	file             string
	dryRun           bool
	parallel         int
	registryRequests int
	minPulls         int
	timeout          time.Duration
	quiet            bool
}

func runSync(ctx context.Context, args []string, lookupEnv func(string) (string, bool), getenv func(string) string, stdout, stderr io.Writer) int {
	var (
		o  app.Options
		so syncOptions
	)
	fs := flag.NewFlagSet("ocistow sync", flag.ContinueOnError)
	o.RegisterSync(fs)
	fs.StringVar(&so.file, "file", "", "the promotion file (YAML or JSON)")
	fs.StringVar(&so.file, "f", "", "short for -file")
	fs.BoolVar(&so.dryRun, "dry-run", false, "plan only: check every image with HEADs and tag lists, write nothing")
	fs.IntVar(&so.parallel, "parallel", fleet.DefaultParallel, "images written at once (more are read ahead, up to -registry-requests)")
	fs.IntVar(&so.registryRequests, "registry-requests", fleet.DefaultRegistryRequests, "requests in flight to one registry at most, across all images")
	fs.IntVar(&so.minPulls, "min-pulls", fleet.DefaultMinPulls, "defer images that need pulls from a registry whose rate-limit headers say fewer are left (0: never)")
	fs.DurationVar(&so.timeout, "timeout", 0, "give up on the whole sync after this long (0: no limit)")
	fs.BoolVar(&so.quiet, "quiet", false, "no progress lines (they show only when stderr is a terminal anyway)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), syncUsageHead)
		fs.PrintDefaults()
	}
	if code, done := parse(fs, args, getenv, stdout, stderr, "f"); done {
		return code
	}
	if fs.NArg() > 0 {
		return fail(stderr, exitInvalid, fmt.Errorf("unexpected argument %q (the file is given with -f)", fs.Arg(0)))
	}
	if so.file == "" {
		return fail(stderr, exitInvalid, errors.New("sync needs a promotion file: -f FILE"))
	}
	if so.parallel < 1 || so.registryRequests < 1 || so.minPulls < 0 {
		return fail(stderr, exitInvalid, errors.New("-parallel and -registry-requests must be at least 1, -min-pulls at least 0"))
	}
	format, err := o.Format()
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	entries, err := readPromotionFile(so.file)
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	defaultKey, err := o.KeyRef()
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	tr, err := startTracing(ctx, &o, false, getenv)
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	defer flush(tr)
	o.Settings.MaxRequestsPerRegistry = so.registryRequests
	var progress *imageProgress
	logOut := stderr
	if f, ok := stderr.(*os.File); ok && !so.quiet && !so.dryRun && term.IsTerminal(int(f.Fd())) {
		// Sized once the images are known; until then logs go straight out.
		progress = &imageProgress{out: stderr, done: true}
		logOut = progress
	}
	svc, _, err := o.Build(logOut)
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	if so.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, so.timeout)
		defer cancel()
	}
	items, err := fleet.Expand(ctx, o.Client(), entries, defaultKey)
	if err != nil {
		return fail(stderr, exitInvalid, fmt.Errorf("%s: %w", so.file, err))
	}
	fleet.DefaultSignatureFormat(items, format)
	if err := fleet.LoadPolicies(ctx, items, o.PolicyLoader(lookupEnv), o.TrustedRoot); err != nil {
		return fail(stderr, exitInvalid, fmt.Errorf("%s: %w", so.file, err))
	}
	if so.dryRun {
		fleet.Plan(ctx, svc, items, max(so.parallel, so.registryRequests))
		return report(stdout, stderr, o.Output, items, true)
	}
	signers, err := fleet.LoadKeys(ctx, items, func(ctx context.Context, ref string) (*keys.Key, error) {
		return keys.LoadSigner(ctx, ref, o.KeyOptions(lookupEnv))
	})
	if err != nil {
		return fail(stderr, exitInvalid, fmt.Errorf("%s: %w", so.file, err))
	}
	opts := fleet.RunOptions{Keys: signers, Parallel: so.parallel, Checks: so.registryRequests, Pulls: o.Client(), MinPulls: so.minPulls}
	if progress != nil {
		progress.start(len(items))
		opts.Started, opts.Done = progress.Started, progress.Done
	}
	fleet.Run(ctx, svc, items, opts)
	if progress != nil {
		progress.Finish()
	}
	return report(stdout, stderr, o.Output, items, false)
}

// readPromotionFile reads, parses and resolves the promotion file at path.
func readPromotionFile(path string) ([]promofile.Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the promotion file: %w", err)
	}
	f, err := promofile.Parse(path, data)
	if err != nil {
		return nil, err
	}
	return f.Resolve(), nil
}

// report prints a plan or a sync: a table and a summary line, or JSON; it
// returns the exit code.
func report(stdout, stderr io.Writer, output string, items []fleet.Item, plan bool) int {
	sum := fleet.Summarize(items)
	code := exitOK
	switch {
	case sum.Failures() > 0:
		code = exitFailed
	case sum.Deferred() > 0:
		code = exitDeferred
	}
	switch {
	case output == "json" && plan:
		todo := []fleet.Request{}
		for _, it := range items {
			if it.Status == fleet.New || it.Status == fleet.Moves {
				todo = append(todo, it.Request)
			}
		}
		printJSON(stdout, stderr, todo)
	case output == "json":
		printJSON(stdout, stderr, struct {
			Items   []fleet.Item  `json:"items"`
			Summary fleet.Summary `json:"summary"`
		}{items, sum})
	default:
		printTable(stdout, items, sum)
	}
	return code
}

func printTable(w io.Writer, items []fleet.Item, sum fleet.Summary) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, it := range items {
		detail := ""
		switch {
		case it.Error != "":
			detail = it.Error
		case it.Previous != "":
			detail = "from " + it.Previous
		}
		fmt.Fprintf(tw, "%s\t%s\t%s", it.Status, it.SrcImageRef, it.DstImageRef)
		if detail != "" {
			fmt.Fprintf(tw, "\t%s", detail)
		}
		fmt.Fprintln(tw)
	}
	tw.Flush()
	fmt.Fprintf(w, "%d images:", sum.Images)
	for i, st := range sum.Order() {
		sep := ","
		if i == 0 {
			sep = ""
		}
		fmt.Fprintf(w, "%s %d %s", sep, sum.Statuses[st], st)
	}
	fmt.Fprintf(w, "; %s copied, %d source pulls, %d signatures added", humanBytes(sum.BytesCopied), sum.SourcePulls, sum.SignaturesAdded)
	if sum.AttestationsAdded > 0 {
		fmt.Fprintf(w, ", %d attestations added", sum.AttestationsAdded)
	}
	fmt.Fprintln(w)
}
