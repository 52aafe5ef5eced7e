package promofile

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"go.yaml.in/yaml/v3"

	"github.com/ocistow/ocistow/pkg/service"
	"github.com/ocistow/ocistow/pkg/sign"
	"github.com/ocistow/ocistow/pkg/tags"
)

// The keys of each map of the file, as the JSON names of the types.
var (
	fileKeys     = []string{"defaults", "promotions"}
	optionKeys   = []string{"annotations", "manifestAnnotations", "labels", "platforms", "key", "sign", "immutable", "signatureFormat", "referrers", "referrersTypes", "attest", "verify"}
	verifyKeys   = []string{"keys", "identity", "issuer", "annotations", "trustedRoot", "children"}
	entryKeys    = append([]string{"source", "destination", "tags"}, optionKeys...)
	selectorKeys = []string{"list", "allow", "deny", "semver", "latest"}
)

// hint says where a key found in the wrong place goes: in the file ("the
// file"), in defaults ("defaults") or in a promotion ("a promotion").
func hint(where, key string) string {
	switch {
	case where == "the file" && slices.Contains(optionKeys, key):
		return `options for every promotion go under "defaults"`
	case where == "the file" && slices.Contains(entryKeys, key):
		return `promotions are a list under "promotions"`
	case where == "defaults" && slices.Contains(entryKeys, key):
		return `defaults are options: images and tags go in each promotion`
	case where == "a promotion" && slices.Contains(selectorKeys, key):
		return `tag selection goes under "tags"`
	}
	return ""
}

// Parse reads a promotion file, YAML or JSON, and checks it: every key is
// known and of its type, every entry has a source and a destination that are
// valid image references (a repository each when the entry selects tags),
// tag selectors, platforms and annotation keys are valid, and no two entries
// write the same destination tag. name is the file's name, for messages.
//
// Every error is an *Error, one line: "NAME:LINE: what is wrong".
//
// Where a string is wanted, annotation and label values, tags in a list and
// the semver range also take a YAML number, boolean or date as written
// ("team: 1.10" is "1.10"); everywhere else a string must be a string.
// Anchors and aliases work; merge keys ("<<") and a second YAML document are
// refused. A destination without a tag is ":latest", as the CLI takes it.
func Parse(name string, data []byte) (*File, error) {
	d := &decoder{name: name}
	root, err := d.document(data)
	if err != nil {
		return nil, err
	}
	f, err := d.file(root)
	if err != nil {
		return nil, err
	}
	if err := d.collisions(f.Promotions); err != nil {
		return nil, err
	}
	return f, nil
}

// file reads the root map.
func (d *decoder) file(n *yaml.Node) (*File, error) {
	if n.Kind != yaml.MappingNode {
		return nil, d.errorf(n.Line, "want a map with \"defaults\" and \"promotions\", got %s", describe(n))
	}
	f := &File{}
	var promotions *yaml.Node
	err := d.fields("the file", n, fileKeys, func(key string, _, v *yaml.Node) error {
		if key == "defaults" {
			return d.fields("defaults", v, optionKeys, func(key string, _, v *yaml.Node) error {
				return d.option(&f.Defaults, key, v)
			})
		}
		promotions = deref(v)
		return d.items("promotions", v, func(item *yaml.Node) error {
			e, err := d.entry(item)
			if err == nil {
				f.Promotions = append(f.Promotions, *e)
			}
			return err
		})
	})
	switch {
	case err != nil:
		return nil, err
	case promotions == nil:
		return nil, d.errorf(n.Line, "no promotions: want a list under \"promotions\"")
	case len(f.Promotions) == 0:
		return nil, d.errorf(promotions.Line, "promotions: the list is empty")
	}
	return f, nil
}

// entry reads one promotion and checks its references.
func (d *decoder) entry(n *yaml.Node) (*Entry, error) {
	e := &Entry{Line: n.Line}
	lines := map[string]int{}
	err := d.fields("a promotion", n, entryKeys, func(key string, k, v *yaml.Node) (err error) {
		lines[key] = deref(v).Line
		switch key {
		case "source":
			e.Source, err = d.str(key, v)
		case "destination":
			e.Destination, err = d.str(key, v)
		case "tags":
			e.Tags, err = d.selector(v)
		default:
			err = d.option(&e.Options, key, v)
		}
		return err
	})
	switch {
	case err != nil:
		return nil, err
	case lines["source"] == 0:
		return nil, d.errorf(e.Line, "a promotion without a source")
	case lines["destination"] == 0:
		return nil, d.errorf(e.Line, "a promotion without a destination")
	}
	return e, d.references(e, lines)
}

