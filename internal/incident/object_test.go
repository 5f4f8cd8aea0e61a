package incident

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// watchedPod is the object event of the live watch: no actor.
func watchedPod(ns, name, uid string) engine.Event {
	obj := map[string]any{"apiVersion": "v1", "kind": "Pod",
		"metadata": map[string]any{"name": name, "namespace": ns, "uid": uid},
		"spec":     map[string]any{"nodeName": "n1", "serviceAccountName": "default", "containers": []any{map[string]any{"name": "c", "securityContext": map[string]any{"privileged": true}}}}}
	ev := engine.Event{Kind: engine.KindObject, Op: "create", Time: time.Now(), Object: obj, Pod: engine.PodFromObject(obj), Node: "n1"}
	return ev
}

// auditedPod is the object event derived from the audit event of the
// request that created the pod, logged at Request level (no uid yet).
func auditedPod(t *testing.T, ns, name string) engine.Event {
	t.Helper()
	ae := engine.Event{Kind: engine.KindAudit, Time: time.Now(), Audit: engine.Audit{
		Stage: "ResponseComplete", Verb: "create", ResponseStatus: engine.Status{Code: 201},
		User:      engine.UserInfo{Username: "system:serviceaccount:" + ns + ":api"},
		SourceIPs: []string{"10.244.0.9"},
		ObjectRef: engine.AuditObjectRef{Resource: "pods", Namespace: ns, Name: name, APIVersion: "v1"},
		RequestObject: map[string]any{"apiVersion": "v1", "kind": "Pod", "metadata": map[string]any{"name": name},
			"spec": map[string]any{"containers": []any{map[string]any{"name": "c", "securityContext": map[string]any{"privileged": true}}}}},
	}}
	ev, ok := engine.ObjectFromAudit(&ae)
	if !ok {
		t.Fatal("no object event derived")
	}
	return ev
}

// The same pod seen by the live watch and in the audit log is one Incident,
// whichever comes first: the audit side brings the actor, the watch the uid
// and node. Another pod of the same rule is another Incident.
func TestWatchAndAuditOfOnePodFoldIntoOneIncident(t *testing.T) {
	ns := namespaces(t, 2)
	own, shop := ns[0], ns[1]
	w := NewWriter(kc, logr.Discard(), Options{Namespace: own, WriteQPS: 1000})
	rule := compile(t, "privileged-pod", "", v1alpha1.DetectionRuleSpec{
		Source: "object", Severity: "high", Condition: `event.op == "create" && pod.privileged`,
		Throttle: &v1alpha1.Throttle{Key: []string{"pod.uid"}, Window: metav1.Duration{Duration: time.Hour}},
	})
	ctx := context.Background()
	subjects := func() map[string]v1alpha1.Subject {
		t.Helper()
		var list v1alpha1.IncidentList
		if err := kc.List(ctx, &list, client.InNamespace(shop)); err != nil {
			t.Fatal(err)
		}
		out := map[string]v1alpha1.Subject{}
		for _, inc := range list.Items {
			out[inc.Spec.Subject.Pod] = inc.Spec.Subject
		}
		if len(out) != len(list.Items) {
			t.Fatalf("%d Incidents for %d pods: one object must make one Incident", len(list.Items), len(out))
		}
		return out
	}

	// Watch first, then audit.
	first := watchedPod(shop, "debug", "uid-debug")
	w.Record(engine.Match{Rule: rule}, &first)
	w.Flush(ctx)
	if s := subjects()["debug"]; s.PodUID != "uid-debug" || s.User != "" {
		t.Fatalf("subject from the watch %+v", s)
	}
	second := auditedPod(t, shop, "debug")
	w.Record(engine.Match{Rule: rule}, &second)
	w.Flush(ctx)
	s := subjects()["debug"]
	if s.PodUID != "uid-debug" || s.User != "system:serviceaccount:"+shop+":api" || s.Verb != "create" || s.Resource != "pods" ||
		len(s.SourceIPs) != 1 || s.SourceIPs[0] != "10.244.0.9" || s.Node != "n1" {
		t.Fatalf("subject not completed with the actor: %+v", s)
	}

	// Audit first (its body has no uid), then watch.
	third := auditedPod(t, shop, "toolbox")
	w.Record(engine.Match{Rule: rule}, &third)
	fourth := watchedPod(shop, "toolbox", "uid-toolbox")
	w.Record(engine.Match{Rule: rule}, &fourth)
	w.Flush(ctx)
	got := subjects()
	if len(got) != 2 {
		t.Fatalf("Incidents for %d pods, want 2", len(got))
	}
	if s := got["toolbox"]; s.PodUID != "uid-toolbox" || s.Node != "n1" || s.User != "system:serviceaccount:"+shop+":api" {
		t.Fatalf("subject not completed from the watch: %+v", s)
	}
}

// One change of an object, seen by the watch and in the audit log (whose
// response body carries the same resourceVersion), counts once; both
// sightings stay as samples, the audit one naming the actor.
func TestTheSameChangeSeenTwiceCountsOnce(t *testing.T) {
	ns := namespaces(t, 2)
	own, shop := ns[0], ns[1]
	w := NewWriter(kc, logr.Discard(), Options{Namespace: own, WriteQPS: 1000})
	rule := compile(t, "privileged-pod", "", v1alpha1.DetectionRuleSpec{Source: "object", Severity: "high", Condition: `event.op == "create" && pod.privileged`})
	watched := watchedPod(shop, "root", "uid-root")
	watched.Object["metadata"].(map[string]any)["resourceVersion"] = "4711"
	ae := engine.Event{Kind: engine.KindAudit, Time: time.Now(), Audit: engine.Audit{
		Stage: "ResponseComplete", Verb: "create", ResponseStatus: engine.Status{Code: 201},
		User:           engine.UserInfo{Username: "system:serviceaccount:" + shop + ":api"},
		ObjectRef:      engine.AuditObjectRef{Resource: "pods", Namespace: shop, Name: "root"},
		ResponseObject: watched.Object,
	}}
	audited, ok := engine.ObjectFromAudit(&ae)
	if !ok {
		t.Fatal("no object event derived")
	}
	ctx := context.Background()
	w.Record(engine.Match{Rule: rule}, &watched)
	w.Record(engine.Match{Rule: rule}, &audited)
	// A later change of the same pod counts.
	later := watchedPod(shop, "root", "uid-root")
	later.Object["metadata"].(map[string]any)["resourceVersion"] = "4800"
	w.Record(engine.Match{Rule: rule}, &later)
	w.Flush(ctx)
	var list v1alpha1.IncidentList
	if err := kc.List(ctx, &list, client.InNamespace(shop)); err != nil || len(list.Items) != 1 {
		t.Fatalf("%d incidents, %v", len(list.Items), err)
	}
	in := list.Items[0]
	if in.Status.Count != 2 || len(in.Status.SampleEvents) != 3 || in.Spec.Subject.User == "" {
		t.Errorf("count %d, %d samples, subject %+v: want 2 changes counted, 3 samples, the actor named", in.Status.Count, len(in.Status.SampleEvents), in.Spec.Subject)
	}
}
