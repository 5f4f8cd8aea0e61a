package ruleset

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// document is one YAML document converted to JSON-compatible values, with the
// line of every field path so errors can say where.
type document struct {
	nodes int // converted so far, aliases expanded: bounded by maxNodes
	file  string
	line  int            // line of the document's first node
	value any            // map[string]any, []any, string, float64/int64, bool, nil
	lines map[string]int // field path (spec.tests[0].name) -> line
}

// lineOf returns the line of a field path, or of its nearest ancestor.
func (d *document) lineOf(path string) int {
	for p := path; ; {
		if l, ok := d.lines[p]; ok {
			return l
		}
		i := strings.LastIndexAny(p, ".[")
		if i <= 0 {
			return d.line
		}
		p = p[:i]
	}
}

// parseYAML splits a multi-document YAML stream into documents. Empty
// documents are skipped.
func parseYAML(file string, r io.Reader) ([]*document, error) {
	dec := yaml.NewDecoder(r)
	var docs []*document
	for {
		var n yaml.Node
		err := dec.Decode(&n)
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return docs, &Error{File: file, Line: yamlErrLine(err), Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
		}
		if len(n.Content) == 0 {
			continue
		}
		d := &document{file: file, line: n.Content[0].Line, lines: map[string]int{}}
		v, err := d.convert(n.Content[0], "", 0)
		if err != nil {
			return docs, err
		}
		if v == nil {
			continue
		}
		d.value = v
		docs = append(docs, d)
	}
}

// yamlErrLine digs the line out of a yaml.v3 error ("yaml: line 7: ...").
func yamlErrLine(err error) int {
	s := err.Error()
	if i := strings.Index(s, "line "); i >= 0 {
		rest := s[i+5:]
		j := strings.IndexFunc(rest, func(r rune) bool { return r < '0' || r > '9' })
		if j > 0 {
			n, _ := strconv.Atoi(rest[:j])
			return n
		}
	}
	return 0
}

const maxDepth = 100

// maxNodes bounds one document's size with its aliases expanded: a few
// hundred bytes of nested aliases ("billion laughs") would otherwise expand
// to gigabytes in memory. A rule document has a few hundred nodes.
const maxNodes = 100_000

// convert turns a YAML node into JSON-compatible values, recording lines.
func (d *document) convert(n *yaml.Node, path string, depth int) (any, error) {
	if depth > maxDepth {
		return nil, &Error{File: d.file, Line: n.Line, Msg: "nesting too deep"}
	}
	if d.nodes++; d.nodes > maxNodes {
		return nil, &Error{File: d.file, Line: n.Line, Msg: fmt.Sprintf("the document expands to more than %d YAML nodes with its aliases resolved; refusing it (an alias bomb?)", maxNodes)}
	}
	if path != "" {
		d.lines[path] = n.Line
	}
	switch n.Kind {
	case yaml.AliasNode:
		if n.Alias == nil {
			return nil, &Error{File: d.file, Line: n.Line, Msg: "unresolved alias"}
		}
		return d.convert(n.Alias, path, depth+1)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return nil, &Error{File: d.file, Line: k.Line, Msg: "mapping keys must be strings"}
			}
			if k.Value == "<<" {
				return nil, &Error{File: d.file, Line: k.Line, Msg: "merge keys (<<) are not supported"}
			}
			if _, dup := m[k.Value]; dup {
				return nil, &Error{File: d.file, Line: k.Line, Msg: fmt.Sprintf("field %q appears twice", join(path, k.Value))}
			}
			cv, err := d.convert(v, join(path, k.Value), depth+1)
			if err != nil {
				return nil, err
			}
			d.lines[join(path, k.Value)] = k.Line
			m[k.Value] = cv
		}
		return m, nil
	case yaml.SequenceNode:
		s := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			cv, err := d.convert(c, fmt.Sprintf("%s[%d]", path, i), depth+1)
			if err != nil {
				return nil, err
			}
			s = append(s, cv)
		}
		return s, nil
	case yaml.ScalarNode:
		return d.scalar(n)
	}
	return nil, nil
}

