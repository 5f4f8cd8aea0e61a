package gitops

import (
	"bytes"
	"context"
	"encoding/xml"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/riposte-dev/riposte/engine/ruleset"
)

// workflow is the part of a GitHub Actions workflow the runner below needs.
type workflow struct {
	Jobs map[string]struct {
		Env   map[string]string `json:"env"`
		Steps []struct {
			Name string `json:"name"`
			ID   string `json:"id"`
			Uses string `json:"uses"`
			Run  string `json:"run"`
			If   string `json:"if"`
		} `json:"steps"`
	} `json:"jobs"`
}

// TestCIWorkflowOfTheDocs runs the CI workflow of docs/gitops.md the way
// GitHub Actions would on a pull request of this repository's rules: each
// run step in bash with -eo pipefail, the job's env, GITHUB_STEP_SUMMARY a
// file, and riposte the binary of this checkout (the install and uses:
// steps are skipped). It must pass with a JUnit report of every embedded
// test and post the replay counts; a rule with broken CEL and a playbook
// the admission webhook refuses must fail it at the Lint step.
func TestCIWorkflowOfTheDocs(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	wf := docsWorkflow(t, filepath.Join(root, "docs", "gitops.md"))
	bin := buildRiposte(context.Background(), t, root)

	t.Run("this repository's rules pass", func(t *testing.T) {
		repo := teamRepo(t, root)
		summary := filepath.Join(t.TempDir(), "summary.md")
		if failed, out := runWorkflow(t, wf, repo, bin, summary); failed != "" {
			t.Fatalf("step %q failed:\n%s", failed, out)
		}

		// The JUnit report holds every embedded test of rules/, passed.
		set, errs := ruleset.Load(filepath.Join(root, "rules"))
		if len(errs) > 0 {
			t.Fatal(errs)
		}
		want := 0
		for _, r := range set.Rules {
			want += len(r.Spec.Tests)
		}
		b, err := os.ReadFile(filepath.Join(repo, "riposte-junit.xml"))
		if err != nil {
			t.Fatal(err)
		}
		var junit struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Suites   []struct {
				Tests int `xml:"tests,attr"`
			} `xml:"testsuite"`
		}
		if err := xml.Unmarshal(b, &junit); err != nil {
			t.Fatalf("riposte-junit.xml: %v", err)
		}
		total := junit.Tests
		if total == 0 {
			for _, s := range junit.Suites {
				total += s.Tests
			}
		}
		if total != want || junit.Failures != 0 || want == 0 {
			t.Errorf("JUnit report: %d tests, %d failures; want the %d embedded tests of rules/, none failed", total, junit.Failures, want)
		}

		// The counts posted to the run's summary.
		sum, err := os.ReadFile(summary)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("step summary:\n%s", sum)
		line := regexp.MustCompile(`(\d+) events, (\d+) matches from (\d+) rules; 0 bad lines`).FindSubmatch(sum)
		if line == nil || string(line[3]) != fmt.Sprint(len(set.Rules)) || string(line[2]) == "0" {
			t.Errorf("the step summary does not post the replay counts of the %d rules with matches:\n%s", len(set.Rules), sum)
		}
		if !bytes.Contains(sum, []byte("shell-in-container")) {
			t.Errorf("the step summary has no per-rule row for shell-in-container:\n%s", sum)
		}
		matches, _ := os.ReadFile(filepath.Join(repo, "replay-matches.jsonl"))
		if n := bytes.Count(matches, []byte("\n")); n == 0 {
			t.Errorf("replay-matches.jsonl is empty")
		}
	})

	t.Run("a rule with broken CEL fails the Lint step", func(t *testing.T) {
		repo := teamRepo(t, root)
		broken, err := os.ReadFile("testdata/commits/2-broken-cel/rules/canary-secret.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(repo, "rules", "canary-secret.yaml"), broken, 0o644); err != nil {
			t.Fatal(err)
		}
		failed, out := runWorkflow(t, wf, repo, bin, filepath.Join(t.TempDir(), "summary.md"))
		if failed != "Lint" || !strings.Contains(out, `rule "canary-secret-read": spec.condition 3:16: undefined field 'nme'`) {
			t.Errorf("want the Lint step to fail naming the rule and the CEL line:column; step %q failed:\n%s", failed, out)
		}
	})

	t.Run("a playbook the webhook refuses fails the Lint step", func(t *testing.T) {
		repo := teamRepo(t, root)
		bad := "apiVersion: riposte.dev/v1alpha1\nkind: ClusterResponsePlaybook\nmetadata: {name: page-oncall}\nspec:\n  steps:\n  - action: notify\n    notify: {url: \"ftp://pager.example.com/\"}\n"
		if err := os.WriteFile(filepath.Join(repo, "playbooks", "page-oncall.yaml"), []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		failed, out := runWorkflow(t, wf, repo, bin, filepath.Join(t.TempDir(), "summary.md"))
		if failed != "Lint" || !strings.Contains(out, `ClusterResponsePlaybook "page-oncall": steps[0] (notify): notify.url "ftp://pager.example.com/" is not an http(s) URL`) {
			t.Errorf("want the Lint step to fail naming the playbook and its step; step %q failed:\n%s", failed, out)
		}
	})
}

