package deploy

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// The least-privilege checker. It reads the template as CloudFormation
// would, walks every resource that carries an IAM policy document (a role's
// inline policies and managed policy ARNs, AWS::IAM::Policy,
// AWS::IAM::ManagedPolicy, AWS::IAM::RolePolicy, and the resource policies
// of KMS keys and ECR repositories), evaluates the intrinsic functions of
// every Resource with sample parameters, and allows only what the function
// needs: KMS signing on the KmsKeyArn parameter's key, an ECR token, ECR pull
// and push on the DestinationRepositories parameter's repositories, writes to
// the function's own log group, and X-Ray writes only when tracing is on; and
// for the role of the Step Functions state machine (the role its RoleArn
// names, which only states.amazonaws.com may assume) lambda:InvokeFunction on
// the function's own ARN and nothing else.
// Anything it cannot read (an unknown resource type or property, an
// intrinsic function in an Action, a value it cannot evaluate) is a problem
// too: the checker fails closed.

// The sample values the template is evaluated with.
const (
	samplePartition = "aws"
	sampleRegion    = "us-east-1"
	sampleAccount   = "111111111111"
	sampleKey       = "arn:aws:kms:us-east-1:111111111111:key/0b8a1d2c-3e4f-5a6b-7c8d-9e0f1a2b3c4d"
)

func sampleRepositories() []string { return []string{"base/busybox", "team/app"} }

// sampleSourceKeys is what the SourceKeyArns parameter is given: the keys
// of a source policy, whose public halves the function may read.
func sampleSourceKeys() []string {
	return []string{"arn:aws:kms:eu-west-1:222222222222:key/upstream-1", "arn:aws:kms:eu-west-1:222222222222:key/upstream-2"}
}

// allowedManagedPolicies are the AWS managed policies a role may attach:
// none, since each grants more than the function needs.
func allowedManagedPolicies() []string { return nil }

// parseTemplate parses a CloudFormation template written in YAML (or JSON).
// Short-form intrinsic functions (!Ref, !Sub, !GetAtt a.b, …) become their
// long forms, so the checks see one shape; duplicate keys, which YAML
// parsers resolve differently, are refused.
func parseTemplate(b []byte) (map[string]any, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, err
	}
	v, err := decodeNode(&doc)
	if err != nil {
		return nil, err
	}
	tpl, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("template is a %T, not a mapping", v)
	}
	return tpl, nil
}

func decodeNode(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) != 1 {
			return nil, fmt.Errorf("line %d: want one YAML document", n.Line)
		}
		return decodeNode(n.Content[0])
	case yaml.AliasNode:
		return decodeNode(n.Alias)
	}
	if strings.HasPrefix(n.Tag, "!") && !strings.HasPrefix(n.Tag, "!!") {
		fn := strings.TrimPrefix(n.Tag, "!")
		plain := *n
		plain.Tag = ""
		if n.Kind == yaml.ScalarNode {
			plain.Tag = "!!str"
		}
		v, err := decodeNode(&plain)
		if err != nil {
			return nil, err
		}
		key := "Fn::" + fn
		switch fn {
		case "Ref", "Condition":
			key = fn
		case "GetAtt":
			if s, ok := v.(string); ok {
				res, attr, _ := strings.Cut(s, ".")
				v = []any{res, attr}
			}
		}
		return map[string]any{key: v}, nil
	}
	switch n.Kind {
	case yaml.ScalarNode:
		var v any
		if err := n.Decode(&v); err != nil {
			return nil, fmt.Errorf("line %d: %w", n.Line, err)
		}
		return v, nil
	case yaml.SequenceNode:
		out := []any{}
		for _, c := range n.Content {
			v, err := decodeNode(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.MappingNode:
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, vn := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode || k.Tag == "!!merge" {
				return nil, fmt.Errorf("line %d: key %q is not a plain string", k.Line, k.Value)
			}
			if _, dup := out[k.Value]; dup {
				return nil, fmt.Errorf("line %d: duplicate key %q", k.Line, k.Value)
			}
			v, err := decodeNode(vn)
			if err != nil {
				return nil, err
			}
			out[k.Value] = v
		}
		return out, nil
	}
	return nil, fmt.Errorf("line %d: unknown YAML node", n.Line)
}

// statement is one IAM statement as it applies: where it is, and the
// conditions (by name, true or false) under which it is in the template.
type statement struct {
	where  string
	s      map[string]any
	assume map[string]bool
	// role is whose policy it is: roleFunction or roleStateMachine.
	role string
}

// Who a role is for, by what names it: the function's Role, or a state
// machine's RoleArn. A role nothing names is held to the function's rules.
const (
	roleFunction     = "function"
	roleStateMachine = "state machine"
)

// checker holds a parsed template and what it found.
type checker struct {
	tpl        map[string]any
	roles      map[string]string // role resource name -> roleFunction or roleStateMachine
	params     map[string]any    // string or []string, by parameter name
	paramDefs  map[string]map[string]any
	resources  map[string]map[string]any
	conditions map[string]any
	problems   []string
	// allows are the Allow statements of identity policies, for the
	// check that everything the function needs is granted.
	allows []statement
}

func (c *checker) problem(where, format string, args ...any) {
	c.problems = append(c.problems, where+": "+fmt.Sprintf(format, args...))
}

// checkTemplate returns what is wrong with tpl's privileges, and the Allow
// statements of its identity policies.
func checkTemplate(tpl map[string]any) ([]string, []statement) {
	c := newChecker(tpl)
	for _, name := range sortedKeys(c.resources) {
		c.checkResource(name, c.resources[name])
	}
	return c.problems, c.allows
}

// newChecker reads tpl's parameters, conditions and resources.
func newChecker(tpl map[string]any) *checker {
	c := &checker{tpl: tpl, params: map[string]any{}, paramDefs: map[string]map[string]any{}, resources: map[string]map[string]any{}}
	c.readParameters()
	c.conditions, _ = tpl["Conditions"].(map[string]any)
	res, ok := tpl["Resources"].(map[string]any)
	if !ok {
		c.problem("Resources", "missing or not a mapping")
	}
	for name, r := range res {
		rm, ok := r.(map[string]any)
		if !ok {
			c.problem("Resources."+name, "not a mapping")
			continue
		}
		c.resources[name] = rm
	}
	c.readRoles()
	return c
}

// readRoles finds whose each role is: the role a function's Role names, or
// the one a state machine's RoleArn names (Fn::GetAtt [ROLE, Arn]). A role
// both name, or a RoleArn the checker cannot read, is a problem.
func (c *checker) readRoles() {
	c.roles = map[string]string{}
	for _, name := range sortedKeys(c.resources) {
		r := c.resources[name]
		props, _ := r["Properties"].(map[string]any)
		var prop, kind string
		switch r["Type"] {
		case "AWS::Lambda::Function":
			prop, kind = "Role", roleFunction
		case "AWS::StepFunctions::StateMachine":
			prop, kind = "RoleArn", roleStateMachine
		default:
			continue
		}
		role, ok := roleOf(props[prop])
		if !ok || c.resources[role]["Type"] != "AWS::IAM::Role" {
			c.problem("Resources."+name+"."+prop, "%v is not Fn::GetAtt [ROLE, Arn] of a role of the template", props[prop])
			continue
		}
		if was, ok := c.roles[role]; ok && was != kind {
			c.problem("Resources."+role, "role of both a function and a state machine")
		}
		c.roles[role] = kind
	}
}

// roleOf reads Fn::GetAtt [ROLE, Arn].
func roleOf(v any) (string, bool) {
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 {
		return "", false
	}
	var args []any
	switch a := m["Fn::GetAtt"].(type) {
	case []any:
		args = a
	case string:
		r, attr, _ := strings.Cut(a, ".")
		args = []any{r, attr}
	}
	if len(args) != 2 || args[1] != "Arn" {
		return "", false
	}
	name, ok := args[0].(string)
	return name, ok
}

// roleKind is whose the role name is.
func (c *checker) roleKind(name string) string {
	if k, ok := c.roles[name]; ok {
		return k
	}
	return roleFunction
}

// policyRole is whose a policy attached to roles (Refs to role resources)
// is: the state machine's when every role it names is, else the function's.
func (c *checker) policyRole(roles any) string {
	list, _ := roles.([]any)
	if len(list) == 0 {
		return roleFunction
	}
	for _, r := range list {
		m, _ := r.(map[string]any)
		name, _ := m["Ref"].(string)
		if c.roleKind(name) != roleStateMachine {
			return roleFunction
		}
	}
	return roleStateMachine
}

func (c *checker) readParameters() {
	defs, _ := c.tpl["Parameters"].(map[string]any)
	for name, d := range defs {
		dm, ok := d.(map[string]any)
		if !ok {
			c.problem("Parameters."+name, "not a mapping")
			continue
		}
		c.paramDefs[name] = dm
		def, has := dm["Default"]
		if !has {
			continue
		}
		s := fmt.Sprint(def)
		if dm["Type"] == "CommaDelimitedList" {
			c.params[name] = strings.Split(s, ",")
		} else {
			c.params[name] = s
		}
	}
	for name, want := range map[string]string{"KmsKeyArn": "String", "DestinationRepositories": "CommaDelimitedList"} {
		if d := c.paramDefs[name]; d == nil || d["Type"] != want {
			c.problem("Parameters."+name, "want a %s parameter", want)
		}
	}
	c.params["KmsKeyArn"] = sampleKey
	c.params["DestinationRepositories"] = sampleRepositories()
	c.params["SourceKeyArns"] = sampleSourceKeys()
}

// tracingValues are the values the Tracing parameter may take.
func (c *checker) tracingValues() []string {
	var out []string
	for _, v := range asList(c.paramDefs["Tracing"]["AllowedValues"]) {
		out = append(out, fmt.Sprint(v))
	}
	return out
}

