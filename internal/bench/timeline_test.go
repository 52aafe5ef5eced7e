package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTimelineOrdersRequestsByStart(t *testing.T) {
	dir := t.TempDir()
	b := &bench{cfg: config{timelines: dir}}
	log := strings.Join([]string{
		`time=2026-11-27T20:00:00.100Z level=DEBUG msg=http method=PUT url=http://h/v2/a/manifests/v1 took=20ms status=201 bytes=0`,
		`time=2026-11-27T20:00:00.050Z level=DEBUG msg=http method=GET url=http://h/v2/ took=50ms status=200 bytes=2`,
		`time=2026-11-27T20:00:00.060Z level=DEBUG msg=http method=GET url=https://h/v2/ took=10ms err="tls: no"`,
		`time=2026-11-27T20:00:00.200Z level=INFO msg=Copy component=service`,
	}, "\n")
	if err := b.writeTimeline("13 one 1-layer image +25ms ocistow run1", log); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "13-one-1-layer-image-25ms-ocistow-run1.txt"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(got)), "\n")
	if len(lines) != 4 || !strings.Contains(lines[0], "3 requests") {
		t.Fatalf("timeline:\n%s", got)
	}
	for i, want := range []string{"    0.0    50.0 GET    200 http://h/v2/", "   50.0    10.0 GET    ERR https://h/v2/", "   80.0    20.0 PUT    201 http://h/v2/a/manifests/v1"} {
		if lines[i+1] != want {
			t.Errorf("line %d: %q, want %q", i+1, lines[i+1], want)
		}
	}
}
