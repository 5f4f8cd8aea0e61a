package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var riposteBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "riposte-cli-")
	if err != nil {
		panic(err)
	}
	riposteBin = filepath.Join(dir, "riposte")
	if out, err := exec.Command("go", "build", "-o", riposteBin, ".").CombinedOutput(); err != nil {
		os.Stderr.Write(out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run executes the real binary and returns stdout, stderr and the exit code.
func run(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(riposteBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

const (
	library = "../../rules"
	bad     = "../../engine/ruleset/testdata/bad"
)

func TestTestCommandOnTheLibraryPasses(t *testing.T) {
	junit := filepath.Join(t.TempDir(), "junit.xml")
	out, errOut, code := run(t, "test", "--junit", junit, library)
	if code != 0 {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	last := lines[len(lines)-1]
	if !strings.HasSuffix(last, " passed, 0 failed") {
		t.Fatalf("closing line %q", last)
	}
	for _, l := range lines[:len(lines)-1] {
		if !strings.HasPrefix(l, "PASS ") {
			t.Fatalf("unexpected line %q", l)
		}
	}
	b, err := os.ReadFile(junit)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Tests    int `xml:"tests,attr"`
		Failures int `xml:"failures,attr"`
	}
	if err := xml.Unmarshal(b, &doc); err != nil || doc.Tests != len(lines)-1 || doc.Failures != 0 {
		t.Fatalf("junit %+v err %v", doc, err)
	}
}

func TestTestCommandExitCodes(t *testing.T) {
	out, _, code := run(t, "test", bad+"/wrong-test.yaml")
	if code != 1 || !strings.Contains(out, "FAIL wrong-test: bash claimed to fire") || !strings.Contains(out, "1 passed, 2 failed") {
		t.Fatalf("a failing test must exit 1 and say so; exit %d\n%s", code, out)
	}
	_, errOut, code := run(t, "test", bad+"/malformed.yaml")
	if code != 2 || !strings.Contains(errOut, "malformed.yaml:16") {
		t.Fatalf("unloadable input must exit 2 naming file:line; exit %d\n%s", code, errOut)
	}
	if _, _, code := run(t, "test"); code != 2 {
		t.Fatalf("no path is misuse: exit %d", code)
	}
	if _, _, code := run(t, "nonsense"); code != 2 {
		t.Fatalf("unknown command: exit %d", code)
	}
	out, _, code = run(t, "test", "--output", "json", bad+"/wrong-test.yaml")
	if code != 1 {
		t.Fatalf("exit %d", code)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	n := 0
	for sc.Scan() {
		var r struct {
			Rule, Test string
			Passed     bool
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Rule != "wrong-test" {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		n++
	}
	if n != 3 {
		t.Fatalf("%d JSON results, want 3", n)
	}
}

func TestLintReportsCostAndProblems(t *testing.T) {
	out, _, code := run(t, "lint", bad+"/bad-cel.yaml")
	if code != 1 {
		t.Fatalf("exit %d\n%s", code, out)
	}
	for _, want := range []string{
		`rule "good": estimated cost`,
		`bad-cel.yaml:8: rule "bad-cel": spec.condition 2:1: undeclared reference to 'proces'`,
		`playbook "missing-playbook"`,
		"2 rules, 0 playbooks: 1 errors, 2 warnings",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("lint output lacks %q:\n%s", want, out)
		}
	}
	if out, _, code := run(t, "lint", "--strict", library); code != 0 {
		t.Fatalf("the shipped library must lint clean with --strict; exit %d\n%s", code, out)
	}
}

func TestReplayReportsBadLinesAndEvaluatesTheRest(t *testing.T) {
	out, errOut, code := run(t, "replay", "--rules", library, "--output", "json", "testdata/replay-mixed.jsonl")
	if code != 2 {
		t.Fatalf("a bad line must give exit 2 after the rest is evaluated; exit %d", code)
	}
	if !strings.Contains(errOut, "replay-mixed.jsonl:line 3:") {
		t.Fatalf("the bad line is not named:\n%s", errOut)
	}
	var alerts []alert
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var a alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		alerts = append(alerts, a)
	}
	if len(alerts) != 3 {
		t.Fatalf("want 3 alerts (the second shell throttled but printed), got %d:\n%s", len(alerts), out)
	}
	if alerts[0].Rule != "shell-in-container" || alerts[0].Severity != "high" || alerts[0].Event.Pod.Name != "web" || alerts[0].Suppressed {
		t.Fatalf("first alert %+v", alerts[0])
	}
	if alerts[1].Rule != "shell-in-container" || !alerts[1].Suppressed || !strings.Contains(out, `"suppressed":true`) {
		t.Fatalf("the throttled shell must be printed and marked suppressed: %+v", alerts[1])
	}
	if alerts[2].Rule != "serviceaccount-selfsubjectaccessreview" || alerts[2].Event.Audit.AuditID != "aud-42" || alerts[2].Suppressed {
		t.Fatalf("the audit match must carry its auditID: %+v", alerts[2])
	}
	if !strings.Contains(errOut, "shell-in-container") || !strings.Contains(errOut, "4 events, 3 matches") || !strings.Contains(errOut, "1 bad lines") {
		t.Fatalf("summary:\n%s", errOut)
	}
}

// Audit logs of older kube-apiservers (no apiVersion, sometimes no kind) are
// taken as audit lines by their shape, and the object a request created
// feeds object rules, with its actor.
func TestReplayTakesOlderAuditLinesAndFeedsObjectRules(t *testing.T) {
	out, errOut, code := run(t, "replay", "--rules", library, "--output", "json", "testdata/replay-older-audit.jsonl")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	got := map[string]alert{}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var a alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		got[a.Rule] = a
	}
	for _, r := range []string{"pod-exec-or-attach", "privileged-pod", "ownerless-pod-created", "role-with-wildcard"} {
		if _, ok := got[r]; !ok {
			t.Errorf("no %s match; got %v\n%s", r, got, errOut)
		}
	}
	if a := got["privileged-pod"]; a.Event == nil || a.Event.Kind != "object" || a.Event.Audit.User.Username != "bob" || a.Event.Pod.Name != "pwn" {
		t.Errorf("privileged-pod match: %+v", a.Event)
	}
	if !strings.Contains(errOut, "3 events") || !strings.Contains(errOut, "0 bad lines") {
		t.Errorf("summary:\n%s", errOut)
	}
}

func TestCompileExplain(t *testing.T) {
	out, _, code := run(t, "compile", "--explain", library+"/process/shell-in-container.yaml")
	if code != 0 || !strings.Contains(out, "filter: kind in [exec] && basename in [ash,bash,busybox,csh,dash,ksh,sh,tcsh,zsh] && in a container") {
		t.Fatalf("exit %d\n%s", code, out)
	}
	// The kernel's side: the union of the rules' filters, slot by slot.
	want := "slot 0 [shell-in-container]: kind in [exec] && mount namespace is not the host's && exec basename in [ash,bash,busybox,csh,dash,ksh,sh,tcsh,zsh]"
	if !strings.Contains(out, "kernel filter: 1 slot(s)") || !strings.Contains(out, want) {
		t.Fatalf("no kernel filter in the explanation:\n%s", out)
	}
}

// A sequence rule fires in replay on the event that completes its chain
// (the exec into the privileged pod, not the one into another pod) and the
// match carries each step's event.
func TestReplayFiresSequencesWithTheirSteps(t *testing.T) {
	out, errOut, code := run(t, "replay", "--rules", library, "--output", "json", "testdata/replay-sequence.jsonl")
	if code != 0 {
		t.Fatalf("exit %d\n%s", code, errOut)
	}
	var got []alert
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var a alert
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if a.Rule == "exec-into-privileged-pod" {
			got = append(got, a)
		}
	}
	if len(got) != 1 {
		t.Fatalf("%d matches of the sequence, want 1\n%s", len(got), out)
	}
	a := got[0]
	if a.Event.Audit.AuditID != "s-3" || len(a.Steps) != 2 || a.Steps[0].Step != "pod-created" || a.Steps[1].Step != "exec" ||
		!strings.Contains(string(a.Steps[0].Event), `"pwn"`) || !strings.Contains(string(a.Steps[1].Event), `"s-3"`) {
		t.Fatalf("match %+v, steps %+v", a.Event.Audit, a.Steps)
	}
	text, _, _ := run(t, "replay", "--rules", library, "testdata/replay-sequence.jsonl")
	if !strings.Contains(text, "exec-into-privileged-pod: bob exec into the privileged or hostPath pod default/pwn") || !strings.Contains(text, "    step pod-created at 2026-12-01T10:00:00Z") {
		t.Fatalf("text output:\n%s", text)
	}
}
