package main

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ocistow/ocistow/internal/testenv"
)

// TestTimeoutDuringSigningLeavesTheCopy holds the README's -timeout row:
// "give up on the whole promotion (key checks, copy, signing, attesting,
// referrers) after this long: … after it, the tag has moved and the line
// says the copy succeeded and which step was cut short (exit 3 …)". A
// KMS front holds every Sign call until ocistow hangs up, so the deadline
// passes while signing, after the copy moved the tag.
func TestTimeoutDuringSigningLeavesTheCopy(t *testing.T) {
	front := testenv.NewFront(strings.TrimPrefix(e2e.kms.Endpoint, "http://"))
	defer front.Close()
	// The server notices a client hanging up only once the body is read:
	// read it, then hold the call until the client goes, or the test ends.
	stop := make(chan struct{})
	defer close(stop)
	var signs atomic.Int32
	front.SetHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("X-Amz-Target") != "TrentService.Sign" {
			return false
		}
		signs.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-stop:
		}
		return true
	})
	env := append(e2e.kms.Env(), "AWS_ENDPOINT_URL_KMS=http://"+front.Host)
	repo := dstRepo(t, e2e.dst.Host)
	// Long enough for the key check and the copy of a small image, which
	// the test needs to finish before the deadline; signing never can.
	r := ocistow(t, env, "-source", srcRef("single"), "-destination", repo+":v1", "-aws-kms-key-arn", "alias/"+ecKey, "-timeout", "10s")
	line := r.errLine(t)
	if r.code != exitSignFailed || !strings.Contains(line, "copy succeeded") || !strings.Contains(line, "but signing failed") || !strings.Contains(line, "deadline exceeded") {
		t.Errorf("exit %d, line %q: want exit 3 saying the copy succeeded and signing ran out of time", r.code, line)
	}
	if signs.Load() == 0 {
		t.Error("no KMS Sign call was made: the deadline did not pass while signing")
	}
	if d := get(t, repo+":v1", nil).Digest.String(); d != e2e.fixtures["single"] {
		t.Errorf("destination tag at %s, want the copy %s: the tag moved before signing", d, e2e.fixtures["single"])
	}
}
