package tags

import (
	"slices"
	"strings"
	"testing"
)

// alpine is a sample of the tags of docker.io/library/alpine.
var alpine = []string{
	"latest", "edge", "3", "3.18", "3.18.9", "3.19", "3.19.1", "3.19.1-r0", "3.19-amd64",
	"3.20", "3.20.3", "3.21", "v3.19", "3.10", "3.9", "20240923",
}

func TestSelect(t *testing.T) {
	for _, tc := range []struct {
		name      string
		sel       Selector
		available []string
		want      []string
	}{{
		name:      "list is returned as is, whatever is available",
		sel:       Selector{List: []string{"v1.9.0", "v1.8.2"}},
		available: []string{"v1.8.2"},
		want:      []string{"v1.9.0", "v1.8.2"},
	}, {
		name:      "no filter takes every tag, highest first, non-semver last by name descending",
		sel:       Selector{},
		available: []string{"edge", "1.2.0", "latest", "1.10.0", "1.9.0", "alpha"},
		want:      []string{"1.10.0", "1.9.0", "1.2.0", "latest", "edge", "alpha"},
	}, {
		name:      "allow is anchored at both ends",
		sel:       Selector{Allow: []string{`3\.\d+`}},
		available: alpine,
		want:      []string{"3.21", "3.20", "3.19", "3.18", "3.10", "3.9"},
	}, {
		name:      "allow without anchors in the expression still matches whole tags only",
		sel:       Selector{Allow: []string{`3\.1`}},
		available: []string{"3.1", "3.10", "v3.1", "3.1.0"},
		want:      []string{"3.1"},
	}, {
		name:      "alternation is anchored as a whole",
		sel:       Selector{Allow: []string{`a|b`}},
		available: []string{"a", "b", "ab", "xa", "bx"},
		want:      []string{"b", "a"},
	}, {
		name:      "deny wins over allow",
		sel:       Selector{Allow: []string{`3\.\d+`}, Deny: []string{`3\.1\d`}},
		available: alpine,
		want:      []string{"3.21", "3.20", "3.9"},
	}, {
		name:      "any of several allows",
		sel:       Selector{Allow: []string{`edge`, `3\.2\d`}},
		available: alpine,
		want:      []string{"3.21", "3.20", "edge"},
	}, {
		name:      "semver range excludes pre-releases and non-semver tags",
		sel:       Selector{Semver: ">=3.19"},
		available: alpine,
		want:      []string{"20240923", "3.21", "3.20.3", "3.20", "3.19.1", "v3.19", "3.19"},
	}, {
		name:      "3.19-amd64 is a pre-release of 3.19.0, excluded by >=3.19",
		sel:       Selector{Semver: ">=3.19"},
		available: []string{"3.19-amd64", "3.19.1-r0"},
		want:      nil,
	}, {
		name:      "a range naming a pre-release includes pre-releases",
		sel:       Selector{Semver: ">=1.9.0-rc.0"},
		available: []string{"v1.8.2", "v1.9.0-rc.1", "v1.9.0", "v1.9.1-rc.0", "latest"},
		want:      []string{"v1.9.1-rc.0", "v1.9.0", "v1.9.0-rc.1"},
	}, {
		name:      "without a pre-release in the range, rc is out",
		sel:       Selector{Semver: ">=1.9.0"},
		available: []string{"v1.8.2", "v1.9.0-rc.1", "v1.9.0", "latest"},
		want:      []string{"v1.9.0"},
	}, {
		name:      "semver and allow together",
		sel:       Selector{Allow: []string{`3\.\d+`}, Semver: ">=3.19"},
		available: alpine,
		want:      []string{"3.21", "3.20", "3.19"},
	}, {
		name:      "latest keeps the highest by semver",
		sel:       Selector{Allow: []string{`3\.\d+`}, Semver: ">=3.19", Latest: 2},
		available: alpine,
		want:      []string{"3.21", "3.20"},
	}, {
		name:      "latest with mixed semver and non-semver: non-semver rank below",
		sel:       Selector{Latest: 4},
		available: []string{"edge", "latest", "1.0", "stable", "0.9"},
		want:      []string{"1.0", "0.9", "stable", "latest"},
	}, {
		name:      "latest above the count keeps all",
		sel:       Selector{Allow: []string{`edge|latest`}, Latest: 5},
		available: alpine,
		want:      []string{"latest", "edge"},
	}, {
		name:      "equal versions order by name descending",
		sel:       Selector{Latest: 2},
		available: []string{"1.2", "v1.2.0", "1.2.0"},
		want:      []string{"v1.2.0", "1.2.0"},
	}, {
		name:      "repeated available tags come out once",
		sel:       Selector{},
		available: []string{"1.0", "1.0", "edge", "edge"},
		want:      []string{"1.0", "edge"},
	}, {
		name:      "nothing available",
		sel:       Selector{Allow: []string{`.*`}},
		available: nil,
		want:      nil,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.sel.Select(tc.available)
			if err != nil {
				t.Fatalf("Select: %v", err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Select(%q)\n got %q\nwant %q", tc.available, got, tc.want)
			}
		})
	}
}