func (c *checker) checkResource(name string, r map[string]any) {
	where := "Resources." + name
	assume := map[string]bool{}
	if cond, ok := r["Condition"]; ok {
		s, ok := cond.(string)
		if !ok {
			c.problem(where, "Condition %v is not a name", cond)
			return
		}
		assume[s] = true
	}
	props, _ := r["Properties"].(map[string]any)
	typ, _ := r["Type"].(string)
	switch typ {
	case "AWS::Logs::LogGroup", "AWS::Lambda::Function":
		// Carry no policy.
	case "AWS::StepFunctions::StateMachine":
		// Carries no policy; its role (RoleArn) is checked as a role. No
		// logging or tracing configuration, which would need permissions
		// the checker does not grant it.
		c.onlyKeys(where+".Properties", props, "StateMachineType", "StateMachineName", "RoleArn",
			"DefinitionS3Location", "DefinitionSubstitutions", "Tags")
	case "AWS::IAM::Role":
		role := c.roleKind(name)
		c.onlyKeys(where+".Properties", props, "AssumeRolePolicyDocument", "Policies", "ManagedPolicyArns",
			"Description", "Path", "RoleName", "MaxSessionDuration", "PermissionsBoundary", "Tags")
		c.checkTrust(where+".AssumeRolePolicyDocument", props["AssumeRolePolicyDocument"], role)
		if p, ok := props["Policies"]; ok {
			c.forEach(where+".Policies", p, assume, func(w string, item any, a map[string]bool) {
				pm, ok := item.(map[string]any)
				if !ok {
					c.problem(w, "policy is not a mapping: %v", item)
					return
				}
				c.onlyKeys(w, pm, "PolicyName", "PolicyDocument")
				c.identityDocument(w+".PolicyDocument", pm["PolicyDocument"], a, role)
			})
		}
		if p, ok := props["ManagedPolicyArns"]; ok {
			c.forEach(where+".ManagedPolicyArns", p, assume, c.managedPolicyArn)
		}
	case "AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy":
		c.onlyKeys(where+".Properties", props, "PolicyDocument", "PolicyName", "ManagedPolicyName",
			"Description", "Path", "Roles", "RoleName", "Users", "Groups")
		role := c.policyRole(props["Roles"])
		if props["RoleName"] != nil {
			role = roleFunction
		}
		c.identityDocument(where+".PolicyDocument", props["PolicyDocument"], assume, role)
	case "AWS::KMS::Key":
		c.resourceDocument(where+".KeyPolicy", props["KeyPolicy"], "kms", assume)
	case "AWS::ECR::Repository":
		c.resourceDocument(where+".RepositoryPolicyText", props["RepositoryPolicyText"], "ecr", assume)
	default:
		c.problem(where, "type %q: the checker does not know what it grants", typ)
	}
}

// forEach calls f for every item of a list, following Fn::If into both
// branches (with the condition assumed true, then false) and dropping
// AWS::NoValue.
func (c *checker) forEach(where string, v any, assume map[string]bool, f func(string, any, map[string]bool)) {
	for _, b := range c.branches(where, v, assume) {
		list, ok := b.v.([]any)
		if !ok {
			c.problem(b.where, "not a list: %v", b.v)
			continue
		}
		for i, item := range list {
			for _, ib := range c.branches(fmt.Sprintf("%s[%d]", b.where, i), item, b.assume) {
				f(ib.where, ib.v, ib.assume)
			}
		}
	}
}

type branch struct {
	where  string
	v      any
	assume map[string]bool
}

// branches expands Fn::If: both branches, each with its condition assumed,
// skipping branches that contradict what is already assumed, and dropping
// AWS::NoValue.
func (c *checker) branches(where string, v any, assume map[string]bool) []branch {
	if isNoValue(v) {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok || len(m) != 1 || m["Fn::If"] == nil {
		return []branch{{where, v, assume}}
	}
	args, ok := m["Fn::If"].([]any)
	if !ok || len(args) != 3 {
		c.problem(where, "Fn::If takes [condition, then, else]: %v", m["Fn::If"])
		return nil
	}
	cond, ok := args[0].(string)
	if !ok || c.conditions[cond] == nil {
		c.problem(where, "Fn::If on %v, which is not a condition of the template", args[0])
		return nil
	}
	var out []branch
	for i, val := range []bool{true, false} {
		if was, set := assume[cond]; set && was != val {
			continue
		}
		a := map[string]bool{cond: val}
		for k, v := range assume {
			a[k] = v
		}
		out = append(out, c.branches(fmt.Sprintf("%s(%s=%v)", where, cond, val), args[i+1], a)...)
	}
	return out
}

func isNoValue(v any) bool {
	m, ok := v.(map[string]any)
	return ok && len(m) == 1 && m["Ref"] == "AWS::NoValue"
}

func (c *checker) onlyKeys(where string, m map[string]any, keys ...string) {
	for _, k := range sortedKeys(m) {
		if !slices.Contains(keys, k) {
			c.problem(where, "unknown key %q", k)
		}
	}
}

// statements returns the statements of a policy document, following Fn::If.
func (c *checker) statements(where string, doc any, assume map[string]bool) []statement {
	var out []statement
	for _, b := range c.branches(where, doc, assume) {
		d := b.v
		if s, ok := d.(string); ok {
			// A JSON policy document in a string.
			var parsed any
			if err := json.Unmarshal([]byte(s), &parsed); err != nil {
				c.problem(b.where, "policy document is not JSON: %v", err)
				continue
			}
			d = parsed
		}
		dm, ok := d.(map[string]any)
		if !ok {
			c.problem(b.where, "policy document is not a mapping: %v", d)
			continue
		}
		c.onlyKeys(b.where, dm, "Version", "Id", "Statement")
		if dm["Version"] != "2012-10-17" {
			c.problem(b.where, "Version %v, want 2012-10-17", dm["Version"])
		}
		for _, sb := range c.branches(b.where+".Statement", dm["Statement"], b.assume) {
			list, ok := sb.v.([]any)
			if !ok {
				list = []any{sb.v}
			}
			for i, item := range list {
				for _, ib := range c.branches(fmt.Sprintf("%s[%d]", sb.where, i), item, sb.assume) {
					sm, ok := ib.v.(map[string]any)
					if !ok {
						c.problem(ib.where, "statement is not a mapping: %v", ib.v)
						continue
					}
					if sid, ok := sm["Sid"].(string); ok {
						ib.where += " (" + sid + ")"
					}
					out = append(out, statement{where: ib.where, s: sm, assume: ib.assume})
				}
			}
		}
	}
	if len(out) == 0 {
		c.problem(where, "no statements")
	}
	return out
}

// actions returns a statement's Action as literal strings, or false (with
// the problem noted) when it is anything else.
func (c *checker) actions(st statement) ([]string, bool) {
	raw, ok := st.s["Action"]
	if !ok {
		c.problem(st.where, "no Action")
		return nil, false
	}
	var out []string
	items, isList := raw.([]any)
	if !isList {
		items = []any{raw}
	}
	for _, a := range items {
		s, ok := a.(string)
		if !ok {
			c.problem(st.where, "Action %v is not a literal string", a)
			return nil, false
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		c.problem(st.where, "empty Action")
		return nil, false
	}
	return out, true
}

// resources evaluates a statement's Resource.
func (c *checker) resourcesOf(st statement) ([]string, bool) {
	raw, ok := st.s["Resource"]
	if !ok {
		c.problem(st.where, "no Resource")
		return nil, false
	}
	v, err := c.eval(raw, st.assume)
	if err != nil {
		c.problem(st.where, "Resource: %v", err)
		return nil, false
	}
	var out []string
	switch v := v.(type) {
	case string:
		out = []string{v}
	case []string:
		out = v
	case []any:
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				c.problem(st.where, "Resource %v is not a string", x)
				return nil, false
			}
			out = append(out, s)
		}
	default:
		c.problem(st.where, "Resource %v is not a string or a list", v)
		return nil, false
	}
	if len(out) == 0 {
		c.problem(st.where, "empty Resource")
		return nil, false
	}
	return out, true
}

// rule is what an action may be granted on.
type rule struct {
	on          func(resource string) bool
	onWhat      string
	tracingOnly bool
	// guardedOn, when set, also allows resources named with wildcards
	// for partition, region and account, provided a Deny of the same
	// policy document pins the action to the stack's own account and
	// region (see ownRepositories).
	guardedOn func(resource string) bool
}

// ownRepositories is what a Deny with NotResource must name to pin ECR
// actions to the stack's own account and region.
func ownRepositories() string {
	return fmt.Sprintf("arn:%s:ecr:%s:%s:repository/*", samplePartition, sampleRegion, sampleAccount)
}

func (c *checker) rules() map[string]rule {
	key := rule{on: func(r string) bool { return r == sampleKey }, onWhat: "the KmsKeyArn parameter's key"}
	// The public halves of the source policy's keys may be read, not
	// used to sign.
	public := rule{on: func(r string) bool { return r == sampleKey || slices.Contains(sampleSourceKeys(), r) },
		onWhat: "the KmsKeyArn parameter's key or the SourceKeyArns parameter's keys"}
	star := rule{on: func(r string) bool { return r == "*" }, onWhat: `"*" (it has no resource-level permissions)`}
	var repos []string
	for _, r := range sampleRepositories() {
		repos = append(repos, fmt.Sprintf("arn:%s:ecr:%s:%s:repository/%s", samplePartition, sampleRegion, sampleAccount, r))
	}
	var anywhere []string
	for _, r := range sampleRepositories() {
		anywhere = append(anywhere, "arn:*:ecr:*:*:repository/"+r)
	}
	repo := rule{
		on:        func(r string) bool { return slices.Contains(repos, r) },
		guardedOn: func(r string) bool { return slices.Contains(anywhere, r) },
		onWhat:    "the DestinationRepositories parameter's repositories",
	}
	group := fmt.Sprintf("arn:%s:logs:%s:%s:log-group:%s", samplePartition, sampleRegion, sampleAccount, c.functionLogGroup())
	logs := rule{on: func(r string) bool {
		return slices.Contains([]string{group, group + ":*", group + ":*:*", group + ":log-stream:*"}, r)
	}, onWhat: "the function's own log group " + group}
	xray := star
	xray.tracingOnly = true
	return map[string]rule{
		"kms:sign": key, "kms:getpublickey": public, "kms:describekey": public,
		"ecr:getauthorizationtoken":       star,
		"ecr:batchchecklayeravailability": repo, "ecr:batchgetimage": repo, "ecr:getdownloadurlforlayer": repo,
		"ecr:initiatelayerupload": repo, "ecr:uploadlayerpart": repo, "ecr:completelayerupload": repo, "ecr:putimage": repo,
		"logs:createlogstream": logs, "logs:putlogevents": logs,
		"xray:puttracesegments": xray, "xray:puttelemetryrecords": xray,
	}
}

