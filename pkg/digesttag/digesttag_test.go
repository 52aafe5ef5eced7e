package digesttag_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"

	"github.com/ocistow/ocistow/pkg/digesttag"
	"github.com/ocistow/ocistow/pkg/registry"
)

var kind = digesttag.Kind{Noun: "note", MediaType: "application/vnd.test.note", MaxLayers: 3, MaxLayer: 8, MaxTotal: 12}

type env struct {
	c      *registry.Client
	puller *remote.Puller
	pusher *remote.Pusher
	tag    name.Tag
	refuse bool // answer manifest PUTs as an immutable ECR tag does
	// drop answers manifest PUTs with success and keeps nothing, as if a
	// concurrent writer always overwrote the tag at once.
	drop   bool
	writes int // manifest PUTs seen
	mu     sync.Mutex
}

func newEnv(t *testing.T) *env {
	e := &env{}
	reg := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.mu.Lock()
		refuse, drop := e.refuse, e.drop
		if r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
			e.writes++
		}
		e.mu.Unlock()
		if drop && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("Docker-Content-Digest", fmt.Sprintf("sha256:%x", sha256.Sum256(b)))
			w.WriteHeader(http.StatusCreated)
			return
		}
		if refuse && r.Method == http.MethodPut && strings.Contains(r.URL.Path, "/manifests/") {
			w.WriteHeader(http.StatusBadRequest)
			fmt.Fprint(w, `{"errors":[{"code":"TAG_INVALID","message":"The image tag already exists and cannot be overwritten because the repository is immutable."}]}`)
			return
		}
		reg.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	e.c = registry.New(registry.WithKeychain(authn.NewMultiKeychain()))
	var err error
	if e.puller, err = e.c.Puller(); err != nil {
		t.Fatal(err)
	}
	if e.pusher, err = e.c.Pusher(); err != nil {
		t.Fatal(err)
	}
	d, err := name.NewDigest(strings.TrimPrefix(srv.URL, "http://") + "/app@sha256:" + strings.Repeat("b", 64))
	if err != nil {
		t.Fatal(err)
	}
	e.tag = digesttag.Tag(d, "note")
	return e
}

func (e *env) ensure(ctx context.Context, data string) (bool, error) {
	has := func(ls []digesttag.Layer) bool {
		for _, l := range ls {
			if string(l.Data) == data {
				return true
			}
		}
		return false
	}
	mk := func(context.Context) (digesttag.Layer, error) {
		return digesttag.Layer{Data: []byte(data), Annotations: map[string]string{"by": data}}, nil
	}
	return kind.Ensure(ctx, e.c, e.puller, e.pusher, e.tag, has, mk)
}

func TestTagNamesTheDigest(t *testing.T) {
	d, _ := name.NewDigest("r.example/app@sha256:" + strings.Repeat("c", 64))
	if got := digesttag.Tag(d, "sig").String(); got != "r.example/app:sha256-"+strings.Repeat("c", 64)+".sig" {
		t.Errorf("tag %s", got)
	}
}

