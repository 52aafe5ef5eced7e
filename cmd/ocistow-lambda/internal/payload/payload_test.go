package payload

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ocistow/ocistow/pkg/fleet"
)

func TestShapes(t *testing.T) {
	for _, c := range []struct {
		name, payload string
		mode          Mode
		err           string
	}{
		{"the original payload", `{"SrcImageRef":"busybox","DstImageRef":"r.example.com/demo","Annotations":{"team":"foo"}}`, Promote, ""},
		{"a plan", `{"PromotionFile":"promotions: []"}`, Plan, ""},
		{"a summary", `{"Plan":{"Items":[],"Failures":[],"Summary":{"images":0,"statuses":{}}},"Results":[]}`, Summarize, ""},
		{"results alone", `{"Results":[]}`, Summarize, ""},
		{"a plan with a promotion's field", `{"PromotionFile":"promotions: []","DstImageRef":"r.example.com/demo"}`, 0, "separate invocations"},
		{"a plan with Sign", `{"PromotionFile":"promotions: []","Sign":false}`, 0, "separate invocations"},
		{"a summary with a promotion's field", `{"Results":[],"SrcImageRef":"busybox"}`, 0, "separate invocations"},
		{"a plan and a summary", `{"PromotionFile":"","Results":[]}`, 0, "separate invocations"},
		{"an unknown field", `{"PromotionFile":"","Bucket":"b"}`, 0, `unknown field "Bucket"`},
		{"an unknown field in a result", `{"Results":[{"Request":{},"Oops":1}]}`, 0, `unknown field "Oops"`},
		{"Sign not a bool", `{"Sign":"yes"}`, 0, "invalid payload"},
		{"a promotion with referrers", `{"SrcImageRef":"busybox","DstImageRef":"r.example.com/demo","Referrers":true,"ReferrersTypes":["application/spdx+json"]}`, Promote, ""},
		{"a plan with Referrers", `{"PromotionFile":"promotions: []","Referrers":false}`, 0, "separate invocations"},
		{"a plan with ReferrersTypes", `{"PromotionFile":"promotions: []","ReferrersTypes":[]}`, 0, "separate invocations"},
		{"Referrers not a bool", `{"Referrers":"yes"}`, 0, "invalid payload"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, err := Decode([]byte(c.payload))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) || strings.Contains(err.Error(), "\n") {
					t.Fatalf("Decode: %v, want one line containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m, _ := p.Mode(); m != c.mode {
				t.Errorf("mode %d, want %d", m, c.mode)
			}
		})
	}
}

// Sign is told apart from absent: the original payload, which has no Sign,
// must sign.
func TestSignAbsentIsNotFalse(t *testing.T) {
	for payload, want := range map[string]string{
		`{"SrcImageRef":"a","DstImageRef":"b"}`:              "absent",
		`{"SrcImageRef":"a","DstImageRef":"b","Sign":null}`:  "absent",
		`{"SrcImageRef":"a","DstImageRef":"b","Sign":false}`: "false",
		`{"SrcImageRef":"a","DstImageRef":"b","Sign":true}`:  "true",
	} {
		p, err := Decode([]byte(payload))
		if err != nil {
			t.Fatal(err)
		}
		got := "absent"
		if p.Sign != nil {
			got = map[bool]string{true: "true", false: "false"}[*p.Sign]
		}
		if got != want {
			t.Errorf("%s: Sign %s, want %s", payload, got, want)
		}
	}
}

// Every plan item `ocistow sync -dry-run -o json` prints is a payload as it
// is: a fleet.Request encodes to what Decode takes, field for field.
func TestFleetRequestIsAPayload(t *testing.T) {
	for _, r := range []fleet.Request{
		{SrcImageRef: "s.example.com/a:1", DstImageRef: "d.example.com/a:1", Annotations: map[string]string{"team": "p"},
			ManifestAnnotations: map[string]string{"m": "1"}, Labels: map[string]string{"l": "2"}, Platforms: []string{"linux/arm64"},
			Immutable: true, Sign: true, Key: "awskms:///alias/k"},
		{SrcImageRef: "s.example.com/a:1", DstImageRef: "d.example.com/a:1", Sign: false},
	} {
		b, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		p, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if m, _ := p.Mode(); m != Promote {
			t.Errorf("%s: mode %d, want Promote", b, m)
		}
		back := fleet.Request{SrcImageRef: p.SrcImageRef, DstImageRef: p.DstImageRef, Annotations: p.Annotations,
			ManifestAnnotations: p.ManifestAnnotations, Labels: p.Labels, Platforms: p.Platforms, Immutable: p.Immutable, Key: p.Key}
		if p.Sign == nil {
			t.Fatalf("%s: Sign decoded as absent", b)
		}
		back.Sign = *p.Sign
		again, _ := json.Marshal(back)
		if string(again) != string(b) {
			t.Errorf("request %s decoded as %s", b, again)
		}
	}
}
