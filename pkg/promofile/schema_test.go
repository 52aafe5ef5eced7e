package promofile

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/ocistow/ocistow/pkg/tags"
)

// schemaPath is the JSON Schema of the format.
const schemaPath = "../../docs/promotion-file.schema.json"

// compileSchema compiles the schema, which must be valid draft 2020-12.
func compileSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("the schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("promotion-file.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("promotion-file.schema.json")
	if err != nil {
		t.Fatalf("the schema does not compile: %v", err)
	}
	return s
}

// instance reads a YAML or JSON file as the schema validator takes it.
func instance(t *testing.T, data []byte) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal(data, &v); err != nil {
		t.Fatalf("not YAML: %v", err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("YAML that JSON cannot say: %v", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		t.Fatal(err)
	}
	return inst
}

func TestSchemaAcceptsTheValidExamples(t *testing.T) {
	schema := compileSchema(t)
	files, err := filepath.Glob("testdata/valid/*")
	if err != nil || len(files) < 3 {
		t.Fatalf("want at least 3 examples in testdata/valid: %v, %v", files, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse(file, data); err != nil {
				t.Errorf("Parse: %v", err)
			}
			if err := schema.Validate(instance(t, data)); err != nil {
				t.Errorf("the schema refuses it: %v", err)
			}
		})
	}
}

// refusedByBoth are files that both Parse and the schema refuse.
var refusedByBoth = map[string]string{
	"no promotions":               "defaults: {key: k}\n",
	"empty promotions":            "promotions: []\n",
	"promotions a map":            "promotions: {source: a}\n",
	"unknown top key":             "promotion: []\npromotions:\n" + ok,
	"unknown defaults key":        "defaults: {platform: [linux/amd64]}\npromotions:\n" + ok,
	"entry key in defaults":       "defaults: {source: a/b}\npromotions:\n" + ok,
	"unknown entry key":           "promotions:\n  - {source: a/b:1, destination: c/d:1, annotation: {a: b}}\n",
	"unknown tags key":            "promotions:\n  - {source: a/b, destination: c/d, tags: {allows: [x]}}\n",
	"defaults a list":             "defaults: [a]\npromotions:\n" + ok,
	"no source":                   "promotions:\n  - {destination: c/d:1}\n",
	"no destination":              "promotions:\n  - {source: a/b:1}\n",
	"source a number":             "promotions:\n  - {source: 1, destination: c/d:1}\n",
	"destination by digest":       "promotions:\n  - {source: a/b:1, destination: 'c/d@sha256:" + strings.Repeat("a", 64) + "'}\n",
	"tags with a source tag":      "promotions:\n  - {source: a/b:1, destination: c/d, tags: [v1]}\n",
	"tags with a source digest":   "promotions:\n  - {source: 'a/b@sha256:" + strings.Repeat("a", 64) + "', destination: c/d, tags: [v1]}\n",
	"tags with a destination tag": "promotions:\n  - {source: a/b, destination: c/d:1, tags: {allow: [v.*]}}\n",
	"tags a string":               "promotions:\n  - {source: a/b, destination: c/d, tags: v1}\n",
	"tags empty":                  "promotions:\n  - {source: a/b, destination: c/d, tags: []}\n",
	"tags empty map":              "promotions:\n  - {source: a/b, destination: c/d, tags: {}}\n",
	"tag listed twice":            "promotions:\n  - {source: a/b, destination: c/d, tags: [v1, v1]}\n",
	"bad tag":                     "promotions:\n  - {source: a/b, destination: c/d, tags: [-v1]}\n",
	"list with allow":             "promotions:\n  - {source: a/b, destination: c/d, tags: {list: [v1], allow: [v2]}}\n",
	"allow a string":              "promotions:\n  - {source: a/b, destination: c/d, tags: {allow: v.*}}\n",
	"allow empty":                 "promotions:\n  - {source: a/b, destination: c/d, tags: {allow: [], latest: 1}}\n",
	"semver empty":                "promotions:\n  - {source: a/b, destination: c/d, tags: {semver: '', latest: 1}}\n",
	"semver a list":               "promotions:\n  - {source: a/b, destination: c/d, tags: {semver: ['>=1']}}\n",
	"latest below 0":              "promotions:\n  - {source: a/b, destination: c/d, tags: {latest: -1}}\n",
	"latest a string":             "promotions:\n  - {source: a/b, destination: c/d, tags: {latest: '3'}}\n",
	"latest a fraction":           "promotions:\n  - {source: a/b, destination: c/d, tags: {latest: 1.5}}\n",
	"annotations a string":        "defaults: {annotations: team}\npromotions:\n" + ok,
	"annotation value a map":      "defaults: {annotations: {team: {a: b}}}\npromotions:\n" + ok,
	"annotation value a list":     "defaults: {labels: {team: [a]}}\npromotions:\n" + ok,
	"annotation value null":       "defaults: {manifestAnnotations: {team: null}}\npromotions:\n" + ok,
	"annotation key a space":      "defaults: {annotations: {'a b': c}}\npromotions:\n" + ok,
	"annotation key with =":       "defaults: {annotations: {'a=b': c}}\npromotions:\n" + ok,
	"annotation key empty":        "defaults: {annotations: {'': c}}\npromotions:\n" + ok,
	"platforms a string":          "defaults: {platforms: linux/amd64}\npromotions:\n" + ok,
	"bad platform":                "defaults: {platforms: [linux]}\npromotions:\n" + ok,
	"platform with 4 parts":       "defaults: {platforms: [linux/arm/v7/x]}\npromotions:\n" + ok,
	"sign a string":               "defaults: {sign: 'false'}\npromotions:\n" + ok,
	"immutable a number":          "defaults: {immutable: 1}\npromotions:\n" + ok,
	"attest a string":             "defaults: {attest: 'true'}\npromotions:\n" + ok,
	"key empty":                   "defaults: {key: ''}\npromotions:\n" + ok,
	"key a number":                "defaults: {key: 1}\npromotions:\n" + ok,
	"signatureFormat unknown":     "defaults: {signatureFormat: sigstore}\npromotions:\n" + ok,
	"signatureFormat empty":       "promotions:\n  - {source: a/b:1, destination: c/d:1, signatureFormat: ''}\n",
	"signatureFormat a bool":      "defaults: {signatureFormat: true}\npromotions:\n" + ok,
	"referrers a string":          "defaults: {referrers: 'yes'}\npromotions:\n" + ok,
	"referrersTypes a string":     "defaults: {referrersTypes: application/spdx+json}\npromotions:\n" + ok,
	"referrersTypes empty":        "defaults: {referrersTypes: []}\npromotions:\n" + ok,
	"referrersTypes with a space": "promotions:\n  - {source: a/b:1, destination: c/d:1, referrersTypes: ['a b']}\n",
	"verify a string":             "defaults: {verify: cosign.pub}\npromotions:\n" + ok,
	"verify empty":                "defaults: {verify: {}}\npromotions:\n" + ok,
	"verify unknown key":          "defaults: {verify: {key: cosign.pub}}\npromotions:\n" + ok,
	"verify keys a string":        "defaults: {verify: {keys: cosign.pub}}\npromotions:\n" + ok,
	"verify keys empty":           "defaults: {verify: {keys: []}}\npromotions:\n" + ok,
	"verify identity empty":       "defaults: {verify: {identity: '', issuer: https://x}}\npromotions:\n" + ok,
	"verify children a string":    "defaults: {verify: {keys: [a], children: 'yes'}}\npromotions:\n" + ok,
	"verify annotations a list":   "defaults: {verify: {keys: [a], annotations: [a]}}\npromotions:\n" + ok,
}

