package promofile

import (
	"fmt"
	"strings"
)

// Error is what is wrong with a promotion file, and where.
type Error struct {
	// Name is the file's name, as given to Parse.
	Name string
	// Line is the line of the problem (1-based).
	Line int
	// Err says what is wrong.
	Err error
}

// Error returns the problem as one line: "NAME:LINE: what is wrong".
func (e *Error) Error() string {
	return oneLine.Replace(fmt.Sprintf("%s:%d: %v", e.Name, e.Line, e.Err))
}

// Unwrap returns what is wrong.
func (e *Error) Unwrap() error { return e.Err }

// oneLine keeps an error message on one line, whatever the file quoted.
var oneLine = strings.NewReplacer("\n", `\n`, "\r", `\r`)
