package keys

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
)

// TestKeyFileFormats holds the README's -key row at the unit level: a PEM
// private key file in PKCS#8, SEC 1 ("EC PRIVATE KEY"), PKCS#1 ("RSA
// PRIVATE KEY") or sigstore's encrypted format (cosign's, with the
// password) loads as a signer whose signatures verify with the bare public
// key under the hash the key implies, which the standard library checks:
// SHA-256 for RSA (PKCS #1 v1.5) and P-256, SHA-384 for P-384, SHA-512 for
// P-521. A wrong password is named as such.
func TestKeyFileFormats(t *testing.T) {
	const password = "key file password"
	ecKey := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	encode := func(pemType string, key crypto.Signer) []byte {
		var der []byte
		var err error
		switch pemType {
		case "PRIVATE KEY":
			der, err = x509.MarshalPKCS8PrivateKey(key)
		case "EC PRIVATE KEY":
			der, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
		case "RSA PRIVATE KEY":
			der = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
		case "encrypted":
			der, err := cryptoutils.MarshalPrivateKeyToEncryptedDER(key, cryptoutils.StaticPasswordFunc([]byte(password)))
			if err != nil {
				t.Fatal(err)
			}
			return cryptoutils.PEMEncode(cryptoutils.EncryptedSigstorePrivateKeyPEMType, der)
		}
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: pemType, Bytes: der})
	}
	dir := t.TempDir()
	message := []byte(`{"critical":{"type":"cosign container image signature"}}`)
	for _, c := range []struct {
		name, pemType string
		key           crypto.Signer
		hash          crypto.Hash
	}{
		{"pkcs8-p256", "PRIVATE KEY", ecKey(elliptic.P256()), crypto.SHA256},
		{"sec1-p256", "EC PRIVATE KEY", ecKey(elliptic.P256()), crypto.SHA256},
		{"sec1-p384", "EC PRIVATE KEY", ecKey(elliptic.P384()), crypto.SHA384},
		{"pkcs8-p521", "PRIVATE KEY", ecKey(elliptic.P521()), crypto.SHA512},
		{"pkcs1-rsa", "RSA PRIVATE KEY", rsaKey, crypto.SHA256},
		{"pkcs8-rsa", "PRIVATE KEY", rsaKey, crypto.SHA256},
		{"encrypted-p384", "encrypted", ecKey(elliptic.P384()), crypto.SHA384},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, c.name+".pem")
			if err := os.WriteFile(path, encode(c.pemType, c.key), 0o600); err != nil {
				t.Fatal(err)
			}
			k, err := LoadSigner(t.Context(), path, Options{Password: func() ([]byte, error) { return []byte(password), nil }})
			if err != nil {
				t.Fatalf("LoadSigner: %v", err)
			}
			if k.Ref != path || k.Signer == nil {
				t.Fatalf("loaded %q with signer %v, want %q with a signer", k.Ref, k.Signer, path)
			}
			sig, err := k.Signer.SignMessage(bytes.NewReader(message))
			if err != nil {
				t.Fatalf("signing: %v", err)
			}
			h := c.hash.New()
			h.Write(message)
			digest := h.Sum(nil)
			switch pub := c.key.Public().(type) {
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(pub, digest, sig) {
					t.Errorf("the signature does not verify as ECDSA over %v of the message", c.hash)
				}
			case *rsa.PublicKey:
				if err := rsa.VerifyPKCS1v15(pub, c.hash, digest, sig); err != nil {
					t.Errorf("the signature does not verify as RSA PKCS #1 v1.5 over %v: %v", c.hash, err)
				}
			}
			if err := k.VerifySignature(bytes.NewReader(sig), bytes.NewReader(message)); err != nil {
				t.Errorf("the key does not verify its own signature: %v", err)
			}
			if c.pemType != "encrypted" {
				return
			}
			_, err = LoadSigner(t.Context(), path, Options{Password: func() ([]byte, error) { return []byte("wrong"), nil }})
			if err == nil || !strings.Contains(err.Error(), "wrong password") || !strings.Contains(err.Error(), path) {
				t.Errorf("a wrong password: %v, want an error naming the file and the wrong password", err)
			}
		})
	}
}
