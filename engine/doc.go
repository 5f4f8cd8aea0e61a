// Package engine is the detection core of riposte: the event model and its
// JSON form, the CEL environment rules compile in, the rule compiler, the
// indexed matcher and throttling.
//
// The engine takes events and returns matches. It knows nothing of Kubernetes
// clients or BPF loaders, so it is tested and benchmarked on its own:
//
//	rule, err := engine.Compile("shell-in-container", "", &spec)
//	m := engine.NewMatcher([]*engine.Rule{rule})
//	matches := m.Match(&ev, nil)
//
// Each rule is compiled once when it changes. Its estimated worst-case cost is
// bounded at compile time, so evaluation carries no runtime cost tracking.
// From each condition the compiler derives Constraints, a necessary condition
// made of literal comparisons; the matcher indexes rules by it, and the node
// agent turns the union over rules into in-kernel prefilters.
package engine
