// Command demo runs ocistow's whole job end to end on this machine: it
// starts two CNCF Distribution registries on loopback (an "upstream" and
// the organisation's) and local-kms, builds a multi-platform image, pushes
// it upstream and signs it there with the real cosign CLI and an upstream
// key pair; promotes, stamps, signs and attests it with the ocistow binary,
// bringing the upstream's signatures along (-referrers); shows the
// canonical log lines and the promoted manifests; verifies ocistow's
// signatures with ocistow verify and cosign, the upstream signature at the
// destination with cosign, and the promotion attestation with cosign
// verify-attestation and ocistow verify -attestation; then syncs a small
// fleet. cosign is the pinned bin/cosign (tools/cosign), built on first use.
//
//	make demo    # or: go build -o bin/ocistow ./cmd/ocistow && go run ./internal/demo
//
// -ocistow names another ocistow binary than bin/ocistow (the test does).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"

	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ocistow/ocistow/internal/testenv"
)

func main() {
	bin := flag.String("ocistow", "", "the ocistow binary to run (default: bin/ocistow of the module, which make demo builds)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, *bin)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, bin string) error {
	if bin == "" {
		root, err := testenv.Root()
		if err != nil {
			return err
		}
		bin = filepath.Join(root, "bin", "ocistow")
	}
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("%s is missing: run `make build` first (make demo does)", bin)
	}
	dir, err := os.MkdirTemp("", "ocistow-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	step("Starting two CNCF Distribution registries on loopback (built from tools/registry)")
	upstream, err := testenv.StartRegistry(ctx, filepath.Join(dir, "upstream"), testenv.RegistryOptions{})
	if err != nil {
		return err
	}
	defer upstream.Close()
	org, err := testenv.StartRegistry(ctx, filepath.Join(dir, "org"), testenv.RegistryOptions{})
	if err != nil {
		return err
	}
	defer org.Close()
	fmt.Printf("  upstream: %s\n  org:      %s\n", upstream.Host, org.Host)

	step("Starting local-kms on loopback with an ECC_NIST_P256 signing key, alias/ocistow-demo")
	kms, err := testenv.StartKMS(ctx, filepath.Join(dir, "kms"))
	if err != nil {
		return err
	}
	defer kms.Close()
	if _, _, err := kms.CreateKey(ctx, kmstypes.KeySpecEccNistP256, kmstypes.KeyUsageTypeSignVerify, "ocistow-demo"); err != nil {
		return err
	}
	env := append(os.Environ(), kms.Env()...)
	fmt.Printf("  AWS_ENDPOINT_URL_KMS=%s\n", kms.Endpoint)

	step("Building a multi-platform image (linux/amd64 Docker + linux/arm64/v8 OCI) and pushing it upstream")
	idx, err := testenv.MixedIndex(1, 1<<20)
	if err != nil {
		return err
	}
	src := upstream.Host + "/library/demo:1.0"
	if err := testenv.Push(ctx, src, idx); err != nil {
		return err
	}
	d, _ := idx.Digest()
	fmt.Printf("  %s@%s\n", src, d)

	cosign, err := testenv.Tool("cosign")
	if err != nil {
		return fmt.Errorf("cosign (tools/cosign): %w", err)
	}
	// --trusted-root with an empty root keeps cosign offline.
	tr, err := testenv.WriteEmptyTrustedRoot(dir)
	if err != nil {
		return err
	}
	keyDir := filepath.Join(dir, "upstream-keys")
	if err := os.Mkdir(keyDir, 0o700); err != nil {
		return err
	}
	cosignEnv := append(append([]string{}, env...), "COSIGN_PASSWORD=demo", "TUF_ROOT="+filepath.Join(dir, "tuf"))
	step("The upstream signs its image with cosign: a key pair of its own (upstream.key, upstream.pub), no transparency log")
	fmt.Println("  cosign generate-key-pair --output-key-prefix upstream")
	if err := runIn(ctx, keyDir, cosignEnv, cosign, "generate-key-pair", "--output-key-prefix", "upstream"); err != nil {
		return err
	}
	upstreamSign := []string{"sign", "--key", "upstream.key", "--tlog-upload=false", "--yes", "--recursive", upstream.Host + "/library/demo@" + d.String()}
	fmt.Println("  cosign " + strings.Join(upstreamSign, " "))
	if err := runIn(ctx, keyDir, cosignEnv, cosign, upstreamSign...); err != nil {
		return err
	}

	dst := org.Host + "/promoted/demo:1.0"
	args := []string{"-source", src, "-destination", dst, "-annotations", "team=platform", "-annotations", "owner=demo", "-aws-kms-key-arn", "alias/ocistow-demo", "-referrers", "-attest"}
	step("Promoting, stamping, signing and attesting, with the upstream's signatures along: ocistow " + strings.Join(args, " "))
	if err := runCmd(ctx, env, bin, args...); err != nil {
		return err
	}

	step("Running it again: nothing left to copy, every signature, attestation and referrer already present")
	if err := runCmd(ctx, env, bin, args...); err != nil {
		return err
	}

	verify := []string{"verify", "-aws-kms-key-arn", "alias/ocistow-demo", "-annotations", "team=platform", "-recursive", dst}
	step("Verifying: ocistow " + strings.Join(verify, " "))
	if err := runCmd(ctx, env, bin, verify...); err != nil {
		return err
	}
	cv := []string{"verify", "--insecure-ignore-tlog=true", "--trusted-root", tr, "--key", "awskms:///alias/ocistow-demo", "-a", "team=platform", dst}
	step("Verifying with cosign: cosign " + strings.Join(cv, " "))
	if err := runCmd(ctx, cosignEnv, cosign, cv...); err != nil {
		return err
	}

	// Stamping changed the digests; the stamped index names the source
	// digest, which ocistow wrote at the destination with the upstream's
	// signatures attached.
	ref, err := name.ParseReference(dst)
	if err != nil {
		return err
	}
	desc, err := remote.Get(ref, remote.WithContext(ctx))
	if err != nil {
		return err
	}
	var top struct {
		Annotations map[string]string `json:"annotations"`
	}
	if err := json.Unmarshal(desc.Manifest, &top); err != nil {
		return err
	}
	srcDigest := top.Annotations["dev.ocistow.source.digest"]
	if srcDigest == "" {
		return fmt.Errorf("%s does not name its source digest (dev.ocistow.source.digest)", dst)
	}
	step(fmt.Sprintf("The upstream signature verifies at the destination, by the source digest the stamped index records (dev.ocistow.source.digest=%s)", srcDigest))
	uv := []string{"verify", "--insecure-ignore-tlog=true", "--trusted-root", tr, "--key", "upstream.pub", ref.Context().Name() + "@" + srcDigest}
	fmt.Println("  cosign " + strings.Join(uv, " "))
	if err := runIn(ctx, keyDir, cosignEnv, cosign, uv...); err != nil {
		return err
	}

	va := []string{"verify-attestation", "--type", "https://github.com/ocistow/ocistow/promotion/v1", "--insecure-ignore-tlog=true", "--trusted-root", tr, "--key", "awskms:///alias/ocistow-demo", dst}
	step("The promotion attestation verifies with cosign: cosign " + strings.Join(va, " "))
	if err := runShort(ctx, cosignEnv, cosign, va...); err != nil {
		return err
	}
	pa := []string{"verify", "-attestation", "-aws-kms-key-arn", "alias/ocistow-demo", "-annotations", "team=platform", dst}
	step("And with ocistow, which prints what it records: ocistow " + strings.Join(pa, " "))
	out, err := output(ctx, env, bin, pa...)
	if err != nil {
		return err
	}
	printJSON(out)

	step("The promoted index at " + dst)
	printJSON(desc.Manifest)
	pidx, err := desc.ImageIndex()
	if err != nil {
		return err
	}
	im, err := pidx.IndexManifest()
	if err != nil {
		return err
	}
	child := im.Manifests[0]
	img, err := pidx.Image(child.Digest)
	if err != nil {
		return err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return err
	}
	step(fmt.Sprintf("Its %s manifest", child.Platform))
	printJSON(raw)
	cf, err := img.ConfigFile()
	if err != nil {
		return err
	}
	step("Its config labels (existing=keep came from upstream; team was overwritten)")
	b, _ := json.MarshalIndent(cf.Config.Labels, "  ", "  ")
	fmt.Printf("  %s\n", b)
	return syncDemo(ctx, env, bin, dir, upstream.Host, org.Host)
}

// syncDemo promotes a small fleet from a promotion file: a repository's
// tags selected by semver, and one image; then runs it again, which finds
// everything up to date without a single pull.
func syncDemo(ctx context.Context, env []string, bin, dir, upstream, org string) error {
	step("Pushing a repository with tags 1.0.0, 1.1.0, 1.2.0-rc.1, 2.0.0 and latest upstream")
	for i, tag := range []string{"1.0.0", "1.1.0", "1.2.0-rc.1", "2.0.0", "latest"} {
		img, err := testenv.Image(testenv.ImageOptions{Layers: 1, LayerSize: 64 << 10, Seed: int64(100 + i)})
		if err != nil {
			return err
		}
		if err := testenv.Push(ctx, upstream+"/library/tool:"+tag, img); err != nil {
			return err
		}
	}
	file := filepath.Join(dir, "fleet.yaml")
	body := fmt.Sprintf(`defaults:
  annotations: {team: platform}
  key: awskms:///alias/ocistow-demo
promotions:
  - source: %[1]s/library/tool
    destination: %[2]s/mirror/tool
    tags: {semver: '>=1.0.0 <2.0.0'}
  - source: %[1]s/library/demo:1.0
    destination: %[2]s/mirror/demo
`, upstream, org)
	if err := os.WriteFile(file, []byte(body), 0o600); err != nil {
		return err
	}
	step("A promotion file, " + file)
	fmt.Print(body)
	step("Planning: ocistow sync -f fleet.yaml -dry-run")
	if err := runCmd(ctx, env, bin, "sync", "-f", file, "-dry-run"); err != nil {
		return err
	}
	step("Syncing: ocistow sync -f fleet.yaml")
	if err := runCmd(ctx, env, bin, "sync", "-f", file); err != nil {
		return err
	}
	step("Syncing again: everything up to date, 0 source pulls")
	return runCmd(ctx, env, bin, "sync", "-f", file)
}

func step(s string) { fmt.Printf("\n==> %s\n", s) }

func runCmd(ctx context.Context, env []string, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(bin), err)
	}
	return nil
}

// runIn runs bin in dir, its output on the demo's.
func runIn(ctx context.Context, dir string, env []string, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Dir, cmd.Env = dir, env
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(bin), err)
	}
	return nil
}

// runShort runs bin with its stderr on the demo's and its stdout cut to
// the start of each line: cosign verify-attestation prints whole DSSE
// envelopes, base64 and all.
func runShort(ctx context.Context, env []string, bin string, args ...string) error {
	out, err := output(ctx, env, bin, args...)
	if err != nil {
		return err
	}
	for _, l := range bytes.Split(bytes.TrimSpace(out), []byte("\n")) {
		if len(l) > 100 {
			fmt.Printf("  %s… (%d bytes)\n", l[:100], len(l))
		} else {
			fmt.Printf("  %s\n", l)
		}
	}
	return nil
}

// output runs bin with its stderr on the demo's and returns its stdout.
func output(ctx context.Context, env []string, bin string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = env
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(bin), err)
	}
	return out, nil
}

func printJSON(raw []byte) {
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		fmt.Printf("  %s\n", raw)
		return
	}
	b, _ := json.MarshalIndent(v, "  ", "  ")
	fmt.Printf("  %s\n", b)
}
