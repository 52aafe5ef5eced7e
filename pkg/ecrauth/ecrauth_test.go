package ecrauth

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
)

func TestIsECR(t *testing.T) {
	for host, want := range map[string]bool{
		"111111111111.dkr.ecr.us-east-1.amazonaws.com":          true,
		"111111111111.dkr.ecr-fips.us-gov-west-1.amazonaws.com": true,
		"111111111111.dkr.ecr.cn-north-1.amazonaws.com.cn":      true,
		"public.ecr.aws":  false, // ECR Public: anonymous pulls, no private token
		"index.docker.io": false,
		"127.0.0.1:5000":  false,
	} {
		if got := IsECR(host); got != want {
			t.Errorf("IsECR(%q) = %v, want %v", host, got, want)
		}
	}
}

// fakeECR answers GetAuthorizationToken like ECR does, counting calls and
// remembering the registry ids asked for.
func fakeECR(t *testing.T, expires time.Time) (*httptest.Server, *atomic.Int32, *atomic.Value) {
	var calls atomic.Int32
	var ids atomic.Value
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		var in struct{ RegistryIds []string }
		_ = json.NewDecoder(r.Body).Decode(&in)
		ids.Store(in.RegistryIds)
		w.Header().Set("Content-Type", "application/x-amz-json-1.1")
		_ = json.NewEncoder(w).Encode(map[string]any{"authorizationData": []map[string]any{{
			"authorizationToken": base64.StdEncoding.EncodeToString([]byte("AWS:token-password")),
			"expiresAt":          float64(expires.Unix()),
			"proxyEndpoint":      "https://111111111111.dkr.ecr.us-west-2.amazonaws.com",
		}}})
	}))
	t.Cleanup(srv.Close)
	return srv, &calls, &ids
}

func loader(endpoint string, regions *[]string) ConfigLoader {
	return func(_ context.Context, region string) (aws.Config, error) {
		*regions = append(*regions, region)
		return aws.Config{
			Region:       region,
			BaseEndpoint: aws.String(endpoint),
			Credentials:  credentials.NewStaticCredentialsProvider("AKID", "secret", ""),
		}, nil
	}
}

func TestKeychainFetchesAndCachesTokens(t *testing.T) {
	srv, calls, ids := fakeECR(t, time.Now().Add(12*time.Hour))
	var regions []string
	k := New(loader(srv.URL, &regions))

	reg, err := name.NewRegistry("111111111111.dkr.ecr.us-west-2.amazonaws.com")
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		a, err := k.Resolve(reg)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := authn.Authorization(t.Context(), a)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Username != "AWS" || cfg.Password != "token-password" {
			t.Errorf("credentials %q/%q", cfg.Username, cfg.Password)
		}
	}
	if calls.Load() != 1 {
		t.Errorf("GetAuthorizationToken called %d times for two resolutions, want 1 (cached)", calls.Load())
	}
	if got := ids.Load().([]string); len(got) != 1 || got[0] != "111111111111" {
		t.Errorf("asked for registry ids %v, want the hostname's account", got)
	}
	if len(regions) != 1 || regions[0] != "us-west-2" {
		t.Errorf("loaded AWS config for regions %v, want the hostname's us-west-2", regions)
	}

	// Other registries stay anonymous, so the keychain composes.
	other, _ := name.NewRegistry("index.docker.io")
	if a, _ := k.Resolve(other); a != authn.Anonymous {
		t.Errorf("non-ECR registry got %v, want anonymous", a)
	}
}

func TestKeychainRefreshesExpiringTokens(t *testing.T) {
	// A token that expires within the refresh margin is fetched again.
	srv, calls, _ := fakeECR(t, time.Now().Add(5*time.Minute))
	var regions []string
	k := New(loader(srv.URL, &regions), WithRegistries("ecr-proxy.internal:5000"))
	reg, _ := name.NewRegistry("ecr-proxy.internal:5000")
	for range 2 {
		a, err := k.Resolve(reg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := authn.Authorization(t.Context(), a); err != nil {
			t.Fatal(err)
		}
	}
	if calls.Load() != 2 {
		t.Errorf("GetAuthorizationToken called %d times, want 2 (token about to expire)", calls.Load())
	}
}

func TestKeychainSaysWhenThereAreNoAWSCredentials(t *testing.T) {
	srv, calls, _ := fakeECR(t, time.Now().Add(12*time.Hour))
	noCreds := func(_ context.Context, region string) (aws.Config, error) {
		return aws.Config{Region: region, BaseEndpoint: aws.String(srv.URL)}, nil
	}
	failing := func(_ context.Context, region string) (aws.Config, error) {
		return aws.Config{
			Region:       region,
			BaseEndpoint: aws.String(srv.URL),
			Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
				return aws.Credentials{}, errors.New("no EC2 IMDS role found")
			}),
		}, nil
	}
	reg, _ := name.NewRegistry("111111111111.dkr.ecr.us-west-2.amazonaws.com")
	for what, load := range map[string]ConfigLoader{"no provider": noCreds, "provider fails": failing} {
		a, err := New(load).Resolve(reg)
		if err != nil {
			t.Fatal(err)
		}
		_, err = authn.Authorization(t.Context(), a)
		if !errors.Is(err, ErrNoCredentials) || !strings.Contains(err.Error(), reg.RegistryStr()) {
			t.Errorf("%s: error %v, want ErrNoCredentials naming the registry", what, err)
		}
	}
	if calls.Load() != 0 {
		t.Errorf("GetAuthorizationToken called %d times without credentials", calls.Load())
	}
}
