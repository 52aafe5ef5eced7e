// Command ocistow promotes a container image from an upstream registry into
// an organisation's registry, stamps it with the organisation's metadata, and
// signs it with a KMS key.
//
//	ocistow -source busybox -destination 111111111111.dkr.ecr.us-east-1.amazonaws.com/base/busybox:1.36 \
//	    -annotations team=platform -aws-kms-key-arn alias/ocistow
//
// Every flag may also be given as the environment variable of the same name
// in upper snake case: -aws-kms-key-arn as AWS_KMS_KEY_ARN. Run ocistow -h for
// the full list.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
