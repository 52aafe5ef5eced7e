// Package oneline renders messages on a single line, as every error ocistow
// shows a user must be: one line, whatever the registry or the SDK put in it.
package oneline

import "strings"

// String collapses every run of white space in s, newlines included, into
// one space, and trims both ends.
func String(s string) string { return strings.Join(strings.Fields(s), " ") }

// Error renders err with String; a nil err is the empty string.
func Error(err error) string {
	if err == nil {
		return ""
	}
	return String(err.Error())
}
