package engine

import (
	"errors"
	"fmt"
	"strings"

	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/operators"
)

// ErrNotExact is returned by ExactExec for a rule the kernel cannot check
// exactly; the error says why.
var ErrNotExact = errors.New("not checkable exactly in the kernel")

// ExactExec returns the binaries and base names of a rule whose whole
// condition is `event.kind == "exec"` and one set of binaries or base names
// (==, in, endsWith("/name"), or a disjunction of those), with no exception
// and no namespace scope: then the kernel's exec check is the rule itself
// and the agent may kill at exec, before the binary runs. A container-only
// rule (`container.id != ""` as a further conjunct) stays exact: the kernel
// knows container processes. It shares its reading of the condition with
// the constraint analysis (fieldPath, literals).
func (r *Rule) ExactExec() (bins, names []string, containerOnly bool, err error) {
	fail := func(why string) ([]string, []string, bool, error) {
		return nil, nil, false, fmt.Errorf("rule %q: %w: %s", r.Name(), ErrNotExact, why)
	}
	if r.seq != nil {
		return fail("it is a sequence: its last step depends on earlier events")
	}
	if len(r.spec.Exceptions) > 0 {
		return fail("it has exceptions")
	}
	if r.namespace != "" {
		return fail("it is scoped to a namespace")
	}
	var conj []ast.Expr
	flattenAnd(r.condExpr, &conj)
	kindOK, setSeen := false, false
	for _, c := range conj {
		switch {
		case isExecKind(c):
			kindOK = true
			continue
		case isContainerOnly(c):
			containerOnly = true
			continue
		}
		b, n, ok := exactBinarySet(c)
		if !ok || setSeen {
			return fail("its condition has more than kind == \"exec\", container.id != \"\" and one binary or base-name set")
		}
		setSeen = true
		bins, names = b, n
	}
	if !kindOK || !setSeen {
		return fail("its condition lacks event.kind == \"exec\" or a binary/base-name set")
	}
	return bins, names, containerOnly, nil
}

func flattenAnd(e ast.Expr, out *[]ast.Expr) {
	if e.Kind() == ast.CallKind && e.AsCall().FunctionName() == operators.LogicalAnd {
		for _, a := range e.AsCall().Args() {
			flattenAnd(a, out)
		}
		return
	}
	*out = append(*out, e)
}

// isExecKind recognises event.kind == "exec" and event.kind in ["exec"].
func isExecKind(e ast.Expr) bool {
	if e.Kind() != ast.CallKind {
		return false
	}
	c := e.AsCall()
	args := c.Args()
	switch c.FunctionName() {
	case operators.Equals:
		if len(args) != 2 {
			return false
		}
		for i := range 2 {
			if p, ok := fieldPath(args[i]); ok && p == attrKind {
				s, isStr := stringLiteral(args[1-i])
				return isStr && s == string(KindExec)
			}
		}
	case operators.In:
		if len(args) != 2 || args[1].Kind() != ast.ListKind {
			return false
		}
		p, ok := fieldPath(args[0])
		els := args[1].AsList().Elements()
		if !ok || p != attrKind || len(els) != 1 {
			return false
		}
		s, isStr := stringLiteral(els[0])
		return isStr && s == string(KindExec)
	}
	return false
}

// isContainerOnly recognises container.id != "".
func isContainerOnly(e ast.Expr) bool {
	return e.Kind() == ast.CallKind && e.AsCall().FunctionName() == operators.NotEquals &&
		derive(e)[attrContainerID].values != nil
}

// exactBinarySet recognises one set of binaries or base names, exactly.
func exactBinarySet(e ast.Expr) (bins, names []string, ok bool) {
	if e.Kind() != ast.CallKind {
		return nil, nil, false
	}
	c := e.AsCall()
	args := c.Args()
	switch c.FunctionName() {
	case operators.LogicalOr:
		for _, a := range args {
			b, n, ok := exactBinarySet(a)
			if !ok {
				return nil, nil, false
			}
			bins, names = append(bins, b...), append(names, n...)
		}
		return bins, names, true
	case operators.Equals:
		if len(args) != 2 {
			return nil, nil, false
		}
		for i := range 2 {
			if p, ok := fieldPath(args[i]); ok {
				return binarySet(p, []ast.Expr{args[1-i]})
			}
		}
	case operators.In:
		if len(args) != 2 || args[1].Kind() != ast.ListKind {
			return nil, nil, false
		}
		p, ok := fieldPath(args[0])
		if !ok {
			return nil, nil, false
		}
		return binarySet(p, args[1].AsList().Elements())
	case "endsWith":
		if !c.IsMemberFunction() || len(args) != 1 {
			return nil, nil, false
		}
		p, ok := fieldPath(c.Target())
		s, isStr := stringLiteral(args[0])
		// The kernel reports absolute paths, so endsWith("/sh") is "base name is sh".
		if !ok || !isStr || p != attrBinary || len(s) < 2 || s[0] != '/' || strings.Contains(s[1:], "/") {
			return nil, nil, false
		}
		return nil, []string{s[1:]}, true
	}
	return nil, nil, false
}

func binarySet(field string, lits []ast.Expr) (bins, names []string, ok bool) {
	var vals []string
	for _, l := range lits {
		s, isStr := stringLiteral(l)
		if !isStr || s == "" {
			return nil, nil, false
		}
		vals = append(vals, s)
	}
	switch field {
	case attrBinary:
		return vals, nil, true
	case attrBasename:
		return nil, vals, true
	}
	return nil, nil, false
}
