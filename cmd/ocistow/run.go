package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"strings"
	"time"

	"go.opentelemetry.io/otel/codes"
	"golang.org/x/term"

	"github.com/ocistow/ocistow/internal/app"
	"github.com/ocistow/ocistow/internal/oneline"
	"github.com/ocistow/ocistow/pkg/attest"
	"github.com/ocistow/ocistow/pkg/keys"
	"github.com/ocistow/ocistow/pkg/service"
	"github.com/ocistow/ocistow/pkg/sign"
	"github.com/ocistow/ocistow/pkg/tracing"
)

// Exit codes. Scripts may rely on them.
const (
	exitOK         = 0
	exitFailed     = 1 // the promotion or verification failed; the destination tag is as it was
	exitInvalid    = 2 // bad flags, input or key, or -immutable refused: nothing was written
	exitSignFailed = 3 // the copy succeeded but signing failed: the image is in place, unsigned
	exitDeferred   = 4 // sync: nothing failed, but images were deferred for rate limits
)

const usageHead = `ocistow promotes a container image into your registry, stamps it with your
metadata and signs it with a KMS key, in cosign's format.

Usage:
  ocistow -source IMAGE -destination IMAGE [flags]
  ocistow verify -key KEY [-annotations k=v] [-recursive] [-attestation] IMAGE
  ocistow sync -f FILE [-dry-run] [-parallel N] [flags]   (ocistow sync -h)

Example: copy busybox into ECR, annotate it, and sign every digest with KMS:
  ocistow -source busybox:1.36 \
      -destination 111111111111.dkr.ecr.us-east-1.amazonaws.com/base/busybox:1.36 \
      -annotations team=platform -annotations owner=martin \
      -aws-kms-key-arn alias/ocistow-signing

Every flag can also be set by the environment variable of the same name in
upper snake case (-aws-kms-key-arn: AWS_KMS_KEY_ARN); repeatable flags take a
comma-separated list there (ANNOTATIONS=team=platform,owner=martin).
Command-line flags win over the environment.

Exit codes: 0 done; 1 failed (the destination tag is as it was); 2 bad flags,
input or key, -immutable refused to move the tag, or the source policy
(-source-key, -source-identity) refused the source (nothing was written);
3 copied but not signed (or not attested).

Flags:
`

const verifyUsageHead = `ocistow verify checks the cosign signatures of an image with a key, like
cosign verify --key KEY --insecure-ignore-tlog=true, and prints the verified
payloads as JSON. With -attestation it checks ocistow's promotion
attestations instead, like cosign verify-attestation --type
https://github.com/ocistow/ocistow/promotion/v1, and prints their predicates.

Usage:
  ocistow verify -key KEY [-annotations k=v ...] [-recursive] [-attestation] IMAGE

KEY is an AWS KMS key (awskms:///alias/NAME, ARN, alias/NAME or key id), a
public key PEM file, or a private key file. Exit 0 only if every checked
digest has at least one valid signature carrying the annotations.

Flags:
`

// parse parses args into fs with the environment as fallback, printing
// usage for -h. done is true when the caller should return code.
func parse(fs *flag.FlagSet, args []string, getenv func(string) string, stdout, stderr io.Writer, noEnv ...string) (code int, done bool) {
	// The flag package would print the whole usage after a bad flag; one
	// line says more.
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return exitOK, true
		}
		return fail(stderr, exitInvalid, fmt.Errorf("%w (see ocistow -h)", err)), true
	}
	skip := append([]string{"version", "o", "cpuprofile", "memprofile"}, noEnv...)
	if fs.Lookup("o") != nil && isSet(fs, "o") {
		skip = append(skip, "output") // -o and -output are one flag
	}
	if err := app.ApplyEnv(fs, getenv, skip...); err != nil {
		return fail(stderr, exitInvalid, err), true
	}
	return 0, false
}

