// Package localstack holds the LocalStack setup of certfleet (docker-compose.yml
// and the init script under init/ready.d) and, in this test, the check that
// keeps it in step with template.yaml and app.Tables.
//
// The drift test reads three descriptions of the same resources:
//
//   - template.yaml (AWS SAM), parsed with yaml.v3 as a node tree so that the
//     CloudFormation short tags (!Sub, !Ref, !GetAtt, ...) survive;
//   - init/ready.d/01-certfleet.sh, split into simple commands by a small
//     bash word splitter; its header documents the command format it expects;
//   - app.Tables, the Go list of tables.
//
// It reduces each to the same model (tables with billing mode, attribute
// types, key schema, indexes and TTL attribute; queues with visibility
// timeout, retention and redrive policy) and reports every difference. It
// also checks invariants of the template alone: runtime and architecture,
// build method, least-privilege policies, queue visibility against the
// worker timeout, retained tables.
package localstack

import (
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/certfleet/certfleet/shared/app"
	"github.com/certfleet/certfleet/shared/store"
)

const (
	templatePath   = "../template.yaml"
	initScriptPath = "init/ready.d/01-certfleet.sh"
	composePath    = "docker-compose.yml"

	templateSrc = "template.yaml"
	scriptSrc   = "init script"
	appSrc      = "app.Tables"
)

// Values every function must have, through Globals.
const (
	wantRuntime      = "provided.al2023"
	wantArchitecture = "arm64"
	wantHandler      = "bootstrap"
	wantBuildMethod  = "makefile"
	// A queue that feeds a function must stay invisible for at least this
	// many times the function's timeout (the AWS guidance for SQS sources).
	visibilityFactor = 6
)

// Environment variables every function gets from Globals.
var wantEnv = []string{
	"CERTFLEET_TABLE_PREFIX",
	"CERTFLEET_ISSUANCE_QUEUE_URL",
	"CERTFLEET_ISSUANCE_DLQ_URL",
	"CERTFLEET_KMS_KEY_ID",
	"CERTFLEET_LOG_FORMAT",
	"CERTFLEET_PUBLIC_URL",
	"CERTFLEET_SMTP_HOST",
	"CERTFLEET_SMTP_PORT",
	"CERTFLEET_SMTP_USERNAME",
	"CERTFLEET_SMTP_FROM",
	"CERTFLEET_SMTP_PASSWORD_SSM",
}

// ttlAttribute is the attribute every table expires items by: the store
// keeps an item's expiry in it (shared/store/dynamo).
const ttlAttribute = "ttl"

// CloudFormation / SQS / DynamoDB defaults for properties left out.
const (
	defaultVisibility    = 30
	defaultRetention     = 345600
	defaultBilling       = "PROVISIONED"
	defaultLambdaTimeout = 3
)

// ----------------------------------------------------------------- model ----

type keySchema struct{ Hash, Range string }

func (k keySchema) String() string {
	if k.Range == "" {
		return fmt.Sprintf("HASH %s", k.Hash)
	}
	return fmt.Sprintf("HASH %s, RANGE %s", k.Hash, k.Range)
}

type indexDef struct {
	Keys       keySchema
	Projection string
}

type tableDef struct {
	Billing string
	Attrs   map[string]string // attribute name -> type (S, N, B)
	Keys    keySchema
	Indexes map[string]indexDef
	TTL     string // the attribute TTL is enabled on, "" if disabled
}

type queueDef struct {
	VisibilityTimeout int
	Retention         int
	DeadLetter        string // logical name of the dead-letter queue, "" if none
	MaxReceiveCount   int
}

type infra struct {
	Tables map[string]tableDef // by logical name (physical name minus prefix)
	Queues map[string]queueDef
}

func newInfra() infra {
	return infra{Tables: map[string]tableDef{}, Queues: map[string]queueDef{}}
}

// expectedTables is what app.Tables says: keys pk/sk, index X with keys
// Xpk/Xsk projecting ALL, every key a string, on-demand billing, TTL on
// attribute ttl.
func expectedTables(specs []store.TableSpec) (map[string]tableDef, []string) {
	var problems []string
	out := map[string]tableDef{}
	for _, s := range specs {
		if _, dup := out[s.Name]; dup {
			problems = append(problems, fmt.Sprintf("%s: table %q listed twice", appSrc, s.Name))
		}
		t := tableDef{
			Billing: "PAY_PER_REQUEST",
			Attrs:   map[string]string{"pk": "S", "sk": "S"},
			Keys:    keySchema{"pk", "sk"},
			Indexes: map[string]indexDef{},
			TTL:     ttlAttribute,
		}
		for _, ix := range s.Indexes {
			t.Attrs[ix+"pk"] = "S"
			t.Attrs[ix+"sk"] = "S"
			t.Indexes[ix] = indexDef{Keys: keySchema{ix + "pk", ix + "sk"}, Projection: "ALL"}
		}
		out[s.Name] = t
	}
	return out, problems
}

// ------------------------------------------------------------ comparison ----

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func diffTables(aName string, a map[string]tableDef, bName string, b map[string]tableDef) []string {
	out := onlyIn("table", aName, a, bName, b)
	for _, name := range sortedKeys(a) {
		ta, tb := a[name], b[name]
		if _, ok := b[name]; !ok {
			continue
		}
		differ := func(what string, va, vb any) {
			out = append(out, fmt.Sprintf("table %q: %s is %v in %s but %v in %s", name, what, va, aName, vb, bName))
		}
		if ta.Billing != tb.Billing {
			differ("billing mode", ta.Billing, tb.Billing)
		}
		if ta.Keys != tb.Keys {
			differ("key schema", ta.Keys, tb.Keys)
		}
		if ta.TTL != tb.TTL {
			differ("time to live attribute", orNone(ta.TTL), orNone(tb.TTL))
		}
		for _, attr := range sortedKeys(ta.Attrs) {
			if ta.Attrs[attr] != tb.Attrs[attr] {
				differ(fmt.Sprintf("attribute %q type", attr), orNone(ta.Attrs[attr]), orNone(tb.Attrs[attr]))
			}
		}
		for _, attr := range sortedKeys(tb.Attrs) {
			if _, ok := ta.Attrs[attr]; !ok {
				differ(fmt.Sprintf("attribute %q type", attr), "(none)", tb.Attrs[attr])
			}
		}
		for _, ix := range sortedKeys(ta.Indexes) {
			ia, ib := ta.Indexes[ix], tb.Indexes[ix]
			if _, ok := tb.Indexes[ix]; !ok {
				out = append(out, fmt.Sprintf("table %q: index %q is in %s but not in %s", name, ix, aName, bName))
				continue
			}
			if ia.Keys != ib.Keys {
				differ(fmt.Sprintf("index %q key schema", ix), ia.Keys, ib.Keys)
			}
			if ia.Projection != ib.Projection {
				differ(fmt.Sprintf("index %q projection", ix), ia.Projection, ib.Projection)
			}
		}
		for _, ix := range sortedKeys(tb.Indexes) {
			if _, ok := ta.Indexes[ix]; !ok {
				out = append(out, fmt.Sprintf("table %q: index %q is in %s but not in %s", name, ix, bName, aName))
			}
		}
	}
	return out
}

