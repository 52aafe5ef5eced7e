package payload

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"reflect"
	"testing"
)

func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{
		`{"SrcImageRef":"busybox","DstImageRef":"r.example.com/demo","Annotations":{"team":"foo"}}`,
		`{"SrcImageRef":"busybox"}`, `{"Annotation":{}}`, `{`, `[]`, `null`, `{"SrcImageRef":1}`, `{} {}`,
		// json.Decoder.More is false before a closing delimiter: these
		// trailing bytes are what a check with More lets through.
		`{"SrcImageRef":"busybox","DstImageRef":"r.example.com/demo"}}`,
		`{"SrcImageRef":"busybox","DstImageRef":"r.example.com/demo"}]`,
		`{"SrcImageRef":"busybox"} `, `{"SrcImageRef":"busybox"} x`, `{"SrcImageRef":"busybox"}{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			return
		}
		// What is accepted is one JSON value and nothing else.
		if !json.Valid(b) {
			t.Fatalf("accepted %q, which is not valid JSON", b)
		}
		if n := values(b); n != 1 {
			t.Fatalf("accepted %q, which holds %d JSON values", b, n)
		}
		// What decodes, round-trips.
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := Decode(again)
		if err != nil || !reflect.DeepEqual(normalise(p), normalise(q)) {
			t.Fatalf("%q decoded to %+v, which round-trips to %+v (%v)", b, p, q, err)
		}
	})
}

// values counts the JSON values in b, or returns -1 if b is not a sequence
// of JSON values.
func values(b []byte) int {
	dec := json.NewDecoder(bytes.NewReader(b))
	n := 0
	for {
		var v json.RawMessage
		err := dec.Decode(&v)
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			return -1
		}
		n++
	}
}

func normalise(p Payload) Payload {
	if len(p.Annotations) == 0 {
		p.Annotations = nil
	}
	return p
}
