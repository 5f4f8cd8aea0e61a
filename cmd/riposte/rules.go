package main

import (
	"fmt"
	"os"

	"github.com/riposte-dev/riposte/engine/ruleset"
	"github.com/riposte-dev/riposte/rules"
)

// loadRules loads rule paths, or the library embedded in the binary when none
// is given, and says on stderr which it used.
func loadRules(paths []string) (*ruleset.Set, []error) {
	if len(paths) == 0 {
		set, errs := ruleset.LoadFS(rules.FS)
		fmt.Fprintf(os.Stderr, "using the embedded rule library: %d rules, %d playbooks\n", len(set.Rules), len(set.Playbooks))
		return set, errs
	}
	return ruleset.Load(paths...)
}