// onlyIn reports each name that is in one of a and b but not the other.
func onlyIn[V any](kind, aName string, a map[string]V, bName string, b map[string]V) []string {
	var out []string
	for _, name := range sortedKeys(a) {
		if _, ok := b[name]; !ok {
			out = append(out, fmt.Sprintf("%s %q is in %s but not in %s", kind, name, aName, bName))
		}
	}
	for _, name := range sortedKeys(b) {
		if _, ok := a[name]; !ok {
			out = append(out, fmt.Sprintf("%s %q is in %s but not in %s", kind, name, bName, aName))
		}
	}
	return out
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

func diffQueues(aName string, a map[string]queueDef, bName string, b map[string]queueDef) []string {
	out := onlyIn("queue", aName, a, bName, b)
	for _, name := range sortedKeys(a) {
		qa, qb := a[name], b[name]
		if _, ok := b[name]; !ok {
			continue
		}
		differ := func(what string, va, vb any) {
			out = append(out, fmt.Sprintf("queue %q: %s is %v in %s but %v in %s", name, what, va, aName, vb, bName))
		}
		if qa.VisibilityTimeout != qb.VisibilityTimeout {
			differ("visibility timeout", qa.VisibilityTimeout, qb.VisibilityTimeout)
		}
		if qa.Retention != qb.Retention {
			differ("message retention period", qa.Retention, qb.Retention)
		}
		if qa.DeadLetter != qb.DeadLetter {
			differ("dead-letter queue", orNone(qa.DeadLetter), orNone(qb.DeadLetter))
		}
		if qa.MaxReceiveCount != qb.MaxReceiveCount {
			differ("maxReceiveCount", qa.MaxReceiveCount, qb.MaxReceiveCount)
		}
	}
	return out
}

// queueInvariants: a redrive target exists, and keeps messages at least as
// long as its source (SQS keeps a message's original enqueue time when it
// moves it, so a shorter-lived dead-letter queue would drop it early).
func queueInvariants(src string, qs map[string]queueDef) []string {
	var out []string
	for _, name := range sortedKeys(qs) {
		q := qs[name]
		if q.DeadLetter == "" {
			continue
		}
		dlq, ok := qs[q.DeadLetter]
		switch {
		case !ok:
			out = append(out, fmt.Sprintf("%s: queue %q redrives to %q, which it does not declare", src, name, q.DeadLetter))
		case dlq.Retention < q.Retention:
			out = append(out, fmt.Sprintf("%s: dead-letter queue %q keeps messages %d s, less than its source %q (%d s)",
				src, q.DeadLetter, dlq.Retention, name, q.Retention))
		}
		if q.MaxReceiveCount < 1 {
			out = append(out, fmt.Sprintf("%s: queue %q has a redrive policy without a maxReceiveCount", src, name))
		}
	}
	return out
}

// driftProblems is the whole check: parse both files, compare them with each
// other and with tables, and check the template's own invariants. It returns
// one line per problem; none means no drift.
func driftProblems(templateText, scriptText []byte, tables []store.TableSpec) []string {
	var problems []string
	tpl, err := parseTemplate(templateText)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", templateSrc, err)}
	}
	tplInfra, p := tpl.infra()
	problems = append(problems, p...)
	problems = append(problems, tpl.invariants()...)

	scrInfra, p := parseInitScript(string(scriptText))
	problems = append(problems, p...)

	want, p := expectedTables(tables)
	problems = append(problems, p...)

	problems = append(problems, diffTables(templateSrc, tplInfra.Tables, scriptSrc, scrInfra.Tables)...)
	problems = append(problems, diffQueues(templateSrc, tplInfra.Queues, scriptSrc, scrInfra.Queues)...)
	problems = append(problems, diffTables(appSrc, want, templateSrc, tplInfra.Tables)...)
	problems = append(problems, diffTables(appSrc, want, scriptSrc, scrInfra.Tables)...)
	problems = append(problems, queueInvariants(templateSrc, tplInfra.Queues)...)
	problems = append(problems, queueInvariants(scriptSrc, scrInfra.Queues)...)
	return problems
}

// ------------------------------------------------------ template parsing ----

// resolve follows documents and aliases to the node that holds the value.
func resolve(n *yaml.Node) *yaml.Node {
	for n != nil {
		switch n.Kind {
		case yaml.DocumentNode:
			if len(n.Content) == 0 {
				return nil
			}
			n = n.Content[0]
		case yaml.AliasNode:
			n = n.Alias
		default:
			return n
		}
	}
	return nil
}

// get returns the value under key in a mapping node, or nil.
func get(n *yaml.Node, keys ...string) *yaml.Node {
	for _, key := range keys {
		n = resolve(n)
		if n == nil || n.Kind != yaml.MappingNode {
			return nil
		}
		var next *yaml.Node
		for i := 0; i+1 < len(n.Content); i += 2 {
			if n.Content[i].Value == key {
				next = n.Content[i+1]
				break
			}
		}
		if next == nil {
			return nil
		}
		n = next
	}
	return resolve(n)
}

