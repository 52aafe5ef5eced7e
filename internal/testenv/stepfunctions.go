package testenv

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// StepFunctions runs state machines in aws-local-stepfunctions, pinned by
// tools/stepfunctions/package-lock.json, under the machine's Node.js.
type StepFunctions struct {
	node, dir string
}

// Execution is what one run of a state machine did.
type Execution struct {
	// Output is the execution's output, when it succeeded.
	Output json.RawMessage `json:"Output"`
	// Error and Cause say why it failed, when it did.
	Error string `json:"Error"`
	Cause string `json:"Cause"`
	// Invocations are the Lambda invocations of its Task states, in the
	// order they started.
	Invocations []Invocation `json:"Invocations"`
}

// Invocation is one Lambda invocation of a Task state: the payload, and
// the function's answer or error.
type Invocation struct {
	State    string          `json:"State"`
	Payload  json.RawMessage `json:"Payload"`
	Response json.RawMessage `json:"Response"`
	Error    *struct {
		Error string `json:"Error"`
		Cause string `json:"Cause"`
	} `json:"Error"`
}

// NewStepFunctions returns the local Step Functions engine, installing it
// with npm ci into tools/stepfunctions/node_modules first when that lacks
// it or holds an install of other pins. It fails, never skips, when Node.js
// or npm is missing or the install fails.
func NewStepFunctions() (*StepFunctions, error) {
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("the Step Functions tests need Node.js (node) on PATH: %w", err)
	}
	root, err := Root()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "tools", "stepfunctions")
	if err := npmCI(dir); err != nil {
		return nil, err
	}
	return &StepFunctions{node: node, dir: dir}, nil
}

// npmCI installs the packages dir's package-lock.json pins, unless
// node_modules already holds exactly them. Test packages run in parallel:
// one installs while the others wait, holding a lock on the lock file.
func npmCI(dir string) error {
	stamp, err := fileStamp(filepath.Join(dir, "package.json"), filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return fmt.Errorf("tools/stepfunctions: %w", err)
	}
	lock, err := os.Open(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it anyway
	stampFile := filepath.Join(dir, "node_modules", ".ocistow-pins")
	if have, err := os.ReadFile(stampFile); err == nil && string(have) == stamp {
		return nil
	}
	npm, err := exec.LookPath("npm")
	if err != nil {
		return fmt.Errorf("installing tools/stepfunctions needs npm on PATH: %w", err)
	}
	cmd := exec.Command(npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in tools/stepfunctions: %v\n%s", err, out)
	}
	return os.WriteFile(stampFile, []byte(stamp), 0o644)
}

// fileStamp is a hash of the files' contents.
func fileStamp(files ...string) (string, error) {
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

// RunOptions say how to run a state machine locally.
type RunOptions struct {
	// Substitutions replace each ${NAME} in the definition, as
	// CloudFormation's DefinitionSubstitutions do.
	Substitutions map[string]string
	// Functions are the Lambda functions by ARN: every Task state whose
	// Resource is the ARN invokes the function under one of the emulators.
	// An emulator runs one invocation at a time, as one Lambda execution
	// environment does (a second at once crashes it): give as many as the
	// state machine runs at once.
	Functions map[string][]*Lambda
	// RetryIntervals, by state name, replace the pauses its Retry asks
	// for before each retry.
	RetryIntervals map[string]time.Duration
}

// Run runs one execution of the state machine in definitionFile with
// input. An execution that fails is returned with its Error and Cause, and
// no error; err is for a run that could not happen.
func (s *StepFunctions) Run(ctx context.Context, definitionFile string, o RunOptions, input any) (*Execution, error) {
	in, err := json.Marshal(input)
	if err != nil {
		return nil, err
	}
	definitionFile, err = filepath.Abs(definitionFile)
	if err != nil {
		return nil, err
	}
	args := []string{"--import", "./shim.mjs", "run.mjs", definitionFile}
	for _, k := range sortedKeys(o.Substitutions) {
		args = append(args, "-s", k+"="+o.Substitutions[k])
	}
	for _, k := range sortedKeys(o.Functions) {
		var urls []string
		for _, l := range o.Functions[k] {
			urls = append(urls, l.URL)
		}
		args = append(args, "-l", k+"="+strings.Join(urls, ","))
	}
	for _, k := range sortedKeys(o.RetryIntervals) {
		args = append(args, "-r", fmt.Sprintf("%s=%d", k, o.RetryIntervals[k].Milliseconds()))
	}
	cmd := exec.CommandContext(ctx, s.node, args...)
	cmd.Dir = s.dir
	cmd.Stdin = bytes.NewReader(in)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		return nil, fmt.Errorf("running %s in aws-local-stepfunctions: %v\n%s%s", definitionFile, err, stdout.String(), stderr.String())
	}
	var ex Execution
	if err := json.Unmarshal(stdout.Bytes(), &ex); err != nil {
		return nil, fmt.Errorf("the engine's answer is not JSON: %v\n%s%s", err, stdout.String(), stderr.String())
	}
	return &ex, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
