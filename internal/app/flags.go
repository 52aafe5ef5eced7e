package app

import (
	"flag"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// KeyValues is a repeatable key=value flag. In an environment variable the
// pairs are separated by commas: TEAM=a,OWNER=b; a piece without '=' belongs
// to the value before it, so values may contain commas.
type KeyValues map[string]string

// String implements flag.Value.
func (kv KeyValues) String() string {
	parts := make([]string, 0, len(kv))
	for _, k := range slices.Sorted(maps.Keys(kv)) {
		parts = append(parts, k+"="+kv[k])
	}
	return strings.Join(parts, ",")
}

// Set implements flag.Value: it adds one key=value pair.
func (kv KeyValues) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok {
		return fmt.Errorf("%q is not key=value", s)
	}
	if k == "" {
		return fmt.Errorf("%q has an empty key", s)
	}
	kv[k] = v
	return nil
}

// SetList adds every pair of a comma-separated list.
func (kv KeyValues) SetList(s string) error {
	var pairs []string
	for _, p := range strings.Split(s, ",") {
		if !strings.Contains(p, "=") && len(pairs) > 0 {
			pairs[len(pairs)-1] += "," + p
			continue
		}
		pairs = append(pairs, p)
	}
	for _, p := range pairs {
		if err := kv.Set(p); err != nil {
			return err
		}
	}
	return nil
}

// Strings is a repeatable string flag; in an environment variable the
// values are separated by commas.
type Strings []string

// String implements flag.Value.
func (s *Strings) String() string { return strings.Join(*s, ",") }

// Set implements flag.Value.
func (s *Strings) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	*s = append(*s, v)
	return nil
}

// SetList adds every value of a comma-separated list.
func (s *Strings) SetList(v string) error {
	for _, p := range strings.Split(v, ",") {
		if err := s.Set(strings.TrimSpace(p)); err != nil {
			return err
		}
	}
	return nil
}

// EnvName is the environment variable that stands in for a flag: its name
// in upper snake case (-aws-kms-key-arn: AWS_KMS_KEY_ARN).
func EnvName(flagName string) string {
	return strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// ApplyEnv sets every flag of fs that was not given on the command line from
// its environment variable, when that is set. Command-line flags win. Flags
// named in skip are never read from the environment (-version: CI systems
// set VERSION for their own purposes).
func ApplyEnv(fs *flag.FlagSet, getenv func(string) string, skip ...string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	for _, s := range skip {
		given[s] = true
	}
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		v := getenv(EnvName(f.Name))
		if v == "" {
			return
		}
		if l, ok := f.Value.(interface{ SetList(string) error }); ok {
			err = l.SetList(v)
		} else {
			err = f.Value.Set(v)
		}
		if err != nil {
			err = fmt.Errorf("invalid value %q for environment variable %s: %v", v, EnvName(f.Name), err)
		}
	})
	return err
}