// pairs returns the key/value pairs of a mapping node in document order.
func pairs(n *yaml.Node) [][2]*yaml.Node {
	n = resolve(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	var out [][2]*yaml.Node
	for i := 0; i+1 < len(n.Content); i += 2 {
		out = append(out, [2]*yaml.Node{n.Content[i], resolve(n.Content[i+1])})
	}
	return out
}

// items returns the elements of a sequence node, or the node itself when it
// is a single value (CloudFormation accepts both for Action and Resource).
func items(n *yaml.Node) []*yaml.Node {
	n = resolve(n)
	if n == nil {
		return nil
	}
	if n.Kind == yaml.SequenceNode && !isIntrinsicTag(n.Tag) {
		out := make([]*yaml.Node, 0, len(n.Content))
		for _, c := range n.Content {
			out = append(out, resolve(c))
		}
		return out
	}
	return []*yaml.Node{n}
}

func isIntrinsicTag(tag string) bool {
	return strings.HasPrefix(tag, "!") && !strings.HasPrefix(tag, "!!")
}

// str returns a plain scalar's value; false for intrinsics and collections.
func str(n *yaml.Node) (string, bool) {
	n = resolve(n)
	if n == nil || n.Kind != yaml.ScalarNode || isIntrinsicTag(n.Tag) {
		return "", false
	}
	return n.Value, true
}

func integer(n *yaml.Node) (int, bool) {
	s, ok := str(n)
	if !ok {
		return 0, false
	}
	v, err := strconv.Atoi(s)
	return v, err == nil
}

// intrinsic recognises a CloudFormation function in short form (!Sub x) or
// long form ({"Fn::Sub": x}) and returns its full name ("Ref", "Fn::Sub",
// "Fn::GetAtt", ...) and its argument as an untagged node.
func intrinsic(n *yaml.Node) (string, *yaml.Node, bool) {
	n = resolve(n)
	if n == nil {
		return "", nil, false
	}
	if isIntrinsicTag(n.Tag) {
		name := n.Tag[1:]
		if name != "Ref" && name != "Condition" {
			name = "Fn::" + name
		}
		arg := *n
		switch arg.Kind {
		case yaml.ScalarNode:
			arg.Tag = "!!str"
		case yaml.SequenceNode:
			arg.Tag = "!!seq"
		case yaml.MappingNode:
			arg.Tag = "!!map"
		}
		return name, &arg, true
	}
	if n.Kind == yaml.MappingNode && len(n.Content) == 2 {
		k := n.Content[0].Value
		if k == "Ref" || strings.HasPrefix(k, "Fn::") {
			return k, resolve(n.Content[1]), true
		}
	}
	return "", nil, false
}

// getAttOf returns X and Attr for !GetAtt X.Attr or !GetAtt [X, Attr].
func getAttOf(n *yaml.Node) (string, string, bool) {
	fn, arg, ok := intrinsic(n)
	if !ok || fn != "Fn::GetAtt" {
		return "", "", false
	}
	if s, ok := str(arg); ok {
		id, attr, found := strings.Cut(s, ".")
		return id, attr, found
	}
	if parts := items(arg); len(parts) == 2 {
		id, ok1 := str(parts[0])
		attr, ok2 := str(parts[1])
		return id, attr, ok1 && ok2
	}
	return "", "", false
}

// subOf returns the template string of !Sub, and the names of its local
// variables when the list form is used.
func subOf(n *yaml.Node) (string, *yaml.Node, bool) {
	fn, arg, ok := intrinsic(n)
	if !ok || fn != "Fn::Sub" {
		return "", nil, false
	}
	if s, ok := str(arg); ok {
		return s, nil, true
	}
	if parts := items(arg); len(parts) == 2 {
		s, ok := str(parts[0])
		return s, parts[1], ok
	}
	return "", nil, false
}

var subVar = regexp.MustCompile(`\$\{([^!}][^}]*)\}`)

// refsIn collects the logical IDs that n refers to through Ref, GetAtt and
// Sub (pseudo parameters such as AWS::Region are left out).
func refsIn(n *yaml.Node) []string {
	var out []string
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		n = resolve(n)
		if n == nil {
			return
		}
		if fn, arg, ok := intrinsic(n); ok {
			switch fn {
			case "Ref":
				if id, ok := str(arg); ok && !strings.HasPrefix(id, "AWS::") {
					out = append(out, id)
				}
				return
			case "Fn::GetAtt":
				if id, _, ok := getAttOf(n); ok {
					out = append(out, id)
				}
				return
			case "Fn::Sub":
				s, vars, ok := subOf(n)
				if !ok {
					break
				}
				local := map[string]bool{}
				for _, kv := range pairs(vars) {
					local[kv[0].Value] = true
					walk(kv[1])
				}
				for _, m := range subVar.FindAllStringSubmatch(s, -1) {
					id, _, _ := strings.Cut(m[1], ".")
					if !strings.HasPrefix(id, "AWS::") && !local[id] {
						out = append(out, id)
					}
				}
				return
			}
			walk(arg)
			return
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(n)
	return out
}

type cfnTemplate struct {
	resources  map[string]*yaml.Node // logical ID -> resource mapping
	parameters map[string]*yaml.Node // name -> parameter mapping
	conditions map[string]bool       // names of Conditions
	globalFn   *yaml.Node            // Globals.Function, may be nil
}

func parseTemplate(src []byte) (*cfnTemplate, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	root := resolve(&doc)
	if root == nil || root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("not a mapping")
	}
	t := &cfnTemplate{resources: map[string]*yaml.Node{}, parameters: map[string]*yaml.Node{},
		conditions: map[string]bool{}, globalFn: get(root, "Globals", "Function")}
	res := get(root, "Resources")
	if res == nil {
		return nil, fmt.Errorf("no Resources")
	}
	for _, kv := range pairs(res) {
		t.resources[kv[0].Value] = kv[1]
	}
	for _, kv := range pairs(get(root, "Parameters")) {
		t.parameters[kv[0].Value] = kv[1]
	}
	for _, kv := range pairs(get(root, "Conditions")) {
		t.conditions[kv[0].Value] = true
	}
	return t, nil
}

// ofType returns the logical IDs of the resources of a type, sorted.
func (t *cfnTemplate) ofType(typ string) []string {
	var ids []string
	for id, r := range t.resources {
		if s, _ := str(get(r, "Type")); s == typ {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	return ids
}

func (t *cfnTemplate) typeOf(id string) string {
	s, _ := str(get(t.resources[id], "Type"))
	return s
}

var stackNamed = regexp.MustCompile(`^\$\{AWS::StackName\}-([A-Za-z0-9._-]+)$`)

// logicalName returns <name> for a property written !Sub "${AWS::StackName}-<name>".
func logicalName(n *yaml.Node) (string, bool) {
	s, vars, ok := subOf(n)
	if !ok || vars != nil {
		return "", false
	}
	m := stackNamed.FindStringSubmatch(s)
	if m == nil {
		return "", false
	}
	return m[1], true
}

func keySchemaOf(n *yaml.Node) (keySchema, error) {
	var k keySchema
	for _, e := range items(n) {
		name, _ := str(get(e, "AttributeName"))
		typ, _ := str(get(e, "KeyType"))
		switch {
		case typ == "HASH" && k.Hash == "":
			k.Hash = name
		case typ == "RANGE" && k.Range == "":
			k.Range = name
		default:
			return k, fmt.Errorf("unexpected key schema element %q/%q", name, typ)
		}
	}
	if k.Hash == "" {
		return k, fmt.Errorf("key schema without a HASH key")
	}
	return k, nil
}

// infra reduces the template's tables and queues to the model.
func (t *cfnTemplate) infra() (infra, []string) {
	out := newInfra()
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, templateSrc+": "+fmt.Sprintf(format, args...))
	}
	for _, id := range t.ofType("AWS::DynamoDB::Table") {
		p := get(t.resources[id], "Properties")
		name, ok := logicalName(get(p, "TableName"))
		if !ok {
			bad(`table %s: TableName must be !Sub "${AWS::StackName}-<name>"`, id)
			continue
		}
		if _, dup := out.Tables[name]; dup {
			bad("table %q declared twice", name)
		}
		td := tableDef{Billing: defaultBilling, Attrs: map[string]string{}, Indexes: map[string]indexDef{}}
		if b, ok := str(get(p, "BillingMode")); ok {
			td.Billing = b
		}
		for _, a := range items(get(p, "AttributeDefinitions")) {
			an, _ := str(get(a, "AttributeName"))
			at, _ := str(get(a, "AttributeType"))
			td.Attrs[an] = at
		}
		var err error
		if td.Keys, err = keySchemaOf(get(p, "KeySchema")); err != nil {
			bad("table %q: %v", name, err)
		}
		for _, g := range items(get(p, "GlobalSecondaryIndexes")) {
			ix, _ := str(get(g, "IndexName"))
			var d indexDef
			if d.Keys, err = keySchemaOf(get(g, "KeySchema")); err != nil {
				bad("table %q index %q: %v", name, ix, err)
			}
			d.Projection, _ = str(get(g, "Projection", "ProjectionType"))
			td.Indexes[ix] = d
		}
		if get(p, "LocalSecondaryIndexes") != nil {
			bad("table %q: local secondary indexes are not part of the table model", name)
		}
		if spec := get(p, "TimeToLiveSpecification"); spec != nil {
			attr, _ := str(get(spec, "AttributeName"))
			if enabled, _ := str(get(spec, "Enabled")); enabled == "true" {
				td.TTL = attr
			}
		}
		out.Tables[name] = td
	}

	queueName := map[string]string{} // logical ID -> name
	for _, id := range t.ofType("AWS::SQS::Queue") {
		name, ok := logicalName(get(t.resources[id], "Properties", "QueueName"))
		if !ok {
			bad(`queue %s: QueueName must be !Sub "${AWS::StackName}-<name>"`, id)
			continue
		}
		queueName[id] = name
	}
	for _, id := range t.ofType("AWS::SQS::Queue") {
		name, ok := queueName[id]
		if !ok {
			continue
		}
		p := get(t.resources[id], "Properties")
		q := queueDef{VisibilityTimeout: defaultVisibility, Retention: defaultRetention}
		if n := get(p, "VisibilityTimeout"); n != nil {
			if q.VisibilityTimeout, ok = integer(n); !ok {
				bad("queue %q: VisibilityTimeout is not a number", name)
			}
		}
		if n := get(p, "MessageRetentionPeriod"); n != nil {
			if q.Retention, ok = integer(n); !ok {
				bad("queue %q: MessageRetentionPeriod is not a number", name)
			}
		}
		if rp := get(p, "RedrivePolicy"); rp != nil {
			target, attr, ok := getAttOf(get(rp, "deadLetterTargetArn"))
			if !ok || attr != "Arn" || queueName[target] == "" {
				bad("queue %q: deadLetterTargetArn must be !GetAtt <queue of this template>.Arn", name)
			}
			q.DeadLetter = queueName[target]
			if q.MaxReceiveCount, ok = integer(get(rp, "maxReceiveCount")); !ok {
				bad("queue %q: maxReceiveCount is not a number", name)
			}
		}
		if _, dup := out.Queues[name]; dup {
			bad("queue %q declared twice", name)
		}
		out.Queues[name] = q
	}
	return out, problems
}

// invariants checks what the template must satisfy on its own.
func (t *cfnTemplate) invariants() []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, templateSrc+": "+fmt.Sprintf(format, args...))
	}

	// Globals: runtime, architecture, handler, shared environment.
	g := t.globalFn
	if s, _ := str(get(g, "Runtime")); s != wantRuntime {
		bad("Globals.Function.Runtime is %q, want %q", s, wantRuntime)
	}
	var archs []string
	for _, a := range items(get(g, "Architectures")) {
		s, _ := str(a)
		archs = append(archs, s)
	}
	if !slices.Equal(archs, []string{wantArchitecture}) {
		bad("Globals.Function.Architectures is %v, want [%s]", archs, wantArchitecture)
	}
	if s, _ := str(get(g, "Handler")); s != wantHandler {
		bad("Globals.Function.Handler is %q, want %q", s, wantHandler)
	}
	env := get(g, "Environment", "Variables")
	for _, name := range wantEnv {
		if get(env, name) == nil {
			bad("Globals.Function.Environment lacks %s", name)
		}
	}
	if s, vars, ok := subOf(get(env, "CERTFLEET_TABLE_PREFIX")); !ok || vars != nil || s != "${AWS::StackName}-" {
		bad(`CERTFLEET_TABLE_PREFIX must be !Sub "${AWS::StackName}-" (table names are "${AWS::StackName}-<name>")`)
	}
	for _, id := range refsIn(env) {
		_, isResource := t.resources[id]
		_, isParameter := t.parameters[id]
		if !isResource && !isParameter {
			bad("Globals.Function.Environment refers to %q, which is neither a resource nor a parameter of this template", id)
		}
	}
	globalTimeout := defaultLambdaTimeout
	if v, ok := integer(get(g, "Timeout")); ok {
		globalTimeout = v
	}

	// Functions.
	functions := t.ofType("AWS::Serverless::Function")
	if !slices.Contains(functions, "WorkerFunction") {
		bad("no WorkerFunction")
	}
	for _, id := range functions {
		r := t.resources[id]
		p := get(r, "Properties")
		for _, pv := range [][2]string{{"Runtime", wantRuntime}, {"Handler", wantHandler}} {
			if n := get(p, pv[0]); n != nil {
				if s, _ := str(n); s != pv[1] {
					bad("function %s overrides %s with %q", id, pv[0], s)
				}
			}
		}
		if n := get(p, "Architectures"); n != nil {
			for _, a := range items(n) {
				if s, _ := str(a); s != wantArchitecture {
					bad("function %s overrides Architectures with %q", id, s)
				}
			}
		}
		if s, _ := str(get(r, "Metadata", "BuildMethod")); s != wantBuildMethod {
			bad("function %s: Metadata.BuildMethod is %q, want %q", id, s, wantBuildMethod)
		}
		timeout := globalTimeout
		if v, ok := integer(get(p, "Timeout")); ok {
			timeout = v
		}
		sqsEvents := 0
		for _, ev := range pairs(get(p, "Events")) {
			if s, _ := str(get(ev[1], "Type")); s != "SQS" {
				continue
			}
			sqsEvents++
			qid, _, ok := getAttOf(get(ev[1], "Properties", "Queue"))
			if !ok || t.typeOf(qid) != "AWS::SQS::Queue" {
				bad("function %s: event %s must name a queue of this template with !GetAtt <Queue>.Arn", id, ev[0].Value)
				continue
			}
			vis := defaultVisibility
			if v, ok := integer(get(t.resources[qid], "Properties", "VisibilityTimeout")); ok {
				vis = v
			}
			if vis < visibilityFactor*timeout {
				bad("queue %s: VisibilityTimeout %d s is less than %d x %s's Timeout (%d s)",
					qid, vis, visibilityFactor, id, timeout)
			}
			reports := false
			for _, rt := range items(get(ev[1], "Properties", "FunctionResponseTypes")) {
				if s, _ := str(rt); s == "ReportBatchItemFailures" {
					reports = true
				}
			}
			if !reports {
				bad("function %s: SQS event %s must report batch item failures", id, ev[0].Value)
			}
		}
		if id == "WorkerFunction" && sqsEvents == 0 {
			bad("WorkerFunction has no SQS event")
		}
		problems = append(problems, t.policyProblems(id, get(p, "Policies"))...)
	}

	// Tables: retained, recoverable, encrypted.
	for _, id := range t.ofType("AWS::DynamoDB::Table") {
		r := t.resources[id]
		for _, attr := range []string{"DeletionPolicy", "UpdateReplacePolicy"} {
			if s, _ := str(get(r, attr)); s != "Retain" {
				bad("table %s: %s is %q, want Retain", id, attr, s)
			}
		}
		if s, _ := str(get(r, "Properties", "PointInTimeRecoverySpecification", "PointInTimeRecoveryEnabled")); s != "true" {
			bad("table %s: point-in-time recovery is not enabled", id)
		}
		if s, _ := str(get(r, "Properties", "SSESpecification", "SSEEnabled")); s != "true" {
			bad("table %s: SSE is not enabled", id)
		}
	}
	for _, id := range t.ofType("AWS::SQS::Queue") {
		if s, _ := str(get(t.resources[id], "Properties", "SqsManagedSseEnabled")); s != "true" {
			bad("queue %s: SqsManagedSseEnabled is not true", id)
		}
	}
	return problems
}

