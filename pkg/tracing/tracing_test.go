package tracing_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/ocistow/ocistow/pkg/tracing"
)

// TestEnabled checks the switches the README lists (Insight, Tracing):
// -aws-xray (AWS_XRAY=true) alone, OTEL_TRACES_EXPORTER=otlp,
// OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT alone
// turn tracing on; OTEL_SDK_DISABLED=true and OTEL_TRACES_EXPORTER=none
// turn it off again; nothing asked, it is off.
func TestEnabled(t *testing.T) {
	for _, c := range []struct {
		name string
		xray bool
		env  map[string]string
		want bool
	}{
		{name: "nothing", want: false},
		{name: "xray alone", xray: true, want: true},
		{name: "OTEL_TRACES_EXPORTER=otlp", env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, want: true},
		{name: "OTEL_EXPORTER_OTLP_ENDPOINT", env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318"}, want: true},
		{name: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://x:4318/v1/traces"}, want: true},
		{name: "xray, OTEL_SDK_DISABLED=true", xray: true, env: map[string]string{"OTEL_SDK_DISABLED": "true"}, want: false},
		{name: "xray, OTEL_TRACES_EXPORTER=none", xray: true, env: map[string]string{"OTEL_TRACES_EXPORTER": "none"}, want: false},
	} {
		if got := tracing.Enabled(c.xray, func(k string) string { return c.env[k] }); got != c.want {
			t.Errorf("%s: Enabled = %v, want %v", c.name, got, c.want)
		}
	}
}

// TestDefaultExportIsOTLPHTTPToLocalhost4318 checks the README's "Spans go
// over OTLP/HTTP to localhost:4318 unless the OTEL_EXPORTER_OTLP_*
// variables say otherwise": with none of them set, tracing switched on as
// -aws-xray alone switches it exports its spans as an OTLP/HTTP POST to
// /v1/traces on localhost:4318. The test listens on 127.0.0.1:4318 and
// fails if that port is taken (a collector running on this machine).
func TestDefaultExportIsOTLPHTTPToLocalhost4318(t *testing.T) {
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
		"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_INSECURE",
		"OTEL_EXPORTER_OTLP_TRACES_INSECURE", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"} {
		t.Setenv(k, "")
	}
	l, err := net.Listen("tcp", "127.0.0.1:4318")
	if err != nil {
		t.Fatalf("cannot listen on 127.0.0.1:4318, the default OTLP/HTTP port this test checks: %v", err)
	}
	const service = "ocistow-default-endpoint-test"
	var mu sync.Mutex
	var got []string // method, path and content type of the requests carrying our spans
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		if bytes.Contains(b, []byte(service)) {
			mu.Lock()
			got = append(got, r.Method+" "+r.URL.Path+" "+r.Header.Get("Content-Type"))
			mu.Unlock()
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })

	ctx := context.Background()
	tr, err := tracing.New(ctx, tracing.Enabled(true, func(string) string { return "" }), service, "test", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider.Tracer("test").Start(ctx, "probe")
	span.End()
	if err := tr.Flush(ctx); err != nil {
		t.Fatalf("exporting to localhost:4318: %v", err)
	}
	if err := tr.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || got[0] != "POST /v1/traces application/x-protobuf" {
		t.Errorf("requests with the spans at localhost:4318: %q, want one POST /v1/traces application/x-protobuf", got)
	}
}
