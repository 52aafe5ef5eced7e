package testenv

import (
	"context"
	"testing"
)

func TestSmoke(t *testing.T) {
	r, err := StartRegistry(context.Background(), t.TempDir(), RegistryOptions{Users: map[string]string{"u": "p"}})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	t.Log(r.Host)
}
