package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	kmstypes "github.com/aws/aws-sdk-go-v2/service/kms/types"
)

// KMS is a running local-kms on loopback.
type KMS struct {
	// Endpoint is its URL, for AWS_ENDPOINT_URL_KMS.
	Endpoint string
	// Region and AccountID are what its ARNs carry.
	Region, AccountID string
	proc              *Process
	client            *kms.Client
}

// KMSEnv returns the environment a process needs to use k: the endpoint,
// region and (dummy) credentials.
func (k *KMS) Env() []string {
	return []string{
		"AWS_ENDPOINT_URL_KMS=" + k.Endpoint,
		"AWS_REGION=" + k.Region,
		"AWS_ACCESS_KEY_ID=AKIDLOCALKMS",
		"AWS_SECRET_ACCESS_KEY=local-kms-secret",
	}
}

// StartKMS builds (if needed) and starts local-kms storing under dir.
func StartKMS(ctx context.Context, dir string) (*KMS, error) {
	bin, err := Tool("local-kms")
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	p, addrs, err := startListening(ctx, 1, func(addrs []string) (*exec.Cmd, error) {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(),
			"PORT="+addrs[0][strings.LastIndex(addrs[0], ":")+1:],
			"KMS_DATA_PATH="+filepath.Join(dir, "data"),
			"KMS_SEED_PATH="+filepath.Join(dir, "no-seed.yaml"),
			"KMS_REGION=us-east-1",
			"KMS_ACCOUNT_ID=111122223333",
		)
		return cmd, nil
	}, func(p *Process, addrs []string) error {
		return p.waitHTTP(ctx, "http://"+addrs[0], func(int) bool { return true })
	})
	if err != nil {
		return nil, err
	}
	k := &KMS{Endpoint: "http://" + addrs[0], Region: "us-east-1", AccountID: "111122223333", proc: p}
	k.client = kms.New(kms.Options{
		Region:       k.Region,
		BaseEndpoint: aws.String(k.Endpoint),
		Credentials:  credentials.NewStaticCredentialsProvider("AKIDLOCALKMS", "local-kms-secret", ""),
	})
	return k, nil
}

// CreateKey creates a key of spec and usage, with alias (without the
// "alias/" prefix) when not empty, and returns its key id and ARN.
func (k *KMS) CreateKey(ctx context.Context, spec kmstypes.KeySpec, usage kmstypes.KeyUsageType, alias string) (id, arn string, err error) {
	out, err := k.client.CreateKey(ctx, &kms.CreateKeyInput{KeySpec: spec, KeyUsage: usage, Description: aws.String("ocistow test " + alias)})
	if err != nil {
		return "", "", fmt.Errorf("creating %s key: %w", spec, err)
	}
	id, arn = aws.ToString(out.KeyMetadata.KeyId), aws.ToString(out.KeyMetadata.Arn)
	if alias != "" {
		if _, err := k.client.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/" + alias), TargetKeyId: aws.String(id)}); err != nil {
			return "", "", fmt.Errorf("creating alias %s: %w", alias, err)
		}
	}
	return id, arn, nil
}

// DisableKey disables a key.
func (k *KMS) DisableKey(ctx context.Context, id string) error {
	_, err := k.client.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(id)})
	return err
}

// Close stops local-kms.
func (k *KMS) Close() error { return k.proc.Close() }
