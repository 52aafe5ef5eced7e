package deploy

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func loadTemplate(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile("template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var tpl map[string]any
	if err := yaml.Unmarshal(b, &tpl); err != nil {
		t.Fatalf("template.yaml is not YAML: %v", err)
	}
	return tpl
}

func m(v any) map[string]any { r, _ := v.(map[string]any); return r }

func strs(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// statements returns every IAM statement of every policy of every role,
// including those behind Fn::If.
func statements(tpl map[string]any) []map[string]any {
	var out []map[string]any
	var policyDoc func(p map[string]any)
	policyDoc = func(p map[string]any) {
		if cond, ok := p["Fn::If"].([]any); ok && len(cond) == 3 {
			for _, branch := range cond[1:] {
				if bm := m(branch); bm != nil {
					policyDoc(bm)
				}
			}
			return
		}
		list, _ := m(p["PolicyDocument"])["Statement"].([]any)
		for _, s := range list {
			out = append(out, m(s))
		}
	}
	for _, r := range m(tpl["Resources"]) {
		res := m(r)
		if res["Type"] != "AWS::IAM::Role" {
			continue
		}
		for _, p := range m(res["Properties"])["Policies"].([]any) {
			policyDoc(m(p))
		}
		if mp := m(res["Properties"])["ManagedPolicyArns"]; mp != nil {
			for _, a := range strs(mp) {
				out = append(out, map[string]any{"Sid": "managed " + a, "Action": "*", "Resource": "*"})
			}
		}
	}
	return out
}

// leastPrivilege returns what is wrong with the statements: wildcard
// actions, KMS beyond sign/get-public-key/describe on the one key, ECR on
// "*" beyond GetAuthorizationToken, anything else on "*" but X-Ray.
func leastPrivilege(stmts []map[string]any) []string {
	var problems []string
	for _, s := range stmts {
		sid, _ := s["Sid"].(string)
		actions := strs(s["Action"])
		resStar := slices.Contains(strs(s["Resource"]), "*")
		if s["NotAction"] != nil || s["NotResource"] != nil {
			problems = append(problems, sid+": NotAction/NotResource")
		}
		for _, a := range actions {
			svc, _, _ := strings.Cut(a, ":")
			switch {
			case strings.Contains(a, "*"):
				problems = append(problems, fmt.Sprintf("%s: wildcard action %s", sid, a))
			case svc == "kms":
				if !slices.Contains([]string{"kms:Sign", "kms:GetPublicKey", "kms:DescribeKey"}, a) {
					problems = append(problems, fmt.Sprintf("%s: KMS action %s", sid, a))
				}
				if ref, _ := m(s["Resource"])["Ref"].(string); ref != "KmsKeyArn" {
					problems = append(problems, fmt.Sprintf("%s: KMS on %v, not the one key", sid, s["Resource"]))
				}
			case a == "ecr:GetAuthorizationToken":
				if len(actions) != 1 {
					problems = append(problems, sid+": GetAuthorizationToken shares its Resource * with other actions")
				}
			case svc == "ecr":
				if resStar {
					problems = append(problems, fmt.Sprintf("%s: %s on *", sid, a))
				}
			case resStar && svc != "xray":
				problems = append(problems, fmt.Sprintf("%s: %s on *", sid, a))
			}
		}
	}
	return problems
}

func TestRoleIsLeastPrivilege(t *testing.T) {
	stmts := statements(loadTemplate(t))
	if len(stmts) == 0 {
		t.Fatal("no IAM statements found")
	}
	if p := leastPrivilege(stmts); len(p) > 0 {
		t.Errorf("template grants too much:\n%s", strings.Join(p, "\n"))
	}
	// Everything the function needs is granted.
	var granted []string
	for _, s := range stmts {
		granted = append(granted, strs(s["Action"])...)
	}
	for _, need := range []string{"kms:Sign", "kms:GetPublicKey", "kms:DescribeKey", "ecr:GetAuthorizationToken",
		"ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:InitiateLayerUpload", "ecr:UploadLayerPart",
		"ecr:CompleteLayerUpload", "ecr:PutImage", "logs:PutLogEvents"} {
		if !slices.Contains(granted, need) {
			t.Errorf("the role lacks %s", need)
		}
	}
}

// The checker itself must catch what it exists to catch.
func TestLeastPrivilegeCheckerCatchesGrants(t *testing.T) {
	for _, bad := range []map[string]any{
		{"Sid": "a", "Action": "kms:*", "Resource": map[string]any{"Ref": "KmsKeyArn"}},
		{"Sid": "b", "Action": "kms:Sign", "Resource": "*"},
		{"Sid": "c", "Action": "kms:Decrypt", "Resource": map[string]any{"Ref": "KmsKeyArn"}},
		{"Sid": "d", "Action": []any{"ecr:PutImage"}, "Resource": "*"},
		{"Sid": "e", "Action": []any{"ecr:GetAuthorizationToken", "ecr:PutImage"}, "Resource": "*"},
		{"Sid": "f", "Action": "s3:GetObject", "Resource": "*"},
		{"Sid": "g", "NotAction": "iam:*", "Resource": "*"},
	} {
		if p := leastPrivilege([]map[string]any{bad}); len(p) == 0 {
			t.Errorf("checker accepted %v", bad)
		}
	}
}

func TestFunctionShape(t *testing.T) {
	tpl := loadTemplate(t)
	fn := m(m(m(tpl["Resources"])["Function"])["Properties"])
	if fn["Runtime"] != "provided.al2023" || fn["Handler"] != "bootstrap" || !slices.Equal(strs(fn["Architectures"]), []string{"arm64"}) {
		t.Errorf("function runtime %v handler %v architectures %v: want provided.al2023, bootstrap, arm64", fn["Runtime"], fn["Handler"], fn["Architectures"])
	}
	params := m(tpl["Parameters"])
	if m(fn["Timeout"])["Ref"] != "Timeout" || m(params["Timeout"])["Default"] != 900 {
		t.Errorf("timeout %v (default %v): want a parameter defaulting to 900 s", fn["Timeout"], m(params["Timeout"])["Default"])
	}
	if m(fn["MemorySize"])["Ref"] != "MemorySize" || m(params["MemorySize"])["MinValue"] != 128 {
		t.Errorf("memory %v: want a parameter down to 128 MB", fn["MemorySize"])
	}
	env := m(m(fn["Environment"])["Variables"])
	if m(env["AWS_KMS_KEY_ARN"])["Ref"] != "KmsKeyArn" || env["AWS_XRAY"] == nil {
		t.Errorf("environment %v: want AWS_KMS_KEY_ARN from the key parameter and AWS_XRAY", env)
	}
	if m(m(fn["TracingConfig"]))["Mode"] == nil {
		t.Error("no tracing switch")
	}
}