// stateMachineRules are what a state machine's role may be granted:
// invoking the function, by its own ARN (no wildcard, version or alias).
func (c *checker) stateMachineRules() map[string]rule {
	fn := c.functionArn()
	return map[string]rule{
		"lambda:invokefunction": {on: func(r string) bool { return r == fn }, onWhat: "the function's own ARN " + fn},
	}
}

// function is the logical name of the template's one function, or a
// problem (in parentheses, as it shows in a message) when there is not
// exactly one.
func (c *checker) function() (name, problem string) {
	var fns []string
	for n, r := range c.resources {
		if r["Type"] == "AWS::Lambda::Function" {
			fns = append(fns, n)
		}
	}
	if len(fns) != 1 {
		return "", "(want exactly one function, found " + strconv.Itoa(len(fns)) + ")"
	}
	return fns[0], ""
}

// functionArn is the ARN of the template's one function.
func (c *checker) functionArn() string {
	fn, problem := c.function()
	if problem != "" {
		return problem
	}
	v, err := c.getAtt(fn, "Arn")
	if err != nil {
		return fmt.Sprintf("(cannot tell the function's ARN: %v)", err)
	}
	return fmt.Sprint(v)
}

// functionLogGroup is the name of the log group the function logs to: its
// LoggingConfig's, or Lambda's default.
func (c *checker) functionLogGroup() string {
	fn, problem := c.function()
	if problem != "" {
		return problem
	}
	props, _ := c.resources[fn]["Properties"].(map[string]any)
	var v any
	var err error
	if lc, ok := props["LoggingConfig"].(map[string]any); ok && lc["LogGroup"] != nil {
		v, err = c.eval(lc["LogGroup"], nil)
	} else {
		v, err = c.eval(map[string]any{"Fn::Sub": []any{"/aws/lambda/${Name}", map[string]any{"Name": props["FunctionName"]}}}, nil)
	}
	s, ok := v.(string)
	if err != nil || !ok {
		return fmt.Sprintf("(cannot tell the function's log group: %v)", err)
	}
	return s
}

func (c *checker) identityDocument(where string, doc any, assume map[string]bool, role string) {
	rules := c.rules()
	if role == roleStateMachine {
		rules = c.stateMachineRules()
	}
	stmts := c.statements(where, doc, assume)
	guards := c.guards(stmts)
	for _, st := range stmts {
		c.onlyKeys(st.where, st.s, "Sid", "Effect", "Action", "NotAction", "Resource", "NotResource", "Condition")
		switch st.s["Effect"] {
		case "Deny":
			continue // grants nothing
		case "Allow":
		default:
			c.problem(st.where, "Effect %v, want Allow or Deny", st.s["Effect"])
			continue
		}
		if st.s["NotAction"] != nil {
			c.problem(st.where, "Allow with NotAction grants every other action")
			continue
		}
		if st.s["NotResource"] != nil {
			c.problem(st.where, "Allow with NotResource grants on every other resource")
			continue
		}
		actions, ok := c.actions(st)
		if !ok {
			continue
		}
		resources, ok := c.resourcesOf(st)
		if !ok {
			continue
		}
		st.role = role
		c.allows = append(c.allows, st)
		for _, a := range actions {
			if strings.ContainsAny(a, "*?") {
				c.problem(st.where, "wildcard action %s", a)
				continue
			}
			r, ok := rules[strings.ToLower(a)]
			if !ok {
				c.problem(st.where, "%s is not an action the %s needs", a, role)
				continue
			}
			for _, res := range resources {
				if r.on(res) {
					continue
				}
				if r.guardedOn != nil && r.guardedOn(res) && guarded(guards, strings.ToLower(a), st.assume) {
					continue
				}
				c.problem(st.where, "%s on %s: only on %s", a, res, r.onWhat)
			}
			if r.tracingOnly {
				for _, v := range c.tracingValues() {
					if v != "Active" && c.applies(st, map[string]any{"Tracing": v}) {
						c.problem(st.where, "%s granted with Tracing=%s: only when tracing is on", a, v)
					}
				}
			}
		}
	}
}

// guard is a Deny that pins actions to the stack's own ECR repositories.
type guard struct {
	actions []string // lower case
	assume  map[string]bool
}

// guards returns the Deny statements among stmts whose NotResource is
// exactly the stack's own repositories (ownRepositories), without
// conditions of their own.
func (c *checker) guards(stmts []statement) []guard {
	var out []guard
	for _, st := range stmts {
		if st.s["Effect"] != "Deny" || st.s["Condition"] != nil || st.s["NotResource"] == nil {
			continue
		}
		v, err := c.eval(st.s["NotResource"], st.assume)
		if err != nil || !slices.Equal(asStringsAny(v), []string{ownRepositories()}) {
			continue
		}
		actions, ok := st.s["Action"].([]any)
		if !ok {
			actions = []any{st.s["Action"]}
		}
		g := guard{assume: st.assume}
		for _, a := range actions {
			if s, ok := a.(string); ok {
				g.actions = append(g.actions, strings.ToLower(s))
			}
		}
		out = append(out, g)
	}
	return out
}

// guarded reports whether a guard denies action wherever a statement
// under assume applies: the guard's own conditions must be among assume.
func guarded(guards []guard, action string, assume map[string]bool) bool {
	for _, g := range guards {
		if !slices.Contains(g.actions, action) {
			continue
		}
		covers := true
		for cond, val := range g.assume {
			if v, ok := assume[cond]; !ok || v != val {
				covers = false
			}
		}
		if covers {
			return true
		}
	}
	return false
}

func asStringsAny(v any) []string {
	switch v := v.(type) {
	case []string:
		return v
	default:
		return asStrings(v)
	}
}

// applies reports whether st is in the template when the parameters take
// the values in set (and their defaults otherwise).
func (c *checker) applies(st statement, set map[string]any) bool {
	for cond, want := range st.assume {
		got, err := c.condition(cond, set, 0)
		if err != nil {
			c.problem(st.where, "condition %s: %v", cond, err)
			return true
		}
		if got != want {
			return false
		}
	}
	return true
}

// condition evaluates the template's condition name.
func (c *checker) condition(name string, set map[string]any, depth int) (bool, error) {
	if depth > 10 {
		return false, fmt.Errorf("conditions nest too deep")
	}
	expr, ok := c.conditions[name]
	if !ok {
		return false, fmt.Errorf("no condition %s", name)
	}
	return c.condExpr(expr, set, depth)
}

func (c *checker) condExpr(expr any, set map[string]any, depth int) (bool, error) {
	m, ok := expr.(map[string]any)
	if !ok || len(m) != 1 {
		return false, fmt.Errorf("cannot read condition %v", expr)
	}
	for fn, arg := range m {
		args, _ := arg.([]any)
		switch fn {
		case "Condition":
			s, _ := arg.(string)
			return c.condition(s, set, depth+1)
		case "Fn::Not":
			if len(args) != 1 {
				return false, fmt.Errorf("Fn::Not takes one condition")
			}
			v, err := c.condExpr(args[0], set, depth+1)
			return !v, err
		case "Fn::And", "Fn::Or":
			all := fn == "Fn::And"
			for _, a := range args {
				v, err := c.condExpr(a, set, depth+1)
				if err != nil {
					return false, err
				}
				if v != all {
					return v, nil
				}
			}
			return all, nil
		case "Fn::Equals":
			if len(args) != 2 {
				return false, fmt.Errorf("Fn::Equals takes two values")
			}
			with := *c
			with.params = map[string]any{}
			for k, v := range c.params {
				with.params[k] = v
			}
			for k, v := range set {
				with.params[k] = v
			}
			a, err1 := with.eval(args[0], nil)
			b, err2 := with.eval(args[1], nil)
			if err1 != nil || err2 != nil {
				return false, fmt.Errorf("Fn::Equals: %v %v", err1, err2)
			}
			return fmt.Sprint(a) == fmt.Sprint(b), nil
		}
	}
	return false, fmt.Errorf("cannot read condition %v", expr)
}

func (c *checker) managedPolicyArn(where string, v any, _ map[string]bool) {
	if m, ok := v.(map[string]any); ok && len(m) == 1 {
		if ref, ok := m["Ref"].(string); ok && c.resources[ref]["Type"] == "AWS::IAM::ManagedPolicy" {
			return // a policy of this template, checked on its own
		}
	}
	arn, err := c.eval(v, nil)
	if err != nil {
		c.problem(where, "cannot tell which managed policy: %v", err)
		return
	}
	s, _ := arn.(string)
	if !slices.Contains(allowedManagedPolicies(), s) {
		c.problem(where, "managed policy %v is not in the checker's allow-list", arn)
	}
}

// checkTrust allows only Lambda to assume the function's role, and only
// Step Functions the state machine's.
func (c *checker) checkTrust(where string, doc any, role string) {
	if doc == nil {
		c.problem(where, "missing")
		return
	}
	service := "lambda.amazonaws.com"
	if role == roleStateMachine {
		service = "states.amazonaws.com"
	}
	for _, st := range c.statements(where, doc, nil) {
		c.onlyKeys(st.where, st.s, "Sid", "Effect", "Principal", "Action", "Condition")
		if st.s["Effect"] != "Allow" {
			continue
		}
		p, _ := st.s["Principal"].(map[string]any)
		if len(p) != 1 || !slices.Equal(asStrings(p["Service"]), []string{service}) {
			c.problem(st.where, "Principal %v: only %s may assume the %s's role", st.s["Principal"], service, role)
		}
		if a, ok := c.actions(st); ok && !slices.Equal(a, []string{"sts:AssumeRole"}) {
			c.problem(st.where, "Action %v: want sts:AssumeRole", a)
		}
	}
}