func TestSelectDoesNotChangeItsInput(t *testing.T) {
	in := []string{"a", "c", "b"}
	s := Selector{List: []string{"x", "y"}}
	out, err := s.Select(in)
	if err != nil {
		t.Fatal(err)
	}
	out[0] = "changed"
	if s.List[0] != "x" {
		t.Errorf("Select returned List itself: changing the result changed List to %q", s.List)
	}
	if _, err := (Selector{}).Select(in); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(in, []string{"a", "c", "b"}) {
		t.Errorf("Select reordered its input: %q", in)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		sel  Selector
		want string // part of the error; "" for none
	}{
		{"empty", Selector{}, ""},
		{"full filter", Selector{Allow: []string{`3\.\d+`}, Deny: []string{`3\.1\d`}, Semver: ">=3.19", Latest: 3}, ""},
		{"list", Selector{List: []string{"v1.8.2", "1.36", "_x", "A-b.c_d"}}, ""},
		{"bad allow", Selector{Allow: []string{`3\.(`}}, "allow \"3\\\\.(\": error parsing regexp: missing closing ): `3\\.(`"},
		{"bad deny", Selector{Deny: []string{`[z-a]`}}, "deny \"[z-a]\": error parsing regexp: invalid character class range"},
		{"bad semver", Selector{Semver: ">=x.y"}, `semver ">=x.y": `},
		{"semver garbage", Selector{Semver: "latest"}, `semver "latest": `},
		{"latest below 0", Selector{Latest: -1}, "latest is -1: want 0 (all) or more"},
		{"list with allow", Selector{List: []string{"a"}, Allow: []string{"b"}}, "a list of tags cannot be combined with allow, deny, semver or latest"},
		{"list with latest", Selector{List: []string{"a"}, Latest: 1}, "cannot be combined"},
		{"list with semver", Selector{List: []string{"a"}, Semver: "1"}, "cannot be combined"},
		{"list with deny", Selector{List: []string{"a"}, Deny: []string{"1"}}, "cannot be combined"},
		{"list with a bad tag", Selector{List: []string{"a", "-a"}}, `invalid tag "-a"`},
		{"list with an empty tag", Selector{List: []string{""}}, `invalid tag ""`},
		{"list with a 128-character tag", Selector{List: []string{strings.Repeat("a", 128)}}, ""},
		{"list with a long tag", Selector{List: []string{strings.Repeat("a", 129)}}, `invalid tag "aaaa`},
		{"list with a repeated tag", Selector{List: []string{"a", "b", "a"}}, `tag "a" is listed twice`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.sel.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate: %v", err)
			case tc.want != "" && err == nil:
				t.Fatalf("Validate accepted %+v, want an error with %q", tc.sel, tc.want)
			case tc.want != "" && !strings.Contains(err.Error(), tc.want):
				t.Fatalf("Validate: %v\nwant it to contain %q", err, tc.want)
			}
			if tc.want == "" {
				return
			}
			if _, serr := tc.sel.Select([]string{"a"}); serr == nil || serr.Error() != err.Error() {
				t.Errorf("Select = %v, want Validate's error %v", serr, err)
			}
			if _, merr := tc.sel.Match("a"); merr == nil || merr.Error() != err.Error() {
				t.Errorf("Match = %v, want Validate's error %v", merr, err)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	s := Selector{Allow: []string{`3\.\d+`}, Deny: []string{`3\.1\d`}, Latest: 1}
	for tag, want := range map[string]bool{"3.9": true, "3.20": true, "3.19": false, "3.19.1": false, "v3.20": false, "edge": false} {
		if got, err := s.Match(tag); err != nil || got != want {
			t.Errorf("Match(%q) = %v, %v; want %v (Latest is not applied)", tag, got, err, want)
		}
	}
	l := Selector{List: []string{"a", "b"}}
	for tag, want := range map[string]bool{"a": true, "b": true, "c": false} {
		if got, err := l.Match(tag); err != nil || got != want {
			t.Errorf("list Match(%q) = %v, %v; want %v", tag, got, err, want)
		}
	}
}

func TestSort(t *testing.T) {
	in := []string{"latest", "v1.9.0-rc.1", "1.10", "v1.9.0", "1.9.0+meta", "edge", "2", "zeta"}
	Sort(in)
	want := []string{"2", "1.10", "v1.9.0", "1.9.0+meta", "v1.9.0-rc.1", "zeta", "latest", "edge"}
	if !slices.Equal(in, want) {
		t.Errorf("Sort\n got %q\nwant %q", in, want)
	}
}
