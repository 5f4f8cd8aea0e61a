package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"github.com/spf13/pflag"

	"github.com/riposte-dev/riposte/engine"
)

func init() {
	register(command{name: "replay", summary: "evaluate rules over recorded events or Kubernetes audit logs", run: replayCmd})
}

// alert is the JSON form of a match, shared by replay and run.
type alert struct {
	Time     time.Time `json:"time"`
	Rule     string    `json:"rule"`
	Severity string    `json:"severity"`
	Tags     []string  `json:"tags,omitempty"`
	Output   string    `json:"output"`
	// Suppressed marks a match the rule's throttle folded into an earlier
	// one: replay prints it anyway, so a forensic replay loses nothing.
	Suppressed bool          `json:"suppressed,omitempty"`
	Event      *engine.Event `json:"event"`
	// Steps are a sequence rule's events, step by step.
	Steps []engine.StepEvent `json:"steps,omitempty"`
}

func replayCmd(args []string) int {
	fs := pflag.NewFlagSet("riposte replay", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, `usage: riposte replay [--rules PATH] [--output text|json] FILE...

Evaluates rules over recorded events: riposte JSON lines or Kubernetes audit
logs (one audit.k8s.io Event per line, as --audit-log-path writes them, with
or without apiVersion), told apart per line by their shape. An audit event
that creates, changes or deletes an object with its body also feeds object
rules. Prints each match and a per-rule summary; --output json prints the
matches a throttle folds too, marked "suppressed": true. A line that does not
decode is reported and the rest are still evaluated. FILE - reads stdin.
Without --rules the library embedded in the binary is used.`)
		fs.PrintDefaults()
	}
	var rules []string
	fs.StringSliceVar(&rules, "rules", nil, "rule files or folders (repeatable; default: the embedded library)")
	output := fs.String("output", "text", "text or json (one JSON object per match)")
	noThrottle := fs.Bool("no-throttle", false, "report every match, ignoring the rules' throttle windows")
	if err := fs.Parse(args); err != nil {
		return exitBadUsage
	}
	if fs.NArg() == 0 || (*output != "text" && *output != "json") {
		fs.Usage()
		return exitBadUsage
	}
	set, loadErrs := loadRules(rules)
	bad := false
	for _, err := range loadErrs {
		fmt.Fprintf(os.Stderr, "error: %v\n", err)
		bad = true
	}
	// Replay what a cluster would run: rules that compile and pass their tests.
	compiled, notLive := set.Live()
	for _, err := range notLive {
		fmt.Fprintf(os.Stderr, "error: %v (rule not replayed)\n", err)
		bad = true
	}
	if len(compiled) == 0 {
		fmt.Fprintln(os.Stderr, "riposte replay: no rule compiled")
		return exitBadUsage
	}
	m := engine.NewMatcher(compiled)
	m.OnError = func(r *engine.Rule, ev *engine.Event, err error) {}
	th := engine.NewThrottle()
	type counts struct{ matched, reported, suppressed int }
	perRule := map[string]*counts{}
	for _, r := range compiled {
		perRule[r.Name()] = &counts{}
	}
	enc := json.NewEncoder(os.Stdout)
	var matches []engine.Match
	events, badLines := 0, 0
	// report matches one event: text output shows what a live source would
	// report, JSON output every match with the throttled ones marked.
	report := func(ev *engine.Event) {
		matches = m.Match(ev, matches[:0])
		for _, mt := range matches {
			c := perRule[mt.Rule.Name()]
			c.matched++
			suppressed := false
			if !*noThrottle {
				if ok, _ := th.Allow(mt.Rule, mt.Rule.ThrottleKey(ev), ev.Time); !ok {
					c.suppressed++
					suppressed = true
				}
			}
			if !suppressed {
				c.reported++
			}
			if *output == "json" {
				_ = enc.Encode(alert{Time: ev.Time, Rule: mt.Rule.Name(), Severity: mt.Rule.Severity(), Tags: mt.Rule.Spec().Tags, Output: mt.Output, Suppressed: suppressed, Event: ev, Steps: mt.Steps})
				continue
			}
			if !suppressed {
				fmt.Printf("%s %-8s %s: %s\n", ev.Time.UTC().Format(time.RFC3339), mt.Rule.Severity(), mt.Rule.Name(), mt.Output)
				for _, st := range mt.Steps {
					fmt.Printf("    step %s at %s\n", st.Step, st.Time.UTC().Format(time.RFC3339Nano))
				}
			}
		}
	}
	for _, file := range fs.Args() {
		var in io.Reader
		if file == "-" {
			in = os.Stdin
		} else {
			f, err := os.Open(file)
			if err != nil {
				fmt.Fprintf(os.Stderr, "error: %v\n", err)
				bad = true
				continue
			}
			defer f.Close()
			in = f
		}
		err := engine.ReadStream(in, func(ev *engine.Event, err error) {
			if err != nil {
				badLines++
				fmt.Fprintf(os.Stderr, "error: %s:%v (line skipped)\n", file, err)
				return
			}
			events++
			report(ev)
			if obj, ok := engine.ObjectFromAudit(ev); ok {
				report(&obj)
			}
		})
		if err != nil {
			fmt.Fprintf(os.Stderr, "error: %s: %v\n", file, err)
			bad = true
		}
	}
	summary := os.Stdout
	if *output == "json" {
		summary = os.Stderr
	}
	names := make([]string, 0, len(perRule))
	for n := range perRule {
		names = append(names, n)
	}
	sort.Strings(names)
	fmt.Fprintf(summary, "\n%-44s %8s %9s %11s\n", "rule", "matched", "reported", "suppressed")
	total := 0
	for _, n := range names {
		c := perRule[n]
		total += c.matched
		if c.matched == 0 {
			continue
		}
		fmt.Fprintf(summary, "%-44s %8d %9d %11d\n", n, c.matched, c.reported, c.suppressed)
	}
	fmt.Fprintf(summary, "%d events, %d matches from %d rules; %d bad lines; %d evaluation errors\n", events, total, len(compiled), badLines, m.Stats.EvalErrors)
	if bad || badLines > 0 {
		return exitBadUsage
	}
	return exitOK
}