// ssmParameterARN is the one resource form a policy may build from a
// template Parameter rather than a resource: the ARN of the SSM parameter
// that the Parameter names (with its leading slash), such as the SMTP
// password that is created outside the stack because CloudFormation cannot
// create SecureString parameters.
var ssmParameterARN = regexp.MustCompile(`^arn:\$\{AWS::Partition\}:ssm:\$\{AWS::Region\}:\$\{AWS::AccountId\}:parameter\$\{([A-Za-z0-9]+)\}$`)

// ssmReadActions are the actions allowed on such a parameter.
var ssmReadActions = []string{"ssm:GetParameter", "ssm:GetParameters"}

// branches expands Fn::If into both of its values, recursively, leaving
// out AWS::NoValue; any other node is its own only branch. It reports a
// condition that the template does not declare.
func (t *cfnTemplate) branches(n *yaml.Node, bad func(string, ...any)) []*yaml.Node {
	fn, arg, ok := intrinsic(n)
	if ok && fn == "Ref" {
		if id, _ := str(arg); id == "AWS::NoValue" {
			return nil
		}
	}
	if !ok || fn != "Fn::If" {
		return []*yaml.Node{n}
	}
	parts := items(arg)
	if len(parts) != 3 {
		bad("Fn::If needs a condition and two values")
		return nil
	}
	if cond, _ := str(parts[0]); !t.conditions[cond] {
		bad("Fn::If names condition %q, which this template does not declare", cond)
	}
	return append(t.branches(parts[1], bad), t.branches(parts[2], bad)...)
}

// policyProblems checks that a function's policies name only resources of
// this template: every statement's Resource is an intrinsic that refers to
// resources declared here (no "*", no literal ARNs, no managed policies), and
// no action is a wildcard. Policies and statements may be conditional
// (Fn::If); both branches are checked. One exception, on purpose: a
// statement that only reads SSM parameters may name one as
// !Sub "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${P}"
// where P is a Parameter of this template (ssmParameterARN). To grant
// access to anything else outside the template, declare it here or widen
// this check on purpose.
func (t *cfnTemplate) policyProblems(fn string, policies *yaml.Node) []string {
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, templateSrc+": function "+fn+": "+fmt.Sprintf(format, args...))
	}
	checkRefs := func(where string, n *yaml.Node) {
		refs := refsIn(n)
		if len(refs) == 0 {
			bad("%s names no resource of this template", where)
		}
		for _, id := range refs {
			if _, ok := t.resources[id]; !ok {
				bad("%s refers to %q, which is not a resource of this template", where, id)
			}
		}
	}
	var pols []*yaml.Node
	for _, pol := range items(policies) {
		pols = append(pols, t.branches(pol, bad)...)
	}
	for _, pol := range pols {
		if s, ok := str(pol); ok {
			bad("managed policy %q grants access beyond this template", s)
			continue
		}
		if _, _, ok := intrinsic(pol); ok {
			checkRefs("policy", pol)
			continue
		}
		stmts := get(pol, "Statement")
		if stmts == nil {
			// A SAM policy template, e.g. {DynamoDBReadPolicy: {TableName: !Ref T}}.
			for _, kv := range pairs(pol) {
				checkRefs("policy template "+kv[0].Value, kv[1])
			}
			continue
		}
		var statements []*yaml.Node
		for _, st := range items(stmts) {
			statements = append(statements, t.branches(st, bad)...)
		}
		for i, st := range statements {
			where := fmt.Sprintf("statement %d", i)
			if sid, ok := str(get(st, "Sid")); ok {
				where = "statement " + sid
			}
			if get(st, "NotResource") != nil || get(st, "NotAction") != nil {
				bad("%s uses NotResource/NotAction", where)
			}
			var actions []string
			for _, a := range items(get(st, "Action")) {
				s, _ := str(a)
				if s == "*" || strings.HasSuffix(s, ":*") {
					bad("%s allows the wildcard action %q", where, s)
				}
				actions = append(actions, s)
			}
			res := items(get(st, "Resource"))
			if len(res) == 0 {
				bad("%s has no Resource", where)
			}
			for _, r := range res {
				if s, ok := str(r); ok {
					bad("%s names %q, not a resource of this template", where, s)
					continue
				}
				if sub, vars, ok := subOf(r); ok && vars == nil {
					if m := ssmParameterARN.FindStringSubmatch(sub); m != nil {
						if _, ok := t.parameters[m[1]]; !ok {
							bad("%s resource names the SSM parameter of %q, which is not a parameter of this template", where, m[1])
						}
						for _, a := range actions {
							if !slices.Contains(ssmReadActions, a) {
								bad("%s allows %q on an SSM parameter named by a template parameter; only %v are allowed", where, a, ssmReadActions)
							}
						}
						continue
					}
				}
				checkRefs(where+" resource", r)
			}
		}
	}
	return problems
}

// ---------------------------------------------------- init script parsing ----

// shellCommands splits a bash script into simple commands, each a list of
// words with quoting removed. Expansions ($VAR, ${VAR}, $(...)) are kept as
// written, not evaluated. Commands end at newlines, ;, &, |, ( and ); a
// backslash-newline continues a line; comments and here-document bodies are
// skipped. Backquotes are not supported.
func shellCommands(src string) ([][]string, error) {
	var (
		cmds     [][]string
		cur      []string
		word     strings.Builder
		inWord   bool
		heredocs []heredoc
	)
	flush := func() {
		if inWord {
			cur = append(cur, word.String())
			word.Reset()
			inWord = false
		}
	}
	end := func() {
		flush()
		if len(cur) > 0 {
			cmds = append(cmds, cur)
			cur = nil
		}
	}
	s := src
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\':
			if i+1 < len(s) && s[i+1] == '\n' {
				i += 2
				continue
			}
			if i+1 < len(s) {
				word.WriteByte(s[i+1])
			}
			inWord = true
			i += 2
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return nil, fmt.Errorf("line %d: unterminated single quote", lineOf(s, i))
			}
			word.WriteString(s[i+1 : i+1+j])
			inWord = true
			i += j + 2
		case c == '"':
			next, err := lexDouble(s, i+1, &word)
			if err != nil {
				return nil, err
			}
			inWord = true
			i = next
		case c == '$':
			next, err := lexDollar(s, i, &word)
			if err != nil {
				return nil, err
			}
			inWord = true
			i = next
		case c == '`':
			return nil, fmt.Errorf("line %d: backquotes are not supported; use $(...)", lineOf(s, i))
		case c == '#' && !inWord:
			for i < len(s) && s[i] != '\n' {
				i++
			}
		case c == '\n':
			end()
			i++
			for _, h := range heredocs {
				i = skipHeredoc(s, i, h)
			}
			heredocs = nil
		case c == ' ' || c == '\t' || c == '\r':
			flush()
			i++
		case c == ';' || c == '&' || c == '|' || c == '(' || c == ')':
			end()
			i++
		case c == '<' && strings.HasPrefix(s[i:], "<<") && !strings.HasPrefix(s[i:], "<<<"):
			flush()
			h, next, err := lexHeredocStart(s, i+2)
			if err != nil {
				return nil, err
			}
			heredocs = append(heredocs, h)
			i = next
		case c == '>' || c == '<':
			// A redirection operator: keep it in the word ("2>/dev/null",
			// ">&2"); the command reader drops redirections.
			word.WriteByte(c)
			inWord = true
			i++
			for i < len(s) && (s[i] == '>' || s[i] == '&') {
				word.WriteByte(s[i])
				i++
			}
		default:
			word.WriteByte(c)
			inWord = true
			i++
		}
	}
	end()
	return cmds, nil
}

type heredoc struct {
	delim string
	tabs  bool // <<- strips leading tabs
}

