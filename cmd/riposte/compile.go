package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/engine/ruleset"
)

func init() {
	register(command{name: "compile", summary: "compile rules and show what each costs and what the kernel checks", run: compileCmd})
}

func compileCmd(args []string) int {
	fs := pflag.NewFlagSet("riposte compile", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: riposte compile [--explain] [--output text|json] PATH...\n\nCompiles every rule. With --explain, prints the necessary condition derived\nfrom each rule: the matcher's index key and the in-kernel prefilter.")
		fs.PrintDefaults()
	}
	explain := fs.Bool("explain", false, "print the derived filter per rule")
	output := fs.String("output", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		return exitBadUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitBadUsage
	}
	set, loadErrs := ruleset.Load(fs.Args()...)
	for _, err := range loadErrs {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
	}
	failed := 0
	var kernel []bpf.RuleConstraints
	enc := json.NewEncoder(os.Stdout)
	for _, r := range set.Rules {
		if r.Err != nil {
			failed++
			if e, ok := r.Err.(*ruleset.Error); ok {
				fmt.Fprintf(os.Stderr, "error: %s\n", e.Detail())
			} else {
				fmt.Fprintf(os.Stderr, "error: %v\n", r.Err)
			}
			continue
		}
		c := r.Compiled.Constraints()
		for _, p := range r.Compiled.Prefilters() {
			kernel = append(kernel, bpf.RuleConstraints{Name: r.ID(), Constraints: p})
		}
		if *output == "json" {
			_ = enc.Encode(map[string]any{"rule": r.ID(), "source": r.Spec.Source, "cost": r.Compiled.Cost(), "constraints": c, "prefilters": r.Compiled.Prefilters()})
			continue
		}
		fmt.Printf("%s: compiled, estimated cost %d\n", r.ID(), r.Compiled.Cost())
		if *explain {
			fmt.Printf("    filter: %s\n", r.Compiled.ExplainPrefilter())
		}
	}
	if *explain {
		// The union the agent loads into the kernel's maps: what passes the
		// in-kernel prefilter at all.
		if *output == "json" {
			_ = enc.Encode(map[string]any{"kernelFilter": bpf.ExplainRules(kernel)})
		} else {
			fmt.Print("\n" + bpf.ExplainRules(kernel))
		}
	}
	switch {
	case len(loadErrs) > 0:
		return exitBadUsage
	case failed > 0:
		return exitFailed
	}
	return exitOK
}