func TestSchemaAndParseRefuseTheInvalidExamples(t *testing.T) {
	schema := compileSchema(t)
	for name, file := range refusedByBoth {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse("fleet.yaml", []byte(file)); err == nil {
				t.Errorf("Parse accepts %q", file)
			}
			if err := schema.Validate(instance(t, []byte(file))); err == nil {
				t.Errorf("the schema accepts %q", file)
			}
		})
	}
}

// schemaProperties returns the property names of the object at path in the
// schema, sorted.
func schemaProperties(t *testing.T, schema map[string]any, path ...string) []string {
	t.Helper()
	var node any = schema
	for _, p := range path {
		m, ok := node.(map[string]any)
		if !ok {
			t.Fatalf("schema: no %q in %v", p, path)
		}
		node = m[p]
	}
	m, ok := node.(map[string]any)
	if !ok {
		t.Fatalf("schema: nothing at %v", path)
	}
	if m["additionalProperties"] != false {
		t.Errorf("schema: %v: want additionalProperties: false", path)
	}
	props, _ := m["properties"].(map[string]any)
	var names []string
	for k := range props {
		names = append(names, k)
	}
	slices.Sort(names)
	return names
}

// jsonNames returns the JSON names of the fields of v's type, embedded
// structs' included, sorted.
func jsonNames(typ reflect.Type) []string {
	var names []string
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := strings.Split(f.Tag.Get("json"), ",")[0]
		switch {
		case f.Anonymous && tag == "":
			names = append(names, jsonNames(f.Type)...)
		case tag != "-" && tag != "":
			names = append(names, tag)
		}
	}
	slices.Sort(names)
	return names
}

func TestSchemaHasTheKeysOfTheTypes(t *testing.T) {
	data, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(data, &schema); err != nil {
		t.Fatalf("the schema is not JSON: %v", err)
	}
	for _, tc := range []struct {
		path []string
		typ  reflect.Type
		keys []string // the parser's
	}{
		{nil, reflect.TypeFor[File](), fileKeys},
		{[]string{"properties", "defaults"}, reflect.TypeFor[Options](), optionKeys},
		{[]string{"$defs", "promotion"}, reflect.TypeFor[Entry](), entryKeys},
		{[]string{"$defs", "tagFilter"}, reflect.TypeFor[tags.Selector](), selectorKeys},
		{[]string{"$defs", "verify"}, reflect.TypeFor[Verify](), verifyKeys},
	} {
		inSchema, inGo, inParser := schemaProperties(t, schema, tc.path...), jsonNames(tc.typ), slices.Sorted(slices.Values(tc.keys))
		if !slices.Equal(inSchema, inGo) || !slices.Equal(inParser, inGo) {
			t.Errorf("%v: the schema has %q, the parser %q, %s's JSON names are %q", tc.path, inSchema, inParser, tc.typ, inGo)
		}
	}
}
