package engine

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
	"github.com/google/cel-go/common/types"
)

// Constraints is a necessary condition for a rule to match, derived from the
// literal comparisons in its CEL condition: an event that violates it can never
// match the rule. The indexed matcher buckets rules by it and the node agent
// turns the union over all rules into in-kernel prefilter maps.
//
// A nil set means unconstrained; a non-nil empty set means no value can match.
// Whatever the analysis does not understand leaves the field unconstrained, so
// the constraints are always sound (possibly loose), never too tight.
type Constraints struct {
	// Kinds are the event kinds the rule can match; never nil.
	Kinds []Kind `json:"kinds"`
	// Binaries are exact values of process.binary.
	Binaries []string `json:"binaries,omitempty"`
	// Basenames are exact base names of process.binary (process.name).
	Basenames []string `json:"basenames,omitempty"`
	// PathPrefixes are prefixes of file.path (an exact path is its own prefix).
	PathPrefixes []string `json:"pathPrefixes,omitempty"`
	// PeerPorts are values of net.peer.port, LocalPorts of net.local.port.
	PeerPorts  []int64 `json:"peerPorts,omitempty"`
	LocalPorts []int64 `json:"localPorts,omitempty"`
	// PeerCIDRs contain net.peer.ip.
	PeerCIDRs []netip.Prefix `json:"peerCIDRs,omitempty"`
	// Audit verb, objectRef.resource and objectRef.subresource values.
	AuditVerbs        []string `json:"auditVerbs,omitempty"`
	AuditResources    []string `json:"auditResources,omitempty"`
	AuditSubresources []string `json:"auditSubresources,omitempty"`
	// ObjectKinds are values of object.kind (object events).
	ObjectKinds []string `json:"objectKinds,omitempty"`
	// ContainerOnly: the rule requires container.id != "".
	ContainerOnly bool `json:"containerOnly,omitempty"`
	// Namespace scopes a namespaced DetectionRule to events of its namespace.
	Namespace string `json:"namespace,omitempty"`
}

// attribute names used during analysis: CEL field paths, plus "process.binary:basename"
// for base-name constraints derived from endsWith.
const (
	attrKind          = "event.kind"
	attrBinary        = "process.binary"
	attrBasename      = "process.name"
	attrPath          = "file.path"
	attrPeerPort      = "net.peer.port"
	attrLocalPort     = "net.local.port"
	attrPeerIP        = "net.peer.ip"
	attrVerb          = "audit.verb"
	attrResource      = "audit.objectRef.resource"
	attrSubresource   = "audit.objectRef.subresource"
	attrObjectKind    = "object.kind"
	attrContainerID   = "container.id"
	markContainerOnly = "\x00nonempty" // value recorded for container.id != ""
)

// valueSet is a set of literal values of one attribute; prefix sets mark
// their values as prefixes.
type valueSet struct {
	values map[any]struct{}
	prefix bool // values are string prefixes (file.path) or CIDRs (net.peer.ip)
}

// cset maps an attribute to the set it must lie in. A missing attribute is
// unconstrained.
type cset map[string]valueSet

