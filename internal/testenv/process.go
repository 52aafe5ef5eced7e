package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is a started tool with its combined output kept for diagnosis.
type Process struct {
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// start runs cmd in its own process group, so that Close ends it and every
// child it may have started.
func start(cmd *exec.Cmd) (*Process, error) {
	p := &Process{cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", cmd.Path, err)
	}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// Output returns what the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Close stops the process and waits for it.
func (p *Process) Close() error {
	if p == nil || p.cmd.Process == nil {
		return nil
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
	return nil
}

// FreeAddr returns a loopback address with a port that was free a moment ago.
// The port is picked outside the kernel's ephemeral range (below it, or
// above it when there is no room below), so that no
// process's outgoing connection can take it before the caller listens on it
// (a tool started on an ephemeral port lost it that way in CI); another
// listener still can, which startListening survives by trying again.
func FreeAddr() (string, error) {
	low, high := ephemeralRange()
	from, to := belowEphemeralFloor, low // ports [from, to)
	if to-from < 1000 {
		from, to = high+1, 65536 // no room below: above it
	}
	for i := 0; i < 64 && to-from >= 1000; i++ { // none when there is no room outside it
		port := from + rand.IntN(to-from)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		addr := l.Addr().String()
		l.Close()
		return addr, nil
	}
	// Every pick was taken: let the kernel choose, as a last resort.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// belowEphemeralFloor is the lowest port FreeAddr picks: above the ports
// services are usually configured on.
const belowEphemeralFloor = 20000

// ephemeralRange returns the kernel's ephemeral port range
// (ip_local_port_range), or Linux's default 32768-60999 when it cannot be
// read.
func ephemeralRange() (low, high int) {
	const defaultLow, defaultHigh = 32768, 60999
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return defaultLow, defaultHigh
	}
	f := strings.Fields(string(b))
	if len(f) != 2 {
		return defaultLow, defaultHigh
	}
	low, err1 := strconv.Atoi(f[0])
	high, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || low > high {
		return defaultLow, defaultHigh
	}
	return low, high
}

// errAddrInUse marks a tool that exited because another process took the
// address it was given between FreeAddr and its listen.
var errAddrInUse = errors.New("address already in use")

// startListening starts a tool that listens on n loopback addresses:
// launch builds its command for the addresses FreeAddr picked, and ready
// waits for it to answer. When the tool exits because one of the addresses
// was taken in the meantime, it is started again on new ones (a few times).
func startListening(ctx context.Context, n int, launch func(addrs []string) (*exec.Cmd, error), ready func(p *Process, addrs []string) error) (*Process, []string, error) {
	var inUse error
	for range 5 {
		addrs := make([]string, n)
		for i := range addrs {
			addr, err := FreeAddr()
			if err != nil {
				return nil, nil, err
			}
			addrs[i] = addr
		}
		cmd, err := launch(addrs)
		if err != nil {
			return nil, nil, err
		}
		p, err := start(cmd)
		if err != nil {
			return nil, nil, err
		}
		err = ready(p, addrs)
		if err == nil {
			return p, addrs, nil
		}
		p.Close()
		if !errors.Is(err, errAddrInUse) {
			return nil, nil, err
		}
		inUse = err
	}
	return nil, nil, inUse
}

// waitHTTP polls url until ready accepts the answer's status, the process
// exits, or ctx ends.
func (p *Process) waitHTTP(ctx context.Context, url string, ready func(int) bool) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			// Whoever answered must be this process: another that took
			// the port first answers too, while this one exits.
			if ready(resp.StatusCode) && p.listensOn(req.URL.Port()) {
				return nil
			}
		}
		select {
		case <-p.done:
			if strings.Contains(p.Output(), "address already in use") {
				return fmt.Errorf("%s exited before it was ready (%w): %s", p.cmd.Path, errAddrInUse, p.Output())
			}
			return fmt.Errorf("%s exited before it was ready: %s", p.cmd.Path, p.Output())
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("%s not ready at %s: %s", p.cmd.Path, url, p.Output()), ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// listensOn reports whether the process holds the listening TCP socket of
// port on this machine (from /proc/net/tcp and /proc/PID/fd), or true when
// /proc cannot tell.
func (p *Process) listensOn(port string) bool {
	want, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return true
	}
	sockets := map[string]bool{}
	known := false
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(table)
		if err != nil {
			continue
		}
		known = true
		for _, line := range strings.Split(string(b), "\n") {
			// sl local_address rem_address st ... inode: st 0A is LISTEN.
			f := strings.Fields(line)
			if len(f) < 10 || f[3] != "0A" {
				continue
			}
			_, hex, _ := strings.Cut(f[1], ":")
			if n, err := strconv.ParseUint(hex, 16, 16); err == nil && n == want {
				sockets["socket:["+f[9]+"]"] = true
			}
		}
	}
	if !known {
		return true
	}
	dir := fmt.Sprintf("/proc/%d/fd", p.cmd.Process.Pid)
	fds, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrPermission) {
		return true // cannot tell (hidepid)
	}
	if err != nil {
		return false // gone: its exit is seen next
	}
	for _, fd := range fds {
		if target, err := os.Readlink(filepath.Join(dir, fd.Name())); err == nil && sockets[target] {
			return true
		}
	}
	return false
}

