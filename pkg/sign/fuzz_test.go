package sign

import (
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
)

func FuzzCheckPayload(f *testing.F) {
	const digest = "sha256:0b6b9ee5868554d06caaa5b03533a58246f9e4987ce2503b494469e7d495a079"
	d, err := name.NewDigest("registry.example.com/repo@" + digest)
	if err != nil {
		f.Fatal(err)
	}
	good, err := Payload(d, map[string]string{"team": "foo"})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, "team", "foo")
	f.Add([]byte(`{"critical":{"type":"cosign container image signature","image":{"docker-manifest-digest":"sha256:x"}}}`), "", "")
	f.Add([]byte(`{"critical":null,"optional":{"team":["a"]}}`), "team", "a")
	f.Add([]byte(`[]`), "k", "v")
	f.Fuzz(func(t *testing.T, p []byte, k, v string) {
		required := map[string]string{}
		if k != "" {
			required[k] = v
		}
		sci, reason := CheckPayload(p, digest, required)
		if reason != "" {
			return
		}
		// Whatever passes names the digest, is a cosign signature, and
		// carries the required annotation.
		if sci.Critical.Image.DockerManifestDigest != digest || sci.Critical.Type != "cosign container image signature" {
			t.Fatalf("accepted a payload for %q of type %q", sci.Critical.Image.DockerManifestDigest, sci.Critical.Type)
		}
		if k != "" {
			if got, ok := sci.Optional[k].(string); !ok || got != v {
				t.Fatalf("accepted a payload without %s=%s: %v", k, v, sci.Optional)
			}
		}
	})
}