// deriveConstraints analyses a checked condition. The source's kinds bound the
// result even when the condition says nothing about event.kind.
func deriveConstraints(expr ast.Expr, source Source) Constraints {
	cs := derive(expr)
	c := Constraints{}
	kinds := source.Kinds()
	if ks, ok := cs[attrKind]; ok {
		for _, k := range kinds {
			if _, in := ks.values[string(k)]; in {
				c.Kinds = append(c.Kinds, k)
			}
		}
		if c.Kinds == nil {
			c.Kinds = []Kind{}
		}
	} else {
		c.Kinds = slices.Clone(kinds)
	}
	c.Binaries = stringsOf(cs, attrBinary)
	c.Basenames = stringsOf(cs, attrBasename)
	c.PathPrefixes = stringsOf(cs, attrPath)
	c.PeerPorts = intsOf(cs, attrPeerPort)
	c.LocalPorts = intsOf(cs, attrLocalPort)
	c.AuditVerbs = stringsOf(cs, attrVerb)
	c.AuditResources = stringsOf(cs, attrResource)
	c.AuditSubresources = stringsOf(cs, attrSubresource)
	c.ObjectKinds = stringsOf(cs, attrObjectKind)
	if s, ok := cs[attrPeerIP]; ok {
		c.PeerCIDRs = []netip.Prefix{}
		for v := range s.values {
			c.PeerCIDRs = append(c.PeerCIDRs, v.(netip.Prefix))
		}
		sort.Slice(c.PeerCIDRs, func(i, j int) bool { return c.PeerCIDRs[i].String() < c.PeerCIDRs[j].String() })
	}
	if s, ok := cs[attrContainerID]; ok {
		_, c.ContainerOnly = s.values[markContainerOnly]
	}
	return c
}

func stringsOf(cs cset, attr string) []string {
	s, ok := cs[attr]
	if !ok {
		return nil
	}
	out := []string{}
	for v := range s.values {
		if str, ok := v.(string); ok {
			out = append(out, str)
		}
	}
	sort.Strings(out)
	return out
}