func lexHeredocStart(s string, i int) (heredoc, int, error) {
	var h heredoc
	if i < len(s) && s[i] == '-' {
		h.tabs = true
		i++
	}
	for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
		i++
	}
	if i < len(s) && (s[i] == '\'' || s[i] == '"') {
		q := s[i]
		j := strings.IndexByte(s[i+1:], q)
		if j < 0 {
			return h, 0, fmt.Errorf("line %d: unterminated here-document delimiter", lineOf(s, i))
		}
		h.delim = s[i+1 : i+1+j]
		return h, i + j + 2, nil
	}
	start := i
	for i < len(s) && (s[i] == '_' || s[i] >= 'A' && s[i] <= 'Z' || s[i] >= 'a' && s[i] <= 'z' || s[i] >= '0' && s[i] <= '9') {
		i++
	}
	if i == start {
		return h, 0, fmt.Errorf("line %d: here-document without a delimiter", lineOf(s, start))
	}
	h.delim = s[start:i]
	return h, i, nil
}

// skipHeredoc skips a here-document body starting at i, through its
// delimiter line.
func skipHeredoc(s string, i int, h heredoc) int {
	for i < len(s) {
		j := strings.IndexByte(s[i:], '\n')
		line, next := s[i:], len(s)
		if j >= 0 {
			line, next = s[i:i+j], i+j+1
		}
		if h.tabs {
			line = strings.TrimLeft(line, "\t")
		}
		i = next
		if line == h.delim {
			break
		}
	}
	return i
}

// lexDouble reads a double-quoted string from i (just past the opening quote)
// into w and returns the index past the closing quote.
func lexDouble(s string, i int, w *strings.Builder) (int, error) {
	start := i
	for i < len(s) {
		switch c := s[i]; c {
		case '"':
			return i + 1, nil
		case '\\':
			if i+1 < len(s) {
				switch n := s[i+1]; n {
				case '\n':
				case '$', '`', '"', '\\':
					w.WriteByte(n)
				default:
					w.WriteByte('\\')
					w.WriteByte(n)
				}
			}
			i += 2
		case '$':
			next, err := lexDollar(s, i, w)
			if err != nil {
				return 0, err
			}
			i = next
		case '`':
			return 0, fmt.Errorf("line %d: backquotes are not supported; use $(...)", lineOf(s, i))
		default:
			w.WriteByte(c)
			i++
		}
	}
	return 0, fmt.Errorf("line %d: unterminated double quote", lineOf(s, start))
}

