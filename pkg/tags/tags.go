// Package tags selects which tags of a repository a promotion takes: an
// explicit list, or regular expressions to allow and deny, a semver range,
// and the highest N.
package tags

// Selector says which tags to take. With List set, exactly those tags are
// taken (and the other fields must be empty). Otherwise a tag is taken when
// it matches one of Allow (or Allow is empty), none of Deny, and the Semver
// range (when set); then, with Latest > 0, only the highest Latest of those
// are kept, by semver, with tags that are not semver ordered by name below
// every semver tag.
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
