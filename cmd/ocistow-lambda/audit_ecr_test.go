package main

import (
	"strings"
	"testing"

	"github.com/ocistow/ocistow/internal/testenv"
)

// TestECRWithoutAWSCredentialsIsUnauthorized holds README's Errors row
// "`Unauthorized` | a registry refused the credentials, or they could not
// be had (…, no AWS credentials for ECR)": a function whose ECR_REGISTRY
// names the destination, with no AWS credentials in its environment and no
// Docker config, answers a promotion into it with Unauthorized, on one
// line saying that there are no AWS credentials for the registry.
func TestECRWithoutAWSCredentialsIsUnauthorized(t *testing.T) {
	host := e2e.bed.Auth.Host
	l, err := testenv.StartLambda(t.Context(), e2e.bootstrap, []string{
		"AWS_LAMBDA_FUNCTION_TIMEOUT=60",
		"AWS_LAMBDA_FUNCTION_MEMORY_SIZE=128",
		"AWS_EC2_METADATA_DISABLED=true",
		"AWS_REGION=us-east-1",
		"AWS_CONFIG_FILE=/nonexistent/config",
		"AWS_SHARED_CREDENTIALS_FILE=/nonexistent/credentials",
		"DOCKER_CONFIG=" + t.TempDir(),
		"SIGN=false",
		"ECR_REGISTRY=" + host,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	dst := dstRepo(t, host) + ":v1"
	_, le := invoke(t, l, payload(e2e.bed.SrcRef("single"), dst, nil))
	if le == nil {
		t.Fatal("a promotion into ECR without AWS credentials succeeded")
	}
	if le.ErrorType != "Unauthorized" || !strings.Contains(le.ErrorMessage, host) || !strings.Contains(le.ErrorMessage, "ECR credentials for "+host+": no AWS credentials") || strings.Contains(le.ErrorMessage, "\n") {
		t.Errorf("error %+v: want Unauthorized on one line: ECR credentials for %s: no AWS credentials", le, host)
	}
}
