package registry

import (
	"strings"
	"testing"
)

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"busybox", "busybox:1.36", "ghcr.io/a/b@sha256:" + strings.Repeat("a", 64),
		"127.0.0.1:5000/x/y:z", "Not A Ref!!", "a@sha256:nothex", "", " busybox", "[::1]:5000/r:t", "registry.example.com:99999/r"} {
		f.Add(s)
	}
	c := New(WithInsecureRegistries("insecure.example.com:5000"))
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := c.ParseReference(s)
		if err != nil {
			if !strings.Contains(err.Error(), "invalid image reference") {
				t.Fatalf("error %q does not say what was wrong", err)
			}
			return
		}
		// What parses, re-parses to the same thing.
		again, err := c.ParseReference(ref.String())
		if err != nil || again.String() != ref.String() {
			t.Fatalf("%q parsed as %q, which re-parses as %v (%v)", s, ref, again, err)
		}
	})
}
