package promofile

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/ocistow/ocistow/pkg/tags"
)

// ok is a valid entry, for files whose problem is elsewhere.
const ok = "  - {source: docker.io/library/busybox:1.36, destination: example.com/base/busybox:1.36}\n"

func TestParseRefuses(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		line int
		want string // part of the message after "fleet.yaml:LINE: "
	}{
		// The file as a whole.
		{"empty file", "", 1, `the file is empty: want a map with "promotions"`},
		{"only comments", "# nothing yet\n\n", 1, "the file is empty"},
		{"null", "~\n", 1, "the file is empty"},
		{"a list", "- source: a\n", 1, `want a map with "defaults" and "promotions", got a list`},
		{"a string", "hello\n", 1, `want a map with "defaults" and "promotions", got the string "hello"`},
		{"no promotions", "defaults:\n  key: k\n", 1, `no promotions: want a list under "promotions"`},
		{"empty promotions", "defaults: {key: k}\npromotions: []\n", 2, "promotions: the list is empty"},
		{"promotions a map", "promotions:\n  source: a\n", 2, "promotions: want a list, got a map"},
		{"promotions null", "promotions:\n", 1, "promotions: want a list, got nothing (null)"},
		{"two documents", "promotions:\n" + ok + "---\npromotions:\n" + ok, 3, "a second YAML document: want one"},
		{"syntax error", "promotions:\n" + ok + "  - source: [a,\n    destination: b\n", 3, "did not find expected ',' or ']'"},
		{"syntax error on line 1", "promotions: a: b\n", 1, "mapping values are not allowed in this context"},
		{"tab indentation", "promotions:\n\t- source: a\n", 2, "found character that cannot start any token"},
		{"invalid UTF-8", "promotions:\n  - source: \xff\n", 2, "not valid UTF-8"},
		{"control character", "promotions:\n" + ok + "  - source: a\x01\n", 3, "control character U+0001"},
		{"unknown anchor", "promotions:\n" + ok + "  - *nothing\n", 3, "unknown anchor 'nothing' referenced"},

		// Keys.
		{"unknown top key, suggested", "promotion:\n" + ok, 1, `unknown key "promotion" (did you mean "promotions"?)`},
		{"option at the top", "annotations: {a: b}\npromotions:\n" + ok, 1, `unknown key "annotations" (options for every promotion go under "defaults")`},
		{"entry key at the top", "promotions:\n" + ok + "source: a\n", 3, `unknown key "source" (promotions are a list under "promotions")`},
		{"unknown entry key, suggested", "promotions:\n" + ok + "  - source: a/b\n    destination: c/d\n    annotation: {team: x}\n", 5, `unknown key "annotation" (did you mean "annotations"?)`},
		{"snake case", "promotions:\n  - source: a/b\n    destination: c/d\n    manifest_annotations: {team: x}\n", 4, `unknown key "manifest_annotations" (did you mean "manifestAnnotations"?)`},
		{"case", "promotions:\n  - Source: a/b\n    destination: c/d\n", 2, `unknown key "Source" (did you mean "source"?)`},
		{"selector key in an entry", "promotions:\n  - source: a/b\n    destination: c/d\n    semver: '>=1'\n", 4, `unknown key "semver" (tag selection goes under "tags")`},
		{"unknown key, listed", "promotions:\n  - source: a/b\n    destination: c/d\n    frobnicate: true\n", 4, `unknown key "frobnicate" (want one of: source, destination, tags, annotations, manifestAnnotations, labels, platforms, key, sign, immutable, signatureFormat, referrers, referrersTypes, attest, verify)`},
		{"unknown defaults key", "defaults:\n  key: k\n  source: a\npromotions:\n" + ok, 3, `unknown key "source" (defaults are options: images and tags go in each promotion)`},
		{"unknown defaults key, suggested", "defaults:\n  platform: [linux/amd64]\npromotions:\n" + ok, 2, `unknown key "platform" (did you mean "platforms"?)`},
		{"unknown tags key, suggested", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      allows: [x]\n", 5, `unknown key "allows" (did you mean "allow"?)`},
		{"merge key", "x: &x {key: k}\npromotions:\n" + ok, 1, `unknown key "x"`},
		{"merge key in defaults", "defaults:\n  <<: {key: k}\npromotions:\n" + ok, 2, `unknown key "<<" (YAML merge keys are not supported)`},
		{"duplicate key", "promotions:\n  - source: a/b:1\n    destination: c/d:1\n    source: e/f:1\n", 4, `duplicate key "source" (first at line 2)`},
		{"duplicate top key", "promotions:\n" + ok + "promotions:\n" + ok, 3, `duplicate key "promotions" (first at line 1)`},
		{"duplicate annotation", "defaults:\n  annotations:\n    team: a\n    team: b\npromotions:\n" + ok, 4, `duplicate key "team" (first at line 3)`},
		{"duplicate JSON key", "{\"promotions\": [\n  {\"source\": \"a/b:1\",\n   \"destination\": \"c/d:1\",\n   \"destination\": \"c/d:2\"}]}\n", 4, `duplicate key "destination" (first at line 3)`},
		{"a map as a key", "promotions:\n  - ? {a: b}\n    : c\n", 2, "a promotion: a key is a map: want a name"},

		// Types.
		{"defaults a list", "defaults: [a]\npromotions:\n" + ok, 1, "defaults: want a map, got a list"},
		{"entry a string", "promotions:\n  - docker.io/library/busybox\n", 2, `a promotion: want a map, got the string "docker.io/library/busybox"`},
		{"annotations a string", "defaults:\n  annotations: team\npromotions:\n" + ok, 2, `annotations: want a map, got the string "team"`},
		{"annotation value a map", "defaults:\n  annotations:\n    team: {name: a}\npromotions:\n" + ok, 3, `annotations "team": want a string, got a map`},
		{"annotation value a list", "defaults:\n  labels:\n    team: [a]\npromotions:\n" + ok, 3, `labels "team": want a string, got a list`},
		{"annotation value null", "defaults:\n  manifestAnnotations:\n    team:\npromotions:\n" + ok, 3, `manifestAnnotations "team": want a string, got nothing (null)`},
		{"annotation key with a space", "defaults:\n  annotations:\n    'a b': c\npromotions:\n" + ok, 3, `annotations key "a b" contains '=' or whitespace`},
		{"label key with =", "promotions:\n  - source: a/b:1\n    destination: c/d:1\n    labels: {'a=b': c}\n", 4, `labels key "a=b" contains '=' or whitespace`},
		{"empty annotation key", "defaults:\n  annotations: {'': c}\npromotions:\n" + ok, 2, "annotations with an empty key"},
		{"source a number", "promotions:\n  - source: 1\n    destination: c/d:1\n", 2, "source: want a string, got the number 1"},
		{"destination null", "promotions:\n  - source: a/b:1\n    destination:\n", 3, "destination: want a string, got nothing (null)"},
		{"destination a list", "promotions:\n  - source: a/b:1\n    destination: [c/d:1]\n", 3, "destination: want a string, got a list"},
		{"platforms a string", "defaults:\n  platforms: linux/amd64\npromotions:\n" + ok, 2, `platforms: want a list, got the string "linux/amd64"`},
		{"platform a number", "defaults:\n  platforms: [1]\npromotions:\n" + ok, 2, "platforms: want a string, got the number 1"},
		{"sign a string", "defaults:\n  sign: 'false'\npromotions:\n" + ok, 2, `sign: want true or false, got the string "false"`},
		{"sign yes", "defaults:\n  sign: yes\npromotions:\n" + ok, 2, `sign: want true or false, got the string "yes"`},
		{"immutable a number", "promotions:\n  - source: a/b:1\n    destination: c/d:1\n    immutable: 1\n", 4, "immutable: want true or false, got the number 1"},
		{"key a number", "defaults:\n  key: 1\npromotions:\n" + ok, 2, "key: want a string, got the number 1"},
		{"key empty", "defaults:\n  key: ''\npromotions:\n" + ok, 2, "key is empty: to turn signing off, write sign: false"},
		{"signatureFormat unknown", "promotions:\n  - source: a/b:1\n    destination: c/d:1\n    signatureFormat: v3\n", 4, `signatureFormat "v3": want legacy, bundle or both`},
		{"tags a string", "promotions:\n  - source: a/b\n    destination: c/d\n    tags: v1\n", 4, `tags: want a list of tags, or a map of allow, deny, semver and latest, got the string "v1"`},
		{"allow a string", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      allow: 'v1.*'\n", 5, `allow: want a list, got the string "v1.*"`},
		{"allow item a number", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      allow: [1]\n", 5, "allow: want a string, got the number 1"},
		{"latest a string", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      latest: '3'\n", 5, `latest: want a whole number, got the string "3"`},
		{"latest a fraction", "promotions:\n  - source: a/b\n    destination: c/d\n    tags: {latest: 1.5}\n", 4, "latest: want a whole number, got the number 1.5"},
		{"latest too big", "promotions:\n  - source: a/b\n    destination: c/d\n    tags: {latest: 99999999999999999999}\n", 4, "latest: want a whole number, got the number 99999999999999999999"},
		{"semver a map", "promotions:\n  - source: a/b\n    destination: c/d\n    tags: {semver: {a: b}}\n", 4, "semver: want a string, got a map"},
		{"tag in a list a map", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      - {a: b}\n", 5, "tags: want a string, got a map"},

		// Missing.
		{"no source", "promotions:\n" + ok + "  - destination: c/d:1\n    sign: false\n", 3, "a promotion without a source"},
		{"no destination", "promotions:\n" + ok + "  -\n    source: a/b:1\n", 4, "a promotion without a destination"},
		{"empty entry", "promotions:\n  - {}\n", 2, "a promotion without a source"},

		// References.
		{"bad source", "promotions:\n  - source: Docker.io/Library/Busybox:1.36\n    destination: c/d:1\n", 2, `source "Docker.io/Library/Busybox:1.36": `},
		{"bad destination", "promotions:\n  - source: a/b:1\n    destination: 'c/d:'\n", 3, `destination "c/d:": `},
		{"destination by digest", "promotions:\n  - source: a/b:1\n    destination: c/d@sha256:" + strings.Repeat("a", 64) + "\n", 3, "names a digest: a promotion writes a tag"},
		{"tags with a source tag", "promotions:\n  - source: docker.io/library/busybox:1.36\n    destination: c/d\n    tags: [1.36]\n", 2, `source "docker.io/library/busybox:1.36" names a tag: tags select from a repository`},
		{"tags with a source digest", "promotions:\n  - source: a/b@sha256:" + strings.Repeat("a", 64) + "\n    destination: c/d\n    tags: [1.36]\n", 2, "names a digest: tags select from a repository"},
		{"tags with a destination tag", "promotions:\n  - source: a/b\n    destination: c/d:1.36\n    tags: {allow: ['1\\..*']}\n", 3, `destination "c/d:1.36" names a tag: tags select from a repository`},
		{"tags with a bad source", "promotions:\n  - source: a/B\n    destination: c/d\n    tags: [v1]\n", 2, `source "a/B" is not a repository: `},

		// Tag selection.
		{"bad allow", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      allow:\n        - 'v1\\..*'\n        - '3\\.('\n", 7, "tags: allow \"3\\\\.(\": error parsing regexp: missing closing ): `3\\.(`"},
		{"bad deny", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      deny: ['[z-a]']\n", 5, "error parsing regexp: invalid character class range: `z-a`"},
		{"bad semver", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      allow: [.*]\n      semver: '>=x.y'\n", 6, `tags: semver ">=x.y": `},
		{"latest below 0", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      latest: -1\n", 5, "tags: latest is -1: want 0 (all) or more"},
		{"list with allow", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      list: [v1]\n      allow: [v2]\n", 5, "tags: a list of tags cannot be combined with allow, deny, semver or latest"},
		{"list with latest", "promotions:\n  - source: a/b\n    destination: c/d\n    tags: {list: [v1], latest: 1}\n", 4, "cannot be combined"},
		{"empty allow", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      allow: []\n      latest: 2\n", 5, "tags: allow: the list is empty"},
		{"empty deny", "promotions:\n  - source: a/b\n    destination: c/d\n    tags: {semver: '>=1', deny: []}\n", 4, "tags: deny: the list is empty"},
		{"empty semver", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      allow: [v.*]\n      semver: ''\n", 6, "tags: semver is empty"},
		{"empty selector", "promotions:\n  - source: a/b\n    destination: c/d\n    tags: {}\n", 4, "tags: selects every tag: to mean it, write allow: ['.*']"},
		{"empty list", "promotions:\n  - source: a/b\n    destination: c/d\n    tags: []\n", 4, "tags: the list is empty"},
		{"empty list in a map", "promotions:\n  - source: a/b\n    destination: c/d\n    tags: {list: []}\n", 4, "tags: the list is empty"},
		{"tag listed twice", "promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      - v1\n      - v2\n      - v1\n", 7, `tags: tag "v1" is listed twice (first at line 5)`},
		{"bad tag", "promotions:\n  - source: a/b\n    destination: c/d\n    tags: [v1, -v2]\n", 4, `tags: invalid tag "-v2"`},

		// Platforms.
		{"bad platform", "defaults:\n  platforms:\n    - linux/amd64\n    - linux\npromotions:\n" + ok, 4, `invalid platform "linux": want os/arch or os/arch/variant`},
		{"bad entry platform", "promotions:\n  - source: a/b:1\n    destination: c/d:1\n    platforms: [linux/arm/v7/x]\n", 4, `invalid platform "linux/arm/v7/x"`},

		// Two promotions writing one tag.
		{"same destination", "promotions:\n" + ok + "  - source: a/b:1\n    destination: example.com/base/busybox:1.36\n", 3, "destination example.com/base/busybox:1.36 is also written by the promotion at line 2"},
		{"same destination, spelled otherwise", "promotions:\n  - source: a/b:1\n    destination: busybox:latest\n  - source: a/b:2\n    destination: index.docker.io/library/busybox:latest\n", 4, "destination index.docker.io/library/busybox:latest is also written by the promotion at line 2"},
		{"a repository destination takes the source tag", "promotions:\n  - source: a/b:1\n    destination: example.com/c\n  - source: x/y:1\n    destination: example.com/c:1\n", 4, "destination example.com/c:1 is also written by the promotion at line 2"},
		{"source by digest into a repository", "promotions:\n  - source: a/b@sha256:0000000000000000000000000000000000000000000000000000000000000000\n    destination: example.com/c\n", 3, "names no tag, and source"},
		{"listed and named", "promotions:\n  - source: a/b\n    destination: example.com/base/busybox\n    tags: ['1.36', '1.37']\n" + ok, 5, "destination example.com/base/busybox:1.36 is also written by the promotion at line 2"},
		{"named and selected", "promotions:\n" + ok + "  - source: a/b\n    destination: example.com/base/busybox\n    tags: {allow: ['1\\.\\d+']}\n", 3, "destination example.com/base/busybox:1.36 is written by the promotion at line 2 and selected by the tags of the promotion at line 3"},
		{"selected and named", "promotions:\n  - source: a/b\n    destination: example.com/base/busybox\n    tags: {semver: '^1'}\n" + ok, 5, "destination example.com/base/busybox:1.36 is written by the promotion at line 5 and selected by the tags of the promotion at line 2"},

		// JSON.
		{"JSON unknown key", `{"promotions": [{"source": "a/b:1", "destination": "c/d:1", "annotaton": {}}]}`, 1, `unknown key "annotaton" (did you mean "annotations"?)`},
		{"JSON wrong type", "{\n  \"promotions\": [\n    {\"source\": \"a/b:1\", \"destination\": \"c/d:1\", \"sign\": \"true\"}\n  ]\n}\n", 3, `sign: want true or false, got the string "true"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("fleet.yaml", []byte(tc.file))
			if err == nil {
				t.Fatalf("Parse accepted the file: %+v\nwant fleet.yaml:%d: %s", f, tc.line, tc.want)
			}
			msg := err.Error()
			prefix := "fleet.yaml:" + strconv.Itoa(tc.line) + ": "
			if !strings.HasPrefix(msg, prefix) || !strings.Contains(msg, tc.want) {
				t.Errorf("Parse error\n  %s\nwant\n  %s…%s…", msg, prefix, tc.want)
			}
			if strings.ContainsAny(msg, "\n\r") {
				t.Errorf("the error is more than one line: %q", msg)
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.Name != "fleet.yaml" || pe.Line != tc.line {
				t.Errorf("the error is not an *Error at line %d: %#v", tc.line, err)
			}
		})
	}
}

func TestParseErrorsStayOnOneLine(t *testing.T) {
	for _, file := range []string{
		"promotions:\n  - source: a/b\n    destination: c/d\n    tags:\n      allow: [\"a\\n(\"]\n",
		"promotions:\n  - source: \"a\\nb\"\n    destination: c/d:1\n",
		"promotions:\n  - \"so\\nurce\": a\n",
	} {
		_, err := Parse("fleet.yaml", []byte(file))
		if err == nil || strings.ContainsAny(err.Error(), "\n\r") {
			t.Errorf("Parse(%q) = %q, want an error on one line", file, err)
		}
	}
}

func bp(b bool) *bool { return &b }

func TestParseAccepts(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want File
	}{{
		name: "scalars as annotation values and tags, as written",
		file: `defaults:
  annotations: {version: 1.10, n: 1, hex: 0x10, on: true, date: 2024-01-01, q: "x", empty: ""}
promotions:
  - source: a/b
    destination: c/d
    tags: [1.36, 3.10, v1]
  - source: e/f
    destination: g/h
    tags: {semver: 3}
`,
		want: File{
			Defaults: Options{Annotations: map[string]string{"version": "1.10", "n": "1", "hex": "0x10", "on": "true", "date": "2024-01-01", "q": "x", "empty": ""}},
			Promotions: []Entry{
				{Source: "a/b", Destination: "c/d", Tags: &tags.Selector{List: []string{"1.36", "3.10", "v1"}}, Line: 4},
				{Source: "e/f", Destination: "g/h", Tags: &tags.Selector{Semver: "3"}, Line: 7},
			},
		},
	}, {
		name: "anchors and aliases",
		file: `defaults:
  labels: &labels {owner: observability}
promotions:
  - source: a/b:1
    destination: c/d:1
    annotations: *labels
    platforms: &p [linux/amd64]
  - &second
    source: a/b:2
    destination: c/d:2
    platforms: *p
`,
		want: File{
			Defaults: Options{Labels: map[string]string{"owner": "observability"}},
			Promotions: []Entry{
				{Source: "a/b:1", Destination: "c/d:1", Options: Options{Annotations: map[string]string{"owner": "observability"}, Platforms: []string{"linux/amd64"}}, Line: 4},
				{Source: "a/b:2", Destination: "c/d:2", Options: Options{Platforms: []string{"linux/amd64"}}, Line: 8},
			},
		},
	}, {
		name: "JSON",
		file: `{
  "defaults": {"key": "awskms:///alias/k", "sign": true, "immutable": false, "platforms": []},
  "promotions": [
    {"source": "a/b", "destination": "localhost:5000/d", "tags": {"list": ["v1"]}},
    {"source": "a/b@sha256:` + strings.Repeat("0", 64) + `", "destination": "localhost:5000/d:pinned", "manifestAnnotations": {"a": "b"}, "sign": false}
  ]
}`,
		want: File{
			Defaults: Options{Key: "awskms:///alias/k", Sign: bp(true), Immutable: bp(false), Platforms: []string{}},
			Promotions: []Entry{
				{Source: "a/b", Destination: "localhost:5000/d", Tags: &tags.Selector{List: []string{"v1"}}, Line: 4},
				{Source: "a/b@sha256:" + strings.Repeat("0", 64), Destination: "localhost:5000/d:pinned", Options: Options{ManifestAnnotations: map[string]string{"a": "b"}, Sign: bp(false)}, Line: 5},
			},
		},
	}, {
		name: "a byte order mark, two selectors into one repository, a named tag they do not select",
		file: "\ufeffpromotions:\n" +
			"  - {source: a/alpine, destination: c/alpine, tags: {allow: ['3\\.\\d+'], latest: 2}}\n" +
			"  - {source: b/alpine, destination: c/alpine, tags: {allow: [edge]}}\n" +
			"  - {source: a/alpine:3.19.1, destination: c/alpine:3.19.1}\n" +
			"  - {source: a/alpine:3.19.1, destination: d/alpine:3.19.1}\n",
		want: File{Promotions: []Entry{
			{Source: "a/alpine", Destination: "c/alpine", Tags: &tags.Selector{Allow: []string{`3\.\d+`}, Latest: 2}, Line: 2},
			{Source: "b/alpine", Destination: "c/alpine", Tags: &tags.Selector{Allow: []string{"edge"}}, Line: 3},
			{Source: "a/alpine:3.19.1", Destination: "c/alpine:3.19.1", Line: 4},
			{Source: "a/alpine:3.19.1", Destination: "d/alpine:3.19.1", Line: 5},
		}},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			f, err := Parse("fleet.yaml", []byte(tc.file))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(*f, tc.want) {
				t.Errorf("Parse\n got %s\nwant %s", dump(f), dump(&tc.want))
			}
		})
	}
}

// dump shows a File with its lines.
func dump(f *File) string {
	b, _ := json.Marshal(f)
	var lines []string
	for _, e := range f.Promotions {
		lines = append(lines, strconv.Itoa(e.Line))
	}
	return string(b) + " lines " + strings.Join(lines, ",")
}

func TestParseReadsWhatJSONWrites(t *testing.T) {
	f := &File{
		Defaults: Options{
			Annotations:         map[string]string{"team": "platform"},
			ManifestAnnotations: map[string]string{"m": "1"},
			Labels:              map[string]string{"l": "2"},
			Platforms:           []string{"linux/amd64", "linux/arm/v7"},
			Key:                 "awskms:///alias/ocistow",
			Sign:                bp(true),
			Immutable:           bp(false),
			Referrers:           bp(true),
			ReferrersTypes:      []string{"application/spdx+json"},
		},
		Promotions: []Entry{
			{Source: "a/b:1", Destination: "c/d:1", Options: Options{Sign: bp(false), Immutable: bp(true), Key: "cosign.key", Referrers: bp(false)}},
			{Source: "a/b", Destination: "c/e", Tags: &tags.Selector{List: []string{"v1", "v2"}}},
			{Source: "a/b", Destination: "c/f", Tags: &tags.Selector{Allow: []string{"v.*"}, Deny: []string{"v0.*"}, Semver: ">=1", Latest: 3},
				Options: Options{Annotations: map[string]string{"a": "b"}, ManifestAnnotations: map[string]string{"c": "d"}, Labels: map[string]string{"e": "f"}, Platforms: []string{"linux/arm64"}}},
		},
	}
	data, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse("fleet.json", data)
	if err != nil {
		t.Fatalf("Parse(%s): %v", data, err)
	}
	for i := range got.Promotions {
		got.Promotions[i].Line = 0
	}
	if !reflect.DeepEqual(got, f) {
		t.Errorf("Parse(json.Marshal(f))\n got %s\nwant %s", dump(got), dump(f))
	}
}

func TestResolve(t *testing.T) {
	f, err := Parse("fleet.yaml", []byte(`defaults:
  annotations: {team: platform, tier: base}
  manifestAnnotations: {m: default}
  labels: {l: default}
  platforms: [linux/amd64, linux/arm64]
  key: awskms:///alias/default
  sign: true
  signatureFormat: bundle
  referrersTypes: [application/spdx+json]
  attest: true
promotions:
  - source: a/b:1
    destination: c/d:1
  - source: a/b:2
    destination: c/d:2
    annotations: {tier: app, owner: me}
    labels: {l: mine}
    platforms: [linux/arm64]
    key: cosign.key
    sign: false
    immutable: true
    signatureFormat: both
    referrers: false
    referrersTypes: [application/vnd.in-toto+json]
    attest: false
  - source: a/b
    destination: c/e
    tags: [v1]
    platforms: []
    manifestAnnotations: {n: mine}
`))
	if err != nil {
		t.Fatal(err)
	}
	got := f.Resolve()
	want := []Entry{{
		Source: "a/b:1", Destination: "c/d:1", Line: 12,
		Options: Options{
			Annotations:         map[string]string{"team": "platform", "tier": "base"},
			ManifestAnnotations: map[string]string{"m": "default"},
			Labels:              map[string]string{"l": "default"},
			Platforms:           []string{"linux/amd64", "linux/arm64"},
			Key:                 "awskms:///alias/default",
			Sign:                bp(true),
			SignatureFormat:     "bundle",
			ReferrersTypes:      []string{"application/spdx+json"},
			Attest:              bp(true),
		},
	}, {
		Source: "a/b:2", Destination: "c/d:2", Line: 14,
		Options: Options{
			Annotations:         map[string]string{"team": "platform", "tier": "app", "owner": "me"},
			ManifestAnnotations: map[string]string{"m": "default"},
			Labels:              map[string]string{"l": "mine"},
			Platforms:           []string{"linux/arm64"},
			Key:                 "cosign.key",
			Sign:                bp(false),
			Immutable:           bp(true),
			SignatureFormat:     "both",
			Referrers:           bp(false),
			ReferrersTypes:      []string{"application/vnd.in-toto+json"},
			Attest:              bp(false),
		},
	}, {
		Source: "a/b", Destination: "c/e", Line: 26, Tags: &tags.Selector{List: []string{"v1"}},
		Options: Options{
			Annotations:         map[string]string{"team": "platform", "tier": "base"},
			ManifestAnnotations: map[string]string{"m": "default", "n": "mine"},
			Labels:              map[string]string{"l": "default"},
			Platforms:           []string{},
			Key:                 "awskms:///alias/default",
			Sign:                bp(true),
			SignatureFormat:     "bundle",
			ReferrersTypes:      []string{"application/spdx+json"},
			Attest:              bp(true),
		},
	}}
	if !reflect.DeepEqual(got, want) {
		g, _ := json.Marshal(got)
		w, _ := json.Marshal(want)
		t.Errorf("Resolve\n got %s\nwant %s", g, w)
	}
	for i, e := range got {
		if e.Line != want[i].Line {
			t.Errorf("entry %d: Line %d, want %d", i, e.Line, want[i].Line)
		}
	}

	// The result shares nothing with the file.
	got[0].Annotations["team"] = "changed"
	got[0].Platforms[0] = "changed"
	*got[0].Sign = false
	got[2].Tags.List[0] = "changed"
	got[2].ManifestAnnotations["n"] = "changed"
	got[0].ReferrersTypes[0] = "changed"
	if f.Defaults.Annotations["team"] != "platform" || f.Defaults.Platforms[0] != "linux/amd64" || !*f.Defaults.Sign ||
		f.Promotions[2].Tags.List[0] != "v1" || f.Promotions[2].ManifestAnnotations["n"] != "mine" ||
		f.Defaults.ReferrersTypes[0] != "application/spdx+json" {
		t.Errorf("changing what Resolve returned changed the file: %s", dump(f))
	}
	if again := f.Resolve(); !reflect.DeepEqual(again, want) {
		t.Errorf("Resolve again: %v", again)
	}
}

func TestResolveWithoutDefaults(t *testing.T) {
	f, err := Parse("fleet.yaml", []byte("promotions:\n"+ok))
	if err != nil {
		t.Fatal(err)
	}
	want := []Entry{{Source: "docker.io/library/busybox:1.36", Destination: "example.com/base/busybox:1.36", Line: 2}}
	if got := f.Resolve(); !reflect.DeepEqual(got, want) {
		t.Errorf("Resolve = %+v, want %+v (unset stays unset)", got, want)
	}
}

func TestParseSyntaxErrorLines(t *testing.T) {
	for _, tc := range []struct {
		file string
		line int
		want string
	}{
		{"promotions:\n  - source: a\n  - source: [a,\n    destination: b\n", 3, "did not find expected ',' or ']'"},
		{"{\"promotions\": [\n {\"source\": \"a\"\n  \"destination\": \"b\"}]}\n", 2, "did not find expected ',' or '}'"},
		{"promotions:\n  - source: a\n - destination: b\n", 3, "did not find expected key"},
		{"promotions:\n  - source: a\n    destination: b\n  bad\n", 4, "could not find expected ':'"},
		{"promotions:\n  - source: a\n    destination: 'b\n", 3, "found unexpected end of stream"},
		{"promotions:\n  - !x!foo source: a\n", 2, "found undefined tag handle"},
		{"promotions:\n  - source: a\n  - *nothing\n", 3, "unknown anchor 'nothing' referenced"},
	} {
		_, err := Parse("fleet.yaml", []byte(tc.file))
		if want := "fleet.yaml:" + strconv.Itoa(tc.line) + ": " + tc.want; err == nil || err.Error() != want {
			t.Errorf("Parse(%q) = %v, want %s", tc.file, err, want)
		}
	}
}

func TestVerifyMerges(t *testing.T) {
	f, err := Parse("fleet.yaml", []byte(`defaults:
  verify:
    keys: [a.pub]
    annotations: {team: up, env: prod}
    children: true
promotions:
  - source: a/b:1
    destination: c/d:1
  - source: a/b:2
    destination: c/d:2
    verify:
      identity: '^https://github\.com/x/'
      issuer: https://token.actions.githubusercontent.com
      annotations: {env: staging}
      children: false
  - source: a/b:3
    destination: c/d:3
    verify: {keys: [b.pub, awskms:///alias/c], trustedRoot: root.json}
`))
	if err != nil {
		t.Fatal(err)
	}
	es := f.Resolve()
	if v := es[0].Verify; v == nil || !reflect.DeepEqual(v.Keys, []string{"a.pub"}) || v.Annotations["team"] != "up" || v.Children == nil || !*v.Children {
		t.Errorf("entry 1 takes the defaults: %+v", v)
	}
	v := es[1].Verify
	if !reflect.DeepEqual(v.Keys, []string{"a.pub"}) || v.Identity != `^https://github\.com/x/` || v.Issuer != "https://token.actions.githubusercontent.com" ||
		!reflect.DeepEqual(v.Annotations, map[string]string{"team": "up", "env": "staging"}) || *v.Children {
		t.Errorf("entry 2: the entry's keys win one by one, annotations merge: %+v", v)
	}
	if v := es[2].Verify; !reflect.DeepEqual(v.Keys, []string{"b.pub", "awskms:///alias/c"}) || v.TrustedRoot != "root.json" || !*v.Children {
		t.Errorf("entry 3: its keys replace the defaults': %+v", v)
	}
	es[0].Verify.Annotations["team"] = "changed"
	if f.Defaults.Verify.Annotations["team"] != "up" {
		t.Error("Resolve shares the defaults' annotations")
	}
	if _, err := Parse("fleet.yaml", []byte("promotions:\n  - {source: a/b:1, destination: c/d:1, verify: {identity: '(', issuer: x}}\n")); err == nil || !strings.Contains(err.Error(), "fleet.yaml:2: verify identity") {
		t.Errorf("an identity that is not a regular expression: %v", err)
	}
}
