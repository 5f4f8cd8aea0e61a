package rules_test

import (
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/ruleset"
)

// The shipped library is held to what a SOC relies on: every rule says what
// it means and why (description), how bad (severity), which ATT&CK
// technique (a mitre:T... tag), renders an output, is proven by a test that
// fires and one that does not, lives in the folder of its source, and is
// listed in rules/README.md.
func TestEveryRuleIsDocumentedTaggedAndTested(t *testing.T) {
	set, errs := ruleset.Load(".")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	mitre := regexp.MustCompile(`^mitre:T[0-9]{4}(\.[0-9]{3})?$`)
	perSource := map[string]int{}
	tests := 0
	for _, r := range set.Rules {
		s := &r.Spec
		where := r.File + ": " + r.ID()
		perSource[s.Source]++
		if r.Err != nil {
			t.Errorf("%s: %v", where, r.Err)
			continue
		}
		if !strings.HasPrefix(r.File, s.Source+"/") {
			t.Errorf("%s: a %s rule belongs in %s/", where, s.Source, s.Source)
		}
		if len(strings.Fields(s.Description)) < 12 {
			t.Errorf("%s: the description must say what the rule means and why it matters", where)
		}
		if s.Output == "" {
			t.Errorf("%s: no output", where)
		}
		tagged := false
		for _, tag := range s.Tags {
			if mitre.MatchString(tag) {
				tagged = true
			}
		}
		if !tagged {
			t.Errorf("%s: no ATT&CK tag (mitre:Txxxx) in %v", where, s.Tags)
		}
		// System components that would trigger the rule are excepted by an
		// exception, or the description says that none does.
		desc := strings.Join(strings.Fields(s.Description), " ")
		if len(s.Exceptions) == 0 && !strings.Contains(desc, "excepted") && !strings.Contains(desc, "No system component") {
			t.Errorf("%s: neither an exception nor a word on system components", where)
		}
		pos, neg := 0, 0
		for _, tc := range s.Tests {
			switch tc.Expect {
			case v1alpha1.ExpectMatch:
				pos++
			case v1alpha1.ExpectNoMatch:
				neg++
			}
		}
		if pos == 0 || neg == 0 {
			t.Errorf("%s: %d tests that fire and %d that do not; want at least one of each", where, pos, neg)
		}
		tests += len(s.Tests)
		row := regexp.MustCompile("(?m)^\\| `" + regexp.QuoteMeta(r.ID()) + "` \\|.*\\| ([0-9]+) \\|$").FindStringSubmatch(string(readme))
		switch {
		case row == nil:
			t.Errorf("%s: no row in the tables of rules/README.md", where)
		case row[1] != strconv.Itoa(len(s.Tests)):
			t.Errorf("%s: rules/README.md says %s tests, the rule has %d", where, row[1], len(s.Tests))
		}
		if engine.Source(s.Source).Kinds() == nil {
			t.Errorf("%s: unknown source %q", where, s.Source)
		}
	}
	if n := len(set.Rules); n < 60 {
		t.Errorf("%d rules, want at least 60", n)
	}
	if tests < 120 {
		t.Errorf("%d embedded tests, want at least 120", tests)
	}
	for _, src := range engine.Sources {
		if perSource[string(src)] == 0 {
			t.Errorf("no %s rule", src)
		}
	}
	t.Logf("%d rules (%v), %d embedded tests", len(set.Rules), perSource, tests)
}

// Every rule named in the README exists: the tables do not rot.
func TestReadmeNamesOnlyRulesThatExist(t *testing.T) {
	set, errs := ruleset.Load(".")
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	// Rule names appear in the tables as `name` in the first column or
	// after an arrow in the parity tables.
	for _, m := range regexp.MustCompile("`([a-z0-9]+(-[a-z0-9]+)+)`").FindAllStringSubmatch(string(readme), -1) {
		if set.Rule(m[1]) == nil && !notARule[m[1]] {
			t.Errorf("rules/README.md names %q, which is no rule of the library", m[1])
		}
	}
}

// notARule are hyphenated words the README quotes that are not rule names.
var notARule = map[string]bool{
	"capture-and-isolate": true, "session-origin": true, "object-kinds": true,
	"riposte-system": true, "kube-system": true, "kube-public": true, "flux-system": true,
	"no-throttle": true, "kube-apiserver": true, "kube-controller-manager": true,
}
