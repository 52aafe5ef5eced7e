package service

import "testing"

// TestQualified holds docs/promotion-predicate.md's "source.reference: the
// source image as ocistow resolved it, fully qualified (busybox:1.36 is
// index.docker.io/library/busybox:1.36)", and likewise the destination.
func TestQualified(t *testing.T) {
	for in, want := range map[string]string{
		"busybox:1.36":                            "index.docker.io/library/busybox:1.36",
		"docker.io/library/busybox:1.36":          "index.docker.io/library/busybox:1.36",
		"ghcr.io/example/app":                     "ghcr.io/example/app:latest",
		"127.0.0.1:5000/base/app@sha256:" + hex64: "127.0.0.1:5000/base/app@sha256:" + hex64,
	} {
		if got := qualified(in); got != want {
			t.Errorf("qualified(%q) = %q, want %q", in, got, want)
		}
	}
}

const hex64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
