package attest

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

const schemaPath = "../../docs/promotion-predicate.schema.json"

// The predicate as Statement writes it validates against the documented
// schema, and the schema names exactly the fields of Predicate.
func TestPredicateSchema(t *testing.T) {
	f, err := os.Open(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("promotion-predicate.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("promotion-predicate.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	d, err := name.NewDigest("registry.example/app@sha256:" + strings.Repeat("a", 64))
	if err != nil {
		t.Fatal(err)
	}
	full := predicate("platform")
	full.Stamp.ManifestAnnotations = map[string]string{"tier": "gold"}
	full.Stamp.Labels = map[string]string{"owner": "ops"}
	full.Platforms = []string{"linux/amd64", "linux/arm/v7"}
	minimal := predicate("")
	minimal.Stamp = Stamp{}
	for what, p := range map[string]Predicate{"every field": full, "no stamp, every platform": minimal} {
		b, err := Statement(d, p)
		if err != nil {
			t.Fatal(err)
		}
		var st struct {
			Predicate json.RawMessage `json:"predicate"`
		}
		if err := json.Unmarshal(b, &st); err != nil {
			t.Fatal(err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(st.Predicate))
		if err != nil {
			t.Fatal(err)
		}
		if err := schema.Validate(inst); err != nil {
			t.Errorf("%s: the schema refuses %s: %v", what, st.Predicate, err)
		}
	}
	bad := predicate("platform")
	bad.PromotedAt = "27 Nov 2026"
	b, _ := json.Marshal(bad)
	inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if schema.Validate(inst) == nil {
		t.Error("the schema accepts a time that is not RFC 3339 UTC")
	}

	// Every field of Predicate, and no other, is in the schema.
	var raw struct {
		Properties map[string]any `json:"properties"`
	}
	data, _ := os.ReadFile(schemaPath)
	if err := json.Unmarshal(data, &raw); err != nil {
		t.Fatal(err)
	}
	var inSchema, inGo []string
	for k := range raw.Properties {
		inSchema = append(inSchema, k)
	}
	var m map[string]any
	b, _ = json.Marshal(full)
	_ = json.Unmarshal(b, &m)
	for k := range m {
		inGo = append(inGo, k)
	}
	slices.Sort(inSchema)
	slices.Sort(inGo)
	if !slices.Equal(inSchema, inGo) {
		t.Errorf("schema properties %v, Predicate's %v", inSchema, inGo)
	}
}
