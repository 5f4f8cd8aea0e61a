package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/google/cel-go/cel"
	"github.com/google/cel-go/checker"
	"github.com/google/cel-go/common/ast"
	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// DefaultCostLimit bounds the estimated worst-case CEL cost of one rule
// expression. Cost is bounded statically at compile time so the per-event path
// carries no runtime cost tracking.
const DefaultCostLimit uint64 = 1_000_000

// Rule is a compiled detection rule, ready to evaluate. It is immutable and
// safe for concurrent use.
type Rule struct {
	name      string
	namespace string
	spec      v1alpha1.DetectionRuleSpec

	source      Source
	condExpr    ast.Expr // the checked condition, for analysis
	condAst     *cel.Ast
	condition   cel.Program
	bounded     bounded
	exceptions  []exception
	output      cel.Program
	keys        []cel.Program
	window      time.Duration
	cost        uint64
	constraints Constraints
	kindSet     uint64 // bit i set when kinds[i] can match
	seq         *sequence
}

type exception struct {
	name string
	prg  cel.Program
	ast  *cel.Ast
}

// bounded are the rule's programs with a runtime cost limit and interrupt
// checks, for events from files (embedded tests, test files): built on first
// use, since the live path never needs them.
type bounded struct {
	once       sync.Once
	err        error
	condition  cel.Program
	exceptions []cel.Program
	steps      []cel.Program // a sequence's step conditions
}

// Name is the rule's name, namespace/name for a namespaced DetectionRule.
func (r *Rule) Name() string {
	if r.namespace != "" {
		return r.namespace + "/" + r.name
	}
	return r.name
}

// Namespace is the namespace of a DetectionRule, empty for a cluster rule.
func (r *Rule) Namespace() string { return r.namespace }

// Spec is the rule's spec as it was compiled.
func (r *Rule) Spec() *v1alpha1.DetectionRuleSpec { return &r.spec }

// Severity of the rule's matches.
func (r *Rule) Severity() string { return r.spec.Severity }

// Source of events the rule sees.
func (r *Rule) Source() Source { return r.source }

// Cost is the estimated worst-case cost of evaluating the rule once.
func (r *Rule) Cost() uint64 { return r.cost }

// Constraints is the necessary condition derived from the rule's condition.
func (r *Rule) Constraints() Constraints { return r.constraints }

// ThrottleWindow is how long matches with the same key fold into one; zero
// means every match is reported.
func (r *Rule) ThrottleWindow() time.Duration { return r.window }

// CompileError says which expression of which rule failed and where.
type CompileError struct {
	Rule string
	// Field is the spec field holding the expression, for example
	// "condition", "exceptions[0].condition", "output" or "throttle.key[1]".
	Field string
	// Line and Column are 1-based positions inside the expression; 0 if unknown.
	Line, Column int
	Msg          string
	// Source is the offending line of the expression with a caret under the column.
	Source string
}

func (e *CompileError) Error() string {
	pos := ""
	if e.Line > 0 {
		pos = fmt.Sprintf(" %d:%d", e.Line, e.Column)
	}
	return fmt.Sprintf("compile rule %q: %s%s: %s", e.Rule, e.Field, pos, e.Msg)
}

// ErrInvalidRule marks errors in a rule's spec that are not CEL errors.
var ErrInvalidRule = errors.New("invalid rule")