func intsOf(cs cset, attr string) []int64 {
	s, ok := cs[attr]
	if !ok {
		return nil
	}
	out := []int64{}
	for v := range s.values {
		if n, ok := v.(int64); ok {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// derive returns the constraints an expression being true implies.
func derive(e ast.Expr) cset {
	if e.Kind() != ast.CallKind {
		return nil
	}
	call := e.AsCall()
	args := call.Args()
	switch call.FunctionName() {
	case operators.LogicalAnd:
		var out cset
		for _, a := range args {
			out = and(out, derive(a))
		}
		return out
	case operators.LogicalOr:
		if len(args) == 0 {
			return nil
		}
		out := derive(args[0])
		for _, a := range args[1:] {
			out = or(out, derive(a))
		}
		return out
	case operators.Equals:
		if len(args) != 2 {
			return nil
		}
		if attr, ok := fieldPath(args[0]); ok {
			return equality(attr, args[1])
		}
		if attr, ok := fieldPath(args[1]); ok {
			return equality(attr, args[0])
		}
	case operators.NotEquals:
		// container.id != "" is the one inequality with a kernel meaning.
		if len(args) == 2 {
			if attr, ok := fieldPath(args[0]); ok && attr == attrContainerID && isEmptyString(args[1]) {
				return cset{attrContainerID: {values: map[any]struct{}{markContainerOnly: {}}}}
			}
			if attr, ok := fieldPath(args[1]); ok && attr == attrContainerID && isEmptyString(args[0]) {
				return cset{attrContainerID: {values: map[any]struct{}{markContainerOnly: {}}}}
			}
		}
	case operators.In:
		if len(args) != 2 || args[1].Kind() != ast.ListKind {
			return nil
		}
		attr, ok := fieldPath(args[0])
		if !ok || !indexed(attr) {
			return nil
		}
		set := valueSet{values: map[any]struct{}{}}
		list := args[1].AsList()
		if len(list.OptionalIndices()) > 0 {
			return nil
		}
		for _, el := range list.Elements() {
			v, ok := literal(attr, el)
			if !ok {
				return nil
			}
			set.values[v] = struct{}{}
		}
		return cset{attr: set}
	case "endsWith":
		// process.binary.endsWith("/sh") means the base name is "sh".
		if !call.IsMemberFunction() || len(args) != 1 {
			return nil
		}
		attr, ok := fieldPath(call.Target())
		suffix, isStr := stringLiteral(args[0])
		if ok && isStr && attr == attrBinary && strings.HasPrefix(suffix, "/") && !strings.Contains(suffix[1:], "/") && len(suffix) > 1 {
			return cset{attrBasename: {values: map[any]struct{}{suffix[1:]: {}}}}
		}
	case "startsWith":
		if !call.IsMemberFunction() || len(args) != 1 {
			return nil
		}
		attr, ok := fieldPath(call.Target())
		prefix, isStr := stringLiteral(args[0])
		if ok && isStr && attr == attrPath {
			return cset{attrPath: {values: map[any]struct{}{prefix: {}}, prefix: true}}
		}
	case "inCIDR":
		if !call.IsMemberFunction() || len(args) != 1 {
			return nil
		}
		attr, ok := fieldPath(call.Target())
		s, isStr := stringLiteral(args[0])
		if ok && isStr && attr == attrPeerIP {
			p, err := parseCIDR(s)
			if err != nil {
				return nil
			}
			return cset{attrPeerIP: {values: map[any]struct{}{p: {}}, prefix: true}}
		}
	}
	return nil
}

// indexed reports whether analysis tracks an attribute.
func indexed(attr string) bool {
	switch attr {
	case attrKind, attrBinary, attrBasename, attrPath, attrPeerPort, attrLocalPort,
		attrVerb, attrResource, attrSubresource, attrObjectKind:
		return true
	}
	return false
}

func equality(attr string, lit ast.Expr) cset {
	if !indexed(attr) {
		return nil
	}
	v, ok := literal(attr, lit)
	if !ok {
		return nil
	}
	if attr == attrPath {
		return cset{attr: {values: map[any]struct{}{v: {}}, prefix: true}}
	}
	return cset{attr: {values: map[any]struct{}{v: {}}}}
}

// literal returns the constant an attribute is compared with, typed the way
// the matcher stores it.
func literal(attr string, e ast.Expr) (any, bool) {
	if e.Kind() != ast.LiteralKind {
		return nil, false
	}
	switch v := e.AsLiteral().(type) {
	case types.String:
		if attr == attrPeerPort || attr == attrLocalPort {
			return nil, false
		}
		return string(v), true
	case types.Int:
		if attr == attrPeerPort || attr == attrLocalPort {
			return int64(v), true
		}
	}
	return nil, false
}

func stringLiteral(e ast.Expr) (string, bool) {
	if e.Kind() != ast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().(types.String)
	return string(s), ok
}

func isEmptyString(e ast.Expr) bool {
	s, ok := stringLiteral(e)
	return ok && s == ""
}

// fieldPath turns a select chain on a variable into a dotted path, folding
// event.process.binary into process.binary.
func fieldPath(e ast.Expr) (string, bool) {
	var parts []string
	for e.Kind() == ast.SelectKind {
		sel := e.AsSelect()
		if sel.IsTestOnly() {
			return "", false
		}
		parts = append(parts, sel.FieldName())
		e = sel.Operand()
	}
	if e.Kind() != ast.IdentKind || len(parts) == 0 {
		return "", false
	}
	parts = append(parts, e.AsIdent())
	slices.Reverse(parts)
	if parts[0] == "event" && len(parts) > 2 {
		parts = parts[1:]
	}
	return strings.Join(parts, "."), true
}

// and combines two conjuncts: both must hold, so sets intersect.
func and(a, b cset) cset {
	if a == nil {
		return b
	}
	if b == nil {
		return a
	}
	out := cset{}
	for k, v := range a {
		out[k] = v
	}
	for k, w := range b {
		v, ok := out[k]
		if !ok {
			out[k] = w
			continue
		}
		if v.prefix || w.prefix {
			// Intersecting prefix sets is not worth it: either one alone is sound.
			continue
		}
		inter := valueSet{values: map[any]struct{}{}}
		for x := range v.values {
			if _, ok := w.values[x]; ok {
				inter.values[x] = struct{}{}
			}
		}
		out[k] = inter
	}
	return out
}

// or combines two disjuncts: only attributes both constrain stay, as unions.
func or(a, b cset) cset {
	if a == nil || b == nil {
		return nil
	}
	out := cset{}
	for k, v := range a {
		w, ok := b[k]
		if !ok || v.prefix != w.prefix {
			continue
		}
		u := valueSet{values: map[any]struct{}{}, prefix: v.prefix}
		for x := range v.values {
			u.values[x] = struct{}{}
		}
		for x := range w.values {
			u.values[x] = struct{}{}
		}
		out[k] = u
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// Explain renders the constraints for `riposte compile --explain` and rule status.
func (c Constraints) Explain() string {
	var parts []string
	kinds := make([]string, len(c.Kinds))
	for i, k := range c.Kinds {
		kinds[i] = string(k)
	}
	parts = append(parts, "kind in ["+strings.Join(kinds, ",")+"]")
	add := func(name string, vals []string) {
		if vals != nil {
			parts = append(parts, fmt.Sprintf("%s in [%s]", name, strings.Join(vals, ",")))
		}
	}
	add("binary", c.Binaries)
	add("basename", c.Basenames)
	add("path prefix", c.PathPrefixes)
	if c.PeerPorts != nil {
		parts = append(parts, fmt.Sprintf("peer port in %v", c.PeerPorts))
	}
	if c.LocalPorts != nil {
		parts = append(parts, fmt.Sprintf("local port in %v", c.LocalPorts))
	}
	if c.PeerCIDRs != nil {
		parts = append(parts, fmt.Sprintf("peer ip in %v", c.PeerCIDRs))
	}
	add("audit verb", c.AuditVerbs)
	add("audit resource", c.AuditResources)
	add("audit subresource", c.AuditSubresources)
	add("object kind", c.ObjectKinds)
	if c.ContainerOnly {
		parts = append(parts, "in a container")
	}
	if c.Namespace != "" {
		parts = append(parts, "namespace "+c.Namespace)
	}
	return strings.Join(parts, " && ")
}

// Admits reports whether an event satisfies the constraints. It is the
// reference semantics of the prefilter: for every rule r and event e,
// r matching e implies r.Constraints().Admits(e).
func (c Constraints) Admits(ev *Event) bool {
	if !slices.Contains(c.Kinds, ev.Kind) {
		return false
	}
	if c.Binaries != nil && !slices.Contains(c.Binaries, ev.Process.Binary) {
		return false
	}
	if c.Basenames != nil && !slices.Contains(c.Basenames, basename(ev.Process.Binary)) && !slices.Contains(c.Basenames, ev.Process.Name) {
		return false
	}
	if c.PathPrefixes != nil && !slices.ContainsFunc(c.PathPrefixes, func(p string) bool { return strings.HasPrefix(ev.File.Path, p) }) {
		return false
	}
	if c.PeerPorts != nil && !slices.Contains(c.PeerPorts, ev.Net.Peer.Port) {
		return false
	}
	if c.LocalPorts != nil && !slices.Contains(c.LocalPorts, ev.Net.Local.Port) {
		return false
	}
	if c.PeerCIDRs != nil {
		addr, err := netip.ParseAddr(ev.Net.Peer.IP)
		if err != nil || !slices.ContainsFunc(c.PeerCIDRs, func(p netip.Prefix) bool { return p.Contains(addr.Unmap()) }) {
			return false
		}
	}
	if c.AuditVerbs != nil && !slices.Contains(c.AuditVerbs, ev.Audit.Verb) {
		return false
	}
	if c.AuditResources != nil && !slices.Contains(c.AuditResources, ev.Audit.ObjectRef.Resource) {
		return false
	}
	if c.AuditSubresources != nil && !slices.Contains(c.AuditSubresources, ev.Audit.ObjectRef.Subresource) {
		return false
	}
	if c.ObjectKinds != nil {
		kind, _ := ev.Object["kind"].(string)
		if !slices.Contains(c.ObjectKinds, kind) {
			return false
		}
	}
	if c.ContainerOnly && ev.Container.ID == "" {
		return false
	}
	if c.Namespace != "" && ev.Namespace() != c.Namespace {
		return false
	}
	return true
}
