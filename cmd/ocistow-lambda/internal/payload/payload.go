// Package payload decodes the original ocistow Lambda payload, strictly.
package payload

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Payload is the original ocistow Lambda payload. Unknown fields are
// refused, so that a misspelt field is an error rather than silently
// ignored.
type Payload struct {
	SrcImageRef string            `json:"SrcImageRef"`
	DstImageRef string            `json:"DstImageRef"`
	Annotations map[string]string `json:"Annotations"`
}

// Decode reads the payload, refusing unknown fields and trailing data.
func Decode(payload []byte) (Payload, error) {
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("invalid payload: %s (want {\"SrcImageRef\": …, \"DstImageRef\": …, \"Annotations\": {…}})", strings.TrimPrefix(err.Error(), "json: "))
	}
	// Nothing may follow but white space. (json.Decoder.More would miss a
	// stray closing '}' or ']', before which it reports false.)
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return Payload{}, errors.New("invalid payload: data after the JSON object")
	}
	return p, nil
}
