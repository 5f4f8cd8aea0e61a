// Package redact blanks values that may hold secrets in Kubernetes objects
// and events before riposte stores them where more people can read them than
// could read the original: Incident sample events, evidence bundles.
package redact

import (
	"bytes"
	"encoding/json"
)

// Marker replaces a redacted value.
const Marker = "<redacted by riposte>"

// Value redacts v in place: a JSON-shaped tree of map[string]any and []any.
// It blanks container env values (names stay, rules and analysts need them),
// the last-applied-configuration annotation (it repeats the object it was
// applied from), the data and stringData of Secrets, and the data and
// binaryData of ConfigMaps (credentials are put there too; keys stay, so
// an analyst sees which).
func Value(v any) {
	switch t := v.(type) {
	case map[string]any:
		if t["kind"] == "Secret" || t["kind"] == "ConfigMap" {
			for _, k := range []string{"data", "stringData", "binaryData"} {
				if m, ok := t[k].(map[string]any); ok {
					for key := range m {
						m[key] = Marker
					}
				}
			}
		}
		for k, child := range t {
			switch k {
			case "env":
				if items, ok := child.([]any); ok {
					for _, it := range items {
						if m, ok := it.(map[string]any); ok {
							if _, has := m["value"]; has {
								m["value"] = Marker
							}
						}
					}
				}
			case "kubectl.kubernetes.io/last-applied-configuration":
				t[k] = Marker
				continue
			}
			Value(child)
		}
	case []any:
		for _, c := range t {
			Value(c)
		}
	}
}

// JSON returns b with Value applied. Input that is not a JSON object or
// array comes back unchanged.
func JSON(b []byte) []byte {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return b
	}
	switch v.(type) {
	case map[string]any, []any:
	default:
		return b
	}
	Value(v)
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false) // keep the marker readable: no \u003c
	if err := enc.Encode(v); err != nil {
		return b
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n"))
}
