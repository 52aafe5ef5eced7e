package policy

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"

	"github.com/sigstore/sigstore-go/pkg/root"

	"github.com/ocistow/ocistow/pkg/keys"
)

// Spec is a policy as flags, a promotion file's verify block and the
// Lambda payload's Verify name it: references, not loaded keys.
type Spec struct {
	// Keys are key references: public key PEM files, private key files,
	// or KMS keys (awskms://…, ARN, alias/NAME, key id).
	Keys []string `json:"Keys,omitempty"`
	// Identity (a regular expression) and Issuer (a URL) name keyless
	// signers.
	Identity string `json:"Identity,omitempty"`
	Issuer   string `json:"Issuer,omitempty"`
	// TrustedRoot is a trusted root file; empty: the public-good root.
	TrustedRoot string `json:"TrustedRoot,omitempty"`
	// Annotations must be in the signature's payload.
	Annotations map[string]string `json:"Annotations,omitempty"`
	// Children: an index's children must pass too.
	Children bool `json:"Children,omitempty"`
}

// Empty reports whether s asks for nothing. A trusted root alone asks for
// nothing: it is where keyless identities are checked, when there are
// some (a function's or a sync's default for the specs it is sent).
func (s *Spec) Empty() bool {
	return s == nil || (len(s.Keys) == 0 && s.Identity == "" && s.Issuer == "" && len(s.Annotations) == 0 && !s.Children)
}

// Loader loads policies from specs, each key and trusted root once (a fleet
// names the same ones many times). It is safe for concurrent use.
type Loader struct {
	loadKey  func(ctx context.Context, ref string) (*keys.Key, error)
	cacheDir string

	mu    sync.Mutex
	keys  map[string]*keys.Key
	roots map[string]root.TrustedMaterial
}

// NewLoader returns a Loader that loads keys with loadKey and fetches the
// public-good trusted root, when a spec names no file, with its TUF cache
// in cacheDir (empty: DefaultCacheDir, decided when the root is first
// needed).
func NewLoader(loadKey func(ctx context.Context, ref string) (*keys.Key, error), cacheDir string) *Loader {
	return &Loader{loadKey: loadKey, cacheDir: cacheDir, keys: map[string]*keys.Key{}, roots: map[string]root.TrustedMaterial{}}
}

// Load returns the policy s names, checked: nil when s asks for nothing.
// The trusted root is loaded only for an identity.
func (l *Loader) Load(ctx context.Context, s *Spec) (*Policy, error) {
	if s.Empty() {
		return nil, nil
	}
	p := &Policy{Identity: s.Identity, Issuer: s.Issuer, Annotations: maps.Clone(s.Annotations), Children: s.Children}
	for _, ref := range slices.Compact(slices.Clone(s.Keys)) {
		k, err := l.key(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("source key: %w", err)
		}
		p.Keys = append(p.Keys, k)
	}
	if err := (&Policy{Identity: s.Identity, Issuer: s.Issuer, Keys: p.Keys, Annotations: p.Annotations, Children: p.Children, TrustedRoot: root.TrustedMaterialCollection{}}).Validate(); err != nil {
		return nil, err
	}
	if s.Identity != "" {
		tm, err := l.root(s.TrustedRoot)
		if err != nil {
			return nil, err
		}
		p.TrustedRoot = tm
	}
	return p, p.Validate()
}

func (l *Loader) key(ctx context.Context, ref string) (*keys.Key, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k, ok := l.keys[ref]; ok {
		return k, nil
	}
	k, err := l.loadKey(ctx, ref)
	if err != nil {
		return nil, err
	}
	l.keys[ref] = k
	return k, nil
}

func (l *Loader) root(path string) (root.TrustedMaterial, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if tm, ok := l.roots[path]; ok {
		return tm, nil
	}
	tm, err := LoadTrustedRoot(path, l.cacheDir)
	if err != nil {
		return nil, err
	}
	l.roots[path] = tm
	return tm, nil
}
