package bpf_test

import (
	"fmt"

	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/engine"
)

// The kernel filter of two rules, and what it decides for three events.
func ExampleNewFilter() {
	f := bpf.NewFilter([]bpf.RuleConstraints{
		{Name: "shell-in-container", Constraints: engine.Constraints{
			Kinds: []engine.Kind{engine.KindExec}, Basenames: []string{"bash", "sh"}, ContainerOnly: true}},
		{Name: "token-read", Constraints: engine.Constraints{
			Kinds: []engine.Kind{engine.KindOpen}, PathPrefixes: []string{"/var/run/secrets/kubernetes.io/serviceaccount/"}}},
	})
	fmt.Print(f.Explain())
	fmt.Println(f.Pass(bpf.View{Kind: engine.KindExec, Binary: "/bin/sh", InContainer: true}))
	fmt.Println(f.Pass(bpf.View{Kind: engine.KindExec, Binary: "/bin/sh"}))
	fmt.Println(f.Pass(bpf.View{Kind: engine.KindOpen, Path: "/etc/passwd", InContainer: true}))
	// Output:
	// kernel filter: 2 slot(s) of 64
	//   slot 0 [shell-in-container]: kind in [exec] && mount namespace is not the host's && exec basename in [bash,sh]
	//   slot 1 [token-read]: kind in [open] && open path has prefix in [/var/run/secrets/kubernetes.io/serviceaccount/]
	// true
	// false
	// false
}
