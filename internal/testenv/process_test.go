package testenv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
)

// TestMain lets the test binary stand in for a tool: with
// TESTENV_LISTEN set it listens there and answers HTTP, printing the
// listen error and exiting as a tool does when the address is taken.
func TestMain(m *testing.M) {
	if addr := os.Getenv("TESTENV_LISTEN"); addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		_ = http.Serve(l, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func listener(addr string) *exec.Cmd {
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "TESTENV_LISTEN="+addr)
	return cmd
}

func TestStartListeningTriesAgainWhenTheAddressWasTaken(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// Whoever holds it answers HTTP as the tool would, but it is not the
	// tool.
	go func() { _ = http.Serve(busy, http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})) }()
	var tried []string
	p, addrs, err := startListening(context.Background(), 1, func(addrs []string) (*exec.Cmd, error) {
		if len(tried) == 0 {
			addrs[0] = busy.Addr().String() // as if another process took the pick
		}
		tried = append(tried, addrs[0])
		return listener(addrs[0]), nil
	}, func(p *Process, addrs []string) error {
		return p.waitHTTP(context.Background(), "http://"+addrs[0]+"/", func(int) bool { return true })
	})
	if err != nil {
		t.Fatalf("startListening: %v (tried %v)", err, tried)
	}
	defer p.Close()
	if len(tried) != 2 || addrs[0] != tried[1] || addrs[0] == busy.Addr().String() {
		t.Errorf("tried %v and got %v; want a second start on a new address after the taken one", tried, addrs)
	}
}

func TestStartListeningGivesUpOnOtherFailures(t *testing.T) {
	starts := 0
	_, _, err := startListening(context.Background(), 1, func(addrs []string) (*exec.Cmd, error) {
		starts++
		return listener("not-an-address"), nil
	}, func(p *Process, addrs []string) error {
		return p.waitHTTP(context.Background(), "http://"+addrs[0]+"/", func(int) bool { return true })
	})
	if err == nil || errors.Is(err, errAddrInUse) || starts != 1 {
		t.Errorf("started %d times, err %v; want one start and its exit reported", starts, err)
	}
}

func TestFreeAddrAvoidsTheEphemeralRange(t *testing.T) {
	low, high := ephemeralRange()
	for range 20 {
		addr, err := FreeAddr()
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(port)
		if n >= low && n <= high {
			t.Fatalf("FreeAddr gave %s, inside the ephemeral range %d-%d", addr, low, high)
		}
	}
}