func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) (code int) {
	getenv := func(k string) string { v, _ := lookupEnv(k); return v }
	if len(args) > 0 && args[0] == "verify" {
		return runVerify(ctx, args[1:], lookupEnv, getenv, stdout, stderr)
	}
	if len(args) > 0 && args[0] == "sync" {
		return runSync(ctx, args[1:], lookupEnv, getenv, stdout, stderr)
	}

	var (
		o                      app.Options
		version                bool
		cpuprofile, memprofile string
	)
	fs := flag.NewFlagSet("ocistow", flag.ContinueOnError)
	o.RegisterPromote(fs)
	fs.BoolVar(&version, "version", false, "print the version and exit")
	fs.StringVar(&cpuprofile, "cpuprofile", "", "write a pprof CPU profile of the run to this file")
	fs.StringVar(&memprofile, "memprofile", "", "write a pprof heap profile at the end of the run to this file")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usageHead)
		fs.PrintDefaults()
	}
	if code, done := parse(fs, args, getenv, stdout, stderr); done {
		return code
	}
	if version {
		fmt.Fprintln(stdout, "ocistow", app.Version)
		return exitOK
	}
	if fs.NArg() > 0 {
		return fail(stderr, exitInvalid, fmt.Errorf("unexpected argument %q (flags take -name=value)", fs.Arg(0)))
	}
	keyRef, err := o.CheckPromote()
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	stopProfiles, err := startProfiles(cpuprofile, memprofile)
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	defer func() {
		// The promotion is over, and its exit code says how it went; a
		// profile that could not be written is reported all the same.
		if err := stopProfiles(); err != nil {
			fail(stderr, code, err)
		}
	}()
	tr, err := startTracing(ctx, &o, o.XRay, getenv)
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	defer flush(tr)
	logOut := stderr
	if f, ok := stderr.(*os.File); ok && !o.Quiet && term.IsTerminal(int(f.Fd())) {
		bars := newBarProgress(stderr)
		defer bars.Finish()
		o.Settings.Progress, logOut = bars, bars
	}
	svc, _, err := o.Build(logOut)
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	if o.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Timeout)
		defer cancel()
	}
	ctx, span := tr.Provider.Tracer("github.com/ocistow/ocistow/cmd/ocistow").Start(ctx, "ocistow")
	defer span.End()
	if !o.Copy && o.Destination == "" {
		return fail(stderr, exitInvalid, errors.New("no destination image given"))
	}
	var key *keys.Key
	if keyRef != "" {
		// Load and check the key before anything is copied.
		if key, err = keys.LoadSigner(ctx, keyRef, o.KeyOptions(lookupEnv)); err != nil {
			return fail(stderr, exitInvalid, err)
		}
	}
	// Load the source policy's keys and trusted root before anything is
	// copied, as the signing key.
	pol, err := o.PolicyLoader(lookupEnv).Load(ctx, o.SourcePolicySpec())
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	res, err := service.Promote(ctx, svc, o.PromoteRequest(key, pol))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		var cs *service.CopySucceededError
		switch {
		case errors.As(err, &cs) && cs.Step == service.StepReferrers:
			// The copy (and signing) succeeded; the message says so.
			return fail(stderr, exitFailed, err)
		case errors.As(err, &cs):
			return fail(stderr, exitSignFailed, err)
		case service.KindOf(err) == service.KindInvalidRequest, service.KindOf(err) == service.KindTagImmutable, service.KindOf(err) == service.KindPolicyRefused:
			return fail(stderr, exitInvalid, err)
		case o.Copy:
			return fail(stderr, exitFailed, fmt.Errorf("copy failed: %w", err))
		default:
			return fail(stderr, exitFailed, fmt.Errorf("signing failed: %w", err))
		}
	}
	if o.Output == "json" {
		return printJSON(stdout, stderr, res)
	}
	if res.CopyResult != nil {
		fmt.Fprintln(stdout, copySummary(res.CopyResult))
		if p := res.CopyResult.Policy; p != nil {
			fmt.Fprintf(stdout, "source policy satisfied on %d digests by %s\n", len(p.Digests), p.Summary())
		}
	}
	if res.Signatures != nil {
		fmt.Fprintf(stdout, "signed %d digests with %s%s: %d added, %d already present\n",
			len(res.Signatures.Digests), res.Signatures.Key, formatsNote(res.Signatures.Formats), res.Signatures.Added, res.Signatures.Present)
	}
	if r := res.Referrers; r != nil {
		merged := ""
		if r.TagsMerged > 0 {
			merged = fmt.Sprintf(", %d merged into the destination's", r.TagsMerged)
		}
		fmt.Fprintf(stdout, "referrers of %d source digests: %d copied, %d already present; cosign tags: %d copied%s, %d already present; %d filtered out; %d source manifests written by digest; %d source pulls\n",
			len(r.Subjects), r.ReferrersCopied, r.ReferrersPresent, r.TagsCopied, merged, r.TagsPresent, r.Filtered, r.SubjectsWritten, r.SourcePulls)
	}
	if res.Attestations != nil {
		fmt.Fprintf(stdout, "attested %d digests with %s%s: %d added, %d already present\n",
			len(res.Attestations.Digests), res.Attestations.Key, formatsNote(res.Attestations.Formats), res.Attestations.Added, res.Attestations.Present)
	}
	return exitOK
}