// lexDollar copies an expansion starting at s[i] == '$' to w as written and
// returns the index past it.
func lexDollar(s string, i int, w *strings.Builder) (int, error) {
	if i+1 >= len(s) {
		w.WriteByte('$')
		return i + 1, nil
	}
	switch n := s[i+1]; {
	case n == '{':
		depth := 0
		for j := i + 1; j < len(s); j++ {
			switch s[j] {
			case '{':
				depth++
			case '}':
				depth--
				if depth == 0 {
					w.WriteString(s[i : j+1])
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("line %d: unterminated ${", lineOf(s, i))
	case n == '(':
		// Written normalised, its words unquoted and separated by single
		// spaces, so that it can sit inside a JSON string as the value it
		// stands for would: $(f "${P}x") becomes $(f ${P}x).
		end, err := skipParens(s, i+2)
		if err != nil {
			return 0, err
		}
		body, err := shellCommands(s[i+2 : end-1])
		if err != nil {
			return 0, fmt.Errorf("in $(...) at line %d: %w", lineOf(s, i), err)
		}
		var parts []string
		for _, words := range body {
			parts = append(parts, strings.Join(words, " "))
		}
		w.WriteString("$(" + strings.Join(parts, "; ") + ")")
		return end, nil
	case n == '_' || n >= 'A' && n <= 'Z' || n >= 'a' && n <= 'z':
		j := i + 1
		for j < len(s) && (s[j] == '_' || s[j] >= 'A' && s[j] <= 'Z' || s[j] >= 'a' && s[j] <= 'z' || s[j] >= '0' && s[j] <= '9') {
			j++
		}
		w.WriteString(s[i:j])
		return j, nil
	case strings.IndexByte("@*#?$!-0123456789", n) >= 0:
		w.WriteString(s[i : i+2])
		return i + 2, nil
	default:
		w.WriteByte('$')
		return i + 1, nil
	}
}

// skipParens returns the index past the ')' that closes a "$(" whose body
// starts at i, minding quotes and nested parentheses.
func skipParens(s string, i int) (int, error) {
	start, depth := i, 1
	var scratch strings.Builder
	for i < len(s) {
		switch s[i] {
		case '\\':
			i += 2
		case '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			if j < 0 {
				return 0, fmt.Errorf("line %d: unterminated single quote", lineOf(s, i))
			}
			i += j + 2
		case '"':
			next, err := lexDouble(s, i+1, &scratch)
			if err != nil {
				return 0, err
			}
			i = next
		case '(':
			depth++
			i++
		case ')':
			depth--
			i++
			if depth == 0 {
				return i, nil
			}
		default:
			i++
		}
	}
	return 0, fmt.Errorf("line %d: unterminated $(", lineOf(s, start))
}

func lineOf(s string, i int) int { return strings.Count(s[:min(i, len(s))], "\n") + 1 }

var (
	shellKeywords = map[string]bool{"if": true, "then": true, "else": true, "elif": true, "do": true,
		"while": true, "until": true, "!": true, "{": true, "time": true, "exec": true}
	assignment  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`)
	redirection = regexp.MustCompile(`^[0-9]*(>>?|<)&?`)
)

// awsCall is one `awslocal <service> <operation> --flag value...` command.
type awsCall struct {
	line             int // index of the command, for messages
	service, command string
	flags            map[string][]string
}

// awsCalls finds the awslocal commands of a script.
func awsCalls(cmds [][]string) ([]awsCall, []string) {
	var calls []awsCall
	var problems []string
	for n, words := range cmds {
		for len(words) > 0 && (shellKeywords[words[0]] || assignment.MatchString(words[0])) {
			words = words[1:]
		}
		// Drop redirections and their targets.
		var clean []string
		for i := 0; i < len(words); i++ {
			if m := redirection.FindString(words[i]); m != "" {
				if m == words[i] && i+1 < len(words) {
					i++ // operator alone: the target is the next word
				}
				continue
			}
			clean = append(clean, words[i])
		}
		if len(clean) < 3 || clean[0] != "awslocal" {
			continue
		}
		call := awsCall{line: n, service: clean[1], command: clean[2], flags: map[string][]string{}}
		flag := ""
		for _, w := range clean[3:] {
			if strings.HasPrefix(w, "--") {
				flag = w
				if _, dup := call.flags[flag]; dup {
					problems = append(problems, fmt.Sprintf("%s: awslocal %s %s repeats %s", scriptSrc, call.service, call.command, flag))
				}
				call.flags[flag] = []string{}
				continue
			}
			if flag == "" {
				problems = append(problems, fmt.Sprintf("%s: awslocal %s %s: unexpected word %q", scriptSrc, call.service, call.command, w))
				continue
			}
			call.flags[flag] = append(call.flags[flag], w)
		}
		calls = append(calls, call)
	}
	return calls, problems
}

// one returns the single value of a flag.
func (c awsCall) one(flag string) (string, bool) {
	v := c.flags[flag]
	if len(v) != 1 {
		return "", false
	}
	return v[0], true
}

// structs reads a CLI list-of-structures argument, given either as JSON (one
// word) or in shorthand (one word per element: Key=Value,Key=Value).
func structs(words []string) ([]map[string]string, error) {
	var out []map[string]string
	for _, w := range words {
		t := strings.TrimSpace(w)
		if strings.HasPrefix(t, "[") || strings.HasPrefix(t, "{") {
			var list []map[string]string
			if strings.HasPrefix(t, "{") {
				t = "[" + t + "]"
			}
			if err := json.Unmarshal([]byte(t), &list); err != nil {
				return nil, fmt.Errorf("bad JSON %q: %v", w, err)
			}
			out = append(out, list...)
			continue
		}
		m := map[string]string{}
		for _, part := range strings.Split(t, ",") {
			k, v, ok := strings.Cut(part, "=")
			if !ok {
				return nil, fmt.Errorf("bad shorthand %q", w)
			}
			m[k] = v
		}
		out = append(out, m)
	}
	return out, nil
}

func keySchemaOfStructs(list []map[string]string) (keySchema, error) {
	var k keySchema
	for _, e := range list {
		switch {
		case e["KeyType"] == "HASH" && k.Hash == "":
			k.Hash = e["AttributeName"]
		case e["KeyType"] == "RANGE" && k.Range == "":
			k.Range = e["AttributeName"]
		default:
			return k, fmt.Errorf("unexpected key schema element %v", e)
		}
	}
	if k.Hash == "" {
		return k, fmt.Errorf("key schema without a HASH key")
	}
	return k, nil
}

var (
	prefixed = regexp.MustCompile(`^\$\{PREFIX\}([A-Za-z0-9._-]+)$`)
	dlqRef   = regexp.MustCompile(`^\$\(queue_arn \$\{PREFIX\}([A-Za-z0-9._-]+)\)$`)
)

// parseInitScript reduces the init script's create-table and create-queue
// commands to the model.
func parseInitScript(src string) (infra, []string) {
	out := newInfra()
	var problems []string
	bad := func(format string, args ...any) {
		problems = append(problems, scriptSrc+": "+fmt.Sprintf(format, args...))
	}
	cmds, err := shellCommands(src)
	if err != nil {
		bad("%v", err)
		return out, problems
	}
	calls, p := awsCalls(cmds)
	problems = append(problems, p...)
	ttl := map[string]string{} // table -> TTL attribute, from update-time-to-live
	for _, c := range calls {
		switch {
		case c.service == "dynamodb" && c.command == "update-time-to-live":
			raw, _ := c.one("--table-name")
			m := prefixed.FindStringSubmatch(raw)
			if m == nil {
				bad(`update-time-to-live: --table-name must be "${PREFIX}<name>", not %q`, raw)
				continue
			}
			if _, dup := ttl[m[1]]; dup {
				bad("table %q: time to live set twice", m[1])
			}
			specs, err := structs(c.flags["--time-to-live-specification"])
			if err != nil || len(specs) != 1 {
				bad("table %q: --time-to-live-specification must be one JSON object or shorthand word (%v)", m[1], err)
				continue
			}
			ttl[m[1]] = ""
			if specs[0]["Enabled"] == "true" {
				ttl[m[1]] = specs[0]["AttributeName"]
			}

		case c.service == "dynamodb" && c.command == "create-table":
			raw, _ := c.one("--table-name")
			m := prefixed.FindStringSubmatch(raw)
			if m == nil {
				bad(`create-table: --table-name must be "${PREFIX}<name>", not %q`, raw)
				continue
			}
			name := m[1]
			if _, dup := out.Tables[name]; dup {
				bad("table %q created twice", name)
			}
			td := tableDef{Billing: defaultBilling, Attrs: map[string]string{}, Indexes: map[string]indexDef{}}
			if b, ok := c.one("--billing-mode"); ok {
				td.Billing = b
			}
			attrs, err := structs(c.flags["--attribute-definitions"])
			if err != nil {
				bad("table %q: --attribute-definitions: %v", name, err)
			}
			for _, a := range attrs {
				td.Attrs[a["AttributeName"]] = a["AttributeType"]
			}
			keys, err := structs(c.flags["--key-schema"])
			if err == nil {
				td.Keys, err = keySchemaOfStructs(keys)
			}
			if err != nil {
				bad("table %q: --key-schema: %v", name, err)
			}
			if v, ok := c.flags["--global-secondary-indexes"]; ok {
				var gsis []struct {
					IndexName  string
					KeySchema  []map[string]string
					Projection struct{ ProjectionType string }
				}
				if len(v) != 1 {
					bad("table %q: --global-secondary-indexes must be one JSON word", name)
				} else if err := json.Unmarshal([]byte(v[0]), &gsis); err != nil {
					bad("table %q: --global-secondary-indexes: %v", name, err)
				}
				for _, g := range gsis {
					ks, err := keySchemaOfStructs(g.KeySchema)
					if err != nil {
						bad("table %q index %q: %v", name, g.IndexName, err)
					}
					td.Indexes[g.IndexName] = indexDef{Keys: ks, Projection: g.Projection.ProjectionType}
				}
			}
			if _, ok := c.flags["--local-secondary-indexes"]; ok {
				bad("table %q: local secondary indexes are not part of the table model", name)
			}
			out.Tables[name] = td

		case c.service == "sqs" && c.command == "create-queue":
			raw, _ := c.one("--queue-name")
			m := prefixed.FindStringSubmatch(raw)
			if m == nil {
				bad(`create-queue: --queue-name must be "${PREFIX}<name>", not %q`, raw)
				continue
			}
			name := m[1]
			if _, dup := out.Queues[name]; dup {
				bad("queue %q created twice", name)
			}
			q := queueDef{VisibilityTimeout: defaultVisibility, Retention: defaultRetention}
			attrs := map[string]string{}
			if v, ok := c.flags["--attributes"]; ok {
				list, err := structs(v)
				if err != nil || len(list) != 1 {
					bad("queue %q: --attributes must be one JSON object or shorthand word (%v)", name, err)
				} else {
					attrs = list[0]
				}
			}
			num := func(key string, dst *int) {
				if s, ok := attrs[key]; ok {
					v, err := strconv.Atoi(s)
					if err != nil {
						bad("queue %q: %s %q is not a number", name, key, s)
					}
					*dst = v
				}
			}
			num("VisibilityTimeout", &q.VisibilityTimeout)
			num("MessageRetentionPeriod", &q.Retention)
			if rp, ok := attrs["RedrivePolicy"]; ok {
				var pol struct {
					DeadLetterTargetArn string      `json:"deadLetterTargetArn"`
					MaxReceiveCount     json.Number `json:"maxReceiveCount"`
				}
				if err := json.Unmarshal([]byte(rp), &pol); err != nil {
					bad("queue %q: RedrivePolicy: %v", name, err)
				}
				if m := dlqRef.FindStringSubmatch(pol.DeadLetterTargetArn); m != nil {
					q.DeadLetter = m[1]
				} else {
					bad(`queue %q: deadLetterTargetArn must be $(queue_arn "${PREFIX}<name>"), not %q`, name, pol.DeadLetterTargetArn)
				}
				n, err := strconv.Atoi(pol.MaxReceiveCount.String())
				if err != nil {
					bad("queue %q: maxReceiveCount %q is not a number", name, pol.MaxReceiveCount)
				}
				q.MaxReceiveCount = n
			}
			out.Queues[name] = q
		}
	}
	for _, name := range sortedKeys(ttl) {
		td, ok := out.Tables[name]
		if !ok {
			bad("update-time-to-live of table %q, which the script does not create", name)
			continue
		}
		td.TTL = ttl[name]
		out.Tables[name] = td
	}
	return out, problems
}

// ------------------------------------------------------------------ tests ----

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestNoDrift: template.yaml, the init script and app.Tables agree, and the
// template keeps its own invariants.
func TestNoDrift(t *testing.T) {
	tpl := readFile(t, templatePath)
	script := readFile(t, initScriptPath)
	if len(app.Tables) == 0 {
		t.Fatal("app.Tables is empty")
	}
	for _, p := range driftProblems(tpl, script, app.Tables) {
		t.Error(p)
	}
}

// TestModelsAreNotEmpty guards the comparison against vacuous success: both
// files must yield every table of app.Tables and the issuance queues.
func TestModelsAreNotEmpty(t *testing.T) {
	tpl, err := parseTemplate(readFile(t, templatePath))
	if err != nil {
		t.Fatal(err)
	}
	tplInfra, _ := tpl.infra()
	scrInfra, _ := parseInitScript(string(readFile(t, initScriptPath)))
	for _, m := range []struct {
		src string
		inf infra
	}{{templateSrc, tplInfra}, {scriptSrc, scrInfra}} {
		for _, spec := range app.Tables {
			td, ok := m.inf.Tables[spec.Name]
			if !ok {
				t.Errorf("%s: no table %q", m.src, spec.Name)
				continue
			}
			if len(td.Indexes) != len(spec.Indexes) {
				t.Errorf("%s: table %q has %d indexes, want %d", m.src, spec.Name, len(td.Indexes), len(spec.Indexes))
			}
			if td.TTL != ttlAttribute {
				t.Errorf("%s: table %q has TTL on %q, want %q", m.src, spec.Name, td.TTL, ttlAttribute)
			}
		}
		q, ok := m.inf.Queues["issuance"]
		if !ok || q.DeadLetter != "issuance-dlq" || q.MaxReceiveCount == 0 {
			t.Errorf("%s: issuance queue with redrive to issuance-dlq not found: %+v", m.src, q)
		}
		if _, ok := m.inf.Queues["issuance-dlq"]; !ok {
			t.Errorf("%s: no issuance-dlq queue", m.src)
		}
	}
}

// TestDriftIsDetected feeds mutated copies of the real files to the
// comparison and expects each mutation to be reported.
func TestDriftIsDetected(t *testing.T) {
	tpl := string(readFile(t, templatePath))
	script := string(readFile(t, initScriptPath))
	if p := driftProblems([]byte(tpl), []byte(script), app.Tables); len(p) != 0 {
		t.Fatalf("unmutated files already drift: %v", p)
	}

	type mutation struct {
		name     string
		inScript bool // mutate the init script instead of the template
		// in limits the mutation to one block: a resource of the template
		// (by logical ID) or a table's commands in the script (by name,
		// from its "# <name>:" comment to the next blank line).
		in        string
		re, repl  string // regexp (must match exactly once) and replacement ($$ for a literal $)
		wantMatch string // a reported problem must contain this
	}
	mutations := []mutation{
		// template.yaml: tables
		{name: "template index projection", in: "MetaTable", re: `ProjectionType: ALL`, repl: `ProjectionType: KEYS_ONLY`, wantMatch: `index "gsi1" projection`},
		{name: "template attribute type", in: "MetaTable", re: `(AttributeName: gsi1sk\s+AttributeType:) S`, repl: `$1 N`, wantMatch: `attribute "gsi1sk" type`},
		{name: "template range key", in: "MetaTable", re: `(AttributeName: sk\s+KeyType:) RANGE`, repl: `$1 HASH`, wantMatch: `key schema`},
		{name: "template index renamed", in: "MetaTable", re: `IndexName: gsi1\b`, repl: `IndexName: gsi2`, wantMatch: `index "gsi2"`},
		{name: "template index key", in: "MetaTable", re: `(AttributeName: gsi1pk\s+KeyType:) HASH`, repl: `$1 RANGE`, wantMatch: `index "gsi1" key schema`},
		{name: "template billing", in: "MetaTable", re: `BillingMode: PAY_PER_REQUEST`, repl: `BillingMode: PROVISIONED`, wantMatch: `billing mode`},
		{name: "template table renamed", re: `\$\{AWS::StackName\}-meta"`, repl: `$${AWS::StackName}-metadata"`, wantMatch: `table "metadata"`},
		{name: "template PITR off", in: "MetaTable", re: `PointInTimeRecoveryEnabled: true`, repl: `PointInTimeRecoveryEnabled: false`, wantMatch: `point-in-time`},
		{name: "template TTL attribute", in: "MetaTable", re: `(TimeToLiveSpecification:\s+AttributeName:) ttl`, repl: `$1 expires`, wantMatch: `table "meta": time to live attribute is expires in template.yaml but ttl in init script`},
		{name: "template TTL disabled", in: "RatelimitTable", re: `(TimeToLiveSpecification:\s+AttributeName: ttl\s+Enabled:) true`, repl: `$1 false`, wantMatch: `table "ratelimit": time to live attribute is (none) in template.yaml but ttl in init script`},
		{name: "template TTL dropped", in: "IdentityTable", re: `      TimeToLiveSpecification:\n.*\n.*\n`, repl: ``, wantMatch: `table "identity": time to live attribute is ttl in app.Tables but (none) in template.yaml`},
		{name: "template table not retained", re: `(MetaTable:\s+Type: AWS::DynamoDB::Table\s+)DeletionPolicy: Retain`, repl: `${1}DeletionPolicy: Delete`, wantMatch: `DeletionPolicy`},
		// template.yaml: queues
		{name: "template visibility", re: `VisibilityTimeout: 360`, repl: `VisibilityTimeout: 400`, wantMatch: `visibility timeout is 400`},
		{name: "template maxReceiveCount", re: `maxReceiveCount: 5`, repl: `maxReceiveCount: 3`, wantMatch: `maxReceiveCount is 3`},
		{name: "template DLQ retention", re: `MessageRetentionPeriod: 1209600`, repl: `MessageRetentionPeriod: 604800`, wantMatch: `message retention period is 604800`},
		{name: "template queue retention", re: `MessageRetentionPeriod: 345600`, repl: `MessageRetentionPeriod: 1209601`, wantMatch: `less than its source`},
		{name: "template redrive target", re: `deadLetterTargetArn: !GetAtt IssuanceDeadLetterQueue.Arn`, repl: `deadLetterTargetArn: !GetAtt IssuanceQueue.Arn`, wantMatch: `dead-letter queue is issuance in`},
		// template.yaml: functions
		{name: "worker timeout vs visibility", re: `Timeout: 60\b`, repl: `Timeout: 61`, wantMatch: `less than 6 x WorkerFunction's Timeout (61 s)`},
		{name: "global runtime", re: `Runtime: provided.al2023`, repl: `Runtime: provided.al2`, wantMatch: `Runtime`},
		{name: "global architecture", re: `Architectures: \[arm64\]`, repl: `Architectures: [x86_64]`, wantMatch: `Architectures`},
		{name: "function overrides architecture", re: `(HealthFunction:[\s\S]*?CodeUri: \.\n)`, repl: "${1}      Architectures: [x86_64]\n", wantMatch: `HealthFunction overrides Architectures`},
		{name: "build method", re: `(HealthFunction:\s+Type: AWS::Serverless::Function\s+Metadata:\s+BuildMethod:) makefile`, repl: `$1 go1.x`, wantMatch: `BuildMethod`},
		{name: "env var renamed", re: `CERTFLEET_ISSUANCE_DLQ_URL:`, repl: `CERTFLEET_DLQ_URL:`, wantMatch: `lacks CERTFLEET_ISSUANCE_DLQ_URL`},
		{name: "policy names a missing resource", re: `(Sid: ReadMeta[\s\S]*?)!GetAtt MetaTable\.Arn`, repl: `${1}!GetAtt AuditTable.Arn`, wantMatch: `"AuditTable", which is not a resource`},
		{name: "policy wildcard resource", in: "WorkerFunction", re: `- !Sub "\$\{MetaTable\.Arn\}/index/\*"`, repl: `- "*"`, wantMatch: `names "*"`},
		{name: "policy wildcard action", re: `- kms:DescribeKey`, repl: `- kms:*`, wantMatch: `wildcard action`},
		{name: "auth policy names a missing table", in: "AuthFunction", re: `!GetAtt RatelimitTable\.Arn`, repl: `!GetAtt RateLimitsTable.Arn`, wantMatch: `"RateLimitsTable", which is not a resource`},
		{name: "env var dropped", re: `CERTFLEET_PUBLIC_URL:`, repl: `CERTFLEET_BASE_URL:`, wantMatch: `lacks CERTFLEET_PUBLIC_URL`},
		{name: "env names a missing parameter", re: `!Ref SmtpHost\b`, repl: `!Ref SmtpServer`, wantMatch: `refers to "SmtpServer", which is neither a resource nor a parameter`},
		{name: "SSM parameter widened", in: "AuthFunction", re: `parameter\$\{SmtpPasswordParameter\}`, repl: `parameter/*`, wantMatch: `statement SmtpPassword resource names no resource of this template`},
		{name: "SSM parameter not a parameter", in: "AuthFunction", re: `parameter\$\{SmtpPasswordParameter\}`, repl: `parameter$${SmtpPassword}`, wantMatch: `SSM parameter of "SmtpPassword", which is not a parameter`},
		{name: "SSM parameter written", in: "AuthFunction", re: `- ssm:GetParameter`, repl: `- ssm:PutParameter`, wantMatch: `allows "ssm:PutParameter" on an SSM parameter`},
		{name: "SSM parameter without its condition", in: "AuthFunction", re: `- HasSmtpPasswordParameter`, repl: `- HasSmtpPassword`, wantMatch: `condition "HasSmtpPassword", which this template does not declare`},
		{name: "worker without batch item failures", re: `- ReportBatchItemFailures`, repl: `[]`, wantMatch: `batch item failures`},

		// init script: tables
		{name: "script index projection", in: "meta", inScript: true, re: `"ProjectionType": "ALL"`, repl: `"ProjectionType": "KEYS_ONLY"`, wantMatch: `index "gsi1" projection`},
		{name: "script attribute type", in: "meta", inScript: true, re: `AttributeName=gsi1sk,AttributeType=S`, repl: `AttributeName=gsi1sk,AttributeType=N`, wantMatch: `attribute "gsi1sk" type`},
		{name: "script range key dropped", in: "meta", inScript: true, re: ` AttributeName=sk,KeyType=RANGE`, repl: ``, wantMatch: `key schema`},
		{name: "script index renamed", in: "meta", inScript: true, re: `"IndexName": "gsi1"`, repl: `"IndexName": "by_owner"`, wantMatch: `index "by_owner"`},
		{name: "script billing", in: "meta", inScript: true, re: `--billing-mode PAY_PER_REQUEST`, repl: `--billing-mode PROVISIONED`, wantMatch: `billing mode`},
		{name: "script table renamed", in: "meta", inScript: true, re: `(create-table \\\s+)--table-name "\$\{PREFIX\}meta"`, repl: `$1--table-name "$${PREFIX}meta2"`, wantMatch: `table "meta2"`},
		{name: "script table dropped", in: "meta", inScript: true, re: `(table_exists "\$\{PREFIX\}meta" \|\|\s+)awslocal dynamodb create-table`, repl: `${1}echo dynamodb create-table`, wantMatch: `table "meta" is in template.yaml but not in init script`},
		{name: "script TTL disabled", in: "ratelimit", inScript: true, re: `Enabled=true`, repl: `Enabled=false`, wantMatch: `table "ratelimit": time to live attribute is ttl in template.yaml but (none) in init script`},
		{name: "script TTL attribute", in: "identity", inScript: true, re: `AttributeName=ttl`, repl: `AttributeName=expires_at`, wantMatch: `table "identity": time to live attribute is ttl in template.yaml but expires_at in init script`},
		{name: "script TTL dropped", in: "meta", inScript: true, re: `(ttl_enabled "\$\{PREFIX\}meta" \|\|\s+)awslocal dynamodb update-time-to-live`, repl: `${1}echo dynamodb update-time-to-live`, wantMatch: `table "meta": time to live attribute is ttl in template.yaml but (none) in init script`},
		{name: "script TTL of another table", in: "meta", inScript: true, re: `(update-time-to-live \\\s+--table-name "\$\{PREFIX\})meta"`, repl: `${1}metta"`, wantMatch: `update-time-to-live of table "metta", which the script does not create`},
		// init script: queues
		{name: "script visibility", inScript: true, re: `"VisibilityTimeout": "360"`, repl: `"VisibilityTimeout": "30"`, wantMatch: `visibility timeout is 360 in template.yaml but 30`},
		{name: "script maxReceiveCount", inScript: true, re: `\\"maxReceiveCount\\": \\"5\\"`, repl: `\"maxReceiveCount\": \"4\"`, wantMatch: `maxReceiveCount is 5 in template.yaml but 4`},
		{name: "script DLQ retention", inScript: true, re: `"MessageRetentionPeriod": "1209600"`, repl: `"MessageRetentionPeriod": "86400"`, wantMatch: `message retention period`},
		{name: "script redrive target", inScript: true, re: `queue_arn "\$\{PREFIX\}issuance-dlq"\)"'`, repl: `queue_arn "$${PREFIX}issuance-dead")"'`, wantMatch: `dead-letter queue`},
		{name: "script queue renamed", inScript: true, re: `--queue-name "\$\{PREFIX\}issuance"`, repl: `--queue-name "$${PREFIX}issue"`, wantMatch: `queue "issuance" is in template.yaml but not in init script`},
		{name: "script stray quote", in: "meta", inScript: true, re: `'\[\n`, repl: "'[\n'", wantMatch: `init script:`},
	}
	for _, m := range mutations {
		t.Run(m.name, func(t *testing.T) {
			re := regexp.MustCompile(m.re)
			src := tpl
			if m.inScript {
				src = script
			}
			start, end := 0, len(src)
			if m.in != "" {
				block := regexp.MustCompile(`(?m)^  ` + regexp.QuoteMeta(m.in) + `:\n(?:(?: {4}.*)?\n)*`)
				if m.inScript {
					block = regexp.MustCompile(`(?m)^# ` + regexp.QuoteMeta(m.in) + `: .*\n(?:.+\n)*`)
				}
				loc := block.FindAllStringIndex(src, -1)
				if len(loc) != 1 {
					t.Fatalf("block %q found %d times, want 1", m.in, len(loc))
				}
				start, end = loc[0][0], loc[0][1]
			}
			if n := len(re.FindAllStringIndex(src[start:end], -1)); n != 1 {
				t.Fatalf("mutation pattern %q matches %d times in %q, want 1", m.re, n, orNone(m.in))
			}
			mutated := src[:start] + re.ReplaceAllString(src[start:end], m.repl) + src[end:]
			tplIn, scriptIn := tpl, script
			if m.inScript {
				scriptIn = mutated
			} else {
				tplIn = mutated
			}
			problems := driftProblems([]byte(tplIn), []byte(scriptIn), app.Tables)
			if len(problems) == 0 {
				t.Fatal("mutation not detected")
			}
			t.Logf("reported:\n  %s", strings.Join(problems, "\n  "))
			found := false
			for _, p := range problems {
				if strings.Contains(p, m.wantMatch) {
					found = true
				}
			}
			if !found {
				t.Errorf("no problem mentions %q; got:\n  %s", m.wantMatch, strings.Join(problems, "\n  "))
			}
		})
	}

	// app.Tables drifting from both files is reported too.
	t.Run("app.Tables gains an index", func(t *testing.T) {
		specs := slices.Clone(app.Tables)
		specs[0].Indexes = append(slices.Clone(specs[0].Indexes), "gsi9")
		problems := driftProblems([]byte(tpl), []byte(script), specs)
		want := []string{
			`index "gsi9" is in app.Tables but not in template.yaml`,
			`index "gsi9" is in app.Tables but not in init script`,
		}
		for _, w := range want {
			if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, w) }) {
				t.Errorf("no problem mentions %q; got %v", w, problems)
			}
		}
	})
	t.Run("both files drop TTL", func(t *testing.T) {
		noTTL := regexp.MustCompile(`(?m)^      TimeToLiveSpecification:\n.*\n.*\n`).ReplaceAllString(tpl, "")
		noTTLScript := regexp.MustCompile(`(?m)^ttl_enabled .*\n(?:  .*\n)*`).ReplaceAllString(script, "")
		if noTTL == tpl || noTTLScript == script {
			t.Fatal("TTL patterns matched nothing")
		}
		problems := driftProblems([]byte(noTTL), []byte(noTTLScript), app.Tables)
		for _, spec := range app.Tables {
			for _, src := range []string{templateSrc, scriptSrc} {
				w := fmt.Sprintf(`table %q: time to live attribute is ttl in app.Tables but (none) in %s`, spec.Name, src)
				if !slices.ContainsFunc(problems, func(p string) bool { return strings.Contains(p, w) }) {
					t.Errorf("no problem mentions %q; got %v", w, problems)
				}
			}
		}
	})
	t.Run("app.Tables gains a table", func(t *testing.T) {
		specs := append(slices.Clone(app.Tables), store.TableSpec{Name: "not-yet-deployed"})
		problems := driftProblems([]byte(tpl), []byte(script), specs)
		if !slices.ContainsFunc(problems, func(p string) bool {
			return strings.Contains(p, `table "not-yet-deployed" is in app.Tables but not in template.yaml`)
		}) {
			t.Errorf("missing table not reported; got %v", problems)
		}
	})
}