// resourceDocument checks a resource policy: no wildcard principal or
// action, no Not* element, and only actions of the resource's own service.
func (c *checker) resourceDocument(where string, doc any, service string, assume map[string]bool) {
	if doc == nil {
		return
	}
	for _, st := range c.statements(where, doc, assume) {
		c.onlyKeys(st.where, st.s, "Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource", "Condition")
		if st.s["Effect"] == "Deny" {
			continue
		}
		if st.s["Effect"] != "Allow" {
			c.problem(st.where, "Effect %v, want Allow or Deny", st.s["Effect"])
			continue
		}
		for _, k := range []string{"NotPrincipal", "NotAction", "NotResource"} {
			if st.s[k] != nil {
				c.problem(st.where, "Allow with %s", k)
			}
		}
		if wildcardPrincipal(st.s["Principal"]) {
			c.problem(st.where, "Principal %v grants to anyone", st.s["Principal"])
		}
		actions, _ := c.actions(st)
		for _, a := range actions {
			if strings.ContainsAny(a, "*?") || !strings.HasPrefix(strings.ToLower(a), service+":") {
				c.problem(st.where, "action %s in a %s resource policy", a, service)
			}
		}
	}
}

func wildcardPrincipal(p any) bool {
	switch p := p.(type) {
	case nil:
		return true
	case string:
		return p == "*"
	case map[string]any:
		for _, v := range p {
			if slices.Contains(asStrings(v), "*") {
				return true
			}
		}
		return false
	}
	return true
}

// eval evaluates a value as CloudFormation would with the sample
// parameters: literals, Ref, Fn::GetAtt, Fn::Sub, Fn::Join, Fn::Split,
// Fn::Select, and Fn::If on a condition already assumed. Anything else is
// an error.
func (c *checker) eval(v any, assume map[string]bool) (any, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case []any:
		var out []any
		for _, x := range v {
			if isNoValue(x) {
				continue
			}
			e, err := c.eval(x, assume)
			if err != nil {
				return nil, err
			}
			out = append(out, e)
		}
		return out, nil
	case map[string]any:
		if len(v) != 1 {
			return nil, fmt.Errorf("cannot evaluate %v", v)
		}
		for fn, arg := range v {
			return c.evalFn(fn, arg, assume)
		}
	}
	return nil, fmt.Errorf("cannot evaluate %v (%T)", v, v)
}

func (c *checker) evalFn(fn string, arg any, assume map[string]bool) (any, error) {
	args, _ := arg.([]any)
	switch fn {
	case "Ref":
		s, ok := arg.(string)
		if !ok {
			return nil, fmt.Errorf("Ref %v", arg)
		}
		return c.ref(s)
	case "Fn::GetAtt":
		if s, ok := arg.(string); ok {
			r, a, _ := strings.Cut(s, ".")
			args = []any{r, a}
		}
		if len(args) != 2 {
			return nil, fmt.Errorf("Fn::GetAtt %v", arg)
		}
		r, _ := args[0].(string)
		a, _ := args[1].(string)
		return c.getAtt(r, a)
	case "Fn::Sub":
		tmpl, vars := "", map[string]any{}
		switch a := arg.(type) {
		case string:
			tmpl = a
		case []any:
			if len(a) != 2 {
				return nil, fmt.Errorf("Fn::Sub %v", arg)
			}
			var ok bool
			if tmpl, ok = a[0].(string); !ok {
				return nil, fmt.Errorf("Fn::Sub string %v: CloudFormation takes no function there, only a literal string", a[0])
			}
			vars, _ = a[1].(map[string]any)
		default:
			return nil, fmt.Errorf("Fn::Sub %v", arg)
		}
		return c.sub(tmpl, vars, assume)
	case "Fn::Join":
		delim, err := delimited(fn, arg, args)
		if err != nil {
			return nil, err
		}
		list, err := c.eval(args[1], assume)
		if err != nil {
			return nil, err
		}
		parts, err := stringList(list)
		if err != nil {
			return nil, fmt.Errorf("Fn::Join: %w", err)
		}
		return strings.Join(parts, delim), nil
	case "Fn::Split":
		delim, err := delimited(fn, arg, args)
		if err != nil {
			return nil, err
		}
		s, err := c.eval(args[1], assume)
		if err != nil {
			return nil, err
		}
		str, ok := s.(string)
		if !ok {
			return nil, fmt.Errorf("Fn::Split of %v", s)
		}
		return strings.Split(str, delim), nil
	case "Fn::Select":
		if len(args) != 2 {
			return nil, fmt.Errorf("Fn::Select %v", arg)
		}
		i, err := strconv.Atoi(fmt.Sprint(args[0]))
		if err != nil {
			return nil, fmt.Errorf("Fn::Select index %v", args[0])
		}
		list, err := c.eval(args[1], assume)
		if err != nil {
			return nil, err
		}
		parts, err := stringList(list)
		if err != nil || i < 0 || i >= len(parts) {
			return nil, fmt.Errorf("Fn::Select %d of %v", i, list)
		}
		return parts[i], nil
	case "Fn::If":
		if len(args) != 3 {
			return nil, fmt.Errorf("Fn::If %v", arg)
		}
		cond, _ := args[0].(string)
		val, ok := assume[cond]
		if !ok {
			return nil, fmt.Errorf("Fn::If on %v inside a value: the checker follows Fn::If only around policies and statements", args[0])
		}
		if val {
			return c.eval(args[1], assume)
		}
		return c.eval(args[2], assume)
	}
	return nil, fmt.Errorf("cannot evaluate %s", fn)
}

func (c *checker) ref(name string) (any, error) {
	switch name {
	case "AWS::Partition":
		return samplePartition, nil
	case "AWS::Region":
		return sampleRegion, nil
	case "AWS::AccountId":
		return sampleAccount, nil
	case "AWS::URLSuffix":
		return "amazonaws.com", nil
	case "AWS::StackName":
		return "ocistow", nil
	}
	if v, ok := c.params[name]; ok {
		return v, nil
	}
	if _, ok := c.paramDefs[name]; ok {
		return nil, fmt.Errorf("parameter %s has no default and no sample value", name)
	}
	r, ok := c.resources[name]
	if !ok {
		return nil, fmt.Errorf("Ref to unknown %s", name)
	}
	props, _ := r["Properties"].(map[string]any)
	switch r["Type"] {
	case "AWS::Logs::LogGroup":
		return c.eval(props["LogGroupName"], nil)
	}
	return nil, fmt.Errorf("Ref to %s (%v): the checker does not evaluate it", name, r["Type"])
}

func (c *checker) getAtt(res, attr string) (any, error) {
	r, ok := c.resources[res]
	if !ok {
		return nil, fmt.Errorf("Fn::GetAtt of unknown %s", res)
	}
	switch {
	case r["Type"] == "AWS::Logs::LogGroup" && attr == "Arn":
		name, err := c.ref(res)
		if err != nil {
			return nil, err
		}
		// A log group's Arn attribute ends in ":*".
		return fmt.Sprintf("arn:%s:logs:%s:%s:log-group:%v:*", samplePartition, sampleRegion, sampleAccount, name), nil
	case r["Type"] == "AWS::Lambda::Function" && attr == "Arn":
		props, _ := r["Properties"].(map[string]any)
		name, err := c.eval(props["FunctionName"], nil)
		if err != nil {
			return nil, fmt.Errorf("the function's name: %w", err)
		}
		if _, ok := name.(string); !ok {
			return nil, fmt.Errorf("the function's name %v", name)
		}
		return fmt.Sprintf("arn:%s:lambda:%s:%s:function:%v", samplePartition, sampleRegion, sampleAccount, name), nil
	}
	return nil, fmt.Errorf("Fn::GetAtt %s.%s: the checker does not evaluate it", res, attr)
}

var subVar = regexp.MustCompile(`\$\{([^}]*)\}`)