func runVerify(ctx context.Context, args []string, lookupEnv func(string) (string, bool), getenv func(string) string, stdout, stderr io.Writer) int {
	var (
		o                      app.Options
		recursive, attestation bool
	)
	fs := flag.NewFlagSet("ocistow verify", flag.ContinueOnError)
	o.RegisterVerify(fs)
	fs.BoolVar(&recursive, "recursive", false, "for a multi-platform image, verify every manifest the index lists too")
	fs.BoolVar(&attestation, "attestation", false, "verify ocistow's promotion attestations (in-toto, "+attest.PredicateType+") instead of signatures, and print their predicates; -annotations must then be in each attestation's stamp")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), verifyUsageHead)
		fs.PrintDefaults()
	}
	if code, done := parse(fs, args, getenv, stdout, stderr); done {
		return code
	}
	if fs.NArg() != 1 {
		return fail(stderr, exitInvalid, errors.New("verify takes exactly one image (see ocistow verify -h)"))
	}
	image := fs.Arg(0)
	ref, err := o.KeyRef()
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	if ref == "" {
		return fail(stderr, exitInvalid, errors.New("verify needs a key: give -key or -aws-kms-key-arn"))
	}
	tr, err := startTracing(ctx, &o, false, getenv)
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	defer flush(tr)
	svc, _, err := o.Build(stderr)
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	key, err := keys.LoadVerifier(ctx, ref, o.KeyOptions(lookupEnv))
	if err != nil {
		return fail(stderr, exitInvalid, err)
	}
	res, err := svc.Verify(ctx, service.VerifyRequest{Image: image, Annotations: o.Annotations, Recursive: recursive, Attestation: attestation, Key: key})
	if err != nil {
		code := exitFailed
		if service.KindOf(err) == service.KindInvalidRequest {
			code = exitInvalid
		}
		return fail(stderr, code, fmt.Errorf("verification failed: %w", err))
	}
	if o.Output == "json" {
		return printJSON(stdout, stderr, res)
	}
	if attestation {
		// The verified attestations (digest, predicate type and
		// predicate), as a JSON array on one line.
		b, err := json.Marshal(res.Attestations)
		if err != nil {
			return fail(stderr, exitFailed, err)
		}
		counts := res.FormatCounts()
		fmt.Fprintf(stderr, "Verified %d promotion attestations (%d legacy, %d bundle) on %d digests of %s with %s\n",
			len(res.Attestations), counts[sign.Legacy], counts[sign.Bundle], len(res.Digests), image, key.Ref)
		fmt.Fprintln(stdout, string(b))
		return exitOK
	}
	// Like cosign: the verified payloads, as a JSON array on one line.
	payloads := make([]any, len(res.Verified))
	for i, v := range res.Verified {
		payloads[i] = v.Payload
	}
	b, err := json.Marshal(payloads)
	if err != nil {
		return fail(stderr, exitFailed, err)
	}
	counts := res.FormatCounts()
	fmt.Fprintf(stderr, "Verified %d signatures (%d legacy, %d bundle) on %d digests of %s with %s\n",
		len(res.Verified), counts[sign.Legacy], counts[sign.Bundle], len(res.Digests), image, key.Ref)
	fmt.Fprintln(stdout, string(b))
	return exitOK
}

// formatsNote names the signature formats written, unless it is only the
// legacy format (the default, whose line stays as it was).
func formatsNote(formats []sign.Format) string {
	if len(formats) == 1 && formats[0] == sign.Legacy {
		return ""
	}
	names := make([]string, len(formats))
	for i, f := range formats {
		names[i] = string(f)
	}
	if len(names) > 1 {
		return " (" + strings.Join(names, " and ") + " formats)"
	}
	return " (" + names[0] + " format)"
}

