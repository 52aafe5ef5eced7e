package sign

import (
	"bytes"
	"io"
	"log"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/pkg/registry"
)

func TestSignaturePayloadsAreBounded(t *testing.T) {
	srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	digest, err := name.NewDigest(host + "/app@sha256:" + strings.Repeat("a", 64))
	if err != nil {
		t.Fatal(err)
	}
	tag := SignatureTag(digest)
	// 17 payloads of 1 MiB each: each within the per-payload bound, more
	// than the .sig's bound together.
	var img v1.Image
	for i := range 17 {
		var err error
		payload := bytes.Repeat([]byte{byte('a' + i)}, maxPayload)
		if img, err = appendSignature(img, payload, "c2ln"); err != nil {
			t.Fatal(err)
		}
	}
	if err := remote.Write(tag, img, remote.WithContext(t.Context())); err != nil {
		t.Fatal(err)
	}
	st, err := NewStore(t.Context(), registry.New(registry.WithKeychain(authn.NewMultiKeychain())))
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = st.readSignatures(t.Context(), tag)
	if err == nil || !strings.Contains(err.Error(), "over the 16777216-byte limit") {
		t.Errorf("err %v, want the 16 MiB bound named", err)
	}
}
