// Package tags selects which tags of a repository a promotion takes: an
// explicit list, or regular expressions to allow and deny, a semver range,
// and the highest N.
package tags

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"

	"github.com/Masterminds/semver/v3"
)

// Selector says which tags to take. With List set, exactly those tags are
// taken (and the other fields must be empty). Otherwise a tag is taken when
// it matches one of Allow (or Allow is empty), none of Deny, and the Semver
// range (when set); then, with Latest > 0, only the highest Latest of those
// are kept, by semver, with tags that are not semver ordered by name below
// every semver tag.
//
// "Semver" here is what github.com/Masterminds/semver/v3 reads as a version,
// which is lenient: a leading "v" and missing minor or patch numbers are
// allowed ("v1.2" is 1.2.0), and a suffix after a dash is a pre-release
// ("3.19-amd64" is a pre-release of 3.19.0, and so is "3.19.1-r0").
type Selector struct {
	// List names the tags to take.
	List []string `json:"list,omitempty"`
	// Allow and Deny are regular expressions (RE2), anchored at both ends.
	Allow []string `json:"allow,omitempty"`
	Deny  []string `json:"deny,omitempty"`
	// Semver is a semver range, as github.com/Masterminds/semver/v3 reads
	// constraints (">=3.19", "~1.8", "^2", ">=1.0.0 <2.0.0"). Tags that are
	// not semver versions (a leading "v" is allowed) never match it.
	// Pre-releases match only when the range itself names a pre-release.
	Semver string `json:"semver,omitempty"`
	// Latest, when above 0, keeps only the highest Latest tags.
	Latest int `json:"latest,omitempty"`
}

// tagRE and maxTagLen are what a registry accepts as a tag (the OCI
// distribution spec's [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}); the length is
// checked apart because a counted repetition compiles into 128 copies of
// the class, 118 KB allocated at every start of the program.
var tagRE = regexp.MustCompile(`^[A-Za-z0-9_][A-Za-z0-9_.-]*$`)

const maxTagLen = 128

// matcher is a compiled Selector without List.
type matcher struct {
	allow, deny []*regexp.Regexp
	semver      *semver.Constraints
}

// Validate checks the selector: List alone or the other fields, valid tag
// names without repeats in List, regular expressions that compile, a semver
// range that parses, and Latest not below 0.
func (s Selector) Validate() error {
	if len(s.List) > 0 {
		return s.validateList()
	}
	_, err := s.compile()
	return err
}

// validateList checks that List stands alone and names valid, distinct tags.
func (s Selector) validateList() error {
	if len(s.Allow) > 0 || len(s.Deny) > 0 || s.Semver != "" || s.Latest != 0 {
		return fmt.Errorf("a list of tags cannot be combined with allow, deny, semver or latest")
	}
	seen := make(map[string]bool, len(s.List))
	for _, t := range s.List {
		if len(t) > maxTagLen || !tagRE.MatchString(t) {
			return fmt.Errorf("invalid tag %q: want letters, digits, '_', '.' and '-', at most 128, not starting with '.' or '-'", t)
		}
		if seen[t] {
			return fmt.Errorf("tag %q is listed twice", t)
		}
		seen[t] = true
	}
	return nil
}

// compile compiles Allow, Deny and Semver, and checks Latest.
func (s Selector) compile() (*matcher, error) {
	if s.Latest < 0 {
		return nil, fmt.Errorf("latest is %d: want 0 (all) or more", s.Latest)
	}
	allow, err := compileAll("allow", s.Allow)
	if err != nil {
		return nil, err
	}
	deny, err := compileAll("deny", s.Deny)
	if err != nil {
		return nil, err
	}
	m := &matcher{allow: allow, deny: deny}
	if s.Semver != "" {
		if m.semver, err = semver.NewConstraint(s.Semver); err != nil {
			return nil, fmt.Errorf("semver %q: %w", s.Semver, err)
		}
	}
	return m, nil
}

// compileAll compiles regular expressions anchored at both ends.
func compileAll(what string, exprs []string) ([]*regexp.Regexp, error) {
	out := make([]*regexp.Regexp, 0, len(exprs))
	for _, e := range exprs {
		// Compile the expression as written first, so that an error
		// quotes it rather than the anchored form.
		if _, err := regexp.Compile(e); err != nil {
			return nil, fmt.Errorf("%s %q: %w", what, e, err)
		}
		out = append(out, regexp.MustCompile(`^(?:`+e+`)$`))
	}
	return out, nil
}

// match reports whether tag passes Allow, Deny and Semver.
func (m *matcher) match(tag string) bool {
	if len(m.allow) > 0 && !slices.ContainsFunc(m.allow, func(r *regexp.Regexp) bool { return r.MatchString(tag) }) {
		return false
	}
	if slices.ContainsFunc(m.deny, func(r *regexp.Regexp) bool { return r.MatchString(tag) }) {
		return false
	}
	if m.semver == nil {
		return true
	}
	v, err := semver.NewVersion(tag)
	return err == nil && m.semver.Check(v)
}

// Match reports whether tag passes Allow, Deny and Semver, or is in List;
// Latest is not applied, since it depends on the other tags.
func (s Selector) Match(tag string) (bool, error) {
	if len(s.List) > 0 {
		return slices.Contains(s.List, tag), s.Validate()
	}
	m, err := s.compile()
	if err != nil {
		return false, err
	}
	return m.match(tag), nil
}

// Select returns the tags to take out of available, the tags a repository
// has. With List, it returns List as it is, whether available has those tags
// or not. Otherwise it returns the tags of available that pass Allow, Deny
// and Semver, each once, highest first: semver tags by version (equal
// versions, such as "1.2" and "v1.2.0", by name descending), then the other
// tags by name descending; with Latest > 0, only the first Latest of them.
func (s Selector) Select(available []string) ([]string, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if len(s.List) > 0 {
		return slices.Clone(s.List), nil
	}
	m, err := s.compile()
	if err != nil {
		return nil, err
	}
	var out []string
	seen := make(map[string]bool, len(available))
	for _, t := range available {
		if !seen[t] && m.match(t) {
			out = append(out, t)
		}
		seen[t] = true
	}
	Sort(out)
	if s.Latest > 0 && len(out) > s.Latest {
		out = out[:s.Latest]
	}
	return out, nil
}

// Sort orders tags highest first, as Select returns them: semver tags by
// version, equal versions by name descending, then the tags that are not
// semver by name descending.
func Sort(tags []string) {
	versions := make(map[string]*semver.Version, len(tags))
	for _, t := range tags {
		if v, err := semver.NewVersion(t); err == nil {
			versions[t] = v
		}
	}
	slices.SortFunc(tags, func(a, b string) int {
		va, vb := versions[a], versions[b]
		switch {
		case va != nil && vb == nil:
			return -1
		case va == nil && vb != nil:
			return 1
		case va != nil:
			if c := vb.Compare(va); c != 0 {
				return c
			}
		}
		return cmp.Compare(b, a)
	})
}
