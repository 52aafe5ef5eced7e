package testenv

import (
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	"google.golang.org/protobuf/proto"
)

// Span is one span an OTLPReceiver received.
type Span struct {
	Name                    string
	TraceID, SpanID, Parent string // hex; Parent is "" for a root span
	Attributes              map[string]string
	Error                   bool
	// Status is the status message (set with an error status).
	Status  string
	Service string
	// Events holds the attributes of each event, such as the
	// exception.message of a recorded error.
	Events []map[string]string
}

// Texts returns every string the span carries: its name, attribute values,
// status message and event attribute values. A test looking for a leaked
// secret searches these.
func (s Span) Texts() []string {
	out := []string{s.Name, s.Status}
	for _, v := range s.Attributes {
		out = append(out, v)
	}
	for _, e := range s.Events {
		for _, v := range e {
			out = append(out, v)
		}
	}
	return out
}

// OTLPReceiver is an in-process OTLP/HTTP trace receiver, standing in for
// the ADOT collector: point OTEL_EXPORTER_OTLP_ENDPOINT at its Endpoint.
type OTLPReceiver struct {
	// Endpoint is its base URL.
	Endpoint string
	srv      *httptest.Server
	mu       sync.Mutex
	spans    []Span
}

// NewOTLPReceiver starts a receiver on loopback.
func NewOTLPReceiver() *OTLPReceiver {
	r := &OTLPReceiver{}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	r.Endpoint = r.srv.URL
	return r
}

func (r *OTLPReceiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/v1/traces" {
		http.NotFound(w, req)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		gz, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = gz
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var in collectortrace.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &in); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range in.ResourceSpans {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.Key == "service.name" {
				service = value(a.Value)
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				sp := Span{
					Name:       s.Name,
					TraceID:    hex.EncodeToString(s.TraceId),
					SpanID:     hex.EncodeToString(s.SpanId),
					Parent:     hex.EncodeToString(s.ParentSpanId),
					Attributes: map[string]string{},
					Error:      s.GetStatus().GetCode() == 2,
					Status:     s.GetStatus().GetMessage(),
					Service:    service,
				}
				for _, a := range s.Attributes {
					sp.Attributes[a.Key] = value(a.Value)
				}
				for _, e := range s.Events {
					attrs := map[string]string{"event.name": e.Name}
					for _, a := range e.Attributes {
						attrs[a.Key] = value(a.Value)
					}
					sp.Events = append(sp.Events, attrs)
				}
				r.spans = append(r.spans, sp)
			}
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&collectortrace.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func value(v *commonpb.AnyValue) string {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_IntValue:
		return fmt.Sprint(x.IntValue)
	case *commonpb.AnyValue_BoolValue:
		return fmt.Sprint(x.BoolValue)
	case *commonpb.AnyValue_DoubleValue:
		return fmt.Sprint(x.DoubleValue)
	default:
		return v.String()
	}
}

// Spans returns the spans received so far.
func (r *OTLPReceiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// Close stops the receiver.
func (r *OTLPReceiver) Close() { r.srv.Close() }
