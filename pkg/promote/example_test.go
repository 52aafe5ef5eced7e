package promote_test

import (
	"context"
	"fmt"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/ocistow/ocistow/pkg/promote"
	"github.com/ocistow/ocistow/pkg/registry"
	"github.com/ocistow/ocistow/pkg/stamp"
)

// Promote busybox into a private registry, annotated and labelled, keeping
// only two platforms. (Not run: it needs the network.)
func ExampleCopy() {
	ctx := context.Background()
	c := registry.New(registry.WithJobs(8))
	src, _ := name.ParseReference("busybox:1.36")
	dst, _ := name.ParseReference("111111111111.dkr.ecr.us-east-1.amazonaws.com/base/busybox:1.36")
	res, err := promote.Copy(ctx, c, promote.Request{
		Source:      src,
		Destination: dst,
		Stamp: stamp.Stamp{
			Annotations: map[string]string{"org.example.team": "platform"},
			Labels:      map[string]string{"org.example.team": "platform"},
		},
		Platforms: []v1.Platform{{OS: "linux", Architecture: "amd64"}, {OS: "linux", Architecture: "arm64"}},
	})
	if err != nil {
		fmt.Println(registry.Describe(err))
		return
	}
	fmt.Println(res.DestinationDigest, res.BlobsCopied, res.BlobsSkipped, res.BlobsMounted)
}
