package oneline

import (
	"errors"
	"testing"
)

func TestString(t *testing.T) {
	for in, want := range map[string]string{
		"":                                "",
		"a":                               "a",
		"  registry\nanswered\t 500 \r\n": "registry answered 500",
	} {
		if got := String(in); got != want {
			t.Errorf("String(%q) = %q, want %q", in, got, want)
		}
	}
	if got := Error(errors.New("x\ny")); got != "x y" {
		t.Errorf("Error = %q", got)
	}
	if got := Error(nil); got != "" {
		t.Errorf("Error(nil) = %q", got)
	}
}
