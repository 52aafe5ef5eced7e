package main

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/aws/aws-lambda-go/lambda/messages"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/service"
)

// faultyService is a Service whose Copy and Check fail as the test says:
// the rest is the real one's.
type faultyService struct {
	service.Service
	copy  func() error
	check func() error
}

func (s faultyService) Copy(ctx context.Context, req service.CopyRequest) (*service.CopyResult, error) {
	return nil, s.copy()
}

func (s faultyService) Check(ctx context.Context, req service.CopyRequest) (*service.CheckResult, error) {
	return nil, s.check()
}

// inProcessHandler is the handler a function with env (and nothing else:
// no AWS environment) gets at init, logging to logs.
func inProcessHandler(t *testing.T, env map[string]string, logs *testenv.Buffer) *handler {
	t.Helper()
	h, err := newHandler(t.Context(), func(k string) (string, bool) { v, ok := env[k]; return v, ok }, logs)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// invokeFails invokes h with payload and returns the function error it
// answers with.
func invokeFails(t *testing.T, h *handler, payload string) messages.InvokeResponse_Error {
	t.Helper()
	out, err := h.Invoke(t.Context(), []byte(payload))
	var ie messages.InvokeResponse_Error
	if !errors.As(err, &ie) {
		t.Fatalf("Invoke returned %s, %v: want a function error", out, err)
	}
	return ie
}

// TestInternalErrorIsOneLine holds README's Errors row "`InternalError` | a
// failure of no known kind, or a panic on the invocation's goroutine (a
// bug, reported as one line, never a stack trace)": a Service whose Copy
// panics on the handler's goroutine, and one whose Copy fails with an
// error of no kind (on several lines), both answer InternalError with a
// one-line message and no stack trace.
func TestInternalErrorIsOneLine(t *testing.T) {
	var logs testenv.Buffer
	h := inProcessHandler(t, map[string]string{"SIGN": "false"}, &logs)
	real := h.svc
	pl := payload("registry.invalid/src:v1", "registry.invalid/dst:v1", nil)

	h.svc = faultyService{Service: real, copy: func() error { panic("copy exploded\non two lines") }}
	ie := invokeFails(t, h, pl)
	if ie.Type != string(service.KindInternal) || ie.Message != "internal error: copy exploded on two lines" || ie.StackTrace != nil {
		t.Errorf("a panic answered %+v: want InternalError, \"internal error: copy exploded on two lines\", no stack trace", ie)
	}
	if !strings.Contains(logs.String(), `"msg":"panic"`) || strings.Contains(logs.String(), "goroutine ") {
		t.Errorf("the panic is not logged as one line:\n%s", logs.String())
	}

	h.svc = faultyService{Service: real, copy: func() error { return errors.New("a failure\nof no kind") }}
	ie = invokeFails(t, h, pl)
	if ie.Type != string(service.KindInternal) || ie.Message != "a failure of no kind" || ie.StackTrace != nil {
		t.Errorf("an error of no kind answered %+v: want InternalError, \"a failure of no kind\"", ie)
	}
}

// panicChildEnv, set in a test binary's environment, makes it the child
// that TestPanicOffTheInvocationsGoroutineEndsTheProcess runs.
const panicChildEnv = "OCISTOW_LAMBDA_TEST_PANIC_CHILD"

// TestPanicOffTheInvocationsGoroutineEndsTheProcess holds README's Known
// gaps "The Lambda handler recovers a panic only on the invocation's own
// goroutine: one on a goroutine it starts (a plan's image checks, for one)
// is not recovered, and ends the function's process". The test
// binary runs itself as a child whose handler plans a promotion file with
// a Service whose Check panics (fleet.Plan checks on goroutines of its
// own): the child dies of the panic, with a stack trace on its stderr,
// instead of answering.
func TestPanicOffTheInvocationsGoroutineEndsTheProcess(t *testing.T) {
	if os.Getenv(panicChildEnv) != "" {
		var logs testenv.Buffer
		h := inProcessHandler(t, map[string]string{"SIGN": "false"}, &logs)
		h.svc = faultyService{Service: h.svc, check: func() error { panic("check exploded") }}
		out, err := h.Invoke(t.Context(), []byte(stringPayload(map[string]any{"PromotionFile": "promotions:\n  - source: registry.invalid/src:v1\n    destination: registry.invalid/dst:v1\n    sign: false\n"})))
		t.Fatalf("the handler answered %s, %v", out, err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestPanicOffTheInvocationsGoroutineEndsTheProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), panicChildEnv+"=1")
	stdout, stderr, code, err := testenv.Run(cmd)
	if err != nil {
		t.Fatal(err)
	}
	if code != 2 || !strings.Contains(stderr, "panic: check exploded") || !strings.Contains(stderr, "goroutine ") || strings.Contains(stdout+stderr, "the handler answered") {
		t.Errorf("child exit %d: want 2, a panic's stack trace and no answer\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
}