func TestShellCommands(t *testing.T) {
	src := `#!/bin/bash
# a comment with 'quotes" and $(
x="${A:-b}" # trailing comment
f() { aws --endpoint-url "${E:-http://h}" "$@"; }
q "${P}a" >/dev/null ||
  awslocal sqs create-queue \
    --queue-name "${P}a" \
    --attributes '{"R": "{\"t\": \"'"$(g "${P}b")"'\"}"}' 2>/dev/null
cat <<EOF
not a "command
EOF
if ! awslocal kms describe-key --key-id "$K" >&2; then echo "a\"b" 'c'd; fi
`
	cmds, err := shellCommands(src)
	if err != nil {
		t.Fatal(err)
	}
	want := [][]string{
		{`x=${A:-b}`},
		{`f`},
		{`{`, `aws`, `--endpoint-url`, `${E:-http://h}`, `$@`},
		{`}`},
		{`q`, `${P}a`, `>/dev/null`},
		{`awslocal`, `sqs`, `create-queue`, `--queue-name`, `${P}a`, `--attributes`,
			`{"R": "{\"t\": \"$(g ${P}b)\"}"}`, `2>/dev/null`},
		{`cat`},
		{`if`, `!`, `awslocal`, `kms`, `describe-key`, `--key-id`, `$K`, `>&2`},
		{`then`, `echo`, `a"b`, `cd`},
		{`fi`},
	}
	if fmt.Sprint(cmds) != fmt.Sprint(want) || len(cmds) != len(want) {
		t.Errorf("got\n%q\nwant\n%q", cmds, want)
	}
	calls, problems := awsCalls(cmds)
	if len(problems) != 0 || len(calls) != 2 {
		t.Fatalf("calls %+v, problems %v", calls, problems)
	}
	if v, _ := calls[0].one("--queue-name"); v != "${P}a" || len(calls[0].flags) != 2 {
		t.Errorf("flags %v", calls[0].flags)
	}
	if v, _ := calls[1].one("--key-id"); calls[1].command != "describe-key" || v != "$K" {
		t.Errorf("call %+v", calls[1])
	}

	for _, bad := range []string{`echo 'x`, `echo "x`, "echo $(x", "echo `x`", `echo ${x`} {
		if _, err := shellCommands(bad); err == nil {
			t.Errorf("shellCommands(%q): no error", bad)
		}
	}
}

