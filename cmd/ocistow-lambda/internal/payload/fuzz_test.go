package payload

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
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
		// A plan item of ocistow sync -dry-run -o json, as it is.
		`{"SrcImageRef":"r.example.com/a:1","DstImageRef":"d.example.com/a:1","Annotations":{"team":"p"},"ManifestAnnotations":{"m":"1"},"Labels":{"l":"2"},"Platforms":["linux/amd64"],"Immutable":true,"Sign":true,"Key":"awskms:///alias/k"}`,
		`{"SrcImageRef":"busybox","DstImageRef":"r.example.com/demo","Sign":false}`, `{"Sign":null}`, `{"Sign":"yes"}`,
		`{"PromotionFile":"promotions: []\n"}`, `{"PromotionFile":null}`, `{"PromotionFile":"x","SrcImageRef":"busybox"}`,
		`{"Plan":{"Items":[],"Failures":[],"Summary":{"images":1,"statuses":{"up to date":1}}},"Results":[]}`,
		`{"Results":[{"Request":{"SrcImageRef":"a","DstImageRef":"b","Sign":true},"Error":{"Error":"SourceNotFound","Cause":"{}"}}]}`,
		`{"Results":[{"Request":{"SrcImageRef":"a","DstImageRef":"b","Annotations":{},"Sign":false},"Result":{"upToDate":false}}]}`,
		`{"Results":[],"Key":"k"}`, `{"Plan":{"Items":[{"Sign":true,"Extra":1}]}}`,
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
		// It has one shape, and what decodes, round-trips: encoded again it
		// decodes to the same shape and encodes the same.
		mode, err := p.Mode()
		if err != nil {
			t.Fatalf("accepted %q, whose shape is refused: %v", b, err)
		}
		again, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := Decode(again)
		if err != nil {
			t.Fatalf("%q decoded to %+v, whose encoding %s is refused: %v", b, p, again, err)
		}
		qmode, _ := q.Mode()
		third, err := json.Marshal(q)
		if err != nil || qmode != mode || !bytes.Equal(third, again) {
			t.Fatalf("%q decoded to %s (shape %d), which round-trips to %s (shape %d, %v)", b, again, mode, third, qmode, err)
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
