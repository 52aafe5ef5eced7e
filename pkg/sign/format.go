package sign

import "fmt"

// Format is how signatures are stored: cosign's legacy .sig tag, a
// Sigstore bundle referrer (cosign v3's format), or both.
type Format string

const (
	// Legacy is cosign's sha256-<hex>.sig tag of simple-signing payloads
	// (cosign v2's format, and what policy-controller, Kyverno and Ratify
	// read by default).
	Legacy Format = "legacy"
	// Bundle is a Sigstore bundle (v0.3) stored as an OCI 1.1 referrer of
	// the signed manifest (cosign v3's default format).
	Bundle Format = "bundle"
	// Both writes both.
	Both Format = "both"
)

// ParseFormat reads -signature-format: legacy, bundle or both; empty is
// Legacy.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case "":
		return Legacy, nil
	case Legacy, Bundle, Both:
		return Format(s), nil
	}
	return "", fmt.Errorf("invalid signature format %q: want legacy, bundle or both", s)
}

// Writes reports whether f writes the single format one (Legacy or
// Bundle). The zero Format writes Legacy.
func (f Format) Writes(one Format) bool {
	if f == "" {
		f = Legacy
	}
	return f == Both || f == one
}

// Formats lists the single formats f writes, legacy first.
func (f Format) Formats() []Format {
	var out []Format
	for _, one := range []Format{Legacy, Bundle} {
		if f.Writes(one) {
			out = append(out, one)
		}
	}
	return out
}

// Names returns the formats as strings, for logs and spans.
func Names(formats []Format) []string {
	out := make([]string, len(formats))
	for i, f := range formats {
		out[i] = string(f)
	}
	return out
}