func (c *checker) sub(tmpl string, vars map[string]any, assume map[string]bool) (any, error) {
	var firstErr error
	out := subVar.ReplaceAllStringFunc(tmpl, func(m string) string {
		name := m[2 : len(m)-1]
		if strings.HasPrefix(name, "!") {
			return "${" + name[1:] + "}"
		}
		var v any
		var err error
		switch {
		case vars[name] != nil:
			v, err = c.eval(vars[name], assume)
		case strings.Contains(name, "."):
			r, a, _ := strings.Cut(name, ".")
			v, err = c.getAtt(r, a)
		default:
			v, err = c.ref(name)
		}
		s, ok := v.(string)
		if err == nil && !ok {
			err = fmt.Errorf("Fn::Sub variable %s is %v, not a string", name, v)
		}
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return s
	})
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case []string:
		return v, nil
	case []any:
		var out []string
		for _, x := range v {
			switch x := x.(type) {
			case string:
				out = append(out, x)
			case []string:
				// A Ref to a list parameter inside a list.
				out = append(out, x...)
			default:
				return nil, fmt.Errorf("%v is not a string", x)
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("%v is not a list", v)
}

func asList(v any) []any {
	l, _ := v.([]any)
	return l
}

func asStrings(v any) []string {
	switch v := v.(type) {
	case string:
		return []string{v}
	case []any:
		var out []string
		for _, x := range v {
			s, ok := x.(string)
			if !ok {
				return nil
			}
			out = append(out, s)
		}
		return out
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func loadTemplate(t *testing.T) map[string]any {
	t.Helper()
	b, err := os.ReadFile("template.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tpl, err := parseTemplate(b)
	if err != nil {
		t.Fatalf("template.yaml: %v", err)
	}
	return tpl
}

func m(v any) map[string]any { r, _ := v.(map[string]any); return r }

func TestRoleIsLeastPrivilege(t *testing.T) {
	problems, allows := checkTemplate(loadTemplate(t))
	if len(problems) > 0 {
		t.Errorf("template grants too much, or the checker cannot read it:\n%s", strings.Join(problems, "\n"))
	}
	// Everything the function needs is granted, with tracing on and off,
	// ECR actions on every destination repository.
	ck := newChecker(loadTemplate(t))
	for _, tracing := range ck.tracingValues() {
		granted := map[string][]string{} // action -> resources
		for _, st := range allows {
			if st.role != roleFunction || !ck.applies(st, map[string]any{"Tracing": tracing}) {
				continue
			}
			res, _ := ck.resourcesOf(st)
			acts, _ := ck.actions(st)
			for _, a := range acts {
				granted[strings.ToLower(a)] = append(granted[strings.ToLower(a)], res...)
			}
		}
		needs := []string{"kms:Sign", "kms:GetPublicKey", "kms:DescribeKey", "ecr:GetAuthorizationToken",
			"ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:InitiateLayerUpload",
			"ecr:UploadLayerPart", "ecr:CompleteLayerUpload", "ecr:PutImage", "logs:CreateLogStream", "logs:PutLogEvents"}
		if tracing == "Active" {
			needs = append(needs, "xray:PutTraceSegments", "xray:PutTelemetryRecords")
		}
		for _, need := range needs {
			on := granted[strings.ToLower(need)]
			if len(on) == 0 {
				t.Errorf("Tracing=%s: the role lacks %s", tracing, need)
				continue
			}
			if strings.HasPrefix(need, "ecr:") && need != "ecr:GetAuthorizationToken" {
				for _, repo := range sampleRepositories() {
					// Named exactly, or with wildcards that a Deny pins
					// to the stack's account and region (checked above).
					arn := fmt.Sprintf("arn:%s:ecr:%s:%s:repository/%s", samplePartition, sampleRegion, sampleAccount, repo)
					if !slices.Contains(on, arn) && !slices.Contains(on, "arn:*:ecr:*:*:repository/"+repo) {
						t.Errorf("Tracing=%s: %s not granted on destination repository %s (only %v)", tracing, need, repo, on)
					}
				}
			}
		}
		if tracing == "PassThrough" && len(granted["xray:puttracesegments"]) > 0 {
			t.Errorf("Tracing=PassThrough grants X-Ray")
		}
	}
	// The state machine's role invokes the function, and only that.
	var invoke []string
	for _, st := range allows {
		if st.role != roleStateMachine {
			continue
		}
		res, _ := ck.resourcesOf(st)
		acts, _ := ck.actions(st)
		for _, a := range acts {
			if strings.EqualFold(a, "lambda:InvokeFunction") {
				invoke = append(invoke, res...)
			}
		}
	}
	if fn := "arn:aws:lambda:us-east-1:111111111111:function:ocistow"; !slices.Equal(invoke, []string{fn}) {
		t.Errorf("the state machine's role may invoke %v, want %s alone", invoke, fn)
	}
	if ck.roles["StateMachineRole"] != roleStateMachine || ck.roles["Role"] != roleFunction {
		t.Errorf("roles %v: want Role the function's and StateMachineRole the state machine's", ck.roles)
	}
}

// The state machine: its definition is deploy/statemachine.asl.json, every
// placeholder in it is substituted, every Task invokes the function, and
// the Map state promotes at most MaxConcurrency at once, retrying what may
// pass and catching every error per item. It holds README's "DefinitionSubstitutions
// give it the function's ARN and MAX_CONCURRENCY, default 8" and the Step
// Functions section's steps: Plan invokes the function with the
// execution's PromotionFile; Promote, an inline Map over the plan's Items
// at most MaxConcurrency at once, retries CopyFailed, SourceFailed,
// SigningFailed, ReferrersFailed and Timeout "3 times, 2 s doubling",
// Lambda's own transient errors too, then catches every error per item,
// recorded with the item; Summarize invokes the function with the plan and
// the results; and no state says "ResultPath": "$".
func TestStateMachineShape(t *testing.T) {
	tpl := loadTemplate(t)
	sm := m(m(m(tpl["Resources"])["StateMachine"])["Properties"])
	if sm["DefinitionS3Location"] != "statemachine.asl.json" || sm["StateMachineType"] != "STANDARD" {
		t.Fatalf("state machine %v: want DefinitionS3Location statemachine.asl.json (packaged next to the template), STANDARD", sm)
	}
	if r, _ := roleOf(sm["RoleArn"]); r != "StateMachineRole" {
		t.Errorf("RoleArn %v: want the StateMachineRole", sm["RoleArn"])
	}
	subs := m(sm["DefinitionSubstitutions"])
	if fn, _ := roleOf(subs["FunctionArn"]); fn != "Function" || m(subs["MaxConcurrency"])["Ref"] != "MaxConcurrency" {
		t.Errorf("substitutions %v: want FunctionArn the function's ARN and MaxConcurrency the parameter", subs)
	}
	if p := m(m(tpl["Parameters"])["MaxConcurrency"]); p["MinValue"] != 1 || p["MaxValue"] == nil || p["Default"] != 8 {
		t.Errorf("MaxConcurrency parameter %v: want bounded, at least 1, default 8", p)
	}
	raw, err := os.ReadFile("statemachine.asl.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, ph := range regexp.MustCompile(`\$\{([^}]*)\}`).FindAllStringSubmatch(string(raw), -1) {
		if _, ok := subs[ph[1]]; !ok {
			t.Errorf("the definition's ${%s} has no substitution", ph[1])
		}
	}
	var def map[string]any
	if err := json.Unmarshal(raw, &def); err != nil {
		t.Fatalf("statemachine.asl.json: %v", err)
	}
	states := m(def["States"])
	promote := m(states["Promote"])
	if promote["Type"] != "Map" || promote["ItemsPath"] != "$.Plan.Items" || promote["MaxConcurrencyPath"] == nil {
		t.Fatalf("Promote state %v: want a Map over $.Plan.Items with a MaxConcurrencyPath", promote)
	}
	image := m(m(m(promote["ItemProcessor"])["States"])["PromoteImage"])
	var tasks int
	var walk func(map[string]any)
	walk = func(states map[string]any) {
		for name, st := range states {
			st := m(st)
			if st["Type"] == "Task" {
				tasks++
				if st["Resource"] != "${FunctionArn}" {
					t.Errorf("Task %s invokes %v, not the function", name, st["Resource"])
				}
			}
			if p := m(st["ItemProcessor"]); p != nil {
				walk(m(p["States"]))
			}
		}
	}
	walk(states)
	if tasks != 3 {
		t.Errorf("%d Task states, want 3 (plan, promote, summarize)", tasks)
	}
	retried := map[string]bool{}
	for _, r := range asList(image["Retry"]) {
		if b, _ := m(r)["BackoffRate"].(float64); b <= 1 {
			t.Errorf("retrier %v: want a backoff", r)
		}
		for _, e := range asStrings(m(r)["ErrorEquals"]) {
			retried[e] = true
		}
	}
	for _, e := range []string{"CopyFailed", "SourceFailed", "SigningFailed", "ReferrersFailed", "Timeout"} {
		if !retried[e] {
			t.Errorf("PromoteImage does not retry %s", e)
		}
	}
	for _, e := range []string{"SourceNotFound", "InvalidRequest", "Unauthorized", "TagImmutable", "PolicyRefused"} {
		if retried[e] {
			t.Errorf("PromoteImage retries %s, which no retry fixes", e)
		}
	}
	catch := asList(image["Catch"])
	if len(catch) != 1 || !slices.Equal(asStrings(m(catch[0])["ErrorEquals"]), []string{"States.ALL"}) || m(catch[0])["ResultPath"] != "$.Error" {
		t.Errorf("PromoteImage Catch %v: want every error caught into $.Error, so that one image does not fail the Map", catch)
	}

	// The retrier Step Functions applies to an error is the first that
	// names it (or States.ALL).
	retrier := func(st map[string]any, e string) map[string]any {
		for _, r := range asList(st["Retry"]) {
			if names := asStrings(m(r)["ErrorEquals"]); slices.Contains(names, e) || slices.Contains(names, "States.ALL") {
				return m(r)
			}
		}
		return nil
	}
	for _, e := range []string{"CopyFailed", "SourceFailed", "SigningFailed", "ReferrersFailed", "Timeout"} {
		r := retrier(image, e)
		if r["IntervalSeconds"] != 2.0 || r["MaxAttempts"] != 3.0 || r["BackoffRate"] != 2.0 {
			t.Errorf("PromoteImage retries %s with %v: want 3 times, 2 s doubling (IntervalSeconds 2, MaxAttempts 3, BackoffRate 2)", e, r)
		}
	}
	for _, e := range []string{"Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException", "Lambda.TooManyRequestsException"} {
		if r := retrier(image, e); r == nil || r["MaxAttempts"] == 0.0 {
			t.Errorf("PromoteImage does not retry Lambda's transient %s", e)
		}
	}
	// Caught, the item ends there, recorded with its error: the Map goes on.
	items := m(m(promote["ItemProcessor"])["States"])
	next, _ := m(catch[0])["Next"].(string)
	if rec := m(items[next]); rec["Type"] != "Pass" || rec["End"] != true || rec["ResultPath"] != nil || rec["OutputPath"] != nil {
		t.Errorf("PromoteImage's Catch goes to %q %v: want a Pass state that ends the item as it is (request and $.Error)", next, rec)
	}
	if mode := m(m(promote["ItemProcessor"])["ProcessorConfig"])["Mode"]; mode != "INLINE" || m(promote["ItemProcessor"])["StartAt"] != "PromoteImage" {
		t.Errorf("Promote's ItemProcessor %v: want an inline Map starting at PromoteImage", promote["ItemProcessor"])
	}

	// Plan, Promote, Summarize, each with what the README says it is given.
	plan, summarize := m(states["Plan"]), m(states["Summarize"])
	if def["StartAt"] != "Plan" || plan["Next"] != "Promote" || promote["Next"] != "Summarize" || summarize["End"] != true {
		t.Errorf("StartAt %v, Plan.Next %v, Promote.Next %v, Summarize.End %v: want Plan, Promote, Summarize, in that order", def["StartAt"], plan["Next"], promote["Next"], summarize["End"])
	}
	if p := m(plan["Parameters"]); len(p) != 1 || p["PromotionFile.$"] != "$.PromotionFile" {
		t.Errorf("Plan's Parameters %v: want the execution's PromotionFile alone (plan mode)", p)
	}
	if p := m(summarize["Parameters"]); len(p) != 2 || p["Plan.$"] != "$.Plan" || p["Results.$"] != "$.Results" || promote["ResultPath"] != "$.Results" {
		t.Errorf("Summarize's Parameters %v (Promote's ResultPath %v): want the plan and the Map's results", p, promote["ResultPath"])
	}
	// MaxConcurrency reaches the Map: Plan's ResultSelector sets, from the
	// substituted ${MaxConcurrency}, the field MaxConcurrencyPath reads.
	field, ok := strings.CutPrefix(fmt.Sprint(promote["MaxConcurrencyPath"]), "$.")
	if sel := m(plan["ResultSelector"]); !ok || sel[field+".$"] != "States.StringToJson('${MaxConcurrency}')" {
		t.Errorf("Promote's MaxConcurrencyPath %v, Plan's ResultSelector %v: want the path to name ${MaxConcurrency}, as a number", promote["MaxConcurrencyPath"], sel)
	}
	// The local engine reads "ResultPath": "$" as a key named "$".
	if strings.Contains(strings.Join(strings.Fields(string(raw)), ""), `"ResultPath":"$"`) {
		t.Errorf(`the definition says "ResultPath": "$"; leave it out (the default) where it means the whole state`)
	}
}

// baseTemplate is a small template the checker accepts; the self-tests add
// one violation each at EXTRA_STATEMENTS (in the role's inline policy) or
// EXTRA_RESOURCES.
const baseTemplate = `
AWSTemplateFormatVersion: "2010-09-09"
Parameters:
  FunctionName: {Type: String, Default: ocistow}
  KmsKeyArn: {Type: String}
  DestinationRepositories: {Type: CommaDelimitedList}
  Tracing: {Type: String, Default: PassThrough, AllowedValues: [Active, PassThrough]}
  Other: {Type: String, Default: kms:Decrypt}
Conditions:
  TracingOn: !Equals [!Ref Tracing, Active]
Resources:
  LogGroup:
    Type: AWS::Logs::LogGroup
    Properties:
      LogGroupName: !Sub /aws/lambda/${FunctionName}
  Function:
    Type: AWS::Lambda::Function
    Properties:
      FunctionName: !Ref FunctionName
      Role: !GetAtt Role.Arn
      LoggingConfig:
        LogGroup: !Ref LogGroup
  StateMachineRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {Service: states.amazonaws.com}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: fanout
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: lambda:InvokeFunction
                Resource: !GetAtt Function.Arn
  StateMachine:
    Type: AWS::StepFunctions::StateMachine
    Properties:
      RoleArn: !GetAtt StateMachineRole.Arn
      DefinitionS3Location: statemachine.asl.json
      DefinitionSubstitutions: {FunctionArn: !GetAtt Function.Arn}
  Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {Service: lambda.amazonaws.com}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: ocistow
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: [kms:Sign, kms:GetPublicKey, kms:DescribeKey]
                Resource: !Ref KmsKeyArn
              - Effect: Allow
                Action: ecr:GetAuthorizationToken
                Resource: "*"
              - Effect: Allow
                Action: [ecr:BatchGetImage, ecr:PutImage]
                Resource: !Split
                  - ","
                  - !Sub
                    - arn:*:ecr:*:*:repository/${Repos}
                    - Repos: !Join [",arn:*:ecr:*:*:repository/", !Ref DestinationRepositories]
              - Effect: Deny
                Action: [ecr:BatchGetImage, ecr:PutImage]
                NotResource: !Sub arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/*
              - Effect: Allow
                Action: [logs:CreateLogStream, logs:PutLogEvents]
                Resource: !Sub ${LogGroup.Arn}:*
              - !If
                - TracingOn
                - Effect: Allow
                  Action: [xray:PutTraceSegments, xray:PutTelemetryRecords]
                  Resource: "*"
                - !Ref AWS::NoValue
              - Effect: Deny
                NotAction: kms:Sign
                Resource: !Ref KmsKeyArn
EXTRA_STATEMENTS
EXTRA_RESOURCES
`

func withViolation(statements, resources string) string {
	s := strings.Replace(baseTemplate, "EXTRA_STATEMENTS\n", statements, 1)
	return strings.Replace(s, "EXTRA_RESOURCES\n", resources, 1)
}

// checkYAML runs the checker through the parser.
func checkYAML(t *testing.T, src string) []string {
	t.Helper()
	tpl, err := parseTemplate([]byte(src))
	if err != nil {
		return []string{"parse: " + err.Error()}
	}
	problems, _ := checkTemplate(tpl)
	return problems
}

func TestCheckerAcceptsTheBaseTemplate(t *testing.T) {
	if p := checkYAML(t, withViolation("", "")); len(p) > 0 {
		t.Fatalf("the self-tests' base template has problems:\n%s", strings.Join(p, "\n"))
	}
}

// stmt renders a statement for EXTRA_STATEMENTS: its first line, then the
// rest.
func stmt(lines ...string) string {
	const indent = "              "
	var b strings.Builder
	for i, l := range lines {
		if i == 0 {
			b.WriteString(indent + "- " + l + "\n")
		} else {
			b.WriteString(indent + "  " + l + "\n")
		}
	}
	return b.String()
}

// violation is one self-test of the checker: what is added to the base
// template, and what some problem must say.
type violation struct {
	name, statements, resources string
	want                        string
}

func violations() []violation {
	return []violation{
		{
			name: `Action "*" in a separate AWS::IAM::Policy`,
			resources: `  Extra:
    Type: AWS::IAM::Policy
    Properties:
      PolicyName: extra
      Roles: [!Ref Role]
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Action: "*"
            Resource: "*"
`,
			want: "wildcard action *",
		},
		{
			name: `Action "*" in an AWS::IAM::ManagedPolicy`,
			resources: `  Extra:
    Type: AWS::IAM::ManagedPolicy
    Properties:
      Roles: [!Ref Role]
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          Effect: Allow
          Action: ["*"]
          Resource: "*"
`,
			want: "wildcard action *",
		},
		{
			name: "a JSON policy document in an AWS::IAM::ManagedPolicy",
			resources: `  Extra:
    Type: AWS::IAM::ManagedPolicy
    Properties:
      PolicyDocument: '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "iam:PassRole", "Resource": "*"}]}'
`,
			want: "iam:PassRole is not an action the function needs",
		},
		{
			name: "an AWS managed policy on the role",
			resources: `  Extra:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement: [{Effect: Allow, Principal: {Service: lambda.amazonaws.com}, Action: sts:AssumeRole}]
      ManagedPolicyArns: [arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryPowerUser]
`,
			want: "AmazonEC2ContainerRegistryPowerUser is not in the checker's allow-list",
		},
		{
			name:       "a statement under Fn::If (the true branch)",
			statements: stmt("!If", "- TracingOn", "- {Effect: Allow, Action: s3:GetObject, Resource: '*'}", "- !Ref AWS::NoValue"),
			want:       "(TracingOn=true): s3:GetObject is not an action the function needs",
		},
		{
			name:       "a statement under Fn::If (the false branch)",
			statements: stmt("Fn::If:", "- TracingOn", "- !Ref AWS::NoValue", "- {Effect: Allow, Action: ecr:PutImage, Resource: '*'}"),
			want:       "(TracingOn=false): ecr:PutImage on *",
		},
		{
			name:       "a policy under Fn::If",
			statements: "",
			resources: `  Extra:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement: [{Effect: Allow, Principal: {Service: lambda.amazonaws.com}, Action: sts:AssumeRole}]
      Policies:
        - !If
          - TracingOn
          - !Ref AWS::NoValue
          - PolicyName: extra
            PolicyDocument: {Version: "2012-10-17", Statement: [{Effect: Allow, Action: "kms:*", Resource: "*"}]}
`,
			want: "wildcard action kms:*",
		},
		{
			name:       "signing with a source policy's key",
			statements: stmt("Effect: Allow", "Action: kms:Sign", "Resource: !Ref SourceKeyArns"),
			want:       "kms:Sign on arn:aws:kms:eu-west-1:222222222222:key/upstream-1: only on the KmsKeyArn parameter's key",
		},
		{
			name:       "X-Ray without tracing",
			statements: stmt("Effect: Allow", "Action: xray:PutTraceSegments", `Resource: "*"`),
			want:       "granted with Tracing=PassThrough",
		},
		{
			name:       "ecr:PutImage on repository/*",
			statements: stmt("Effect: Allow", "Action: ecr:PutImage", "Resource: !Sub arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/*"),
			want:       "ecr:PutImage on arn:aws:ecr:us-east-1:111111111111:repository/*",
		},
		{
			name:       "repositories named with wildcards, and no Deny to pin them",
			statements: stmt("Effect: Allow", "Action: ecr:UploadLayerPart", "Resource: arn:*:ecr:*:*:repository/base/busybox"),
			want:       "ecr:UploadLayerPart on arn:*:ecr:*:*:repository/base/busybox",
		},
		{
			name: "a Deny that pins nothing to the account",
			statements: stmt("Effect: Allow", "Action: ecr:UploadLayerPart", "Resource: arn:*:ecr:*:*:repository/base/busybox") +
				stmt("Effect: Deny", "Action: ecr:UploadLayerPart", "NotResource: arn:*:ecr:*:*:repository/*"),
			want: "ecr:UploadLayerPart on arn:*:ecr:*:*:repository/base/busybox",
		},
		{
			name: "a Deny that pins only under a condition",
			statements: stmt("Effect: Allow", "Action: ecr:UploadLayerPart", "Resource: arn:*:ecr:*:*:repository/base/busybox") +
				stmt("!If", "- TracingOn", "- {Effect: Deny, Action: ecr:UploadLayerPart, NotResource: !Sub 'arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/*'}", "- !Ref AWS::NoValue"),
			want: "ecr:UploadLayerPart on arn:*:ecr:*:*:repository/base/busybox",
		},
		{
			name:       "a Fn::Join delimiter that is a function (CloudFormation refuses it)",
			statements: stmt("Effect: Allow", "Action: ecr:PutImage", `Resource: !Split [",", !Join [!Sub ",arn:${AWS::Partition}:ecr:${AWS::Region}:${AWS::AccountId}:repository/", !Ref DestinationRepositories]]`),
			want:       "Fn::Join delimiter",
		},
		{
			name:       "ECR actions on another repository, upper case",
			statements: stmt("Effect: Allow", "Action: ECR:PUTIMAGE", "Resource: arn:aws:ecr:us-east-1:111111111111:repository/other"),
			want:       "ECR:PUTIMAGE on arn:aws:ecr:us-east-1:111111111111:repository/other",
		},
		{
			name:       "an Action that is a !Ref",
			statements: stmt("Effect: Allow", "Action: !Ref Other", "Resource: !Ref KmsKeyArn"),
			want:       "Action map[Ref:Other] is not a literal string",
		},
		{
			name:       "an Action that is a map",
			statements: stmt("Effect: Allow", "Action: [kms:Sign, {Fn::Join: ['', [kms, ':*']]}]", "Resource: !Ref KmsKeyArn"),
			want:       "is not a literal string",
		},
		{
			name:       "NotAction",
			statements: stmt("Effect: Allow", "NotAction: iam:*", `Resource: "*"`),
			want:       "NotAction",
		},
		{
			name:       "Effect Allow with NotResource",
			statements: stmt("Effect: Allow", "Action: kms:Sign", "NotResource: !Ref KmsKeyArn"),
			want:       "NotResource",
		},
		{
			name:       "KMS on every key",
			statements: stmt("Effect: Allow", "Action: kms:Sign", `Resource: "*"`),
			want:       "kms:Sign on *",
		},
		{
			name:       "a KMS action the function does not need",
			statements: stmt("Effect: Allow", "Action: kms:Decrypt", "Resource: !Ref KmsKeyArn"),
			want:       "kms:Decrypt is not an action the function needs",
		},
		{
			name:       "logs on another log group",
			statements: stmt("Effect: Allow", "Action: logs:PutLogEvents", "Resource: arn:aws:logs:us-east-1:111111111111:log-group:/aws/lambda/other:*"),
			want:       "logs:PutLogEvents on arn:aws:logs:us-east-1:111111111111:log-group:/aws/lambda/other:*",
		},
		{
			name:       "a Resource the checker cannot evaluate",
			statements: stmt("Effect: Allow", "Action: kms:Sign", "Resource: !ImportValue shared-key"),
			want:       "cannot evaluate Fn::ImportValue",
		},
		{
			name:       "a statement that is not a mapping",
			statements: stmt("kms:Sign"),
			want:       "statement is not a mapping",
		},
		{
			name:       "a duplicate key",
			statements: stmt("Effect: Allow", "Action: kms:Sign", "Resource: !Ref KmsKeyArn", `Resource: "*"`),
			want:       `duplicate key "Resource"`,
		},
		{
			name:       "an unknown statement key",
			statements: stmt("Effect: Allow", "Action: kms:Sign", "Resource: !Ref KmsKeyArn", "Principal: '*'"),
			want:       `unknown key "Principal"`,
		},
		{
			name: "a KMS key policy open to anyone",
			resources: `  Key:
    Type: AWS::KMS::Key
    Properties:
      KeyPolicy:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {AWS: "*"}
            Action: kms:Sign
            Resource: "*"
`,
			want: "grants to anyone",
		},
		{
			name: "a resource type the checker does not know",
			resources: `  Bucket:
    Type: AWS::S3::BucketPolicy
    Properties:
      Bucket: b
      PolicyDocument: {Version: "2012-10-17", Statement: [{Effect: Allow, Principal: "*", Action: "s3:*", Resource: "*"}]}
`,
			want: `type "AWS::S3::BucketPolicy": the checker does not know what it grants`,
		},
		{
			name: "a role anyone may assume",
			resources: `  Extra:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement: [{Effect: Allow, Principal: {AWS: "*"}, Action: sts:AssumeRole}]
`,
			want: "only lambda.amazonaws.com may assume the function's role",
		},
	}
}

// stateMachinePolicy renders an AWS::IAM::Policy on the state machine's
// role with one statement.
func stateMachinePolicy(statement string) string {
	return `  Extra:
    Type: AWS::IAM::Policy
    Properties:
      PolicyName: extra
      Roles: [!Ref StateMachineRole]
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - ` + statement + "\n"
}

func stateMachineViolations() []violation {
	return []violation{
		{
			name:      "a wildcard lambda:InvokeFunction for the state machine",
			resources: stateMachinePolicy(`{Effect: Allow, Action: lambda:InvokeFunction, Resource: "*"}`),
			want:      "lambda:InvokeFunction on *: only on the function's own ARN arn:aws:lambda:us-east-1:111111111111:function:ocistow",
		},
		{
			name:      "lambda:InvokeFunction on every function of the account",
			resources: stateMachinePolicy(`{Effect: Allow, Action: lambda:InvokeFunction, Resource: !Sub "arn:${AWS::Partition}:lambda:${AWS::Region}:${AWS::AccountId}:function:*"}`),
			want:      "lambda:InvokeFunction on arn:aws:lambda:us-east-1:111111111111:function:*",
		},
		{
			name:      "lambda:InvokeFunction on a version or alias of the function",
			resources: stateMachinePolicy(`{Effect: Allow, Action: lambda:InvokeFunction, Resource: !Sub "${Function.Arn}:*"}`),
			want:      "lambda:InvokeFunction on arn:aws:lambda:us-east-1:111111111111:function:ocistow:*",
		},
		{
			name:      "lambda:* for the state machine",
			resources: stateMachinePolicy(`{Effect: Allow, Action: "lambda:*", Resource: !GetAtt Function.Arn}`),
			want:      "wildcard action lambda:*",
		},
		{
			name:      "the state machine's role signing",
			resources: stateMachinePolicy(`{Effect: Allow, Action: kms:Sign, Resource: !Ref KmsKeyArn}`),
			want:      "kms:Sign is not an action the state machine needs",
		},
		{
			name:       "the function invoking itself",
			statements: stmt("Effect: Allow", "Action: lambda:InvokeFunction", "Resource: !GetAtt Function.Arn"),
			want:       "lambda:InvokeFunction is not an action the function needs",
		},
		{
			name: "a state machine role that Lambda may assume",
			resources: `  Extra:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement: [{Effect: Allow, Principal: {Service: lambda.amazonaws.com}, Action: sts:AssumeRole}]
  ExtraMachine:
    Type: AWS::StepFunctions::StateMachine
    Properties:
      RoleArn: !GetAtt Extra.Arn
`,
			want: "only states.amazonaws.com may assume the state machine's role",
		},
		{
			name: "a state machine whose role the checker cannot tell",
			resources: `  ExtraMachine:
    Type: AWS::StepFunctions::StateMachine
    Properties:
      RoleArn: arn:aws:iam::111111111111:role/admin
`,
			want: "is not Fn::GetAtt [ROLE, Arn] of a role of the template",
		},
		{
			name: "a state machine that logs (its role would need logs permissions)",
			resources: `  ExtraMachine:
    Type: AWS::StepFunctions::StateMachine
    Properties:
      RoleArn: !GetAtt StateMachineRole.Arn
      LoggingConfiguration: {Level: ALL}
`,
			want: `unknown key "LoggingConfiguration"`,
		},
	}
}

// The checker must catch what it exists to catch, read from YAML as the
// real template is.
func TestLeastPrivilegeCheckerCatchesGrants(t *testing.T) {
	for _, tc := range append(violations(), stateMachineViolations()...) {
		t.Run(tc.name, func(t *testing.T) {
			problems := checkYAML(t, withViolation(tc.statements, tc.resources))
			if len(problems) == 0 {
				t.Fatalf("checker accepted:\n%s%s", tc.statements, tc.resources)
			}
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, tc.want) }) {
				t.Errorf("no problem says %q:\n%s", tc.want, strings.Join(problems, "\n"))
			}
		})
	}
}

func TestFunctionShape(t *testing.T) {
	tpl := loadTemplate(t)
	fn := m(m(m(tpl["Resources"])["Function"])["Properties"])
	if fn["Runtime"] != "provided.al2023" || fn["Handler"] != "bootstrap" || !slices.Equal(asStrings(fn["Architectures"]), []string{"arm64"}) {
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
	if m(m(fn["TracingConfig"])["Mode"])["Ref"] != "Tracing" {
		t.Errorf("tracing mode %v: want the Tracing parameter", m(fn["TracingConfig"])["Mode"])
	}
}

// delimited checks the arguments of Fn::Join and Fn::Split, a delimiter
// and a value, and returns the delimiter: CloudFormation takes only a
// literal string there.
func delimited(fn string, arg any, args []any) (string, error) {
	if len(args) != 2 {
		return "", fmt.Errorf("%s %v", fn, arg)
	}
	delim, ok := args[0].(string)
	if !ok {
		return "", fmt.Errorf("%s delimiter %v: CloudFormation takes no function there, only a literal string", fn, args[0])
	}
	return delim, nil
}

// functionEnvironment evaluates the function's environment variables as
// CloudFormation would with the parameters in set (the sample values and
// defaults for the others): an Fn::If follows its condition, and a
// variable that comes to AWS::NoValue is not set.
func (c *checker) functionEnvironment(set map[string]any) (map[string]string, error) {
	fn, problem := c.function()
	if problem != "" {
		return nil, errors.New(problem)
	}
	with := *c
	with.params = maps.Clone(c.params)
	maps.Copy(with.params, set)
	assume := map[string]bool{}
	for name := range c.conditions {
		v, err := c.condition(name, set, 0)
		if err != nil {
			return nil, fmt.Errorf("condition %s: %w", name, err)
		}
		assume[name] = v
	}
	vars := m(m(m(c.resources[fn]["Properties"])["Environment"])["Variables"])
	if vars == nil {
		return nil, fmt.Errorf("function %s has no Environment.Variables", fn)
	}
	out := map[string]string{}
	for name, v := range vars {
		for {
			args, isIf := m(v)["Fn::If"].([]any)
			if !isIf {
				break
			}
			if len(args) != 3 {
				return nil, fmt.Errorf("%s: Fn::If %v", name, args)
			}
			cond, _ := args[0].(string)
			val, known := assume[cond]
			if !known {
				return nil, fmt.Errorf("%s: Fn::If on unknown condition %v", name, args[0])
			}
			v = args[2]
			if val {
				v = args[1]
			}
		}
		if isNoValue(v) {
			continue
		}
		e, err := with.eval(v, assume)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		str, ok := e.(string)
		if !ok {
			return nil, fmt.Errorf("%s is %v, not a string", name, e)
		}
		out[name] = str
	}
	return out, nil
}

// TestFunctionEnvironment holds README's "the environment
// (AWS_KMS_KEY_ARN, AWS_XRAY, JOBS, and SOURCE_KEY when SOURCE_KEY_ARNS
// names the KMS keys of a source policy)" and, under Configuration, "The
// template's SourceKeyArns parameter sets SOURCE_KEY and lets the role read
// those keys' public halves": the environment, evaluated as CloudFormation
// would for the parameters' defaults and for tracing on with source keys,
// is exactly those variables, and the role may read the source keys' public
// halves only when they are given.
func TestFunctionEnvironment(t *testing.T) {
	tpl := loadTemplate(t)
	ck := newChecker(tpl)
	_, allows := checkTemplate(tpl)
	noKeys := []string{""} // what CloudFormation makes of a CommaDelimitedList's empty default
	sourceKeys := strings.Join(sampleSourceKeys(), ",")
	for _, tc := range []struct {
		name string
		set  map[string]any
		want map[string]string
	}{
		{"defaults", map[string]any{"SourceKeyArns": noKeys},
			map[string]string{"AWS_KMS_KEY_ARN": sampleKey, "AWS_XRAY": "false", "JOBS": ""}},
		{"source keys", map[string]any{"SourceKeyArns": sampleSourceKeys()},
			map[string]string{"AWS_KMS_KEY_ARN": sampleKey, "AWS_XRAY": "false", "JOBS": "", "SOURCE_KEY": sourceKeys}},
		{"tracing and jobs", map[string]any{"Tracing": "Active", "Jobs": "6", "SourceKeyArns": noKeys},
			map[string]string{"AWS_KMS_KEY_ARN": sampleKey, "AWS_XRAY": "true", "JOBS": "6"}},
		{"tracing, jobs and source keys", map[string]any{"Tracing": "Active", "Jobs": "6", "SourceKeyArns": sampleSourceKeys()},
			map[string]string{"AWS_KMS_KEY_ARN": sampleKey, "AWS_XRAY": "true", "JOBS": "6", "SOURCE_KEY": sourceKeys}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env, err := ck.functionEnvironment(tc.set)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(env, tc.want) {
				t.Errorf("environment %v, want %v", env, tc.want)
			}
			// The role reads the source keys' public halves (and signs
			// with none of them) only when they are given.
			granted := map[string][]string{}
			for _, st := range allows {
				if st.role != roleFunction || !ck.applies(st, tc.set) {
					continue
				}
				res, _ := ck.resourcesOf(st)
				acts, _ := ck.actions(st)
				for _, a := range acts {
					granted[strings.ToLower(a)] = append(granted[strings.ToLower(a)], res...)
				}
			}
			given := tc.want["SOURCE_KEY"] != ""
			for _, k := range sampleSourceKeys() {
				for _, a := range []string{"kms:GetPublicKey", "kms:DescribeKey", "kms:Sign"} {
					want := given && a != "kms:Sign"
					if got := slices.Contains(granted[strings.ToLower(a)], k); got != want {
						t.Errorf("%s on source key %s granted: %v, want %v", a, k, got, want)
					}
				}
			}
		})
	}
}

// TestFunctionLogGroup holds README's "It creates the arm64 function …,
// its log group": the function logs to a log group the stack creates, the
// one Lambda would name for it, which its role may write to.
func TestFunctionLogGroup(t *testing.T) {
	tpl := loadTemplate(t)
	ck := newChecker(tpl)
	fn := m(m(m(tpl["Resources"])["Function"])["Properties"])
	ref, _ := m(m(fn["LoggingConfig"])["LogGroup"])["Ref"].(string)
	if ref == "" || ck.resources[ref]["Type"] != "AWS::Logs::LogGroup" {
		t.Fatalf("the function's LoggingConfig.LogGroup %v: want a Ref to the stack's AWS::Logs::LogGroup", m(fn["LoggingConfig"])["LogGroup"])
	}
	if got, want := ck.functionLogGroup(), "/aws/lambda/ocistow"; got != want {
		t.Errorf("the function logs to %s, want %s (Lambda's name for the function's group)", got, want)
	}
}

// TestStackOutputs holds README's "The stack's outputs name both" (the
// function and the state machine), and the Step Functions section's "the
// stack's StateMachineArn output".
func TestStackOutputs(t *testing.T) {
	tpl := loadTemplate(t)
	out := m(tpl["Outputs"])
	if fn, _ := roleOf(m(out["FunctionArn"])["Value"]); fn != "Function" || m(m(tpl["Resources"])["Function"])["Type"] != "AWS::Lambda::Function" {
		t.Errorf("output FunctionArn %v: want the function's ARN (Fn::GetAtt [Function, Arn])", out["FunctionArn"])
	}
	if sm := m(m(out["StateMachineArn"])["Value"])["Ref"]; sm != "StateMachine" || m(m(tpl["Resources"])["StateMachine"])["Type"] != "AWS::StepFunctions::StateMachine" {
		t.Errorf("output StateMachineArn %v: want the state machine's ARN (Ref StateMachine)", out["StateMachineArn"])
	}
}

// TestTemplateDeploysTheZipMakeLambdaBuilds holds README's "make lambda #
// dist/ocistow-lambda-arm64.zip and dist/ocistow-lambda-x86_64.zip" and
// that the template creates "the arm64 function" from what it builds: the
// Makefile's lambda recipe (as `make -n` prints it) runs in a scratch
// directory with stand-ins for go (which records how it was asked to
// build) and zip, and the function's Code path, resolved from deploy/,
// is the zip the recipe wrote with the GOARCH=arm64 build in it.
func TestTemplateDeploysTheZipMakeLambdaBuilds(t *testing.T) {
	recipe, err := exec.Command("make", "-s", "-n", "--no-print-directory", "-C", "..", "lambda", "GO=go").Output()
	if err != nil {
		t.Fatalf("make -n lambda: %v", err)
	}
	bin, work := t.TempDir(), t.TempDir()
	for name, script := range map[string]string{
		// go build -o OUT …: OUT records the environment and arguments.
		"go": "#!/bin/sh\nout=; prev=\nfor a in \"$@\"; do [ \"$prev\" = -o ] && out=$a; prev=$a; done\n" +
			"echo \"GOOS=$GOOS GOARCH=$GOARCH CGO_ENABLED=$CGO_ENABLED $*\" > \"$out\"\n",
		// zip [-options] OUT FILE…: OUT holds the files.
		"zip": "#!/bin/sh\nwhile [ \"${1#-}\" != \"$1\" ]; do shift; done\nout=$1; shift\ncat \"$@\" > \"$out\"\n",
	} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("sh", "-c", string(recipe))
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the lambda recipe: %v\n%s", err, out)
	}
	built := map[string]string{} // zip path, from the repository's root -> its build
	zips, err := filepath.Glob(filepath.Join(work, "dist", "*.zip"))
	if err != nil {
		t.Fatal(err)
	}
	for _, z := range zips {
		b, err := os.ReadFile(z)
		if err != nil {
			t.Fatal(err)
		}
		rel, _ := filepath.Rel(work, z)
		built[filepath.ToSlash(rel)] = string(b)
	}
	for zip, arch := range map[string]string{"dist/ocistow-lambda-arm64.zip": "arm64", "dist/ocistow-lambda-x86_64.zip": "amd64"} {
		b := built[zip]
		for _, want := range []string{"GOOS=linux GOARCH=" + arch + " CGO_ENABLED=0 ", "-tags lambda.norpc", "./cmd/ocistow-lambda"} {
			if !strings.Contains(b, want) {
				t.Errorf("%s holds %q, want a build with %q (zips: %v)", zip, b, want, slices.Collect(maps.Keys(built)))
			}
		}
	}
	fn := m(m(m(loadTemplate(t)["Resources"])["Function"])["Properties"])
	code, _ := fn["Code"].(string)
	deployed := filepath.ToSlash(filepath.Clean(filepath.Join("deploy", code)))
	if !strings.Contains(built[deployed], "GOARCH=arm64 ") || !slices.Equal(asStrings(fn["Architectures"]), []string{"arm64"}) {
		t.Errorf("the function's Code %q (%s from the root), architectures %v: want the arm64 zip make lambda builds (%v)", code, deployed, fn["Architectures"], slices.Collect(maps.Keys(built)))
	}
}
