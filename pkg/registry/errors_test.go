package registry

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// TestDescribeKeepsContextWithoutSecrets: a registry's answer is told on
// one line after what was being done, and a URL the HTTP client quoted on
// the way keeps no query (a pre-signed URL's credentials).
func TestDescribeKeepsContextWithoutSecrets(t *testing.T) {
	req, _ := http.NewRequest(http.MethodGet, "https://reg.example/v2/app/manifests/v1", nil)
	terr := &transport.Error{StatusCode: http.StatusForbidden, Request: req,
		Errors: []transport.Diagnostic{{Code: "DENIED", Message: "no"}}}
	quoted := &url.Error{Op: "Put", URL: "https://reg.example/v2/app/blobs/uploads/u?_state=SECRETSTATE&X-Amz-Signature=SECRETSIG", Err: terr}
	for _, tc := range []struct {
		err   error
		wants []string
	}{
		{terr, []string{"registry reg.example answered 403 Forbidden: DENIED no (GET /v2/app/manifests/v1)"}},
		{fmt.Errorf("cannot tell where the tag points: %w", terr), []string{"cannot tell where the tag points: registry reg.example answered 403"}},
		{fmt.Errorf("uploading: %w", quoted), []string{"uploading: Put \"https://reg.example/v2/app/blobs/uploads/u?", "\": registry reg.example answered 403"}},
	} {
		got := Describe(tc.err)
		for _, want := range tc.wants {
			if !strings.Contains(got, want) {
				t.Errorf("Describe(%v) = %q, want %q in it", tc.err, got, want)
			}
		}
		if strings.Contains(got, "SECRET") || strings.Contains(got, "\n") {
			t.Errorf("Describe(%v) = %q: a query or a line break", tc.err, got)
		}
	}
}
