package engine

import (
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// auditOf decodes an audit log line for a test.
func auditOf(t *testing.T, line string) Event {
	t.Helper()
	ev, err := DecodeLine([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if ev.Kind != KindAudit {
		t.Fatalf("%s decoded as %q", line, ev.Kind)
	}
	return ev
}

const (
	// A pod created by a bound ServiceAccount token, logged at RequestResponse.
	podCreateRR = `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"RequestResponse","auditID":"a1","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/pods","verb":"create",` +
		`"user":{"username":"system:serviceaccount:shop:api","groups":["system:serviceaccounts","system:authenticated"],"extra":{"authentication.kubernetes.io/pod-name":["api-7d9f-x"],"authentication.kubernetes.io/pod-uid":["p-uid-1"]}},` +
		`"sourceIPs":["10.244.0.9"],"userAgent":"kubectl/v1.37.2","objectRef":{"resource":"pods","namespace":"shop","name":"debug","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},` +
		`"requestObject":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"debug"},"spec":{"containers":[{"name":"sh","image":"busybox"}]}},` +
		`"responseObject":{"kind":"Pod","apiVersion":"v1","metadata":{"name":"debug","namespace":"shop","uid":"u-debug"},"spec":{"nodeName":"n1","serviceAccountName":"api","hostPID":true,"containers":[{"name":"sh","image":"busybox","securityContext":{"privileged":true}}]}},` +
		`"requestReceivedTimestamp":"2026-11-20T10:00:00.000000Z","stageTimestamp":"2026-11-20T10:00:00.010000Z"}`
	// The same request logged at Request level by a controller: generateName, no name yet.
	podCreateReq = `{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Request","auditID":"a2","stage":"ResponseComplete","requestURI":"/api/v1/namespaces/shop/pods","verb":"create",` +
		`"user":{"username":"system:serviceaccount:kube-system:replicaset-controller"},"objectRef":{"resource":"pods","namespace":"shop","name":"web-7d9f-abcde","apiVersion":"v1"},"responseStatus":{"metadata":{},"code":201},` +
		`"requestObject":{"kind":"Pod","apiVersion":"v1","metadata":{"generateName":"web-7d9f-","ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d9f","uid":"rs1","controller":true}]},"spec":{"containers":[{"name":"app"}]}},` +
		`"stageTimestamp":"2026-11-20T10:00:01.000000Z"}`
)

func TestObjectFromAuditDerivesTheObjectWithItsActor(t *testing.T) {
	ae := auditOf(t, podCreateRR)
	ev, ok := ObjectFromAudit(&ae)
	if !ok {
		t.Fatal("no object event from a pod create at RequestResponse")
	}
	if ev.Kind != KindObject || ev.Op != "create" || !ev.Time.Equal(ae.Time) {
		t.Errorf("kind %q op %q time %v", ev.Kind, ev.Op, ev.Time)
	}
	// The response body is the object as stored: mutated by admission, named.
	if md := ev.Object["metadata"].(map[string]any); md["uid"] != "u-debug" {
		t.Errorf("object is not the response body: %v", md)
	}
	p := ev.Pod
	if p.Name != "debug" || p.Namespace != "shop" || p.UID != "u-debug" || !p.Privileged || !p.HostPID || !p.Ownerless || p.ServiceAccount != "api" || p.Node != "n1" || ev.Node != "n1" {
		t.Errorf("pod view %+v node %q", p, ev.Node)
	}
	a := ev.Audit
	if a.User.Username != "system:serviceaccount:shop:api" || a.SourceIPs[0] != "10.244.0.9" || a.UserAgent != "kubectl/v1.37.2" ||
		a.User.Extra["authentication.kubernetes.io/pod-name"][0] != "api-7d9f-x" {
		t.Errorf("actor not kept: %+v", a)
	}
	if ev.Namespace() != "shop" {
		t.Errorf("namespace %q", ev.Namespace())
	}
}

func TestObjectFromAuditFillsIdentityFromObjectRef(t *testing.T) {
	ae := auditOf(t, podCreateReq)
	ev, ok := ObjectFromAudit(&ae)
	if !ok {
		t.Fatal("no object event from a Request-level create")
	}
	if ev.Pod.Name != "web-7d9f-abcde" || ev.Pod.Namespace != "shop" || ev.Pod.Ownerless || len(ev.Pod.OwnerReferences) != 1 || !ev.Pod.OwnerReferences[0].Controller {
		t.Errorf("pod view %+v", ev.Pod)
	}
	if ev.Namespace() != "shop" {
		t.Errorf("namespace %q", ev.Namespace())
	}
	// The audit event's own body is not changed.
	if md := ae.Audit.RequestObject["metadata"].(map[string]any); md["name"] != nil || md["namespace"] != nil {
		t.Errorf("the audit event's requestObject was changed: %v", md)
	}
}

func TestObjectFromAuditDerivesOnlyWhatHappened(t *testing.T) {
	pod := `{"kind":"Pod","apiVersion":"v1","metadata":{"name":"x","namespace":"a"}}`
	line := func(stage, verb, sub string, code int, req, resp string) string {
		s := `{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"x","stage":"` + stage + `","verb":"` + verb + `","objectRef":{"resource":"pods","namespace":"a","name":"x","subresource":"` + sub + `"}`
		if code > 0 {
			s += `,"responseStatus":{"code":` + strconv.Itoa(code) + `}`
		}
		if req != "" {
			s += `,"requestObject":` + req
		}
		if resp != "" {
			s += `,"responseObject":` + resp
		}
		return s + `}`
	}
	status := `{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Success","details":{"name":"x","kind":"pods"}}`
	for _, c := range []struct {
		name, line string
		op         string // "" = nothing derived
	}{
		{"create with the request body", line("ResponseComplete", "create", "", 201, pod, ""), "create"},
		{"create without a recorded code", line("ResponseComplete", "create", "", 0, pod, ""), "create"},
		{"update with the response body", line("ResponseComplete", "update", "", 200, "", pod), "update"},
		{"patch with the response body", line("ResponseComplete", "patch", "", 200, `{"metadata":{"labels":{"a":"b"}}}`, pod), "update"},
		{"patch body alone is not an object", line("ResponseComplete", "patch", "", 200, `{"metadata":{"labels":{"a":"b"}}}`, ""), ""},
		{"delete answered with the object", line("ResponseComplete", "delete", "", 200, `{"kind":"DeleteOptions","apiVersion":"v1"}`, pod), "delete"},
		{"delete answered with a Status", line("ResponseComplete", "delete", "", 200, "", status), ""},
		{"delete options are not the object", line("ResponseComplete", "delete", "", 200, `{"kind":"DeleteOptions","apiVersion":"v1","metadata":{}}`, ""), ""},
		{"ephemeral container added", line("ResponseComplete", "patch", "ephemeralcontainers", 200, "", pod), "update"},
		{"denied create", line("ResponseComplete", "create", "", 403, pod, ""), ""},
		{"failed create", line("ResponseComplete", "create", "", 422, pod, ""), ""},
		{"RequestReceived stage", line("RequestReceived", "create", "", 0, pod, ""), ""},
		{"a read", line("ResponseComplete", "get", "", 200, "", pod), ""},
		{"a binding is not the pod", line("ResponseComplete", "create", "binding", 201, `{"kind":"Binding","apiVersion":"v1","metadata":{"name":"x"}}`, ""), ""},
		{"Metadata level: no body", line("ResponseComplete", "create", "", 201, "", ""), ""},
		{"a body without metadata", line("ResponseComplete", "create", "", 201, `{"kind":"Pod"}`, ""), ""},
	} {
		ae := auditOf(t, c.line)
		ev, ok := ObjectFromAudit(&ae)
		switch {
		case c.op == "" && ok:
			t.Errorf("%s: derived %q %v, want nothing", c.name, ev.Op, ev.Object)
		case c.op != "" && !ok:
			t.Errorf("%s: nothing derived, want %q", c.name, c.op)
		case ok && (ev.Op != c.op || ev.Object["kind"] != "Pod"):
			t.Errorf("%s: op %q object %v, want %q of the Pod", c.name, ev.Op, ev.Object, c.op)
		}
	}
	if _, ok := ObjectFromAudit(&Event{Kind: KindObject, Audit: Audit{Stage: "ResponseComplete", Verb: "create", RequestObject: map[string]any{"kind": "Pod", "metadata": map[string]any{}}}}); ok {
		t.Error("derived from an event that is not an audit event")
	}
}

// One object rule fires on the live object and on the audit line that
// created it; an embedded test may give it the audit line.
func TestObjectRuleTestsAcceptAuditLines(t *testing.T) {
	spec := &v1alpha1.DetectionRuleSpec{
		Source: "object", Severity: "high",
		Condition: `event.op == "create" && object.kind == "Pod" && pod.privileged`,
		Output:    `"privileged pod " + pod.namespace + "/" + pod.name + " by " + audit.user.username`,
	}
	for _, tc := range []struct {
		event, expect, output, want string
	}{
		{podCreateRR, "match", "privileged pod shop/debug by system:serviceaccount:shop:api", ""},
		{podCreateReq, "noMatch", "", ""},
		{strings.Replace(podCreateRR, `"code":201`, `"code":403`, 1), "match", "", "the audit event carries no object"},
		{`{"kind":"object","op":"create","object":{"kind":"Pod","metadata":{}},"pod":{"name":"p","privileged":true}}`, "match", "privileged pod /p by ", ""},
	} {
		s := *spec
		s.Tests = []v1alpha1.RuleTest{{Name: "t", Expect: tc.expect, Output: tc.output}}
		s.Tests[0].Event.Raw = []byte(tc.event)
		r, err := Compile("privileged", "", &s)
		if err != nil {
			t.Fatal(err)
		}
		res := RunTests(r)[0]
		if tc.want == "" && !res.Passed {
			t.Errorf("%.60s: %s", tc.event, res.Message)
		}
		if tc.want != "" && (res.Passed || !strings.Contains(res.Message, tc.want)) {
			t.Errorf("%.60s: passed=%v %q, want a failure saying %q", tc.event, res.Passed, res.Message, tc.want)
		}
	}
}

func TestPodFromObjectReadsWrongTypesAsAbsent(t *testing.T) {
	p := PodFromObject(map[string]any{
		"metadata": map[string]any{"name": 7, "labels": map[string]any{"a": 1, "b": "x"}, "ownerReferences": "no"},
		"spec":     map[string]any{"hostPID": "true", "volumes": []any{"x", map[string]any{"hostPath": nil}}, "containers": []any{map[string]any{"securityContext": map[string]any{"privileged": "true"}}}},
	})
	want := Pod{Labels: map[string]string{"b": "x"}, Ownerless: true, Images: []string{""}}
	if !reflect.DeepEqual(p, want) {
		t.Errorf("got %+v, want %+v", p, want)
	}
}

func TestPodFromObjectNormalisesPathsAndCapabilities(t *testing.T) {
	p := PodFromObject(map[string]any{"spec": map[string]any{
		"volumes":    []any{map[string]any{"hostPath": map[string]any{"path": "//etc/"}}, map[string]any{"hostPath": map[string]any{"path": "/var/../root"}}},
		"containers": []any{map[string]any{"securityContext": map[string]any{"capabilities": map[string]any{"add": []any{"cap_sys_admin", "SYS_ADMIN", "Net_Raw"}}}}},
	}})
	if !reflect.DeepEqual(p.HostPaths, []string{"/etc", "/root"}) || !reflect.DeepEqual(p.Capabilities, []string{"NET_RAW", "SYS_ADMIN"}) {
		t.Errorf("hostPaths %q capabilities %q", p.HostPaths, p.Capabilities)
	}
}
