package engine_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enginetest"
)

// TestMatcherAgreesWithPlainCEL is the soundness property of constraint
// derivation, kind narrowing and the index, checked against an oracle that
// shares none of them (engine/enginetest evaluates each rule's CEL with
// cel-go as written). Over random rules of every source and random events of
// every kind, for each event:
//
//   - the indexed matcher returns exactly the rules the oracle matches (no
//     rule missing, none extra, none twice), and so does the naive matcher;
//   - Rule.Check agrees with the oracle rule by rule;
//   - every rule the oracle matches has constraints that admit the event
//     (Constraints.Admits is the reference semantics of the kernel filter).
//
// The seed changes every run (RIPOSTE_ORACLE_SEED repeats one); a failure
// prints the seed and a reproduction shrunk to one rule and the fields of
// one event that still fail.
//
// The test catches a derivation that is too tight; both mutations below were
// tried in engine/constraints.go and reverted. Deriving `||` like `&&`
// (`out = and(out, derive(a))` in the LogicalOr case) fails it in the first
// rounds:
//
//	rule r1 and the event disagree: oracle match=true, indexed=false, naive=true, Check=true, constraints admit=false
//	source: network
//	condition: (net.peer.port in [22] || container.id == "")
//	event: {"kind":"connect","time":"0001-01-01T00:00:00Z"}
//	constraints: kind in [connect,accept,listen] && peer port in [22]
//
// Keeping only the first of several event.kind literals narrows the kind
// set, which the naive matcher and Rule.Check share with the index, so only
// the oracle notices:
//
//	rule r7 and the event disagree: oracle match=true, indexed=false, naive=false, Check=false, constraints admit=false
//	source: network
//	condition: (event.kind in ["setuid", "unshare", "listen"] || event.kind in ["open", "connect", "unshare"])
//	event: {"kind":"listen","time":"0001-01-01T00:00:00Z"}
//	constraints: kind in [connect]
func TestMatcherAgreesWithPlainCEL(t *testing.T) {
	seed := enginetest.Seed(t)
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pools := enginetest.DefaultPools()
	var events, matches, candidatesSaved int
	for round := range 30 {
		cases, rules, oracles := randomRuleSet(t, r, pools, 1+r.IntN(60))
		indexed, naive := engine.NewMatcher(rules), engine.NewNaiveMatcher(rules)
		for range 300 {
			ec := pools.Event(r)
			ev := ec.Event()
			events++
			var want []string
			for i, o := range oracles {
				if o.Matches(ev) {
					want = append(want, rules[i].Name())
				}
			}
			sort.Strings(want)
			matches += len(want)
			before := indexed.Stats.Candidates
			got := matchNames(indexed.Match(ev, nil))
			candidatesSaved += len(rules) - int(indexed.Stats.Candidates-before)
			gotNaive := matchNames(naive.Match(ev, nil))
			if slices.Equal(got, want) && slices.Equal(gotNaive, want) {
				bad := -1
				for i, rule := range rules {
					om := slices.Contains(want, rule.Name())
					if rule.Check(context.Background(), ev).Matched != om || (om && !rule.Constraints().Admits(ev)) {
						bad = i
						break
					}
				}
				if bad < 0 {
					continue
				}
			}
			// Find the rule that disagrees and shrink it with the event.
			for i, rc := range cases {
				if !disagrees(t, rc, ec) {
					continue
				}
				t.Fatalf("seed %d round %d: %s\nshrunk reproduction (RIPOSTE_ORACLE_SEED=%d go test -run %s ./engine):\n%s",
					seed, round, verdicts(t, rc, ec), seed, t.Name(), reproduce(t, cases[i], ec))
			}
			t.Fatalf("seed %d round %d: over %d rules the matchers disagree with the oracle, though each rule alone agrees\nevent %s\nindexed %v\nnaive   %v\noracle  %v",
				seed, round, len(rules), ec.JSON(), got, gotNaive, want)
		}
	}
	t.Logf("%d events, %d oracle matches; the index skipped %d of the rule evaluations", events, matches, candidatesSaved)
	// A generator too sparse to match, or an index that evaluates
	// everything, would make the property vacuous.
	if matches < events/4 || candidatesSaved < events {
		t.Fatalf("seed %d: the property is too weak to mean anything: %d matches and %d skipped evaluations over %d events", seed, matches, candidatesSaved, events)
	}
}

