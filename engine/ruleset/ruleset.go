// Package ruleset loads riposte rule files from disk: multi-document YAML of
// DetectionRules, ClusterDetectionRules and playbooks, and `*.test.yaml` test
// files. Loading is strict (an unknown field is an error) and every error
// names the file and line, the rule, and for CEL errors the line and column
// inside the expression. It also runs the tests, for `riposte test` and CI.
package ruleset

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// Error is a problem at a place in a file.
type Error struct {
	File string
	Line int
	// Rule is the rule the error belongs to, if any.
	Rule string
	// Field is the offending field path, if known.
	Field string
	Msg   string
	// Source is the offending expression line with a caret, for CEL errors.
	Source string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Rule != "" {
		fmt.Fprintf(&b, "rule %q: ", e.Rule)
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Detail returns the error with the offending expression line, if any.
func (e *Error) Detail() string {
	if e.Source == "" {
		return e.Error()
	}
	return e.Error() + "\n" + indent(e.Source, "    ")
}

func indent(s, pre string) string {
	return pre + strings.ReplaceAll(s, "\n", "\n"+pre)
}

// Rule is a rule document and, when it compiled, the compiled rule.
type Rule struct {
	Kind      string // DetectionRule or ClusterDetectionRule
	Name      string
	Namespace string
	File      string
	Line      int
	Spec      v1alpha1.DetectionRuleSpec
	// Compiled is nil when the rule did not compile; Err says why.
	Compiled *engine.Rule
	Err      error
	doc      *document
}

// ID is name for cluster rules and namespace/name for namespaced ones, the
// name rules are known by in test files, output and metrics.
func (r *Rule) ID() string {
	if r.Namespace != "" {
		return r.Namespace + "/" + r.Name
	}
	return r.Name
}

// Playbook is a playbook document.
type Playbook struct {
	Kind      string // ResponsePlaybook or ClusterResponsePlaybook
	Name      string
	Namespace string
	File      string
	Line      int
	Spec      v1alpha1.ResponsePlaybookSpec
}

// TestFile is a `*.test.yaml` file: events and the rules each must or must
// not fire.
type TestFile struct {
	File  string
	Cases []TestCase
}

// TestCase is one entry of a test file.
type TestCase struct {
	Name string `json:"name"`
	// Event is a riposte event or a pasted audit.k8s.io/v1 Event.
	Event json.RawMessage `json:"event"`
	// Match lists rules that must fire; NoMatch rules that must not.
	Match   []string `json:"match,omitempty"`
	NoMatch []string `json:"noMatch,omitempty"`
	Line    int      `json:"-"`
}

type testFileDoc struct {
	Tests []TestCase `json:"tests"`
}

// Set is everything loaded from a list of paths.
type Set struct {
	Rules     []*Rule
	Playbooks []*Playbook
	TestFiles []*TestFile
	// Skipped counts documents of other API groups (a GitOps folder holds
	// Deployments too); they are ignored.
	Skipped int
}

// Compiled returns the rules that compiled and are not suspended.
func (s *Set) Compiled() []*engine.Rule {
	var out []*engine.Rule
	for _, r := range s.Rules {
		if r.Compiled != nil && !r.Spec.Suspend {
			out = append(out, r.Compiled)
		}
	}
	return out
}

// Live returns the rules that would go live in a cluster: compiled, not
// suspended, and passing their embedded tests. The others come back as
// errors saying why, so a command can tell the user what it left out.
func (s *Set) Live() ([]*engine.Rule, []error) {
	var live []*engine.Rule
	var out []error
	for _, r := range s.Rules {
		switch {
		case r.Err != nil:
			out = append(out, r.Err)
		case r.Spec.Suspend:
			out = append(out, &Error{File: r.File, Line: r.Line, Rule: r.ID(), Msg: "suspended"})
		default:
			failed := ""
			ctx, cancel := context.WithTimeout(context.Background(), DefaultTestTimeout)
			results := engine.RunTestsContext(ctx, r.Compiled)
			cancel()
			for _, tr := range results {
				if !tr.Passed {
					failed = fmt.Sprintf("embedded test %q fails: %s", tr.Test, tr.Message)
					break
				}
			}
			if failed != "" {
				out = append(out, &Error{File: r.File, Line: r.Line, Rule: r.ID(), Msg: failed})
				continue
			}
			live = append(live, r.Compiled)
		}
	}
	return live, out
}

// Rule returns the rule with an ID, or nil.
func (s *Set) Rule(id string) *Rule {
	for _, r := range s.Rules {
		if r.ID() == id {
			return r
		}
	}
	return nil
}

// IsTestFile reports whether a path names a test file.
func IsTestFile(path string) bool {
	return strings.HasSuffix(path, ".test.yaml") || strings.HasSuffix(path, ".test.yml")
}

// Load reads files and folders (recursively: *.yaml and *.yml). Rules that do
// not compile are kept with their error in Rule.Err. The returned errors are
// the documents that could not be loaded at all (unreadable file, malformed
// YAML, unknown field); everything else in the same files still loads.
func Load(paths ...string) (*Set, []error) {
	s := &Set{}
	var errs []error
	var files []string
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			errs = append(errs, fmt.Errorf("load %s: %w", p, err))
			continue
		}
		if !st.IsDir() {
			files = append(files, p)
			continue
		}
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
				files = append(files, path)
			}
			return nil
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("load %s: %w", p, err))
		}
	}
	sort.Strings(files)
	for _, f := range files {
		errs = append(errs, s.loadFile(nil, f)...)
	}
	return s, errs
}

