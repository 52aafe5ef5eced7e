package app

import (
	"flag"
	"io"
	"runtime"
	"strings"
	"testing"
)

// TestJobsDefault holds the README's -jobs row: `-jobs N`, `JOBS`, default
// "CPUs, ≥ 4". The number of CPUs Go schedules on (GOMAXPROCS, which Go
// sets from the CPUs the process may use) is the default, but never below
// 4; -jobs and JOBS set it, the flag winning; 0 is the default, and a
// negative number is refused as a bad flag.
func TestJobsDefault(t *testing.T) {
	prev := runtime.GOMAXPROCS(0)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	for _, tc := range []struct {
		name  string
		procs int
		args  []string
		env   map[string]string
		want  int
	}{
		{name: "one CPU", procs: 1, want: 4},
		{name: "three CPUs", procs: 3, want: 4},
		{name: "four CPUs", procs: 4, want: 4},
		{name: "six CPUs", procs: 6, want: 6},
		{name: "twelve CPUs", procs: 12, want: 12},
		{name: "-jobs", procs: 6, args: []string{"-jobs", "2"}, want: 2},
		{name: "-jobs 0", procs: 6, args: []string{"-jobs", "0"}, want: 6},
		{name: "JOBS", procs: 6, env: map[string]string{"JOBS": "3"}, want: 3},
		{name: "-jobs wins over JOBS", procs: 6, args: []string{"-jobs", "2"}, env: map[string]string{"JOBS": "3"}, want: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			runtime.GOMAXPROCS(tc.procs)
			o, err := buildPromote(tc.args, tc.env)
			if err != nil {
				t.Fatal(err)
			}
			if got := o.Client().Jobs(); got != tc.want {
				t.Errorf("jobs with %d CPUs, args %q, env %v: %d, want %d", tc.procs, tc.args, tc.env, got, tc.want)
			}
		})
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
	}{
		{args: []string{"-jobs", "-1"}},
		{env: map[string]string{"JOBS": "-2"}},
	} {
		if _, err := buildPromote(tc.args, tc.env); err == nil || !strings.Contains(err.Error(), "-jobs") {
			t.Errorf("args %q, env %v: error %v, want one naming -jobs", tc.args, tc.env, err)
		}
	}
}

// buildPromote parses args and env as the promotion's flags and builds
// the service, as the CLI does.
func buildPromote(args []string, env map[string]string) (*Options, error) {
	var o Options
	fs := flag.NewFlagSet("ocistow", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	o.RegisterPromote(fs)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if err := ApplyEnv(fs, func(k string) string { return env[k] }); err != nil {
		return nil, err
	}
	if _, _, err := o.Build(io.Discard); err != nil {
		return nil, err
	}
	return &o, nil
}