func (d *document) scalar(n *yaml.Node) (any, error) {
	switch n.ShortTag() {
	case "!!null":
		return nil, nil
	case "!!bool":
		var b bool
		if err := n.Decode(&b); err != nil {
			return nil, &Error{File: d.file, Line: n.Line, Msg: err.Error()}
		}
		return b, nil
	case "!!int":
		var i int64
		if err := n.Decode(&i); err != nil {
			return nil, &Error{File: d.file, Line: n.Line, Msg: fmt.Sprintf("integer %s out of range", n.Value)}
		}
		return i, nil
	case "!!float":
		var f float64
		if err := n.Decode(&f); err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return nil, &Error{File: d.file, Line: n.Line, Msg: fmt.Sprintf("number %s is not representable in JSON", n.Value)}
		}
		return f, nil
	case "!!str", "!!binary", "!!timestamp":
		return n.Value, nil
	}
	return nil, &Error{File: d.file, Line: n.Line, Msg: fmt.Sprintf("unsupported YAML tag %s", n.Tag)}
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// decodeStrict checks that every field of v exists in target's type (json
// tags, inline structs followed), then decodes. Errors name the field path
// and its line.
func (d *document) decodeStrict(v any, target any, root string) error {
	if err := d.checkFields(v, reflect.TypeOf(target).Elem(), root); err != nil {
		return err
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return &Error{File: d.file, Line: d.line, Msg: err.Error()}
	}
	if err := json.Unmarshal(raw, target); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			field := te.Field
			if root != "" {
				field = join(root, field)
			}
			return &Error{File: d.file, Line: d.lineOfLoose(field), Field: field,
				Msg: fmt.Sprintf("field %s: cannot use a %s as %s", field, te.Value, te.Type)}
		}
		return &Error{File: d.file, Line: d.line, Msg: err.Error()}
	}
	return nil
}

// lineOfLoose finds a path written without list indices (as encoding/json
// reports it).
func (d *document) lineOfLoose(path string) int {
	best := d.line
	keys := make([]string, 0, len(d.lines))
	for k := range d.lines {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if stripIndices(k) == path {
			return d.lines[k]
		}
	}
	return best
}

func stripIndices(p string) string {
	var b strings.Builder
	skip := false
	for _, r := range p {
		switch {
		case r == '[':
			skip = true
		case r == ']':
			skip = false
		case !skip:
			b.WriteRune(r)
		}
	}
	return b.String()
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// checkFields walks a decoded value against a Go type and reports the first
// field the type does not have.
func (d *document) checkFields(v any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	// Types with their own JSON decoding (RawExtension, Duration, Time,
	// Quantity) accept what they accept; their decoder reports the rest.
	if reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		return nil
	}
	switch val := v.(type) {
	case map[string]any:
		switch t.Kind() {
		case reflect.Map:
			for k, x := range val {
				if err := d.checkFields(x, t.Elem(), join(path, k)); err != nil {
					return err
				}
			}
		case reflect.Struct:
			fields := jsonFields(t)
			keys := make([]string, 0, len(val))
			for k := range val {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				ft, ok := fields[k]
				if !ok {
					p := join(path, k)
					return &Error{File: d.file, Line: d.lineOf(p), Field: p, Msg: fmt.Sprintf("unknown field %q", p)}
				}
				if err := d.checkFields(val[k], ft, join(path, k)); err != nil {
					return err
				}
			}
		}
	case []any:
		if t.Kind() == reflect.Slice || t.Kind() == reflect.Array {
			for i, x := range val {
				if err := d.checkFields(x, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// jsonFields maps JSON names to field types, following inline and embedded structs.
func jsonFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if (f.Anonymous && name == "") || strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range jsonFields(ft) {
					out[k] = v
				}
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		out[name] = f.Type
	}
	return out
}
