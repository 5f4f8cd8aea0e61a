package ruleset

import (
	"encoding/xml"
	"io"
	"sort"
)

type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Name     string       `xml:"name,attr"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	File      string        `xml:"file,attr,omitempty"`
	Line      int           `xml:"line,attr,omitempty"`
	Failure   *junitFailure `xml:"failure,omitempty"`
}

type junitFailure struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes results as JUnit XML, one test suite per rule, so CI
// systems show each rule's tests.
func WriteJUnit(w io.Writer, results []Result) error {
	bySuite := map[string]*junitSuite{}
	var names []string
	all := junitSuites{Name: "riposte"}
	for _, r := range results {
		s := bySuite[r.Rule]
		if s == nil {
			s = &junitSuite{Name: r.Rule}
			bySuite[r.Rule] = s
			names = append(names, r.Rule)
		}
		c := junitCase{Name: r.Test, Classname: r.Rule, File: r.File, Line: r.Line}
		if !r.Passed {
			c.Failure = &junitFailure{Message: firstLine(r.Message), Text: r.Message}
			s.Failures++
			all.Failures++
		}
		s.Tests++
		all.Tests++
		s.Cases = append(s.Cases, c)
	}
	sort.Strings(names)
	for _, n := range names {
		all.Suites = append(all.Suites, *bySuite[n])
	}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(all); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func firstLine(s string) string {
	for i, c := range s {
		if c == '\n' {
			return s[:i]
		}
	}
	return s
}
