package promofile

import (
	"fmt"
	"strings"
)

// suggest says, after an unknown key, what was probably meant: a known key
// spelled alike, else the hint for a key in the wrong place, else the known
// keys.
func suggest(key string, known []string, hint string) string {
	if key == "<<" {
		return " (YAML merge keys are not supported)"
	}
	best, bestDist := "", 3
	for _, k := range known {
		if d := distance(fold(key), fold(k)); d < bestDist && d < len(fold(key)) {
			best, bestDist = k, d
		}
	}
	switch {
	case best != "":
		return fmt.Sprintf(" (did you mean %q?)", best)
	case hint != "":
		return " (" + hint + ")"
	}
	return " (want one of: " + strings.Join(known, ", ") + ")"
}

// fold drops case, '-' and '_', so that "manifest_annotations" is spelled
// like "manifestAnnotations".
func fold(s string) string {
	return strings.NewReplacer("-", "", "_", "").Replace(strings.ToLower(s))
}

// distance is the Levenshtein distance between a and b, in bytes.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
