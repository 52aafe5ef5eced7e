package payload

import (
	"encoding/json"
	"reflect"
	"testing"
)

func FuzzDecodePayload(f *testing.F) {
	for _, s := range []string{
		`{"SrcImageRef":"busybox","DstImageRef":"r.example.com/demo","Annotations":{"team":"foo"}}`,
		`{"SrcImageRef":"busybox"}`, `{"Annotation":{}}`, `{`, `[]`, `null`, `{"SrcImageRef":1}`, `{} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			return
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

func normalise(p Payload) Payload {
	if len(p.Annotations) == 0 {
		p.Annotations = nil
	}
	return p
}