// Compile compiles a rule's condition, exceptions, output and throttle keys
// against the shared environment and derives its constraints. namespace is
// empty for a ClusterDetectionRule.
func Compile(name, namespace string, spec *v1alpha1.DetectionRuleSpec) (*Rule, error) {
	env, err := Env()
	if err != nil {
		return nil, fmt.Errorf("build CEL environment: %w", err)
	}
	r := &Rule{name: name, namespace: namespace, spec: *spec.DeepCopy()}
	display := r.Name()
	r.source = Source(spec.Source)
	if r.source.Kinds() == nil {
		return nil, fmt.Errorf("%w %q: source %q is not one of process, file, network, audit, object", ErrInvalidRule, display, spec.Source)
	}
	switch spec.Severity {
	case "info", "low", "medium", "high", "critical":
	default:
		return nil, fmt.Errorf("%w %q: severity %q is not one of info, low, medium, high, critical", ErrInvalidRule, display, spec.Severity)
	}

	if spec.Sequence != nil {
		if err := r.compileSequence(env, display, spec.Sequence); err != nil {
			return nil, err
		}
	} else {
		cond, cost, err := compileExpr(env, display, "condition", spec.Condition, cel.BoolType)
		if err != nil {
			return nil, err
		}
		r.cost, r.condAst = cost, cond
		r.condition, err = program(env, cond)
		if err != nil {
			return nil, fmt.Errorf("compile rule %q: condition: %w", display, err)
		}
		r.condExpr = cond.NativeRep().Expr()
		r.constraints = deriveConstraints(r.condExpr, r.source)
		r.constraints.Namespace = namespace
		for i, k := range AllKinds() {
			for _, c := range r.constraints.Kinds {
				if c == k {
					r.kindSet |= 1 << i
				}
			}
		}
	}

	for i, ex := range spec.Exceptions {
		field := fmt.Sprintf("exceptions[%d].condition", i)
		if ex.Name == "" {
			return nil, fmt.Errorf("%w %q: exceptions[%d] has no name", ErrInvalidRule, display, i)
		}
		a, c, err := compileExpr(env, display, field, ex.Condition, cel.BoolType)
		if err != nil {
			return nil, err
		}
		r.cost += c
		p, err := program(env, a)
		if err != nil {
			return nil, fmt.Errorf("compile rule %q: %s: %w", display, field, err)
		}
		r.exceptions = append(r.exceptions, exception{name: ex.Name, prg: p, ast: a})
	}
	if spec.Output != "" {
		a, _, err := compileExpr(env, display, "output", spec.Output, cel.StringType)
		if err != nil {
			return nil, err
		}
		if r.output, err = program(env, a); err != nil {
			return nil, fmt.Errorf("compile rule %q: output: %w", display, err)
		}
	}
	if t := spec.Throttle; t != nil {
		if t.Window.Duration <= 0 {
			return nil, fmt.Errorf("%w %q: throttle.window must be positive", ErrInvalidRule, display)
		}
		r.window = t.Window.Duration
		for i, k := range t.Key {
			a, _, err := compileExpr(env, display, fmt.Sprintf("throttle.key[%d]", i), k, nil)
			if err != nil {
				return nil, err
			}
			p, err := program(env, a)
			if err != nil {
				return nil, fmt.Errorf("compile rule %q: throttle.key[%d]: %w", display, i, err)
			}
			r.keys = append(r.keys, p)
		}
	}
	if r.seq != nil {
		r.seq.conds = make([]cel.Program, len(r.seq.steps))
		for i, st := range r.seq.steps {
			r.seq.conds[i] = st.cond
		}
		for _, ex := range r.exceptions {
			r.seq.exceptions = append(r.seq.exceptions, ex.prg)
		}
	}
	return r, nil
}

