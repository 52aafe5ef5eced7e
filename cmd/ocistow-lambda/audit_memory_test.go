package main

import (
	"math"
	"runtime"
	"runtime/debug"
	"testing"

	"github.com/ocistow/ocistow/internal/testenv"
	"github.com/ocistow/ocistow/pkg/registry"
)

// TestMemoryLimitAndJobsFollowTheFunctionsMemory holds README's "Inside
// Lambda ocistow sets a soft memory limit of three quarters of the
// function's memory (unless `GOMEMLIMIT` is set) and, unless `JOBS` is
// set, sets `-jobs` to one per 64 MB of function memory (at least two, and
// no more than the CLI's default)". The handler is made in-process from
// an injected environment; the runtime's memory limit (debug.SetMemoryLimit
// reads it) is set to a sentinel before each init and restored after, and
// GOMAXPROCS is set so that the CLI's default (registry.DefaultJobs, the
// number of CPUs, at least 4) is known.
func TestMemoryLimitAndJobsFollowTheFunctionsMemory(t *testing.T) {
	const sentinel = 12345 << 20
	limit, procs := debug.SetMemoryLimit(-1), runtime.GOMAXPROCS(0)
	t.Cleanup(func() { debug.SetMemoryLimit(limit); runtime.GOMAXPROCS(procs) })
	for _, c := range []struct {
		name     string
		procs    int // GOMAXPROCS: the CLI's default jobs is max(4, procs)
		env      map[string]string
		jobs     int
		memLimit int64
	}{
		{"1024 MB", 8, map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}, 8, 768 << 20},
		{"1024 MB, more CPUs than 64 MB", 32, map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}, 16, 768 << 20},
		{"192 MB", 8, map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "192"}, 3, 144 << 20},
		{"128 MB", 8, map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128"}, 2, 96 << 20},
		{"64 MB, at least two", 8, map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "64"}, 2, 48 << 20},
		{"1024 MB, JOBS", 8, map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "JOBS": "3"}, 3, 768 << 20},
		{"128 MB, JOBS", 8, map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "JOBS": "20"}, 20, 96 << 20},
		{"1024 MB, GOMEMLIMIT", 8, map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024", "GOMEMLIMIT": "500MiB"}, 8, sentinel},
		{"128 MB, GOMEMLIMIT and JOBS", 8, map[string]string{"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128", "GOMEMLIMIT": "64MiB", "JOBS": "5"}, 5, sentinel},
		// Outside Lambda (no function memory): neither is touched.
		{"no function memory", 8, map[string]string{}, 0, sentinel},
	} {
		t.Run(c.name, func(t *testing.T) {
			runtime.GOMAXPROCS(c.procs)
			if want := max(registry.MinDefaultJobs, c.procs); registry.DefaultJobs() != want {
				t.Fatalf("the CLI's default jobs is %d, not %d: the cases assume it", registry.DefaultJobs(), want)
			}
			debug.SetMemoryLimit(sentinel)
			defer debug.SetMemoryLimit(math.MaxInt64)
			c.env["SIGN"] = "false"
			var logs testenv.Buffer
			h := inProcessHandler(t, c.env, &logs)
			if got := debug.SetMemoryLimit(-1); got != c.memLimit {
				t.Errorf("memory limit %d MiB, want %d MiB", got>>20, c.memLimit>>20)
			}
			if h.opts.Settings.Jobs != c.jobs {
				t.Errorf("jobs %d, want %d", h.opts.Settings.Jobs, c.jobs)
			}
		})
	}
}