// Buffer is a bytes.Buffer safe for concurrent writers, for capturing a
// process's or a logger's output.
type Buffer = lockedBuffer

// RepoName turns a test name into a valid repository path component:
// lower case letters and digits, single dashes between.
func RepoName(testName string) string {
	repo := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9':
			return r
		case r >= 'A' && r <= 'Z':
			return r + 'a' - 'A'
		}
		return '-'
	}, testName)
	for strings.Contains(repo, "--") {
		repo = strings.ReplaceAll(repo, "--", "-")
	}
	return strings.Trim(repo, "-")
}

// PeakRSS returns the high-water resident set size (VmHWM) of the one
// running process whose executable is exe. It fails when no such process
// runs, when more than one does, or when its peak cannot be read, so that
// a caller never mistakes "unknown" for "small".
func PeakRSS(exe string) (int64, error) {
	dir, err := processOf(exe)
	if err != nil {
		return 0, fmt.Errorf("peak RSS: %w", err)
	}
	hwm := VmHWM(filepath.Join(dir, "status"))
	if hwm == 0 {
		return 0, fmt.Errorf("peak RSS of %s: no VmHWM in %s/status", exe, dir)
	}
	return hwm, nil
}

// ProcessCPU returns the user and system CPU time used so far by the one
// running process whose executable is exe (from /proc/<pid>/stat, in the
// kernel's USER_HZ ticks of 10 ms).
func ProcessCPU(exe string) (time.Duration, error) {
	dir, err := processOf(exe)
	if err != nil {
		return 0, fmt.Errorf("CPU time: %w", err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return 0, fmt.Errorf("CPU time of %s: %w", exe, err)
	}
	// The command name, in parentheses, may hold spaces: fields count
	// from the last ')'. utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	f := strings.Fields(string(b[i+1:]))
	if i < 0 || len(f) < 13 {
		return 0, fmt.Errorf("CPU time of %s: unexpected %s/stat", exe, dir)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("CPU time of %s: %s/stat: %w", exe, dir, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// processOf returns the /proc directory of the one running process whose
// executable is exe.
func processOf(exe string) (string, error) {
	want, err := filepath.EvalSymlinks(exe)
	if err != nil {
		return "", err
	}
	procs, err := filepath.Glob("/proc/[0-9]*/exe")
	if err != nil {
		return "", err
	}
	var dirs []string
	for _, p := range procs {
		if target, err := os.Readlink(p); err == nil && target == want {
			dirs = append(dirs, filepath.Dir(p))
		}
	}
	if len(dirs) != 1 {
		return "", fmt.Errorf("%d processes run %s, want 1", len(dirs), exe)
	}
	return dirs[0], nil
}

// VmHWM reads the peak RSS from a /proc/<pid>/status file, or 0 when the
// file cannot be read (the process has gone) or has no VmHWM line.
func VmHWM(statusPath string) int64 {
	b, err := os.ReadFile(statusPath)
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) == 3 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

// Run runs cmd to its end and returns what it printed and its exit code;
// err is set only when it could not run at all.
func Run(cmd *exec.Cmd) (stdout, stderr string, code int, err error) {
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return out.String(), errOut.String(), ee.ExitCode(), nil
	}
	return out.String(), errOut.String(), 0, err
}