// startProfiles creates the profile files and starts the CPU profile, for
// finding where a promotion spends its time and memory (make bench). A
// file that cannot be created fails here, before anything is copied. stop
// ends the CPU profile, writes the heap profile, and returns what could not
// be written.
func startProfiles(cpu, mem string) (stop func() error, err error) {
	var cpuFile, memFile *os.File
	var made []string // the files this call created, removed if it fails
	defer func() {
		if err != nil {
			for _, f := range []*os.File{cpuFile, memFile} {
				if f != nil {
					f.Close()
				}
			}
			for _, name := range made {
				os.Remove(name)
			}
		}
	}()
	create := func(name string) (*os.File, error) {
		if f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644); err == nil {
			made = append(made, name)
			return f, nil
		}
		return os.Create(name) // one that exists: written over, never removed
	}
	if cpu != "" {
		if cpuFile, err = create(cpu); err != nil {
			return nil, fmt.Errorf("-cpuprofile: %w", err)
		}
	}
	if mem != "" {
		if memFile, err = create(mem); err != nil {
			return nil, fmt.Errorf("-memprofile: %w", err)
		}
	}
	// The profiler ignores write errors: keep the first one.
	cpuOut := &errWriter{w: cpuFile}
	if cpuFile != nil {
		if err := pprof.StartCPUProfile(cpuOut); err != nil {
			return nil, fmt.Errorf("-cpuprofile: %w", err)
		}
	}
	return func() (err error) {
		failed := func(flag string, ferr error) {
			if ferr == nil {
				return
			}
			if err == nil {
				err = fmt.Errorf("%s: %w", flag, ferr)
			} else {
				err = fmt.Errorf("%w; %s: %w", err, flag, ferr)
			}
		}
		if cpuFile != nil {
			pprof.StopCPUProfile()
			failed("-cpuprofile", cmp.Or(cpuOut.err, cpuFile.Close()))
		}
		if memFile != nil {
			runtime.GC() // the heap as the last collection left it
			failed("-memprofile", cmp.Or(pprof.WriteHeapProfile(memFile), memFile.Close()))
		}
		return err
	}, nil
}

// errWriter is a writer that keeps its first error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

// isSet reports whether flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// startTracing sets tracing up as -aws-xray (xray) and the OTEL_*
// variables ask, and gives o's Settings its tracer provider when it is on.
func startTracing(ctx context.Context, o *app.Options, xray bool, getenv func(string) string) (*tracing.Tracing, error) {
	on := tracing.Enabled(xray, getenv)
	tr, err := tracing.New(ctx, on, "ocistow", app.Version, getenv)
	if err != nil {
		return nil, err
	}
	if on {
		o.Settings.TracerProvider = tr.Provider
	}
	return tr, nil
}

// flush exports the spans still buffered, for at most five seconds.
func flush(tr *tracing.Tracing) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = tr.Shutdown(ctx)
}

func printJSON(stdout, stderr io.Writer, v any) int {
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fail(stderr, exitFailed, err)
	}
	return exitOK
}

// copySummary is the one-line human result of a copy.
func copySummary(r *service.CopyResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "promoted %s@%s to %s@%s: ", r.Source, r.SourceDigest, r.Destination, r.DestinationDigest)
	if n := len(r.Manifests); n > 0 {
		fmt.Fprintf(&b, "%d platforms, ", n)
	}
	took := time.Duration(r.Took).Round(time.Millisecond)
	if r.PreviousDigest != "" {
		fmt.Fprintf(&b, "tag moved from %s, ", r.PreviousDigest)
	}
	if r.UpToDate {
		fmt.Fprintf(&b, "destination already up to date, %d source pulls, in %s", r.SourcePulls, took)
		return b.String()
	}
	fmt.Fprintf(&b, "%d blobs copied (%s), %d skipped, %d mounted, %d manifests written, %d source pulls in %s",
		r.BlobsCopied, humanBytes(r.BytesCopied), r.BlobsSkipped, r.BlobsMounted, r.ManifestsWritten, r.SourcePulls, took)
	return b.String()
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// fail prints err as the one line a user needs and returns code.
func fail(stderr io.Writer, code int, err error) int {
	fmt.Fprintf(stderr, "ocistow: %s\n", oneline.Error(err))
	return code
}
