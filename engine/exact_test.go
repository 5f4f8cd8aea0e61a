package engine

import (
	"errors"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

func TestExactExec(t *testing.T) {
	cases := []struct {
		cond          string
		exceptions    []string
		namespace     string
		bins          []string
		names         []string
		containerOnly bool
		exact         bool
	}{
		{cond: `event.kind == "exec" && process.binary == "/usr/bin/nc"`, bins: []string{"/usr/bin/nc"}, exact: true},
		{cond: `process.binary in ["/a", "/b"] && event.kind == "exec"`, bins: []string{"/a", "/b"}, exact: true},
		{cond: `event.kind in ["exec"] && (process.name == "nc" || process.binary.endsWith("/ncat"))`, names: []string{"nc", "ncat"}, exact: true},
		{cond: `event.kind == "exec" && process.binary.endsWith("/sh") && container.id != ""`, names: []string{"sh"}, containerOnly: true, exact: true},
		{cond: `event.kind == "exec" && process.binary == "/bin/sh"`, exceptions: []string{`process.uid == 0`}},
		{cond: `event.kind == "exec" && process.binary == "/bin/sh"`, namespace: "shop"},
		{cond: `process.binary == "/bin/sh"`},
		{cond: `event.kind == "exec" && process.binary.endsWith("sh")`},
		{cond: `event.kind == "exec" && process.binary == "/a" && process.name == "a"`},
		{cond: `event.kind == "exec" && (process.binary == "/a" || process.uid == 0)`},
		{cond: `event.kind == "exec" && container.id == "" && process.binary == "/a"`},
	}
	for _, c := range cases {
		spec := &v1alpha1.DetectionRuleSpec{Source: "process", Severity: "high", Condition: c.cond}
		for i, e := range c.exceptions {
			spec.Exceptions = append(spec.Exceptions, v1alpha1.Exception{Name: string(rune('a' + i)), Condition: e})
		}
		r, err := Compile("r", c.namespace, spec)
		if err != nil {
			t.Fatal(err)
		}
		bins, names, containerOnly, err := r.ExactExec()
		if c.exact != (err == nil) {
			t.Errorf("%s: err = %v, want exact %v", c.cond, err, c.exact)
			continue
		}
		if err != nil && !errors.Is(err, ErrNotExact) {
			t.Errorf("%s: err = %v, want ErrNotExact", c.cond, err)
		}
		if strings.Join(bins, ",") != strings.Join(c.bins, ",") || strings.Join(names, ",") != strings.Join(c.names, ",") || containerOnly != c.containerOnly {
			t.Errorf("%s: bins %q names %q container-only %v, want %q %q %v", c.cond, bins, names, containerOnly, c.bins, c.names, c.containerOnly)
		}
	}
}
