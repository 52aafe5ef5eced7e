// Package payload decodes the ocistow Lambda payload, strictly. One handler
// takes three shapes, told apart by the fields present:
//
//   - a promotion: the original ocistow payload {"SrcImageRef",
//     "DstImageRef", "Annotations"}, with the optional fields of a
//     fleet.Request (ManifestAnnotations, Labels, Platforms, Immutable,
//     Sign, Key, Attest, Referrers, ReferrersTypes, Verify), so that a plan item of `ocistow sync -dry-run -o json`
//     is a payload as it is;
//   - a plan: {"PromotionFile": "<the promotion file's YAML or JSON>"};
//   - a summary of a fan-out: {"Plan": <a plan's answer>, "Results":
//     [<one per promoted item>]}, the last step of the state machine in
//     deploy/.
package payload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/ocistow/ocistow/pkg/fleet"
	"github.com/ocistow/ocistow/pkg/policy"
)

// Mode is which shape a payload has.
type Mode int

// The payload shapes.
const (
	// Promote is one promotion.
	Promote Mode = iota
	// Plan plans a promotion file.
	Plan
	// Summarize adds up a fan-out's results.
	Summarize
)

// Payload is everything the function may be sent. Unknown fields are
// refused, so that a misspelt field is an error rather than silently
// ignored.
type Payload struct {
	// The promotion: the original ocistow payload's three fields.
	SrcImageRef string            `json:"SrcImageRef"`
	DstImageRef string            `json:"DstImageRef"`
	Annotations map[string]string `json:"Annotations"`
	// The options of a fleet.Request.
	ManifestAnnotations map[string]string `json:"ManifestAnnotations"`
	Labels              map[string]string `json:"Labels"`
	Platforms           []string          `json:"Platforms"`
	Immutable           bool              `json:"Immutable"`
	// Sign is nil when absent: the function's SIGN setting (true unless
	// configured otherwise) applies, so the original payload signs.
	Sign *bool `json:"Sign"`
	// Key must name the function's own key, when given.
	Key string `json:"Key"`
	// SignatureFormat, when given, is how signatures are stored (legacy,
	// bundle or both) instead of the function's SIGNATURE_FORMAT.
	SignatureFormat string `json:"SignatureFormat"`
	// Referrers is nil when absent: the function's REFERRERS setting
	// (false unless configured otherwise) applies.
	Referrers *bool `json:"Referrers"`
	// ReferrersTypes replaces the function's REFERRERS_TYPE, when given.
	ReferrersTypes []string `json:"ReferrersTypes"`
	// Attest is nil when absent: the function's ATTEST setting (false
	// unless configured otherwise) applies.
	Attest *bool `json:"Attest"`
	// Verify, when given, is the source policy (Keys, Identity, Issuer,
	// TrustedRoot, Annotations, Children) instead of the function's
	// SOURCE_KEY, SOURCE_IDENTITY, … settings.
	Verify *policy.Spec `json:"Verify"`

	// PromotionFile is the text of a promotion file to plan.
	PromotionFile *string `json:"PromotionFile"`

	// Plan and Results are what a fan-out's summary adds up.
	Plan    *PlanResult `json:"Plan"`
	Results []Result    `json:"Results"`
}

// PlanResult is the answer to a plan: the requests to promote (the images
// that are new or whose tag moves, as `ocistow sync -dry-run -o json`
// lists them), the images that cannot be promoted (source missing, refused
// as immutable, or failed to check), and the plan's counts.
type PlanResult struct {
	Items    []fleet.Request `json:"Items"`
	Failures []fleet.Item    `json:"Failures"`
	Summary  fleet.Summary   `json:"Summary"`
}

// Result is what the state machine records for one promoted item: its
// request, and either what the promotion did or the error Step Functions
// caught.
type Result struct {
	Request fleet.Request `json:"Request"`
	// Result is the promotion's result (the fields the state machine
	// selects from it).
	Result *Outcome `json:"Result,omitempty"`
	// Error is Step Functions' error output: the function's errorType as
	// Error, and as Cause its error object as a JSON string.
	Error *CaughtError `json:"Error,omitempty"`
}

// Outcome is the part of a promotion's result the state machine keeps.
type Outcome struct {
	SourceDigest      string `json:"sourceDigest,omitempty"`
	DestinationDigest string `json:"destinationDigest,omitempty"`
	UpToDate          bool   `json:"upToDate,omitempty"`
	BytesCopied       int64  `json:"bytesCopied,omitempty"`
	SourcePulls       int    `json:"sourcePulls,omitempty"`
}

// CaughtError is the error output of a Step Functions Catch.
type CaughtError struct {
	Error string `json:"Error"`
	Cause string `json:"Cause"`
}

// Mode tells which shape p has, or why it has none: fields of different
// shapes may not be mixed.
func (p Payload) Mode() (Mode, error) {
	promote := p.SrcImageRef != "" || p.DstImageRef != "" || p.Annotations != nil || p.ManifestAnnotations != nil ||
		p.Labels != nil || p.Platforms != nil || p.Immutable || p.Sign != nil || p.Key != "" || p.SignatureFormat != "" ||
		p.Referrers != nil || p.ReferrersTypes != nil || p.Attest != nil || p.Verify != nil
	plan := p.PromotionFile != nil
	summary := p.Plan != nil || p.Results != nil
	n := 0
	for _, b := range []bool{promote, plan, summary} {
		if b {
			n++
		}
	}
	switch {
	case n > 1:
		return 0, errors.New("invalid payload: a promotion (SrcImageRef, DstImageRef, …), a plan (PromotionFile) and a summary (Plan, Results) are separate invocations")
	case plan:
		return Plan, nil
	case summary:
		return Summarize, nil
	}
	return Promote, nil
}

// Decode reads the payload, refusing unknown fields, trailing data and
// fields of different shapes mixed.
func Decode(payload []byte) (Payload, error) {
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return Payload{}, fmt.Errorf("invalid payload: %s (want {\"SrcImageRef\": …, \"DstImageRef\": …, \"Annotations\": {…}}, or {\"PromotionFile\": …})", strings.TrimPrefix(err.Error(), "json: "))
	}
	// Nothing may follow but white space. (json.Decoder.More would miss a
	// stray closing '}' or ']', before which it reports false.)
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Payload{}, errors.New("invalid payload: data after the JSON object")
	}
	if _, err := p.Mode(); err != nil {
		return Payload{}, err
	}
	return p, nil
}
