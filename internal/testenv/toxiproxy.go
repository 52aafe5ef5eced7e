package testenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
)

// Toxiproxy is a running Toxiproxy server: a real TCP proxy whose faults
// (resets, latency, bandwidth limits, stalls) are set over its HTTP API.
type Toxiproxy struct {
	api  string
	proc *Process
}

// StartToxiproxy builds (if needed) and starts toxiproxy-server on loopback.
func StartToxiproxy(ctx context.Context) (*Toxiproxy, error) {
	bin, err := Tool("toxiproxy-server")
	if err != nil {
		return nil, err
	}
	// A fixed seed makes which connections get a toxic repeatable.
	p, addrs, err := startListening(ctx, 1, func(addrs []string) (*exec.Cmd, error) {
		host, port, _ := strings.Cut(addrs[0], ":")
		return exec.Command(bin, "-host", host, "-port", port, "-seed", "1"), nil
	}, func(p *Process, addrs []string) error {
		return p.waitHTTP(ctx, "http://"+addrs[0]+"/version", func(c int) bool { return c == 200 })
	})
	if err != nil {
		return nil, err
	}
	return &Toxiproxy{api: "http://" + addrs[0], proc: p}, nil
}

// Proxy creates a proxy named name to upstream (host:port) listening on a
// free loopback port, and returns that host:port.
func (t *Toxiproxy) Proxy(ctx context.Context, name, upstream string) (string, error) {
	var err error
	for range 5 {
		var listen string
		if listen, err = FreeAddr(); err != nil {
			return "", err
		}
		var out struct {
			Listen string `json:"listen"`
		}
		err = t.call(ctx, http.MethodPost, "/proxies", map[string]any{"name": name, "listen": listen, "upstream": upstream, "enabled": true}, &out)
		if err == nil {
			return out.Listen, nil
		}
		// Another process took the port since FreeAddr: pick another.
		if !strings.Contains(err.Error(), "address already in use") {
			return "", err
		}
	}
	return "", err
}

// Toxic adds a toxic to a proxy: typ (reset_peer, limit_data, latency,
// bandwidth, timeout, slicer), stream (upstream: towards the server;
// downstream: towards the client), the fraction of connections it applies
// to, and its attributes.
func (t *Toxiproxy) Toxic(ctx context.Context, proxy, name, typ, stream string, toxicity float64, attrs map[string]any) error {
	return t.call(ctx, http.MethodPost, "/proxies/"+proxy+"/toxics", map[string]any{
		"name": name, "type": typ, "stream": stream, "toxicity": toxicity, "attributes": attrs,
	}, nil)
}

// RemoveToxic removes a toxic.
func (t *Toxiproxy) RemoveToxic(ctx context.Context, proxy, name string) error {
	return t.call(ctx, http.MethodDelete, "/proxies/"+proxy+"/toxics/"+name, nil, nil)
}

func (t *Toxiproxy) call(ctx context.Context, method, path string, in, out any) error {
	var body bytes.Buffer
	if in != nil {
		if err := json.NewEncoder(&body).Encode(in); err != nil {
			return err
		}
	}
	req, err := http.NewRequestWithContext(ctx, method, t.api+path, &body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return fmt.Errorf("toxiproxy %s %s: %s: %s", method, path, resp.Status, b.String())
	}
	if out != nil {
		return json.NewDecoder(resp.Body).Decode(out)
	}
	return nil
}

// Close stops the server.
func (t *Toxiproxy) Close() error { return t.proc.Close() }