// TestComposeAndScriptFile: the compose file runs the services the script
// needs and mounts it where LocalStack runs ready hooks; the script is
// executable (LocalStack skips scripts that are not).
func TestComposeAndScriptFile(t *testing.T) {
	var compose struct {
		Services map[string]struct {
			Ports       []string          `yaml:"ports"`
			Environment map[string]string `yaml:"environment"`
			Volumes     []string          `yaml:"volumes"`
		} `yaml:"services"`
	}
	if err := yaml.Unmarshal(readFile(t, composePath), &compose); err != nil {
		t.Fatal(err)
	}
	ls, ok := compose.Services["localstack"]
	if !ok {
		t.Fatal("no localstack service")
	}
	services := strings.Split(ls.Environment["SERVICES"], ",")
	for _, s := range []string{"dynamodb", "sqs", "kms"} {
		if !slices.Contains(services, s) {
			t.Errorf("SERVICES %q lacks %s", ls.Environment["SERVICES"], s)
		}
	}
	if !slices.ContainsFunc(ls.Ports, func(p string) bool { return strings.HasSuffix(p, ":4566:4566") || p == "4566:4566" }) {
		t.Errorf("port 4566 not published: %v", ls.Ports)
	}
	if !slices.ContainsFunc(ls.Volumes, func(v string) bool {
		return strings.HasPrefix(v, "./init/ready.d:/etc/localstack/init/ready.d")
	}) {
		t.Errorf("init/ready.d not mounted at /etc/localstack/init/ready.d: %v", ls.Volumes)
	}
	fi, err := os.Stat(initScriptPath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&0o111 == 0 {
		t.Errorf("%s is not executable (%v)", initScriptPath, fi.Mode())
	}
}
