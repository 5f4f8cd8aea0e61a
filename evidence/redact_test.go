package evidence

import (
	"strings"
	"testing"
)

func TestJSONRedactsSecretsAndKeepsTheRest(t *testing.T) {
	in := `{"kind":"object","object":{"apiVersion":"v1","kind":"Pod",
	  "metadata":{"name":"api","annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"env\":\"TOKEN=s3cr3t\"}"}},
	  "spec":{"containers":[{"name":"c","env":[{"name":"TOKEN","value":"s3cr3t"},{"name":"FROM","valueFrom":{"secretKeyRef":{"name":"db","key":"pw"}}}]}]}},
	  "audit":{"requestObject":{"kind":"Secret","metadata":{"name":"db"},"data":{"pw":"czNjcjN0"},"stringData":{"pw2":"s3cr3t"}},
	    "responseObject":{"kind":"ConfigMap","metadata":{"name":"cfg"},"data":{"aws_secret_access_key":"wJalrXUt"},"binaryData":{"key.pem":"LS0tLS1CRUdJTg=="}}}}`
	out := string(RedactJSON([]byte(in)))
	for _, leak := range []string{"s3cr3t", "czNjcjN0", "wJalrXUt", "LS0tLS1CRUdJTg=="} {
		if strings.Contains(out, leak) {
			t.Errorf("%q survived: %s", leak, out)
		}
	}
	for _, keep := range []string{`"name":"TOKEN"`, `"name":"FROM"`, `"secretKeyRef"`, `"pw"`, `"pw2"`, `"name":"db"`, `"aws_secret_access_key"`, `"key.pem"`, RedactedMarker} {
		if !strings.Contains(out, keep) {
			t.Errorf("%s was lost: %s", keep, out)
		}
	}
}

func TestJSONLeavesNonObjectsAlone(t *testing.T) {
	for _, in := range []string{`"text"`, `42`, `not json`, ``} {
		if got := string(RedactJSON([]byte(in))); got != in {
			t.Errorf("RedactJSON(%q) = %q", in, got)
		}
	}
}

func FuzzRedactJSON(f *testing.F) {
	f.Add([]byte(`{"kind":"Secret","data":{"a":"b"}}`))
	f.Add([]byte(`[{"env":[{"name":"A","value":"x"}]}]`))
	f.Add([]byte(`{"env":"notalist","data":[1,2]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		out := RedactJSON(b)
		if len(b) > 0 && len(out) == 0 {
			t.Fatalf("RedactJSON(%q) lost everything", b)
		}
	})
}