// compileExpr parses and checks one expression, checks its result type and
// bounds its estimated cost.
func compileExpr(env *cel.Env, rule, field, expr string, want *cel.Type) (*cel.Ast, uint64, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, 0, &CompileError{Rule: rule, Field: field, Msg: "expression is empty"}
	}
	ast, iss := env.Compile(expr)
	if iss.Err() != nil {
		e := iss.Errors()[0]
		ce := &CompileError{Rule: rule, Field: field, Msg: strings.TrimSuffix(e.Message, " (in container '')")}
		if loc := e.Location; loc != nil && loc.Line() > 0 {
			ce.Line, ce.Column = loc.Line(), loc.Column()+1
			ce.Source = caretLine(expr, ce.Line, ce.Column)
		}
		return nil, 0, ce
	}
	if want != nil && !ast.OutputType().IsExactType(want) && !ast.OutputType().IsExactType(cel.DynType) {
		return nil, 0, &CompileError{Rule: rule, Field: field, Line: 1, Column: 1,
			Msg: fmt.Sprintf("expression has type %s, want %s", ast.OutputType(), want)}
	}
	est, err := env.EstimateCost(ast, sizeEstimator{})
	if err != nil {
		return nil, 0, &CompileError{Rule: rule, Field: field, Msg: "estimate cost: " + err.Error()}
	}
	if est.Max > DefaultCostLimit {
		return nil, 0, &CompileError{Rule: rule, Field: field,
			Msg: fmt.Sprintf("estimated cost %d exceeds the limit %d: bound loops over lists or simplify", est.Max, DefaultCostLimit)}
	}
	return ast, est.Max, nil
}

func program(env *cel.Env, ast *cel.Ast) (cel.Program, error) {
	return env.Program(ast, cel.EvalOptions(cel.OptOptimize))
}

// TestCostLimit bounds the actual cost of one evaluation of an expression on
// an event from a file (an embedded test, a test file). Such events are
// bounded like live ones, so the static estimate holds; this is the runtime
// backstop, with interrupt checks so a deadline stops a long evaluation.
const TestCostLimit = 10 * DefaultCostLimit

func boundedProgram(env *cel.Env, ast *cel.Ast) (cel.Program, error) {
	return env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(TestCostLimit), cel.InterruptCheckFrequency(64))
}

func (r *Rule) boundedPrograms() (*bounded, error) {
	b := &r.bounded
	b.once.Do(func() {
		env, err := Env()
		if err != nil {
			b.err = err
			return
		}
		if r.seq != nil {
			for _, st := range r.seq.steps {
				p, err := boundedProgram(env, st.condAst)
				if err != nil {
					b.err = err
					return
				}
				b.steps = append(b.steps, p)
			}
		} else if b.condition, b.err = boundedProgram(env, r.condAst); b.err != nil {
			return
		}
		for _, ex := range r.exceptions {
			p, err := boundedProgram(env, ex.ast)
			if err != nil {
				b.err = err
				return
			}
			b.exceptions = append(b.exceptions, p)
		}
	})
	return b, b.err
}

// EvalContext evaluates the rule like Eval, with a runtime cost limit and
// stopping when ctx ends: for events from files, whose evaluation must be
// bounded in time as well as cost.
func (r *Rule) EvalContext(ctx context.Context, ev *Event) Verdict {
	if r.seq != nil {
		return Verdict{} // one event never completes a sequence of two or more
	}
	b, err := r.boundedPrograms()
	if err != nil {
		return Verdict{Err: err}
	}
	act := &activation{ev: ev}
	out, _, err := b.condition.ContextEval(ctx, act)
	if err != nil {
		return Verdict{Err: err}
	}
	if out != types.True {
		return Verdict{}
	}
	for i, ex := range r.exceptions {
		v, _, err := b.exceptions[i].ContextEval(ctx, act)
		if err != nil {
			if ctx.Err() != nil {
				return Verdict{Err: err}
			}
			continue // a failing exception cannot vouch for the event
		}
		if v == types.True {
			return Verdict{Exception: ex.name}
		}
	}
	return Verdict{Matched: true}
}

// caretLine returns the given line of src with a caret under column.
func caretLine(src string, line, column int) string {
	lines := strings.Split(src, "\n")
	if line < 1 || line > len(lines) {
		return ""
	}
	l := lines[line-1]
	if column < 1 {
		column = 1
	}
	return l + "\n" + strings.Repeat(" ", column-1) + "^"
}

// Evaluation bounds the sizes the cost estimator assumes; the agent and the
// decoders enforce them on real events.
const (
	MaxArgs      = 64   // process.args and ancestors' args
	MaxAncestors = 16   // process.ancestors
	MaxString    = 4096 // any string (PATH_MAX)
	MaxListItems = 256  // any other list or map
)

