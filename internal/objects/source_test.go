package objects

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

func TestPodEventsCarryDerivedFlagsForObjectRules(t *testing.T) {
	priv := true
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "debug", Namespace: "shop", UID: "u1",
			Annotations: map[string]string{corev1.MirrorPodAnnotationKey: "x"}},
		Spec: corev1.PodSpec{
			NodeName:   "n1",
			Volumes:    []corev1.Volume{{Name: "root", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}},
			Containers: []corev1.Container{{Name: "c", SecurityContext: &corev1.SecurityContext{Privileged: &priv}}},
		},
	}
	ev, err := Event("create", pod, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p := ev.Pod
	if !p.Ownerless || !p.Static || !p.Privileged || !p.HostPath || p.Node != "n1" || ev.Node != "n1" {
		t.Errorf("pod view = %+v", p)
	}
	if ev.Object["kind"] != "Pod" || ev.Namespace() != "shop" {
		t.Errorf("object kind %v namespace %q", ev.Object["kind"], ev.Namespace())
	}

	rule, err := engine.Compile("ownerless-pod", "", &v1alpha1.DetectionRuleSpec{
		Source: "object", Severity: "medium",
		Condition: `event.op == "create" && object.kind == "Pod" && pod.ownerless && pod.namespace != "kube-system"`,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := engine.NewMatcher([]*engine.Rule{rule}).Match(&ev, nil); len(got) != 1 {
		t.Errorf("ownerless pod: %d matches, want 1", len(got))
	}
	pod.OwnerReferences = []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "rs", UID: "r"}}
	ev, _ = Event("create", pod, time.Now())
	if got := engine.NewMatcher([]*engine.Rule{rule}).Match(&ev, nil); len(got) != 0 {
		t.Errorf("owned pod: %d matches, want 0", len(got))
	}
}

func TestParseKinds(t *testing.T) {
	got, err := ParseKinds([]string{"v1/Pod", "apps/v1/Deployment"})
	if err != nil || len(got) != 2 || got[0] != PodKind || got[1].Group != "apps" || got[1].Kind != "Deployment" {
		t.Fatalf("ParseKinds = %v, %v", got, err)
	}
	if _, err := ParseKinds([]string{"Pod"}); err == nil {
		t.Error("ParseKinds(Pod) succeeded, want an error")
	}
}
