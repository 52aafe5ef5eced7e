package promofile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// decoder reads the YAML nodes of one file into its types, refusing what it
// does not know, with the line of the problem.
type decoder struct {
	name string
}

// errorf returns an *Error at line.
func (d *decoder) errorf(line int, format string, args ...any) error {
	return &Error{Name: d.name, Line: line, Err: fmt.Errorf(format, args...)}
}

// yamlLine finds the line in a YAML syntax error.
var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// document returns the root node of the file's one YAML document.
func (d *decoder) document(data []byte) (*yaml.Node, error) {
	if line, what := checkText(data); what != "" {
		return nil, d.errorf(line, "%s", what)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, d.errorf(1, "the file is empty: want a map with \"promotions\"")
		}
		return nil, d.syntax(data, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, d.errorf(extra.Line, "a second YAML document: want one")
	case !errors.Is(err, io.EOF):
		return nil, d.syntax(data, err)
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 {
		root = doc.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, d.errorf(root.Line, "the file is empty: want a map with \"promotions\"")
	}
	return root, nil
}

// parserProblems are the YAML parser's messages whose line the YAML package
// reports counting from 0 (its scanner's, it counts from 1). That line is
// where the list or map the parser was in starts, or the problem's when
// that is on the first line.
var parserProblems = []string{
	"did not find expected ',' or ']'", "did not find expected ',' or '}'",
	"did not find expected '-' indicator", "did not find expected <document start>",
	"did not find expected <stream-start>", "did not find expected key",
	"did not find expected node content", "found duplicate %TAG directive",
	"found duplicate %YAML directive", "found incompatible YAML document",
	"found undefined tag handle",
}

// unknownAnchor is the YAML package's message for an alias without anchor,
// which has no line.
var unknownAnchor = regexp.MustCompile(`^yaml: unknown anchor '(.*)' referenced$`)

// syntax returns a YAML syntax error of data as an *Error, with its line.
func (d *decoder) syntax(data []byte, err error) error {
	msg, line := strings.TrimPrefix(err.Error(), "yaml: "), 0
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if slices.Contains(parserProblems, msg) {
		line++
	}
	if m := unknownAnchor.FindStringSubmatch(err.Error()); m != nil {
		if i := bytes.Index(data, []byte("*"+m[1])); i >= 0 {
			line = 1 + bytes.Count(data[:i], []byte("\n"))
		}
	}
	return d.errorf(max(line, 1), "%s", msg)
}

// checkText finds text YAML refuses, which the YAML parser reports without
// a line: invalid UTF-8 and control characters other than tab and newlines.
func checkText(data []byte) (line int, what string) {
	line = 1
	for i := 0; i < len(data); {
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return line, "not valid UTF-8"
		case r == '\n':
			line++
		case r < 0x20 && r != '\t' && r != '\r', r == 0x7f, r >= 0x80 && r <= 0x9f && r != 0x85:
			return line, fmt.Sprintf("control character %U", r)
		}
		i += size
	}
	return 0, ""
}

// deref follows YAML aliases to the node they name.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

// describe names what n is, for messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a map"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!str":
			return fmt.Sprintf("the string %q", n.Value)
		case "!!int", "!!float":
			return "the number " + n.Value
		case "!!bool":
			return "the boolean " + n.Value
		case "!!null":
			return "nothing (null)"
		case "!!timestamp":
			return "the date " + n.Value
		}
		return fmt.Sprintf("a value tagged %q", n.ShortTag())
	}
	return "a YAML document"
}

// fields walks the map n: it refuses what is not a map, keys that are not
// names, repeated keys and, unless known is nil, keys not in known (saying
// what was probably meant), and calls fn with each key and value.
func (d *decoder) fields(what string, n *yaml.Node, known []string, fn func(key string, k, v *yaml.Node) error) error {
	n = deref(n)
	if n.Kind != yaml.MappingNode {
		return d.errorf(n.Line, "%s: want a map, got %s", what, describe(n))
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() == "!!null" {
			return d.errorf(k.Line, "%s: a key is %s: want a name", what, describe(k))
		}
		if first, ok := seen[k.Value]; ok {
			return d.errorf(k.Line, "duplicate key %q (first at line %d)", k.Value, first)
		}
		seen[k.Value] = k.Line
		if known != nil && !slices.Contains(known, k.Value) {
			return d.errorf(k.Line, "unknown key %q%s", k.Value, suggest(k.Value, known, hint(what, k.Value)))
		}
		if err := fn(k.Value, k, v); err != nil {
			return err
		}
	}
	return nil
}

// items walks the list n, refusing what is not a list, and calls fn with
// each item.
func (d *decoder) items(what string, n *yaml.Node, fn func(item *yaml.Node) error) error {
	n = deref(n)
	if n.Kind != yaml.SequenceNode {
		return d.errorf(n.Line, "%s: want a list, got %s", what, describe(n))
	}
	for _, item := range n.Content {
		if err := fn(deref(item)); err != nil {
			return err
		}
	}
	return nil
}

// str reads a YAML string; numbers, booleans and null are refused.
func (d *decoder) str(what string, n *yaml.Node) (string, error) {
	n = deref(n)
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
		return "", d.errorf(n.Line, "%s: want a string, got %s", what, describe(n))
	}
	return n.Value, nil
}

// text reads a string, or a number, boolean or date as it is written
// ("1.10" stays "1.10"); null, maps and lists are refused.
func (d *decoder) text(what string, n *yaml.Node) (string, error) {
	n = deref(n)
	if n.Kind == yaml.ScalarNode {
		switch n.ShortTag() {
		case "!!str", "!!int", "!!float", "!!bool", "!!timestamp":
			return n.Value, nil
		}
	}
	return "", d.errorf(n.Line, "%s: want a string, got %s", what, describe(n))
}

// boolean reads true or false.
func (d *decoder) boolean(what string, n *yaml.Node) (*bool, error) {
	n = deref(n)
	var b bool
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" || n.Decode(&b) != nil {
		return nil, d.errorf(n.Line, "%s: want true or false, got %s", what, describe(n))
	}
	return &b, nil
}

// integer reads a whole number.
func (d *decoder) integer(what string, n *yaml.Node) (int, error) {
	n = deref(n)
	var i int
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&i) != nil {
		return 0, d.errorf(n.Line, "%s: want a whole number, got %s", what, describe(n))
	}
	return i, nil
}
