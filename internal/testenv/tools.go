// Package testenv starts the real components ocistow's tests and demo run
// against: CNCF Distribution registries, local-kms, the Lambda Runtime
// Interface Emulator and the cosign CLI, each built from a pinned module
// under tools/ into bin/. It also builds test images, since nothing may be
// pulled from the internet at test time.
package testenv

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
)

// A tool is a pinned program the tests run: its tools/ module and package.
type tool struct {
	dir, pkg string
}

func lookupTool(name string) (tool, bool) {
	switch name {
	case "registry":
		return tool{"registry", "github.com/distribution/distribution/v3/cmd/registry"}, true
	case "local-kms":
		return tool{"local-kms", "github.com/nsmithuk/local-kms"}, true
	case "cosign":
		return tool{"cosign", "github.com/sigstore/cosign/v2/cmd/cosign"}, true
	case "cosign3":
		return tool{"cosign3", "github.com/sigstore/cosign/v3/cmd/cosign"}, true
	case "aws-lambda-rie":
		return tool{"rie", "github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie"}, true
	case "toxiproxy-server":
		return tool{"toxiproxy", "github.com/Shopify/toxiproxy/v2/cmd/server"}, true
	case "crane":
		return tool{"crane", "github.com/google/go-containerregistry/cmd/crane"}, true
	case "regctl":
		return tool{"regctl", "github.com/regclient/regclient/cmd/regctl"}, true
	case "regsync":
		return tool{"regsync", "github.com/regclient/regclient/cmd/regsync"}, true
	}
	return tool{}, false
}

// Root returns the root of the ocistow repository, found by walking up from
// the working directory to the go.mod of module github.com/ocistow/ocistow.
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(b), "module github.com/ocistow/ocistow\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the ocistow repository")
		}
		dir = parent
	}
}

// Tool returns the path of the pinned tool name (registry, local-kms,
// cosign, cosign3 (cosign v3), aws-lambda-rie, and the benchmark's peers crane, regctl and regsync), building it into bin/ first when bin/ lacks it or
// holds a build of other pins. It fails, never skips, when the build fails.
func Tool(name string) (string, error) {
	t, ok := lookupTool(name)
	if !ok {
		return "", fmt.Errorf("unknown tool %q", name)
	}
	root, err := Root()
	if err != nil {
		return "", err
	}
	modDir := filepath.Join(root, "tools", t.dir)
	stamp, err := pinStamp(modDir)
	if err != nil {
		return "", fmt.Errorf("tool %s: %w", name, err)
	}
	bin := filepath.Join(root, "bin", name)
	stampFile := filepath.Join(root, "bin", "."+name+".pins")
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	// Test packages run in parallel: let one build a tool while the others
	// wait for it, rather than all building it at once.
	lock, err := os.OpenFile(filepath.Join(root, "bin", "."+name+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // closing releases it anyway
	if have, err := os.ReadFile(stampFile); err == nil && string(have) == stamp {
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		}
	}
	// Build to a temporary name and rename, so that test packages building
	// the same tool at once never see a half-written binary.
	tmp := fmt.Sprintf("%s.tmp%d", bin, os.Getpid())
	cmd := exec.Command("go", "build", "-trimpath", "-o", tmp, t.pkg)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("building tool %s (%s): %v\n%s", name, t.pkg, err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		return "", err
	}
	if err := os.WriteFile(stampFile, []byte(stamp), 0o644); err != nil {
		return "", err
	}
	return bin, nil
}

// pinStamp identifies the pins of a tools module: a hash of go.mod and go.sum.
func pinStamp(modDir string) (string, error) {
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(modDir, f))
		if err != nil {
			return "", err
		}
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// EmptyTrustedRoot is a Sigstore trusted root that trusts nothing. Given to
// cosign verify with --trusted-root, it keeps cosign from fetching the
// public-good TUF repository over the internet; key-based verification with
// --insecure-ignore-tlog=true needs no other trust material.
const EmptyTrustedRoot = `{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1","tlogs":[],"certificateAuthorities":[],"ctlogs":[],"timestampAuthorities":[]}`

// WriteEmptyTrustedRoot writes EmptyTrustedRoot into dir and returns its path.
func WriteEmptyTrustedRoot(dir string) (string, error) {
	p := filepath.Join(dir, "trusted_root.json")
	return p, os.WriteFile(p, []byte(EmptyTrustedRoot), 0o644)
}

// EmptySigningConfig is a Sigstore signing config that names no service (no
// Fulcio, Rekor or timestamp authority). Given to cosign v3's sign with
// --signing-config, it signs with the key alone, offline and without a
// transparency-log entry (cosign v3 refuses --tlog-upload=false with its
// default signing config).
const EmptySigningConfig = `{"mediaType":"application/vnd.dev.sigstore.signingconfig.v0.2+json","rekorTlogConfig":{},"tsaConfig":{}}`
