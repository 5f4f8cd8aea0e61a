// Package rules embeds riposte's shipped rule library: the YAML files in this
// folder, each rule with its tests. `riposte replay` and `riposte run` use it
// when no --rules path is given; GitOps users sync the files themselves.
package rules

import "embed"

// FS holds every rule and playbook file of the library.
//
//go:embed */*.yaml *.yaml
var FS embed.FS
