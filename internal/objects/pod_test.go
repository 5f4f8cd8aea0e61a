package objects

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
)

// randomPod draws a pod over the fields the pod view reads.
func randomPod(r *rand.Rand) *corev1.Pod {
	flag := func() bool { return r.IntN(3) == 0 }
	priv := func() *corev1.SecurityContext {
		switch r.IntN(4) {
		case 0:
			return nil
		case 1:
			return &corev1.SecurityContext{}
		}
		b, e := r.IntN(2) == 0, r.IntN(2) == 0
		sc := &corev1.SecurityContext{Privileged: &b}
		if r.IntN(2) == 0 {
			sc.AllowPrivilegeEscalation = &e
		}
		if r.IntN(2) == 0 {
			sc.Capabilities = &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}}
			for range r.IntN(3) {
				sc.Capabilities.Add = append(sc.Capabilities.Add, []corev1.Capability{"SYS_ADMIN", "NET_RAW", "cap_sys_ptrace", "CAP_SYS_ADMIN"}[r.IntN(4)])
			}
		}
		return sc
	}
	image := func() string { return []string{"", "busybox", "registry.example/app@sha256:abc"}[r.IntN(3)] }
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: fmt.Sprintf("p%d", r.IntN(100)), Namespace: []string{"shop", "kube-system", ""}[r.IntN(3)],
			UID: types.UID(fmt.Sprintf("uid-%d", r.IntN(1000))),
		},
		Spec: corev1.PodSpec{
			ServiceAccountName: []string{"", "default", "api"}[r.IntN(3)],
			HostNetwork:        flag(), HostPID: flag(), HostIPC: flag(),
			NodeName: []string{"", "n1"}[r.IntN(2)],
		},
		Status: corev1.PodStatus{PodIP: []string{"", "10.0.0.7"}[r.IntN(2)]},
	}
	if r.IntN(2) == 0 {
		p.Labels = map[string]string{}
		for i := range r.IntN(3) {
			p.Labels[fmt.Sprintf("l%d", i)] = fmt.Sprint(r.IntN(5))
		}
	}
	if r.IntN(2) == 0 {
		p.Annotations = map[string]string{"a": "b"}
		if flag() {
			p.Annotations[enrich.MirrorAnnotation] = "hash"
		}
		if flag() {
			p.Annotations["kubectl.kubernetes.io/last-applied-configuration"] = `{"kind":"Pod"}`
		}
	}
	for i := range r.IntN(3) {
		o := metav1.OwnerReference{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: fmt.Sprintf("rs%d", i), UID: types.UID(fmt.Sprint(i))}
		if r.IntN(2) == 0 {
			c := r.IntN(2) == 0
			o.Controller = &c
		}
		p.OwnerReferences = append(p.OwnerReferences, o)
	}
	for i := range r.IntN(3) {
		v := corev1.Volume{Name: fmt.Sprintf("v%d", i)}
		if r.IntN(2) == 0 {
			v.HostPath = &corev1.HostPathVolumeSource{Path: []string{"/", "/var/lib/kubelet/", "", "//etc/../root"}[r.IntN(4)]}
		} else {
			v.EmptyDir = &corev1.EmptyDirVolumeSource{}
		}
		p.Spec.Volumes = append(p.Spec.Volumes, v)
	}
	for i := range r.IntN(3) {
		p.Spec.InitContainers = append(p.Spec.InitContainers, corev1.Container{Name: fmt.Sprintf("i%d", i), Image: image(), SecurityContext: priv()})
	}
	for i := range 1 + r.IntN(2) {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: fmt.Sprintf("c%d", i), Image: image(), SecurityContext: priv()})
	}
	for i := range r.IntN(2) {
		p.Spec.EphemeralContainers = append(p.Spec.EphemeralContainers, corev1.EphemeralContainer{
			EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: fmt.Sprintf("e%d", i), Image: image(), SecurityContext: priv()}})
	}
	return p
}

// sameEmpty makes nil and empty maps and slices compare equal.
func sameEmpty(p engine.Pod) engine.Pod {
	if len(p.Labels) == 0 {
		p.Labels = nil
	}
	if len(p.Annotations) == 0 {
		p.Annotations = nil
	}
	if len(p.OwnerReferences) == 0 {
		p.OwnerReferences = nil
	}
	if len(p.Capabilities) == 0 {
		p.Capabilities = nil
	}
	return p
}

// The pod view is the same whether a Pod comes from the live watch or from
// an audit event's responseObject, and both agree with the node agent's
// store (engine/enrich), which reads the typed pod with code of its own.
func TestPodViewIsTheSameFromWatchAuditAndStore(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		pod := randomPod(r)
		live, err := Event("create", pod, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		body, err := json.Marshal(pod)
		if err != nil {
			t.Fatal(err)
		}
		var obj map[string]any
		if err := json.Unmarshal(body, &obj); err != nil {
			t.Fatal(err)
		}
		obj["apiVersion"], obj["kind"] = "v1", "Pod"
		ae := engine.Event{Kind: engine.KindAudit, Audit: engine.Audit{
			Stage: "ResponseComplete", Verb: "create", ResponseStatus: engine.Status{Code: 201},
			ObjectRef: engine.AuditObjectRef{Resource: "pods", Namespace: pod.Namespace}, ResponseObject: obj,
		}}
		derived, ok := engine.ObjectFromAudit(&ae)
		if !ok {
			t.Fatalf("pod %d: no object event derived from its audit event", i)
		}
		store, _ := enrich.PodFromKube(pod)
		want := sameEmpty(store.Pod)
		if got := sameEmpty(live.Pod); !reflect.DeepEqual(got, want) {
			t.Fatalf("pod %d: watch view\n%+v\nstore view\n%+v", i, got, want)
		}
		if got := sameEmpty(derived.Pod); !reflect.DeepEqual(got, want) {
			t.Fatalf("pod %d: audit view\n%+v\nstore view\n%+v", i, got, want)
		}
		if live.Node != pod.Spec.NodeName || derived.Node != pod.Spec.NodeName {
			t.Fatalf("pod %d: node %q (watch) %q (audit), want %q", i, live.Node, derived.Node, pod.Spec.NodeName)
		}
	}
}
