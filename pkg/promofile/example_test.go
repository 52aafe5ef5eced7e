package promofile_test

import (
	"fmt"
	"log"

	"github.com/ocistow/ocistow/pkg/promofile"
)

func ExampleParse() {
	f, err := promofile.Parse("fleet.yaml", []byte(`
defaults:
  annotations: {team: platform}
  key: awskms:///alias/ocistow
promotions:
  - source: docker.io/library/busybox:1.36
    destination: 111111111111.dkr.ecr.us-east-1.amazonaws.com/base/busybox:1.36
  - source: docker.io/library/alpine
    destination: 111111111111.dkr.ecr.us-east-1.amazonaws.com/base/alpine
    tags: {allow: ['3\.\d+'], semver: '>=3.19', latest: 3}
    annotations: {owner: base}
    sign: false
`))
	if err != nil {
		log.Fatal(err)
	}
	for _, e := range f.Resolve() {
		fmt.Printf("line %d: %s -> %s annotations=%v key=%q sign=%v\n",
			e.Line, e.Source, e.Destination, e.Annotations, e.Key, e.Sign == nil || *e.Sign)
	}

	_, err = promofile.Parse("fleet.yaml", []byte(`
promotions:
  - source: docker.io/library/busybox:1.36
    destination: 111111111111.dkr.ecr.us-east-1.amazonaws.com/base/busybox:1.36
    annotation: {team: platform}
`))
	fmt.Println(err)
	// Output:
	// line 6: docker.io/library/busybox:1.36 -> 111111111111.dkr.ecr.us-east-1.amazonaws.com/base/busybox:1.36 annotations=map[team:platform] key="awskms:///alias/ocistow" sign=true
	// line 8: docker.io/library/alpine -> 111111111111.dkr.ecr.us-east-1.amazonaws.com/base/alpine annotations=map[owner:base team:platform] key="awskms:///alias/ocistow" sign=false
	// fleet.yaml:5: unknown key "annotation" (did you mean "annotations"?)
}