// option reads the option key of o.
func (d *decoder) option(o *Options, key string, v *yaml.Node) (err error) {
	switch key {
	case "annotations":
		o.Annotations, err = d.keyValues(key, v)
	case "manifestAnnotations":
		o.ManifestAnnotations, err = d.keyValues(key, v)
	case "labels":
		o.Labels, err = d.keyValues(key, v)
	case "platforms":
		o.Platforms, err = d.platforms(v)
	case "key":
		if o.Key, err = d.str(key, v); err == nil && o.Key == "" {
			err = d.errorf(deref(v).Line, "key is empty: to turn signing off, write sign: false")
		}
	case "sign":
		o.Sign, err = d.boolean(key, v)
	case "immutable":
		o.Immutable, err = d.boolean(key, v)
	case "signatureFormat":
		if o.SignatureFormat, err = d.str(key, v); err == nil {
			if _, ferr := sign.ParseFormat(o.SignatureFormat); ferr != nil || o.SignatureFormat == "" {
				err = d.errorf(deref(v).Line, "signatureFormat %q: want legacy, bundle or both", o.SignatureFormat)
			}
		}
	case "referrers":
		o.Referrers, err = d.boolean(key, v)
	case "referrersTypes":
		o.ReferrersTypes, err = d.artifactTypes(v)
	case "attest":
		o.Attest, err = d.boolean(key, v)
	case "verify":
		o.Verify, err = d.verify(v)
	default:
		err = d.errorf(deref(v).Line, "unknown option %q", key)
	}
	return err
}

// verify reads a source policy: keys, identity (a regular expression),
// issuer, annotations, trustedRoot and children.
func (d *decoder) verify(n *yaml.Node) (*Verify, error) {
	out := &Verify{}
	err := d.fields("verify", n, verifyKeys, func(key string, k, v *yaml.Node) (err error) {
		switch key {
		case "keys":
			err = d.items("verify keys", v, func(item *yaml.Node) error {
				ref, err := d.str("verify keys", item)
				if err == nil && ref == "" {
					err = d.errorf(item.Line, "verify keys: an empty key")
				}
				out.Keys = append(out.Keys, ref)
				return err
			})
			if err == nil && len(out.Keys) == 0 {
				err = d.errorf(deref(v).Line, "verify keys: the list is empty")
			}
		case "identity":
			if out.Identity, err = d.str(key, v); err == nil {
				if _, rerr := regexp.Compile(out.Identity); rerr != nil || out.Identity == "" {
					err = d.errorf(deref(v).Line, "verify identity %q: not a regular expression", out.Identity)
				}
			}
		case "issuer":
			out.Issuer, err = d.str(key, v)
		case "annotations":
			out.Annotations, err = d.keyValues("verify annotations", v)
		case "trustedRoot":
			if out.TrustedRoot, err = d.str(key, v); err == nil && out.TrustedRoot == "" {
				err = d.errorf(deref(v).Line, "verify trustedRoot is empty")
			}
		case "children":
			out.Children, err = d.boolean(key, v)
		}
		return err
	})
	if err == nil && len(deref(n).Content) == 0 {
		err = d.errorf(deref(n).Line, "verify is empty: give keys, or identity and issuer")
	}
	return out, err
}

// keyValues reads annotations or labels: a map of names to values, each
// checked as the CLI checks them.
func (d *decoder) keyValues(what string, n *yaml.Node) (map[string]string, error) {
	m := map[string]string{}
	err := d.fields(what, n, nil, func(key string, k, v *yaml.Node) error {
		val, err := d.text(fmt.Sprintf("%s %q", what, key), v)
		if err != nil {
			return err
		}
		if err := service.ValidateKeyValues(what, map[string]string{key: val}); err != nil {
			return d.errorf(k.Line, "%v", err)
		}
		m[key] = val
		return nil
	})
	return m, err
}

