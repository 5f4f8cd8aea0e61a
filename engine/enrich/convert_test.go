package enrich

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

func TestPodFromKube(t *testing.T) {
	yes := true
	started := metav1.NewTime(time.Date(2026, 11, 26, 10, 0, 0, 0, time.UTC))
	kp := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			UID: types.UID(testUID), Name: "etcd-n1", Namespace: "kube-system",
			Labels: map[string]string{"tier": "control-plane"},
			Annotations: map[string]string{
				MirrorAnnotation: "abc",
				"kubectl.kubernetes.io/last-applied-configuration": "{huge}",
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: "n1", UID: "node-uid", Controller: &yes}},
		},
		Spec: corev1.PodSpec{
			NodeName: "n1", ServiceAccountName: "sa", HostNetwork: true, HostPID: true,
			Containers: []corev1.Container{{Name: "etcd", SecurityContext: &corev1.SecurityContext{Privileged: &yes}}, {Name: "side"}},
			Volumes:    []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/var/lib/etcd"}}}},
		},
		Status: corev1.PodStatus{
			PodIP:  "192.168.0.10",
			PodIPs: []corev1.PodIP{{IP: "192.168.0.10"}},
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "etcd", ContainerID: "containerd://" + testID, Image: "registry.k8s.io/etcd:3.6",
					ImageID: "registry.k8s.io/etcd@sha256:1234", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
					LastTerminationState: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ContainerID: "containerd://" + "e" + testID[1:], FinishedAt: started}}},
				{Name: "side", ContainerID: ""}, // waiting: no container yet
			},
		},
	}
	p, cs := PodFromKube(kp)
	if !p.Static || p.Ownerless || !p.HostNetwork || !p.HostPID || p.HostIPC || !p.Privileged || !p.HostPath {
		t.Errorf("flags = %+v", p.Pod)
	}
	if p.ServiceAccount != "sa" || p.Node != "n1" || p.OwnerReferences[0].Kind != "Node" || !p.OwnerReferences[0].Controller {
		t.Errorf("pod = %+v", p.Pod)
	}
	if _, ok := p.Annotations["kubectl.kubernetes.io/last-applied-configuration"]; ok {
		t.Error("last-applied-configuration kept")
	}
	if _, ok := kp.Annotations["kubectl.kubernetes.io/last-applied-configuration"]; !ok {
		t.Error("input pod mutated")
	}
	if len(p.IPs) != 0 {
		t.Errorf("host-network pod claims IPs %v", p.IPs)
	}
	if len(cs) != 2 {
		t.Fatalf("containers = %d, want running + previous instance", len(cs))
	}
	if c := cs[0]; c.ID != testID || c.Runtime != "containerd" || c.ImageDigest != "sha256:1234" || !c.Privileged || !c.StartedAt.Equal(started.Time) || !c.ExitedAt.IsZero() {
		t.Errorf("running container = %+v", c)
	}
	if c := cs[1]; c.ExitedAt.IsZero() {
		t.Errorf("previous instance not exited: %+v", c)
	}

	bare := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{UID: "u", Name: "debug"}, Status: corev1.PodStatus{PodIP: "10.0.0.3", Phase: corev1.PodRunning}}
	if p, _ := PodFromKube(bare); !p.Ownerless || p.Static || len(p.IPs) != 1 {
		t.Errorf("bare pod = %+v", p)
	}
	bare.Status.Phase = corev1.PodSucceeded
	if p, _ := PodFromKube(bare); len(p.IPs) != 0 {
		t.Errorf("finished pod still claims %v", p.IPs)
	}
}

func TestDigest(t *testing.T) {
	for in, want := range map[string]string{
		"docker.io/library/nginx@sha256:abcd": "sha256:abcd",
		"docker-pullable://nginx@sha256:abcd": "sha256:abcd",
		"sha256:abcd":                         "sha256:abcd",
		"":                                    "",
		"registry.example/app:1.0":            "",
		"docker://sha256:abcd":                "sha256:abcd",
	} {
		if got := Digest(in); got != want {
			t.Errorf("Digest(%q) = %q, want %q", in, got, want)
		}
	}
}