// randomRuleSet compiles n random rules with the engine and the oracle.
func randomRuleSet(t *testing.T, r *rand.Rand, pools *enginetest.Pools, n int) ([]*enginetest.RuleCase, []*engine.Rule, []*enginetest.Rule) {
	t.Helper()
	var cases []*enginetest.RuleCase
	var rules []*engine.Rule
	var oracles []*enginetest.Rule
	for i := 0; len(rules) < n; i++ {
		rc := pools.Rule(r, fmt.Sprintf("r%d", i))
		rule, err := engine.Compile(rc.Name, rc.Namespace, rc.Spec())
		if err != nil {
			t.Fatalf("a generated rule does not compile: %v\n%s", err, rc)
		}
		o, err := enginetest.Compile(rule.Name(), rc.Namespace, rc.Spec())
		if err != nil {
			t.Fatal(err)
		}
		cases, rules, oracles = append(cases, rc), append(rules, rule), append(oracles, o)
	}
	return cases, rules, oracles
}

// verdict is what each side says about one rule and one event.
type verdict struct {
	oracle, indexed, naive, check, admits bool
}

func (v verdict) agree() bool {
	return v.indexed == v.oracle && v.naive == v.oracle && v.check == v.oracle && (!v.oracle || v.admits)
}

func judge(t *testing.T, rc *enginetest.RuleCase, ec *enginetest.EventCase) verdict {
	t.Helper()
	rule, err := engine.Compile(rc.Name, rc.Namespace, rc.Spec())
	if err != nil {
		t.Fatalf("compile %s: %v", rc, err)
	}
	o, err := enginetest.Compile(rule.Name(), rc.Namespace, rc.Spec())
	if err != nil {
		t.Fatal(err)
	}
	ev := ec.Event()
	return verdict{
		oracle:  o.Matches(ev),
		indexed: len(engine.NewMatcher([]*engine.Rule{rule}).Match(ev, nil)) == 1,
		naive:   len(engine.NewNaiveMatcher([]*engine.Rule{rule}).Match(ev, nil)) == 1,
		check:   rule.Check(context.Background(), ev).Matched,
		admits:  rule.Constraints().Admits(ev),
	}
}

func disagrees(t *testing.T, rc *enginetest.RuleCase, ec *enginetest.EventCase) bool {
	return !judge(t, rc, ec).agree()
}

func verdicts(t *testing.T, rc *enginetest.RuleCase, ec *enginetest.EventCase) string {
	v := judge(t, rc, ec)
	return fmt.Sprintf("rule %s and the event disagree: oracle match=%v, indexed=%v, naive=%v, Check=%v, constraints admit=%v",
		rc.Name, v.oracle, v.indexed, v.naive, v.check, v.admits)
}

func reproduce(t *testing.T, rc *enginetest.RuleCase, ec *enginetest.EventCase) string {
	rc, ec = enginetest.Shrink(rc, ec, func(rc *enginetest.RuleCase, ec *enginetest.EventCase) bool { return disagrees(t, rc, ec) })
	rule, _ := engine.Compile(rc.Name, rc.Namespace, rc.Spec())
	var b strings.Builder
	fmt.Fprintf(&b, "%s\nevent: %s\nconstraints: %s\n%s", rc, ec.JSON(), rule.Constraints().Explain(), verdicts(t, rc, ec))
	return b.String()
}

func matchNames(ms []engine.Match) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Rule.Name())
	}
	sort.Strings(out)
	return out
}