// platforms reads a list of os/arch[/variant].
func (d *decoder) platforms(n *yaml.Node) ([]string, error) {
	out := []string{}
	err := d.items("platforms", n, func(item *yaml.Node) error {
		p, err := d.str("platforms", item)
		if err != nil {
			return err
		}
		if _, err := service.ParsePlatform(p); err != nil {
			return d.errorf(item.Line, "%v", err)
		}
		out = append(out, p)
		return nil
	})
	return out, err
}

// artifactTypes reads a non-empty list of artifact (media) types.
func (d *decoder) artifactTypes(n *yaml.Node) ([]string, error) {
	var out []string
	err := d.items("referrersTypes", n, func(item *yaml.Node) error {
		t, err := d.str("referrersTypes", item)
		if err == nil && (t == "" || strings.ContainsAny(t, " \t\r\n,")) {
			err = d.errorf(item.Line, "referrersTypes: %q is not an artifact type (a media type such as application/spdx+json)", t)
		}
		out = append(out, t)
		return err
	})
	if err == nil && len(out) == 0 {
		err = d.errorf(deref(n).Line, "referrersTypes: the list is empty: leave it out to copy every referrer")
	}
	return out, err
}

// selector reads tags: a list of tags, or a map of list, allow, deny,
// semver and latest.
func (d *decoder) selector(n *yaml.Node) (*tags.Selector, error) {
	n = deref(n)
	s := &tags.Selector{}
	switch n.Kind {
	case yaml.SequenceNode:
		list, err := d.tagList(n)
		s.List = list
		return s, err
	case yaml.MappingNode:
	default:
		return nil, d.errorf(n.Line, "tags: want a list of tags, or a map of allow, deny, semver and latest, got %s", describe(n))
	}
	err := d.fields("tags", n, selectorKeys, func(key string, _, v *yaml.Node) error {
		return d.selectorField(s, key, v)
	})
	switch {
	case err != nil:
		return nil, err
	case len(s.List) == 0 && len(s.Allow) == 0 && len(s.Deny) == 0 && s.Semver == "" && s.Latest == 0:
		return nil, d.errorf(n.Line, "tags: selects every tag: to mean it, write allow: ['.*']")
	}
	if err := s.Validate(); err != nil {
		return nil, d.errorf(n.Line, "tags: %v", err)
	}
	return s, nil
}

// selectorField reads the key of a tags map into s, checking it alone.
func (d *decoder) selectorField(s *tags.Selector, key string, v *yaml.Node) (err error) {
	check := func(line int, part tags.Selector) error {
		if err := part.Validate(); err != nil {
			return d.errorf(line, "tags: %v", err)
		}
		return nil
	}
	switch key {
	case "list":
		s.List, err = d.tagList(v)
	case "allow", "deny":
		var exprs []string
		err = d.items(key, v, func(item *yaml.Node) error {
			e, err := d.str(key, item)
			if err == nil {
				err = check(item.Line, tags.Selector{Allow: []string{e}, Deny: []string{e}})
			}
			exprs = append(exprs, e)
			return err
		})
		if err == nil && len(exprs) == 0 {
			err = d.errorf(deref(v).Line, "tags: %s: the list is empty", key)
		}
		if key == "allow" {
			s.Allow = exprs
		} else {
			s.Deny = exprs
		}
	case "semver":
		s.Semver, err = d.text(key, v)
		switch {
		case err == nil && s.Semver == "":
			err = d.errorf(deref(v).Line, "tags: semver is empty")
		case err == nil:
			err = check(deref(v).Line, tags.Selector{Semver: s.Semver})
		}
	case "latest":
		if s.Latest, err = d.integer(key, v); err == nil {
			err = check(deref(v).Line, tags.Selector{Latest: s.Latest})
		}
	}
	return err
}

// tagList reads a non-empty list of distinct tags.
func (d *decoder) tagList(n *yaml.Node) ([]string, error) {
	var list []string
	seen := map[string]int{}
	err := d.items("tags", n, func(item *yaml.Node) error {
		t, err := d.text("tags", item)
		if err != nil {
			return err
		}
		if first, ok := seen[t]; ok {
			return d.errorf(item.Line, "tags: tag %q is listed twice (first at line %d)", t, first)
		}
		seen[t] = item.Line
		if err := (tags.Selector{List: []string{t}}).Validate(); err != nil {
			return d.errorf(item.Line, "tags: %v", err)
		}
		list = append(list, t)
		return nil
	})
	if err == nil && len(list) == 0 {
		err = d.errorf(deref(n).Line, "tags: the list is empty")
	}
	return list, err
}

