package ruleset

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/rules"
)

func load(t *testing.T, paths ...string) (*Set, []error) {
	t.Helper()
	return Load(paths...)
}

func TestMalformedYAMLNamesFileAndLineAndKeepsEarlierDocuments(t *testing.T) {
	s, errs := load(t, "testdata/bad/malformed.yaml")
	if len(errs) != 1 {
		t.Fatalf("want one error, got %v", errs)
	}
	var e *Error
	if !errors.As(errs[0], &e) || e.File != "testdata/bad/malformed.yaml" || e.Line != 16 {
		t.Fatalf("want the error at testdata/bad/malformed.yaml:16, got %v", errs[0])
	}
	if len(s.Rules) != 1 || s.Rules[0].Name != "fine" || s.Rules[0].Compiled == nil {
		t.Fatalf("the valid document before the bad one must still load, got %+v", s.Rules)
	}
}

func TestUnknownFieldsAreErrorsWithLine(t *testing.T) {
	_, errs := load(t, "testdata/bad/unknown-field.yaml")
	want := map[string]int{`unknown field "spec.condtion"`: 8, `unknown field "spec.tests[0].expected"`: 22}
	if len(errs) != len(want) {
		t.Fatalf("want %d errors, got %v", len(want), errs)
	}
	for _, err := range errs {
		var e *Error
		if !errors.As(err, &e) {
			t.Fatalf("not an *Error: %v", err)
		}
		line, ok := want[e.Msg]
		if !ok || e.Line != line {
			t.Errorf("got %v; want one of %v", err, want)
		}
	}
}

func TestBrokenCELNamesRuleFieldLineAndColumn(t *testing.T) {
	s, errs := load(t, "testdata/bad/bad-cel.yaml")
	if len(errs) != 0 {
		t.Fatalf("CEL errors are rule failures, not load errors: %v", errs)
	}
	if s.Skipped != 1 {
		t.Fatalf("the ConfigMap must be skipped, Skipped=%d", s.Skipped)
	}
	r := s.Rule("bad-cel")
	if r == nil || r.Err == nil {
		t.Fatalf("bad-cel must fail to compile: %+v", r)
	}
	got := r.Err.Error()
	want := `testdata/bad/bad-cel.yaml:8: rule "bad-cel": spec.condition 2:1: undeclared reference to 'proces'`
	if !strings.HasPrefix(got, want) {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	if d := r.Err.(*Error).Detail(); !strings.Contains(d, "proces.binary == \"/bin/sh\"\n    ^") {
		t.Fatalf("detail lacks the caret line:\n%s", d)
	}
	if s.Rule("good").Compiled == nil {
		t.Fatal("a good rule next to a bad one must compile")
	}
}

func TestRunReportsEveryFailureWithItsPlace(t *testing.T) {
	s, errs := load(t, "testdata/bad/wrong-test.yaml", "testdata/bad/wrong.test.yaml")
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	results := Run(context.Background(), s, 0)
	type key struct{ rule, test string }
	got := map[key]Result{}
	for _, r := range results {
		got[key{r.Rule, r.Test}] = r
	}
	checks := []struct {
		rule, test string
		passed     bool
		msg        string
		line       int
	}{
		{"wrong-test", "sh fires", true, "", 10},
		{"wrong-test", "bash claimed to fire", false, "expected a match: condition is false", 11},
		{"wrong-test", "misspelt event", false, `unknown field "proces"`, 12},
		{"no-such-rule", "sh exec", false, `no rule "no-such-rule" is loaded`, 2},
	}
	for _, c := range checks {
		r, ok := got[key{c.rule, c.test}]
		if !ok {
			t.Fatalf("no result for %s / %s in %+v", c.rule, c.test, results)
		}
		if r.Passed != c.passed || !strings.Contains(r.Message, c.msg) || r.Line != c.line {
			t.Errorf("%s / %s: got passed=%v line=%d %q, want passed=%v line=%d %q", c.rule, c.test, r.Passed, r.Line, r.Message, c.passed, c.line, c.msg)
		}
	}
	// The test file asks wrong-test both to fire and not to fire: one passes, one fails.
	pass, fail := 0, 0
	for _, r := range results {
		if r.Rule == "wrong-test" && r.Test == "sh exec" {
			if r.Passed {
				pass++
			} else {
				fail++
			}
		}
	}
	if pass != 1 || fail != 1 {
		t.Fatalf("test file results for wrong-test: %d passed %d failed, want 1 and 1", pass, fail)
	}
}

// TestDuplicateRulesAreLoadErrors: the same rule defined twice fails loading
// (so test, compile, replay and lint all refuse it), naming both places.
func TestDuplicateRulesAreLoadErrors(t *testing.T) {
	s, errs := Load("testdata/bad/bad-cel.yaml", "testdata/bad/bad-cel.yaml")
	var msgs []string
	for _, e := range errs {
		msgs = append(msgs, e.Error())
	}
	all := strings.Join(msgs, "\n")
	if want := `testdata/bad/bad-cel.yaml:17: rule "good": ClusterDetectionRule "good" is also defined at testdata/bad/bad-cel.yaml:17`; !strings.Contains(all, want) {
		t.Errorf("load errors lack %q:\n%s", want, all)
	}
	n := 0
	for _, r := range s.Rules {
		if r.ID() == "good" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("%d rules named good loaded, want the first only", n)
	}
}

// TestAliasBombIsRefused: a few hundred bytes of nested YAML aliases that
// would expand to a billion nodes fail at once with a clear message.
func TestAliasBombIsRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n")
	for i := 1; i <= 9; i++ {
		fmt.Fprintf(&b, "a%d: &a%d [*a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d, *a%d]\n", i, i, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1, i-1)
	}
	p := filepath.Join(t.TempDir(), "bomb.yaml")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	_, errs := Load(p)
	if len(errs) != 1 || !strings.Contains(errs[0].Error(), "alias bomb") {
		t.Fatalf("errors %v, want one naming the alias bomb", errs)
	}
}

