package responders_test

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

func ctxB(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	b.Cleanup(cancel)
	return ctx
}

func playbookB(b *testing.B) v1alpha1.PlaybookRef {
	p := &v1alpha1.ClusterResponsePlaybook{ObjectMeta: metav1.ObjectMeta{Name: uniq("bench")}, Spec: steps(v1alpha1.Step{Action: v1alpha1.ActionIsolate})}
	if err := kc.Create(ctxB(b), p); err != nil {
		b.Fatal(err)
	}
	return v1alpha1.PlaybookRef{Kind: "ClusterResponsePlaybook", Name: p.Name}
}

func podB(b *testing.B, ns string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: uniq("pod")}, Spec: podSpec()}
	if err := kc.Create(ctxB(b), p); err != nil {
		b.Fatal(err)
	}
	return p
}

func incidentB(b *testing.B, ns string, p *corev1.Pod, ref v1alpha1.PlaybookRef) *v1alpha1.Incident {
	inc := &v1alpha1.Incident{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: uniq("inc")},
		Spec: v1alpha1.IncidentSpec{Rule: "bench", RuleKind: "ClusterDetectionRule", Severity: "high",
			Subject: subjectOf(p), Playbooks: []v1alpha1.PlaybookRef{ref}},
	}
	if err := kc.Create(ctxB(b), inc); err != nil {
		b.Fatal(err)
	}
	return inc
}