// references checks the source and destination of e: images, or with tags,
// repositories; a destination never names a digest.
func (d *decoder) references(e *Entry, lines map[string]int) error {
	if e.Tags != nil {
		if err := repository(e.Source); err != nil {
			return d.errorf(lines["source"], "source %q %v", e.Source, err)
		}
		if err := repository(e.Destination); err != nil {
			return d.errorf(lines["destination"], "destination %q %v", e.Destination, err)
		}
		return nil
	}
	if _, err := name.ParseReference(e.Source); err != nil {
		return d.errorf(lines["source"], "source %q: %v", e.Source, err)
	}
	ref, err := name.ParseReference(e.Destination)
	if err != nil {
		return d.errorf(lines["destination"], "destination %q: %v", e.Destination, err)
	}
	if _, ok := ref.(name.Digest); ok {
		return d.errorf(lines["destination"], "destination %q names a digest: a promotion writes a tag", e.Destination)
	}
	if _, ok := DestinationTag(*e); !ok {
		return d.errorf(lines["destination"], "destination %q names no tag, and source %q is by digest: give the destination a tag", e.Destination, e.Source)
	}
	return nil
}

// repository checks that s is a repository, not an image by tag or digest.
// Its error follows the reference in a message.
func repository(s string) error {
	if _, err := name.NewRepository(s); err == nil {
		return nil
	}
	ref, err := name.ParseReference(s)
	if err != nil {
		return fmt.Errorf("is not a repository: %w", err)
	}
	if _, ok := ref.(name.Digest); ok {
		return fmt.Errorf("names a digest: tags select from a repository")
	}
	return fmt.Errorf("names a tag: tags select from a repository")
}

// written is a destination tag a promotion names, and its line.
type written struct {
	tag  name.Tag
	line int
}

// collisions refuses two promotions that write the same destination tag:
// the same image, or a tag one names or lists and the other's tags select
// (Latest aside).
func (d *decoder) collisions(entries []Entry) error {
	var named []written
	first := map[string]int{}
	for _, e := range entries {
		for _, t := range destinationTags(e) {
			if line, ok := first[t.Name()]; ok {
				return d.errorf(e.Line, "destination %s is also written by the promotion at line %d", t.Name(), line)
			}
			first[t.Name()] = e.Line
			named = append(named, written{tag: t, line: e.Line})
		}
	}
	for _, e := range entries {
		if e.Tags == nil || len(e.Tags.List) > 0 {
			continue
		}
		repo, err := name.NewRepository(e.Destination)
		if err != nil {
			continue
		}
		for _, w := range named {
			if ok, _ := e.Tags.Match(w.tag.TagStr()); ok && w.tag.Repository.Name() == repo.Name() {
				return d.errorf(max(e.Line, w.line), "destination %s is written by the promotion at line %d and selected by the tags of the promotion at line %d",
					w.tag.Name(), w.line, e.Line)
			}
		}
	}
	return nil
}

// destinationTags returns the tags e names at its destination: its one
// image (the source's tag when the destination is a repository), or its
// list of tags; none when its tags are selected from the source.
func destinationTags(e Entry) []name.Tag {
	if e.Tags == nil {
		if t, ok := DestinationTag(e); ok {
			return []name.Tag{t}
		}
		return nil
	}
	repo, err := name.NewRepository(e.Destination)
	if err != nil {
		return nil
	}
	out := make([]name.Tag, 0, len(e.Tags.List))
	for _, t := range e.Tags.List {
		out = append(out, repo.Tag(t))
	}
	return out
}

// DestinationTag is the tag an entry without Tags writes: the destination's
// own, or, when the destination is a repository, the tag the source names
// (":latest" when it names none). ok is false for a source by digest into a
// repository, which names no tag.
func DestinationTag(e Entry) (name.Tag, bool) {
	if repo, err := name.NewRepository(e.Destination); err == nil {
		src, err := name.ParseReference(e.Source)
		if t, ok := src.(name.Tag); ok && err == nil {
			return repo.Tag(t.TagStr()), true
		}
		return name.Tag{}, false
	}
	ref, err := name.ParseReference(e.Destination)
	t, ok := ref.(name.Tag)
	return t, ok && err == nil
}