// docsWorkflow reads the YAML block after <!-- ci-workflow --> in the doc.
func docsWorkflow(t *testing.T, path string) workflow {
	t.Helper()
	doc, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- ci-workflow -->\n```yaml\n(.*?)\n```\n").FindSubmatch(doc)
	if m == nil {
		t.Fatalf("%s: no ```yaml block after <!-- ci-workflow -->", path)
	}
	var wf workflow
	if err := yaml.Unmarshal(m[1], &wf); err != nil {
		t.Fatalf("%s: the CI workflow: %v", path, err)
	}
	if len(wf.Jobs) != 1 {
		t.Fatalf("%s: want one job in the CI workflow, got %d", path, len(wf.Jobs))
	}
	return wf
}

// teamRepo lays out a rules repository as docs/gitops.md describes from
// this one: rules/ (riposte keeps its playbooks there too), empty
// playbooks/ and tests/, and test/fixtures/attack.jsonl as the recorded
// audit log.
func teamRepo(t *testing.T, root string) string {
	t.Helper()
	repo := t.TempDir()
	src := filepath.Join(root, "rules")
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		dst := filepath.Join(repo, "rules", rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"playbooks", "tests", "audit"} {
		if err := os.MkdirAll(filepath.Join(repo, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	log, err := os.ReadFile(filepath.Join(root, "test", "fixtures", "attack.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, "audit", "recorded.jsonl"), log, 0o644); err != nil {
		t.Fatal(err)
	}
	return repo
}

// runWorkflow runs the job's steps in order in repo and returns the name of
// the first step that failed (and its output), or "".
func runWorkflow(t *testing.T, wf workflow, repo, bin, summary string) (failed, output string) {
	t.Helper()
	for _, job := range wf.Jobs {
		env := []string{
			"PATH=" + filepath.Dir(bin) + ":/usr/local/bin:/usr/bin:/bin",
			"HOME=" + t.TempDir(),
			"GITHUB_STEP_SUMMARY=" + summary,
			"CI=true",
		}
		for k, v := range job.Env {
			env = append(env, k+"="+v)
		}
		for _, step := range job.Steps {
			switch {
			case step.Uses != "":
				t.Logf("skip %s (an action)", step.Uses)
				continue
			case step.ID == "install":
				t.Logf("skip %q: riposte is %s", step.Name, bin)
				continue
			case step.If != "" && step.If != "always()":
				t.Fatalf("step %q: the runner knows no condition %q", step.Name, step.If)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			cmd := exec.CommandContext(ctx, "bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step.Run)
			cmd.Dir, cmd.Env = repo, env
			out, err := cmd.CombinedOutput()
			cancel()
			t.Logf("step %q: %v\n%s", step.Name, err, lastLines(out, 5))
			if err != nil {
				return step.Name, string(out)
			}
		}
	}
	return "", ""
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// buildRiposte builds cmd/riposte of the checkout at root into a temp dir.
func buildRiposte(ctx context.Context, t *testing.T, root string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "riposte")
	build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/riposte")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/riposte: %v\n%s", err, out)
	}
	return bin
}
