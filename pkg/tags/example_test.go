package tags_test

import (
	"fmt"
	"log"

	"github.com/ocistow/ocistow/pkg/tags"
)

func ExampleSelector_Select() {
	available := []string{"latest", "edge", "3.18", "3.19", "3.19.1", "3.19-amd64", "3.20", "3.21", "3.21.0-rc.1", "v3.19"}
	s := tags.Selector{
		Allow:  []string{`3\.\d+`}, // anchored: not 3.19.1, 3.19-amd64 or v3.19
		Deny:   []string{`3\.18`},
		Semver: ">=3.19",
		Latest: 2,
	}
	got, err := s.Select(available)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(got)

	all, err := tags.Selector{Semver: ">=3.19"}.Select(available)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(all)
	// Output:
	// [3.21 3.20]
	// [3.21 3.20 3.19.1 v3.19 3.19]
}