// LoadFS reads every *.yaml and *.yml file of a file system, for the rule
// library embedded in the binary.
func LoadFS(fsys fs.FS) (*Set, []error) {
	s := &Set{}
	var errs []error
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() || !(strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			return nil
		}
		errs = append(errs, s.loadFile(fsys, path)...)
		return nil
	})
	if err != nil {
		errs = append(errs, fmt.Errorf("load embedded rules: %w", err))
	}
	return s, errs
}

func (s *Set) loadFile(fsys fs.FS, file string) []error {
	var f fs.File
	var err error
	if fsys == nil {
		f, err = os.Open(file)
	} else {
		f, err = fsys.Open(file)
	}
	if err != nil {
		return []error{fmt.Errorf("load %s: %w", file, err)}
	}
	defer f.Close()
	docs, perr := parseYAML(file, f)
	var errs []error
	if perr != nil {
		errs = append(errs, perr)
	}
	for _, d := range docs {
		if IsTestFile(file) {
			if err := s.addTestFile(d); err != nil {
				errs = append(errs, err)
			}
			continue
		}
		if err := s.addDocument(d); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

func (s *Set) addTestFile(d *document) error {
	var tf testFileDoc
	if _, ok := d.value.(map[string]any); !ok {
		return &Error{File: d.file, Line: d.line, Msg: "a test file holds a mapping with a \"tests\" list"}
	}
	if err := d.decodeStrict(d.value, &tf, ""); err != nil {
		return err
	}
	t := &TestFile{File: d.file}
	for i, c := range tf.Tests {
		c.Line = d.lineOf(fmt.Sprintf("tests[%d]", i))
		if c.Name == "" {
			c.Name = fmt.Sprintf("tests[%d]", i)
		}
		if len(c.Event) == 0 || string(c.Event) == "null" {
			return &Error{File: d.file, Line: c.Line, Msg: fmt.Sprintf("test %q has no event", c.Name)}
		}
		if len(c.Match) == 0 && len(c.NoMatch) == 0 {
			return &Error{File: d.file, Line: c.Line, Msg: fmt.Sprintf("test %q names no rule in match or noMatch", c.Name)}
		}
		t.Cases = append(t.Cases, c)
	}
	s.TestFiles = append(s.TestFiles, t)
	return nil
}

func (s *Set) addDocument(d *document) error {
	m, ok := d.value.(map[string]any)
	if !ok {
		return &Error{File: d.file, Line: d.line, Msg: "document is not a mapping"}
	}
	apiVersion, _ := m["apiVersion"].(string)
	kind, _ := m["kind"].(string)
	if !strings.HasPrefix(apiVersion, v1alpha1.GroupVersion.Group+"/") {
		if apiVersion == "" && kind == "" {
			return &Error{File: d.file, Line: d.line, Msg: "document has no apiVersion and kind"}
		}
		s.Skipped++
		return nil
	}
	if apiVersion != v1alpha1.GroupVersion.String() {
		return &Error{File: d.file, Line: d.lineOf("apiVersion"), Field: "apiVersion",
			Msg: fmt.Sprintf("apiVersion %q is not served; use %s", apiVersion, v1alpha1.GroupVersion)}
	}
	switch kind {
	case "DetectionRule", "ClusterDetectionRule":
		var obj v1alpha1.DetectionRule
		if err := d.decodeStrict(m, &obj, ""); err != nil {
			return err
		}
		return s.addRule(d, kind, &obj)
	case "ResponsePlaybook", "ClusterResponsePlaybook":
		var obj v1alpha1.ResponsePlaybook
		if err := d.decodeStrict(m, &obj, ""); err != nil {
			return err
		}
		ns := obj.Namespace
		if kind == "ClusterResponsePlaybook" {
			ns = ""
		}
		if obj.Name == "" {
			return &Error{File: d.file, Line: d.line, Field: "metadata.name", Msg: kind + " has no metadata.name"}
		}
		s.Playbooks = append(s.Playbooks, &Playbook{Kind: kind, Name: obj.Name, Namespace: ns, File: d.file, Line: d.line, Spec: obj.Spec})
		return nil
	case "Incident":
		s.Skipped++
		return nil
	}
	return &Error{File: d.file, Line: d.lineOf("kind"), Field: "kind", Msg: fmt.Sprintf("unknown kind %q in %s", kind, apiVersion)}
}

func (s *Set) addRule(d *document, kind string, obj *v1alpha1.DetectionRule) error {
	if obj.Name == "" {
		return &Error{File: d.file, Line: d.line, Field: "metadata.name", Msg: kind + " has no metadata.name"}
	}
	ns := obj.Namespace
	switch {
	case kind == "ClusterDetectionRule" && ns != "":
		return &Error{File: d.file, Line: d.lineOf("metadata.namespace"), Rule: obj.Name, Field: "metadata.namespace",
			Msg: "a ClusterDetectionRule has no namespace; use a DetectionRule to scope a rule to one"}
	case kind == "DetectionRule" && ns == "":
		return &Error{File: d.file, Line: d.lineOf("metadata"), Rule: obj.Name, Field: "metadata.namespace",
			Msg: "a DetectionRule needs metadata.namespace (it only sees its namespace); use a ClusterDetectionRule for all"}
	}
	r := &Rule{Kind: kind, Name: obj.Name, Namespace: ns, File: d.file, Line: d.line, Spec: obj.Spec, doc: d}
	for _, prev := range s.Rules {
		if prev.Kind == kind && prev.ID() == r.ID() {
			// In a cluster the second would replace the first: which one
			// was tested would depend on the order files were read.
			return &Error{File: d.file, Line: d.line, Rule: r.ID(), Field: "metadata.name",
				Msg: fmt.Sprintf("%s %q is also defined at %s:%d", kind, r.ID(), prev.File, prev.Line)}
		}
	}
	compiled, err := engine.Compile(obj.Name, ns, &obj.Spec)
	if err != nil {
		r.Err = r.locate(err)
	} else {
		r.Compiled = compiled
	}
	s.Rules = append(s.Rules, r)
	return nil
}

// locate turns a compile error into an Error at the expression's line.
func (r *Rule) locate(err error) error {
	e := &Error{File: r.File, Line: r.Line, Rule: r.ID(), Msg: err.Error()}
	var ce *engine.CompileError
	if errors.As(err, &ce) {
		e.Field = "spec." + ce.Field
		e.Line = r.doc.lineOf(e.Field)
		e.Msg = e.Field
		if ce.Line > 0 {
			e.Msg += fmt.Sprintf(" %d:%d", ce.Line, ce.Column)
		}
		e.Msg += ": " + ce.Msg
		e.Source = ce.Source
		return e
	}
	if errors.Is(err, engine.ErrInvalidRule) {
		e.Msg = strings.TrimPrefix(err.Error(), engine.ErrInvalidRule.Error()+" "+fmt.Sprintf("%q: ", r.ID()))
	}
	return e
}

// LineOf returns the file line of a field of the rule's document.
func (r *Rule) LineOf(field string) int {
	if r.doc == nil {
		return r.Line
	}
	return r.doc.lineOf(field)
}
