// Command copyonly is ocistow's copy path alone, for the benchmark: a
// program that links what copying an image needs (pkg/promote,
// pkg/registry, ocistow's ECR and Docker keychain) and nothing of signing,
// verifying, source policies, canonical logs or the CLI. `make bench`
// measures it beside ocistow when asked (`-tools …,ocistow-copy`), to show
// what ocistow's start-up time and memory would be in a process that only
// copies (docs/BENCHMARKS.md, "Why the misses"). Built with -tags front
// (`-tools …,ocistow-front`) it also links what the CLI needs to run a plain
// copy by itself (front.go), the lightest front a split into two executables
// could have.
//
//	copyonly -version
//	copyonly SOURCE DESTINATION
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"

	"github.com/ocistow/ocistow/pkg/ecrauth"
	"github.com/ocistow/ocistow/pkg/keychain"
	"github.com/ocistow/ocistow/pkg/promote"
	"github.com/ocistow/ocistow/pkg/registry"
)

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "copyonly:", err)
		os.Exit(1)
	}
}

// run copies args[0] to args[1] byte for byte and prints the destination
// digest, or prints its name for -version.
func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 1 && args[0] == "-version" {
		_, err := fmt.Fprintln(out, frontName)
		return err
	}
	linkFront(args, out)
	if len(args) != 2 {
		return errors.New("usage: copyonly SOURCE DESTINATION, or copyonly -version")
	}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	load := func(ctx context.Context, region string) (aws.Config, error) {
		return config.LoadDefaultConfig(ctx, config.WithRegion(region))
	}
	// As ocistow's client, but for its User-Agent and the options its flags
	// set (none of which changes what a byte-for-byte copy costs).
	c := registry.New(registry.WithKeychain(keychain.New(ecrauth.New(load), keychain.NewDocker(logger), logger)))
	src, err := c.ParseReference(args[0])
	if err != nil {
		return err
	}
	dst, err := c.ParseReference(args[1])
	if err != nil {
		return err
	}
	res, err := promote.Copy(ctx, c, promote.Request{Source: src, Destination: dst})
	if err != nil {
		return errors.New(registry.Describe(err))
	}
	_, err = fmt.Fprintln(out, res.DestinationDigest)
	return err
}
