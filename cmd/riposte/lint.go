package main

import (
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/riposte-dev/riposte/engine/ruleset"
	"github.com/riposte-dev/riposte/internal/rulecheck"
)

func init() {
	register(command{name: "lint", summary: "compile rules and report cost, missing tests, duplicates, unknown playbooks", run: lintCmd})
}

func lintCmd(args []string) int {
	fs := pflag.NewFlagSet("riposte lint", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: riposte lint [--strict] PATH...\n\nCompiles every rule and prints its estimated cost. Errors: a rule that does\nnot compile, duplicate names, a playbook the admission webhook refuses. Warnings: a rule without a positive or a\nnegative test, a playbook reference not found among the loaded files.")
		fs.PrintDefaults()
	}
	strict := fs.Bool("strict", false, "treat warnings as errors")
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
	findings := ruleset.Lint(set)
	// A playbook the admission webhook would refuse fails here, so CI is red
	// before the sync is.
	for _, p := range set.Playbooks {
		if err := rulecheck.ValidatePlaybook(&p.Spec); err != nil {
			findings = append(findings, ruleset.Finding{Error: true, Detail: fmt.Sprintf("%s:%d: %s %q: %v", p.File, p.Line, p.Kind, p.Name, err)})
		}
	}
	errors, warnings := 0, 0
	for _, r := range set.Rules {
		if r.Compiled != nil {
			fmt.Printf("ok      %s:%d: rule %q: estimated cost %d; prefilter: %s\n", r.File, r.Line, r.ID(), r.Compiled.Cost(), r.Compiled.ExplainPrefilter())
		}
	}
	for _, f := range findings {
		level := "warning"
		if f.Error {
			level = "error"
			errors++
		} else {
			warnings++
		}
		fmt.Printf("%-7s %s\n", level, f.Detail)
	}
	fmt.Printf("%d rules, %d playbooks: %d errors, %d warnings\n", len(set.Rules), len(set.Playbooks), errors, warnings)
	switch {
	case len(loadErrs) > 0:
		return exitBadUsage
	case errors > 0, *strict && warnings > 0:
		return exitFailed
	}
	return exitOK
}
