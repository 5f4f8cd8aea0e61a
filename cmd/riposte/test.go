package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/pflag"

	"github.com/riposte-dev/riposte/engine/ruleset"
)

func init() {
	register(command{name: "test", summary: "run the tests embedded in rules and *.test.yaml files", run: testCmd})
}

func testCmd(args []string) int {
	fs := pflag.NewFlagSet("riposte test", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: riposte test [--junit FILE] [--output text|json] PATH...\n\nLoads rules (files or folders), runs every rule's embedded tests and every\n*.test.yaml file, prints one line per test and 'N passed, N failed'.\nExit 0 all passed, 1 a test or rule failed, 2 the input could not be loaded.")
		fs.PrintDefaults()
	}
	junit := fs.String("junit", "", "write JUnit XML to this file")
	output := fs.String("output", "text", "text or json (one JSON object per test)")
	timeout := fs.Duration("test-timeout", ruleset.DefaultTestTimeout, "time allowed for one rule's embedded tests (and one test file case); those not run in time fail")
	if err := fs.Parse(args); err != nil {
		return exitBadUsage
	}
	if *output != "text" && *output != "json" {
		fmt.Fprintf(os.Stderr, "riposte test: --output must be text or json, not %q\n", *output)
		return exitBadUsage
	}
	paths := fs.Args()
	if len(paths) == 0 {
		fs.Usage()
		return exitBadUsage
	}
	set, loadErrs := ruleset.Load(paths...)
	for _, err := range loadErrs {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
	}
	fmt.Fprintf(os.Stderr, "loaded %d rules, %d playbooks, %d test files\n", len(set.Rules), len(set.Playbooks), len(set.TestFiles))

	results := ruleset.Run(context.Background(), set, *timeout)
	passed, failed := 0, 0
	enc := json.NewEncoder(os.Stdout)
	for _, r := range results {
		if r.Passed {
			passed++
		} else {
			failed++
		}
		if *output == "json" {
			_ = enc.Encode(r)
			continue
		}
		status := "PASS"
		if !r.Passed {
			status = "FAIL"
		}
		fmt.Printf("%s %s: %s", status, r.Rule, r.Test)
		if !r.Passed {
			fmt.Printf(" (%s:%d)\n    %s", r.File, r.Line, indentLines(r.Message, "    "))
		}
		fmt.Println()
	}
	if *junit != "" {
		if err := writeFile(*junit, func(f *os.File) error { return ruleset.WriteJUnit(f, results) }); err != nil {
			fmt.Fprintf(os.Stderr, "riposte test: write JUnit: %v\n", err)
			return exitBadUsage
		}
	}
	if *output == "text" {
		fmt.Printf("%d passed, %d failed\n", passed, failed)
	} else {
		fmt.Fprintf(os.Stderr, "%d passed, %d failed\n", passed, failed)
	}
	switch {
	case len(loadErrs) > 0:
		return exitBadUsage
	case failed > 0:
		return exitFailed
	}
	return exitOK
}

func writeFile(path string, write func(*os.File) error) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := write(f); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func indentLines(s, pre string) string {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		out = append(out, s[i])
		if s[i] == '\n' {
			out = append(out, pre...)
		}
	}
	return string(out)
}
