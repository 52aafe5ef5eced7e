// Command ocistow-lambda is ocistow as an AWS Lambda function: the same
// promotion as the CLI (copy, stamp, sign), invoked with the original
// ocistow payload
//
//	{"SrcImageRef": "busybox", "DstImageRef": "111111111111.dkr.ecr.us-east-1.amazonaws.com/demo", "Annotations": {"team": "foo"}}
//
// (with, optionally, the other fields of a single-promotion request:
// ManifestAnnotations, Labels, Platforms, Immutable, Sign, Key), or
// {"PromotionFile": "…"} to plan a promotion file as ocistow sync -dry-run
// does, and configured by the function's environment with the CLI's
// variable names (AWS_KMS_KEY_ARN, COPY, SIGN, DEBUG, AWS_XRAY, JOBS, …).
// deploy/statemachine.asl.json fans a plan out over it. Build it
// for the provided.al2023 runtime as an executable named bootstrap:
//
//	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 go build -tags lambda.norpc -trimpath -ldflags=-s -o bootstrap ./cmd/ocistow-lambda
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/aws/aws-lambda-go/lambda"
)

func main() {
	ctx := context.Background()
	h, err := newHandler(ctx, os.LookupEnv, os.Stdout)
	if err != nil {
		initError(err)
		os.Exit(1)
	}
	lambda.StartHandler(h)
}

// initError logs err as one JSON line and reports it to the Lambda Runtime
// API as an init error, so that the invocation fails with errorType
// InvalidConfiguration and the message, not with a bare exit status.
func initError(err error) {
	line, _ := json.Marshal(map[string]string{"level": "ERROR", "msg": "init", "error_type": "InvalidConfiguration", "err": err.Error()})
	fmt.Fprintln(os.Stderr, string(line))
	api := os.Getenv("AWS_LAMBDA_RUNTIME_API")
	if api == "" {
		return
	}
	body, _ := json.Marshal(map[string]string{"errorType": "InvalidConfiguration", "errorMessage": err.Error()})
	req, rerr := http.NewRequest(http.MethodPost, "http://"+api+"/2018-06-01/runtime/init/error", bytes.NewReader(body))
	if rerr != nil {
		return
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Lambda-Runtime-Function-Error-Type", "InvalidConfiguration")
	client := &http.Client{Timeout: 5 * time.Second}
	if resp, err := client.Do(req); err == nil {
		resp.Body.Close()
	}
}
