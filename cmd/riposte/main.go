// Command riposte is the one binary of riposte: the CLI for rule authors and
// CI (test, lint, replay, compile), the host agent (run), and the in-cluster
// controller and node agent.
//
// Exit codes: 0 all passed, 1 a test or rule failed, 2 the input could not be
// loaded or the command was misused.
package main

import (
	"fmt"
	"os"
	"sort"
)

// Exit codes shared by every subcommand.
const (
	exitOK       = 0
	exitFailed   = 1
	exitBadUsage = 2
)

// command is one subcommand. Each lives in its own file and registers itself.
type command struct {
	name    string
	summary string
	run     func(args []string) int
}

var commands = map[string]command{}

func register(c command) { commands[c.name] = c }

func usage() {
	fmt.Fprintln(os.Stderr, "usage: riposte <command> [flags] [args]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-11s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(os.Stderr, "\nRun 'riposte <command> --help' for a command's flags.")
}

func main() {
	if len(os.Args) < 2 || os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
		usage()
		if len(os.Args) < 2 {
			os.Exit(exitBadUsage)
		}
		os.Exit(exitOK)
	}
	c, ok := commands[os.Args[1]]
	if !ok {
		fmt.Fprintf(os.Stderr, "riposte: unknown command %q\n\n", os.Args[1])
		usage()
		os.Exit(exitBadUsage)
	}
	os.Exit(c.run(os.Args[2:]))
}