// Ensure adds once, finds it the next time, keeps what concurrent writers
// add, and reads within its bounds.
func TestEnsure(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if added, err := e.ensure(ctx, "one"); err != nil || !added {
		t.Fatalf("first: %v, %v", added, err)
	}
	if added, err := e.ensure(ctx, "one"); err != nil || added {
		t.Fatalf("again: %v, %v; want found", added, err)
	}
	var wg sync.WaitGroup
	for _, d := range []string{"two", "three"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := e.ensure(ctx, d); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	_, layers, err := kind.Read(ctx, e.puller, e.tag)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range layers {
		got = append(got, string(l.Data)+"/"+l.Annotations["by"])
	}
	if len(got) != 3 {
		t.Errorf("layers %v, want one, two and three, each once", got)
	}
	// A fourth is over MaxLayers: reading the tag fails, naming the bound.
	if _, err := e.ensure(ctx, "four"); err == nil || !strings.Contains(err.Error(), "over the 3 read") {
		t.Errorf("fourth layer: %v, want the layer bound named", err)
	}
}

func TestReadBoundsSizes(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	img, err := kind.Append(nil, digesttag.Layer{Data: bytes.Repeat([]byte("x"), 9)}) // over MaxLayer: passed over
	if err != nil {
		t.Fatal(err)
	}
	if err := e.pusher.Push(ctx, e.tag, img); err != nil {
		t.Fatal(err)
	}
	if _, layers, err := kind.Read(ctx, e.puller, e.tag); err != nil || len(layers) != 0 {
		t.Errorf("an oversized layer: %d read, %v; want none, no error", len(layers), err)
	}
	for range 2 {
		if img, err = kind.Append(img, digesttag.Layer{Data: bytes.Repeat([]byte("y"), 7)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.pusher.Push(ctx, e.tag, img); err != nil {
		t.Fatal(err)
	}
	if _, _, err := kind.Read(ctx, e.puller, e.tag); err == nil || !strings.Contains(err.Error(), "over the 12-byte limit") {
		t.Errorf("14 bytes declared: %v, want the total bound named", err)
	}
}

func TestEnsureExplainsAnImmutableTag(t *testing.T) {
	e := newEnv(t)
	e.refuse = true
	_, err := e.ensure(t.Context(), "one")
	if err == nil || !strings.Contains(err.Error(), "tag immutability") || !strings.Contains(err.Error(), "exclude *.note") {
		t.Errorf("err %v, want the tag immutability explained", err)
	}
}

// TestEnsureGivesUpAfterTenAttempts checks the README's "rewrites its
// signature until it stays (up to ten attempts)": against a registry whose
// tag always loses the layer just written, Ensure writes exactly ten times
// and then fails with "kept disappearing … after 10 attempts".
func TestEnsureGivesUpAfterTenAttempts(t *testing.T) {
	e := newEnv(t)
	e.drop = true
	added, err := e.ensure(t.Context(), "one")
	if err == nil || added || !strings.Contains(err.Error(), "note kept disappearing from "+e.tag.String()+" after 10 attempts") {
		t.Errorf("Ensure = %v, %v; want the note kept disappearing after 10 attempts", added, err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.writes != 10 {
		t.Errorf("the tag was written %d times, want 10", e.writes)
	}
}

// TestMergeKeepsWhatTheTagHolds: Merge adds the layers the tag lacks
// (whatever their type or size: the source's, by descriptor), keeps its
// own, tells two signatures of one payload apart by their annotations,
// marks the manifest, and writes nothing once the tag holds them all and
// carries the mark.
func TestMergeKeepsWhatTheTagHolds(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()
	if _, err := e.ensure(ctx, "ours"); err != nil {
		t.Fatal(err)
	}
	// The source's tag: our layer as it is, the same payload with
	// another signature, and a layer of another type, larger than kind
	// reads.
	from, err := kind.Append(nil, digesttag.Layer{Data: []byte("ours"), Annotations: map[string]string{"by": "ours"}})
	if err != nil {
		t.Fatal(err)
	}
	from, err = mutate.Append(from,
		mutate.Addendum{Layer: static.NewLayer([]byte("ours"), kind.MediaType), Annotations: map[string]string{"by": "theirs"}},
		mutate.Addendum{Layer: static.NewLayer([]byte("a large note of another kind"), "application/vnd.test.other")})
	if err != nil {
		t.Fatal(err)
	}
	mark := map[string]string{"merged": "sha256:1"}
	added, err := kind.Merge(ctx, e.c, e.puller, e.pusher, e.tag, from, mark)
	if err != nil || added != 2 {
		t.Fatalf("Merge: added %d, err %v; want the two layers the tag lacked", added, err)
	}
	img, layers, err := kind.Read(ctx, e.puller, e.tag)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range layers {
		got = append(got, string(l.Data)+"/"+l.Annotations["by"])
	}
	if strings.Join(got, ",") != "ours/ours,ours/theirs" {
		t.Errorf("layers of kind %v, want ours kept and theirs added once", got)
	}
	m, err := img.Manifest()
	if err != nil || m.Annotations["merged"] != "sha256:1" || len(m.Layers) != 3 || m.Layers[2].MediaType != "application/vnd.test.other" {
		t.Errorf("manifest %+v (err %v): want the mark and the other layer too", m, err)
	}
	before, _ := remote.Head(e.tag)
	if added, err := kind.Merge(ctx, e.c, e.puller, e.pusher, e.tag, from, mark); err != nil || added != 0 {
		t.Errorf("second Merge: added %d, err %v; want nothing", added, err)
	}
	if again, _ := remote.Head(e.tag); again == nil || before == nil || again.Digest != before.Digest {
		t.Error("the second Merge wrote the tag")
	}
	// The same layers under a new mark (the source tag moved): the mark
	// alone is written.
	if added, err := kind.Merge(ctx, e.c, e.puller, e.pusher, e.tag, from, map[string]string{"merged": "sha256:2"}); err != nil || added != 0 {
		t.Errorf("Merge with a new mark: added %d, err %v; want no layer added", added, err)
	}
	after, _ := remote.Head(e.tag)
	if before == nil || after == nil || before.Digest == after.Digest {
		t.Error("the new mark was not written")
	}
	// Nothing to merge into: no tag is written.
	none := digesttag.Tag(e.tag.Context().Digest("sha256:"+strings.Repeat("c", 64)), "note")
	if added, err := kind.Merge(ctx, e.c, e.puller, e.pusher, none, from, mark); err != nil || added != 0 {
		t.Errorf("Merge into no tag: added %d, err %v", added, err)
	}
	if _, err := remote.Head(none); err == nil {
		t.Error("Merge into no tag wrote one")
	}
}
