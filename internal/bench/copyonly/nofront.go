//go:build !front

package main

import "io"

const frontName = "copyonly (ocistow's copy path alone)"

// linkFront is a no-op outside the front build (see front.go).
func linkFront([]string, io.Writer) {}
