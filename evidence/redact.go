package evidence

import (
	"bytes"
	"encoding/json"
)

// RedactedMarker replaces a redacted value.
const RedactedMarker = "<redacted by riposte>"

// Redact redacts v in place: a JSON-shaped tree of map[string]any and []any.
// It blanks container env values (names stay, rules and analysts need them),
// the last-applied-configuration annotation (it repeats the object it was
// applied from), the data and stringData of Secrets, and the data and
// binaryData of ConfigMaps (credentials are put there too; keys stay, so
// an analyst sees which).
func Redact(v any) {
	switch t := v.(type) {
	case map[string]any:
		if t["kind"] == "Secret" || t["kind"] == "ConfigMap" {
			for _, k := range []string{"data", "stringData", "binaryData"} {
				if m, ok := t[k].(map[string]any); ok {
					for key := range m {
						m[key] = RedactedMarker
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
								m["value"] = RedactedMarker
							}
						}
					}
				}
			case "kubectl.kubernetes.io/last-applied-configuration":
				t[k] = RedactedMarker
				continue
			}
			Redact(child)
		}
	case []any:
		for _, c := range t {
			Redact(c)
		}
	}
}

// RedactJSON returns b with Redact applied. Input that is not a JSON object or
// array comes back unchanged.
func RedactJSON(b []byte) []byte {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return b
	}
	switch v.(type) {
	case map[string]any, []any:
	default:
		return b
	}
	Redact(v)
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false) // keep the marker readable: no \u003c
	if err := enc.Encode(v); err != nil {
		return b
	}
	return bytes.TrimSuffix(out.Bytes(), []byte("\n"))
}
