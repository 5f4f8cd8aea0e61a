package kube

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
)

// TestOwnerChainsThroughTheAPI creates the owner objects built-in
// controllers would and checks the workload each pod gets in the store.
func TestOwnerChainsThroughTheAPI(t *testing.T) {
	e := newEnv(t, enrich.Options{}, true)
	sel := &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	tmpl := corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
	always := tmpl
	always.Spec.RestartPolicy = corev1.RestartPolicyAlways

	cj, err := e.client.BatchV1().CronJobs(e.ns).Create(e.ctx, &batchv1.CronJob{
		ObjectMeta: metav1.ObjectMeta{Name: "backup"},
		Spec:       batchv1.CronJobSpec{Schedule: "0 3 * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchv1.JobSpec{Template: tmpl}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create cronjob: %v", err)
	}
	job, err := e.client.BatchV1().Jobs(e.ns).Create(e.ctx, &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "backup-29400000", OwnerReferences: ctrlRef("batch/v1", "CronJob", cj.Name, cj.UID)},
		Spec:       batchv1.JobSpec{Template: tmpl},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create job: %v", err)
	}
	sts, err := e.client.AppsV1().StatefulSets(e.ns).Create(e.ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db"},
		Spec:       appsv1.StatefulSetSpec{Selector: sel, Template: always},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create statefulset: %v", err)
	}
	ds, err := e.client.AppsV1().DaemonSets(e.ns).Create(e.ctx, &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "agent"},
		Spec:       appsv1.DaemonSetSpec{Selector: sel, Template: always},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create daemonset: %v", err)
	}
	// A kind outside the built-in table is found through discovery: a
	// ControllerRevision owned by the StatefulSet.
	rev, err := e.client.AppsV1().ControllerRevisions(e.ns).Create(e.ctx, &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{Name: "db-7c9f", OwnerReferences: ctrlRef("apps/v1", "StatefulSet", sts.Name, sts.UID)},
		Revision:   1,
		Data:       runtime.RawExtension{Raw: []byte(`{}`)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create controllerrevision: %v", err)
	}
	// An owner that was deleted: the climb stops at the pod's reference.
	gone := ctrlRef("apps/v1", "ReplicaSet", "deleted-rs", "0000-gone")

	tests := []struct {
		pod    string
		owners []metav1.OwnerReference
		want   engine.Workload
	}{
		{"backup-29400000-x", ctrlRef("batch/v1", "Job", job.Name, job.UID), engine.Workload{Kind: "CronJob", Name: "backup", Namespace: e.ns, UID: string(cj.UID)}},
		{"db-0", ctrlRef("apps/v1", "StatefulSet", sts.Name, sts.UID), engine.Workload{Kind: "StatefulSet", Name: "db", Namespace: e.ns, UID: string(sts.UID)}},
		{"agent-x", ctrlRef("apps/v1", "DaemonSet", ds.Name, ds.UID), engine.Workload{Kind: "DaemonSet", Name: "agent", Namespace: e.ns, UID: string(ds.UID)}},
		{"via-revision", ctrlRef("apps/v1", "ControllerRevision", rev.Name, rev.UID), engine.Workload{Kind: "StatefulSet", Name: "db", Namespace: e.ns, UID: string(sts.UID)}},
		{"orphan", gone, engine.Workload{Kind: "ReplicaSet", Name: "deleted-rs", Namespace: e.ns, UID: "0000-gone"}},
	}
	uids := map[string]string{}
	for _, tt := range tests {
		uids[tt.pod] = string(e.createPod(tt.pod, tt.owners, nil, nil).UID)
	}
	for _, tt := range tests {
		var p *enrich.Pod
		eventually(t, "pod "+tt.pod+" in the store", func() bool { p = e.store.Pod(uids[tt.pod]); return p != nil })
		if p.Workload != tt.want || p.Ownerless {
			t.Errorf("%s: workload %+v ownerless=%v, want %+v", tt.pod, p.Workload, p.Ownerless, tt.want)
		}
	}
}
