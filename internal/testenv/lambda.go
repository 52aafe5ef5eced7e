package testenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Lambda is a function binary running under the AWS Lambda Runtime
// Interface Emulator on loopback.
type Lambda struct {
	// URL is the invocation endpoint.
	URL  string
	proc *Process
}

// BuildBootstrap builds cmd/ocistow-lambda as the provided.al2023 runtime
// wants it: a static executable named bootstrap, with -tags lambda.norpc.
func BuildBootstrap(dir string) (string, error) {
	root, err := Root()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "bootstrap")
	cmd := exec.Command("go", "build", "-tags", "lambda.norpc", "-trimpath", "-ldflags=-s -w", "-o", out, "./cmd/ocistow-lambda")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("building bootstrap: %v\n%s", err, b)
	}
	return out, nil
}

// StartLambda runs bootstrap under the emulator with the function's
// environment env (the emulator passes its own environment on).
func StartLambda(ctx context.Context, bootstrap string, env []string) (*Lambda, error) {
	rie, err := Tool("aws-lambda-rie")
	if err != nil {
		return nil, err
	}
	p, addrs, err := startListening(ctx, 2, func(addrs []string) (*exec.Cmd, error) {
		cmd := exec.Command(rie, "--runtime-interface-emulator-address", addrs[0], "--runtime-api-address", addrs[1], "--log-level", "error", bootstrap)
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + filepath.Dir(bootstrap)}, env...)
		return cmd, nil
	}, func(p *Process, addrs []string) error {
		return p.waitHTTP(ctx, "http://"+addrs[0]+"/", func(int) bool { return true })
	})
	if err != nil {
		return nil, err
	}
	return &Lambda{URL: "http://" + addrs[0] + "/2015-03-31/functions/function/invocations", proc: p}, nil
}

// Invoke sends payload and returns the emulator's answer body. header,
// when not empty, is sent as X-Amzn-Trace-Id, as Lambda's front end would.
func (l *Lambda) Invoke(ctx context.Context, payload string, header ...string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, l.URL, strings.NewReader(payload))
	if err != nil {
		return "", err
	}
	if len(header) > 0 {
		req.Header.Set("X-Amzn-Trace-Id", header[0])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, err = io.Copy(&b, resp.Body)
	return b.String(), err
}

// Output returns what the emulator and the function logged.
func (l *Lambda) Output() string { return l.proc.Output() }

// Close stops the emulator and the function.
func (l *Lambda) Close() error { return l.proc.Close() }