func TestLintFindings(t *testing.T) {
	s, _ := load(t, "testdata/bad/bad-cel.yaml")
	var details []string
	for _, f := range Lint(s) {
		details = append(details, f.Detail)
	}
	all := strings.Join(details, "\n")
	for _, want := range []string{
		`rule "good" has no test that expects no match`,
		`playbook "missing-playbook": no ClusterResponsePlaybook of that name is loaded`,
		`undeclared reference to 'proces'`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("lint output lacks %q:\n%s", want, all)
		}
	}
}

func TestWriteJUnit(t *testing.T) {
	s, _ := load(t, "testdata/bad/wrong-test.yaml")
	var buf bytes.Buffer
	if err := WriteJUnit(&buf, Run(context.Background(), s, 0)); err != nil {
		t.Fatal(err)
	}
	var doc junitSuites
	if err := xml.Unmarshal(buf.Bytes(), &doc); err != nil {
		t.Fatalf("invalid XML: %v\n%s", err, buf.String())
	}
	if doc.Tests != 3 || doc.Failures != 2 || len(doc.Suites) != 1 || doc.Suites[0].Name != "wrong-test" {
		t.Fatalf("got %+v", doc)
	}
}

func TestShippedLibraryLoadsAndPasses(t *testing.T) {
	s, errs := load(t, filepath.Join("..", "..", "rules"))
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	if len(s.Rules) < 10 {
		t.Fatalf("the library has %d rules, want at least 10", len(s.Rules))
	}
	sources := map[string]int{}
	for _, r := range Run(context.Background(), s, 0) {
		if !r.Passed {
			t.Errorf("%s / %s failed: %s", r.Rule, r.Test, r.Message)
		}
	}
	for _, r := range s.Rules {
		sources[r.Spec.Source]++
	}
	if sources["audit"] == 0 || sources["process"] == 0 {
		t.Fatalf("want audit and process rules, got %v", sources)
	}
	for _, f := range Lint(s) {
		t.Errorf("lint: %s", f.Detail)
	}
}

// FuzzLoad: no rule file panics the loader.
func FuzzLoad(f *testing.F) {
	for _, p := range []string{"testdata/bad/malformed.yaml", "testdata/bad/unknown-field.yaml", "testdata/bad/bad-cel.yaml", "testdata/bad/wrong-test.yaml", "../../rules/process/shell-in-container.yaml", "../../rules/audit/reconnaissance.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	b, _ := os.ReadFile("testdata/bad/wrong.test.yaml")
	f.Add(b, true)
	f.Add([]byte("a: &x [*x]\n"), false)
	f.Add([]byte("--- !!binary\n"), false)
	f.Fuzz(func(t *testing.T, data []byte, test bool) {
		name := "f.yaml"
		if test {
			name = "f.test.yaml"
		}
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		s, _ := Load(p)
		_ = Run(context.Background(), s, 0)
		_ = Lint(s)
	})
}

func TestEmbeddedLibraryEqualsTheFolder(t *testing.T) {
	embedded, errs := LoadFS(rules.FS)
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	onDisk, _ := Load(filepath.Join("..", "..", "rules"))
	if len(embedded.Rules) != len(onDisk.Rules) || len(embedded.Playbooks) != len(onDisk.Playbooks) {
		t.Fatalf("embedded %d rules %d playbooks, folder %d rules %d playbooks",
			len(embedded.Rules), len(embedded.Playbooks), len(onDisk.Rules), len(onDisk.Playbooks))
	}
	for _, r := range embedded.Rules {
		if r.Compiled == nil {
			t.Errorf("embedded rule %s: %v", r.ID(), r.Err)
		}
	}
}

func TestLiveLeavesOutRulesThatFailTheirTests(t *testing.T) {
	s, _ := load(t, "testdata/bad/wrong-test.yaml", "testdata/bad/bad-cel.yaml")
	live, notLive := s.Live()
	if len(live) != 1 || live[0].Name() != "good" {
		t.Fatalf("live rules %v, want only good", live)
	}
	msgs := ""
	for _, e := range notLive {
		msgs += e.Error() + "\n"
	}
	if !strings.Contains(msgs, `rule "wrong-test": embedded test "bash claimed to fire" fails`) || !strings.Contains(msgs, `rule "bad-cel"`) {
		t.Fatalf("not-live reasons:\n%s", msgs)
	}
}