// sizeEstimator gives the cost estimator the sizes riposte guarantees.
type sizeEstimator struct{}

func (sizeEstimator) EstimateSize(n checker.AstNode) *checker.SizeEstimate {
	path := strings.Join(n.Path(), ".")
	switch {
	case strings.HasSuffix(path, ".args"):
		return &checker.SizeEstimate{Min: 0, Max: MaxArgs}
	case strings.HasSuffix(path, ".ancestors"):
		return &checker.SizeEstimate{Min: 0, Max: MaxAncestors}
	}
	if t := n.Type(); t != nil {
		switch t.Kind() {
		case types.StringKind, types.BytesKind:
			return &checker.SizeEstimate{Min: 0, Max: MaxString}
		case types.ListKind, types.MapKind:
			return &checker.SizeEstimate{Min: 0, Max: MaxListItems}
		}
	}
	return &checker.SizeEstimate{Min: 0, Max: MaxListItems}
}

func (sizeEstimator) EstimateCallCost(string, string, *checker.AstNode, []checker.AstNode) *checker.CallEstimate {
	return nil
}

// Verdict is the outcome of evaluating one rule against one event.
type Verdict struct {
	Matched bool
	// Exception names the exception that dropped a match.
	Exception string
	// Err is an evaluation error (for example a missing map key); the rule
	// does not match and the error is counted.
	Err error
}

// Eval evaluates the rule on an event: the condition, then the exceptions.
// It does not check the event's kind or namespace; the matcher does.
func (r *Rule) Eval(ev *Event) Verdict {
	act := activation{ev: ev}
	return r.eval(&act)
}

func (r *Rule) eval(act *activation) Verdict {
	if r.seq != nil {
		return Verdict{} // one event never completes a sequence of two or more
	}
	out, _, err := r.condition.Eval(act)
	if err != nil {
		return Verdict{Err: err}
	}
	if out != types.True {
		return Verdict{}
	}
	for _, ex := range r.exceptions {
		v, _, err := ex.prg.Eval(act)
		if err != nil {
			// A failing exception cannot vouch for the event: keep the match.
			continue
		}
		if v == types.True {
			return Verdict{Exception: ex.name}
		}
	}
	return Verdict{Matched: true}
}

// Applies reports whether the rule sees events of this kind and namespace.
func (r *Rule) Applies(ev *Event) bool {
	i := kindIndex(ev.Kind)
	if i < 0 || r.kindSet&(1<<i) == 0 {
		return false
	}
	return r.namespace == "" || ev.Namespace() == r.namespace
}

// Output renders the rule's output expression for an event. Errors are
// rendered into the text rather than dropping the alert.
func (r *Rule) Output(ev *Event) string {
	if r.output == nil {
		return r.Name()
	}
	v, _, err := r.output.Eval(&activation{ev: ev})
	if err != nil {
		return fmt.Sprintf("%s (output error: %v)", r.Name(), err)
	}
	if s, ok := v.(types.String); ok {
		return string(s)
	}
	return fmt.Sprint(v.Value())
}

// ThrottleKey renders the rule's throttle key for an event: the key
// expressions' values joined by '|'. Errors render as "<error>" so a broken
// key still throttles rather than floods.
func (r *Rule) ThrottleKey(ev *Event) string {
	if len(r.keys) == 0 {
		return ""
	}
	act := &activation{ev: ev}
	var b strings.Builder
	for i, k := range r.keys {
		if i > 0 {
			b.WriteByte('|')
		}
		v, _, err := k.Eval(act)
		if err != nil {
			b.WriteString("<error>")
			continue
		}
		b.WriteString(valString(v))
	}
	return b.String()
}

func valString(v ref.Val) string {
	if s, ok := v.(types.String); ok {
		return string(s)
	}
	return fmt.Sprint(v.Value())
}
