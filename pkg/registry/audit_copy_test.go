package registry

import "testing"

// TestShortDockerNamesResolveAsDockerDoes holds the README's "Short Docker
// names resolve as Docker resolves them (busybox is
// index.docker.io/library/busybox:latest). A destination without a tag
// gets latest."
func TestShortDockerNamesResolveAsDockerDoes(t *testing.T) {
	c := New()
	for in, want := range map[string]string{
		"busybox":                         "index.docker.io/library/busybox:latest",
		"busybox:1.36":                    "index.docker.io/library/busybox:1.36",
		"docker.io/library/busybox":       "index.docker.io/library/busybox:latest",
		"bitnami/redis:7":                 "index.docker.io/bitnami/redis:7",
		"127.0.0.1:5000/lib/app":          "127.0.0.1:5000/lib/app:latest",
		"registry.example/team/app:1.0.0": "registry.example/team/app:1.0.0",
	} {
		ref, err := c.ParseReference(in)
		if err != nil {
			t.Errorf("ParseReference(%q): %v", in, err)
			continue
		}
		if got := ref.Name(); got != want {
			t.Errorf("ParseReference(%q) names %s, want %s", in, got, want)
		}
	}
}
