package kube

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/test/cluster"
)

// shared is one real control plane (etcd + kube-apiserver, no controller
// manager: the tests create ReplicaSets and Pods themselves) for the package.
var shared *cluster.Cluster

func TestMain(m *testing.M) {
	os.Exit(cluster.Main(m, cluster.Options{}, func(c *cluster.Cluster) { shared = c }))
}

var seq atomic.Int64

// env is one test's namespace, node, store and running source.
type env struct {
	t      *testing.T
	ctx    context.Context
	client kubernetes.Interface
	ns     string
	node   *corev1.Node
	store  *enrich.Store
	source *Source
}

func newEnv(t *testing.T, opts enrich.Options, nodeScoped bool) *env {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	store, err := enrich.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	src, err := NewSource(shared.AdminConfig(), store, "")
	if err != nil {
		t.Fatal(err)
	}
	src.RetryInterval = 200 * time.Millisecond
	src.OnError = func(err error) { t.Logf("source: %v", err) }
	client := src.Client
	n := seq.Add(1)
	ns := fmt.Sprintf("identity-%d-%d", os.Getpid(), n)
	// Without the controller manager nobody creates "default"; the
	// ServiceAccount admission plugin needs it to admit pods.
	if err := shared.EnsureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
	node, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: ns + "-node"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create node: %v", err)
	}
	if nodeScoped {
		src.Node, src.PeerPods = node.Name, true
	}
	if err := src.Start(ctx); err != nil {
		t.Fatalf("start source: %v", err)
	}
	return &env{t: t, ctx: ctx, client: client, ns: ns, node: node, store: store, source: src}
}

func ctrlRef(apiVersion, kind, name string, uid types.UID) []metav1.OwnerReference {
	yes := true
	return []metav1.OwnerReference{{APIVersion: apiVersion, Kind: kind, Name: name, UID: uid, Controller: &yes}}
}

// createPod creates a pod bound to the env's node and, when status is given,
// sets it through the status subresource as a kubelet would.
func (e *env) createPod(name string, owners []metav1.OwnerReference, annotations map[string]string, status *corev1.PodStatus) *corev1.Pod {
	e.t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.ns, Labels: map[string]string{"app": "web"},
			OwnerReferences: owners, Annotations: annotations},
		Spec: corev1.PodSpec{NodeName: e.node.Name, AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/shop/web:1.0"}}},
	}
	pod, err := e.client.CoreV1().Pods(e.ns).Create(e.ctx, pod, metav1.CreateOptions{})
	if err != nil {
		e.t.Fatalf("create pod %s: %v", name, err)
	}
	if status != nil {
		pod.Status = *status
		if pod, err = e.client.CoreV1().Pods(e.ns).UpdateStatus(e.ctx, pod, metav1.UpdateOptions{}); err != nil {
			e.t.Fatalf("set status of pod %s: %v", name, err)
		}
	}
	return pod
}

func (e *env) deletePod(name string) {
	e.t.Helper()
	zero := int64(0) // no kubelet will confirm a graceful stop
	if err := e.client.CoreV1().Pods(e.ns).Delete(e.ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero}); err != nil {
		e.t.Fatalf("delete pod %s: %v", name, err)
	}
}

func runningStatus(ip, containerID, imageID string) *corev1.PodStatus {
	now := metav1.Now()
	st := &corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, StartTime: &now}
	if containerID != "" {
		st.ContainerStatuses = []corev1.ContainerStatus{{Name: "app", Ready: true, Image: "registry.example/shop/web:1.0",
			ImageID: imageID, ContainerID: containerID,
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}}}
	}
	return st
}

// eventually polls cond until it holds or 15s pass.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kubeletCgroup creates <root>/<testroot>/kubepods/besteffort/pod<uid>/<id>
// as the kubelet's cgroupfs driver does, starts a shell, moves it in and
// returns it with a release function that makes it exec /bin/sleep: the
// exec happens inside the container's cgroup, as a container's would.
func kubeletCgroup(t *testing.T, root, uid, id string) (*exec.Cmd, func()) {
	t.Helper()
	testRoot := filepath.Join(root, fmt.Sprintf("riposte-kube-test-%d", os.Getpid()))
	dir := filepath.Join(testRoot, "kubepods/besteffort/pod"+uid, id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create kubelet-like cgroup (needs root and cgroup v2 at %s): %v", root, err)
	}
	t.Cleanup(func() {
		for p := dir; p != filepath.Dir(testRoot); p = filepath.Dir(p) {
			_ = os.Remove(p)
		}
	})
	cmd := exec.Command("/bin/sh", "-c", "read _; exec /bin/sleep 120")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start process: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(cmd.Process.Pid)), 0); err != nil {
		t.Fatalf("move pid %d into %s: %v", cmd.Process.Pid, dir, err)
	}
	return cmd, func() {
		if _, err := stdin.Write([]byte("go\n")); err != nil {
			t.Fatalf("release pid %d: %v", cmd.Process.Pid, err)
		}
	}
}

// sensors loads the agent's eBPF sensors with every kind passing and
// returns the exec events they report, decoded as the agent decodes them.
func sensors(t *testing.T) <-chan engine.Event {
	t.Helper()
	s, err := bpf.Load(bpf.Options{})
	if err != nil {
		t.Fatalf("the eBPF sensors must load on this machine (root, kernel BTF): %v", err)
	}
	all := bpf.NewFilter([]bpf.RuleConstraints{{Name: "all", Constraints: engine.Constraints{Kinds: engine.AllKinds()}}})
	if err := s.SetFilter(all); err != nil {
		s.Close()
		t.Fatalf("set sensor filter: %v", err)
	}
	out := make(chan engine.Event, 4096)
	done := make(chan struct{})
	go func() {
		defer close(done)
		d := bpf.Decoder{Boot: bpf.BootTime()}
		var rec ringbuf.Record
		for {
			if err := s.Read(&rec); err != nil {
				if errors.Is(err, ringbuf.ErrClosed) {
					return
				}
				continue
			}
			var ev engine.Event
			if _, err := d.Decode(rec.RawSample, &ev); err != nil || ev.Kind != engine.KindExec {
				continue
			}
			select {
			case out <- ev:
			default: // the test only wants one exec; never stall the reader
			}
		}
	}()
	t.Cleanup(func() { s.Close(); <-done })
	return out
}

func TestExecInKubeletCgroupIsEnrichedWithPodImageDigestAndDeployment(t *testing.T) {
	e := newEnv(t, enrich.Options{}, true)
	one := int32(1)
	dep, err := e.client.AppsV1().Deployments(e.ns).Create(e.ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: appsv1.DeploymentSpec{Replicas: &one, Paused: true,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "web"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "registry.example/shop/web:1.0"}}}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create deployment: %v", err)
	}
	rs, err := e.client.AppsV1().ReplicaSets(e.ns).Create(e.ctx, &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{Name: "web-6d4f8b7c9", OwnerReferences: ctrlRef("apps/v1", "Deployment", dep.Name, dep.UID)},
		Spec:       appsv1.ReplicaSetSpec{Replicas: &one, Selector: dep.Spec.Selector, Template: dep.Spec.Template},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create replicaset: %v", err)
	}
	const containerID = "5f3c0a9d2e7b4c1f8a6d9e0b3c2a1f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a"
	const digest = "sha256:2f1e4c7d9b0a3e6f8c5d2b1a4e7f0c9d6b3a8e5f2c1d4b7a0e9f6c3d8b5a2e1f"
	pod := e.createPod("web-6d4f8b7c9-abcde", ctrlRef("apps/v1", "ReplicaSet", rs.Name, rs.UID), nil,
		runningStatus("10.244.1.17", "containerd://"+containerID, "registry.example/shop/web@"+digest))

	cg := host.Cgroups{Root: host.DefaultCgroupRoot()}
	execs := sensors(t)
	proc, release := kubeletCgroup(t, cg.Root, string(pod.UID), containerID)
	scanner := &enrich.Scanner{Store: e.store, Cgroups: cg, Interval: time.Hour, MinGap: 10 * time.Millisecond}
	go scanner.Run(e.ctx, func(err error) { t.Errorf("cgroup scan: %v", err) })
	release()

	// The exec event as the kernel reported it.
	var raw engine.Event
	timeout := time.After(10 * time.Second)
	// The shell's own exec happened outside the cgroup; wait for sleep's.
	for raw.Process.PID != int64(proc.Process.Pid) || filepath.Base(raw.Process.Binary) != "sleep" {
		select {
		case raw = <-execs:
		case <-timeout:
			t.Fatalf("no exec event from pid %d within 10s", proc.Process.Pid)
		}
	}
	wantCgroup, err := cg.ID(cgroupPath(t, proc.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	if raw.Process.CgroupID != wantCgroup {
		t.Fatalf("kernel exec event: cgroup %d; want %d, the inode of the container's cgroup directory", raw.Process.CgroupID, wantCgroup)
	}
	var ev engine.Event
	eventually(t, "exec event enriched with the pod", func() bool {
		ev = raw
		e.store.Enrich(&ev)
		return ev.Pod.UID != "" && ev.Workload.Kind != ""
	})
	if ev.Pod.UID != string(pod.UID) || ev.Pod.Name != pod.Name || ev.Pod.Namespace != e.ns || ev.Pod.Node != e.node.Name {
		t.Errorf("pod = %+v", ev.Pod)
	}
	if ev.Container.ID != containerID || ev.Container.ImageDigest != digest || ev.Container.Name != "app" || ev.Container.Runtime != "containerd" {
		t.Errorf("container = %+v", ev.Container)
	}
	want := engine.Workload{Kind: "Deployment", Name: "web", Namespace: e.ns, UID: string(dep.UID)}
	if ev.Workload != want {
		t.Errorf("workload = %+v, want %+v", ev.Workload, want)
	}
	if ev.Pod.Ownerless || ev.Pod.Static {
		t.Errorf("flags: ownerless=%v static=%v", ev.Pod.Ownerless, ev.Pod.Static)
	}
	t.Logf("exec pid %d %s cgroup %d → pod %s/%s container %s image %s workload %s/%s",
		ev.Process.PID, ev.Process.Binary, ev.Process.CgroupID, ev.Pod.Namespace, ev.Pod.Name, ev.Container.ID[:12], ev.Container.ImageDigest[:19], ev.Workload.Kind, ev.Workload.Name)
}

func TestIPReuseResolvesToThePodHoldingTheIPAtEventTime(t *testing.T) {
	e := newEnv(t, enrich.Options{}, false)
	ip := fmt.Sprintf("10.0.%d.7", seq.Add(1)%250)
	peer := func(at time.Time) engine.Peer {
		ev := engine.Event{Kind: engine.KindConnect, Time: at, Net: engine.Net{Peer: engine.Peer{IP: ip, Port: 8080}}}
		e.store.Enrich(&ev)
		return ev.Net.Peer
	}
	e.createPod("a", nil, nil, runningStatus(ip, "", ""))
	eventually(t, "pod a to hold "+ip, func() bool { return peer(time.Now()).Pod == "a" })
	t0 := time.Now()

	e.deletePod("a")
	eventually(t, "pod a to release "+ip, func() bool { return peer(time.Now()).Pod == "" })
	t1 := time.Now()

	e.createPod("b", nil, nil, runningStatus(ip, "", ""))
	eventually(t, "pod b to hold "+ip, func() bool { return peer(time.Now()).Pod == "b" })
	t2 := time.Now()

	if p := peer(t0); p.Pod != "a" || p.Namespace != e.ns || p.Workload.Kind != "Pod" {
		t.Errorf("event at t0 → %+v, want pod a", p)
	}
	if p := peer(t1); p.Pod != "" {
		t.Errorf("event between a and b → %+v, want nobody", p)
	}
	if p := peer(t2.Add(time.Millisecond)); p.Pod != "b" {
		t.Errorf("event after t2 → %+v, want pod b", p)
	}
	// An API request from that IP is attributed the same way.
	for at, want := range map[time.Time]string{t0: "a", t2.Add(time.Millisecond): "b"} {
		ev := engine.Event{Kind: engine.KindAudit, Time: at, Audit: engine.Audit{Verb: "create", SourceIPs: []string{ip}}}
		e.store.Enrich(&ev)
		if ev.Audit.SourcePod.Pod != want || ev.Audit.SourcePod.Namespace != e.ns {
			t.Errorf("audit.sourcePod at %v = %+v, want pod %s", at.Sub(t0), ev.Audit.SourcePod, want)
		}
	}
}

func TestDeletedPodResolvesWithinTombstoneWindowOnly(t *testing.T) {
	const retention = 2 * time.Second
	e := newEnv(t, enrich.Options{Retention: retention}, true)
	const containerID = "aa3c0a9d2e7b4c1f8a6d9e0b3c2a1f4e5d6c7b8a9f0e1d2c3b4a5f6e7d8c9b0a"
	pod := e.createPod("short-lived", nil, nil, runningStatus("10.244.9.9", "containerd://"+containerID, "x@sha256:ab"))
	const cgid = 1 << 50 // synthetic: this test is about time, not cgroups
	eventually(t, "container in store", func() bool { _, ok := e.store.Container(containerID); return ok })
	if err := e.store.Update(func(tx *enrich.Txn) error {
		return tx.PutCgroup(host.Ref{ContainerID: containerID, PodUID: string(pod.UID)}, cgid)
	}); err != nil {
		t.Fatal(err)
	}
	e.deletePod(pod.Name)
	var gone time.Time
	eventually(t, "pod tombstone", func() bool {
		id, ok := e.store.Cgroup(cgid)
		if ok {
			gone = id.Gone
		}
		return !gone.IsZero()
	})
	stats := e.store.Stats()
	enrichAt := func(at time.Time) engine.Event {
		ev := engine.Event{Kind: engine.KindExec, Time: at, Process: engine.Process{CgroupID: cgid}}
		e.store.Enrich(&ev)
		return ev
	}
	if ev := enrichAt(gone.Add(retention / 2)); ev.Pod.Name != "short-lived" || ev.Container.ImageDigest != "sha256:ab" {
		t.Errorf("late event within the window: pod %+v", ev.Pod)
	}
	if got := stats.Get(enrich.KindContainer, enrich.Tombstoned); got != 1 {
		t.Errorf("tombstoned = %d, want 1", got)
	}
	if ev := enrichAt(gone.Add(retention + time.Second)); ev.Pod.UID != "" || ev.Container.ID != "" {
		t.Errorf("event after the window resolved to %+v", ev.Pod)
	}
	if got := stats.Get(enrich.KindContainer, enrich.Unresolved); got != 1 {
		t.Errorf("unresolved = %d, want 1", got)
	}
	time.Sleep(time.Until(gone.Add(retention + 100*time.Millisecond)))
	if n := e.store.GC(); n < 2 {
		t.Errorf("GC removed %d records, want the pod and its container", n)
	}
	if _, ok := e.store.Cgroup(cgid); ok {
		t.Error("cgroup still known after GC")
	}
}

func TestStaticAndOwnerlessFlagsForPodsCreatedThroughTheAPI(t *testing.T) {
	e := newEnv(t, enrich.Options{}, true)
	mirror := e.createPod("etcd-"+e.node.Name, ctrlRef("v1", "Node", e.node.Name, e.node.UID),
		map[string]string{enrich.MirrorAnnotation: "3f1c2e9a7b"}, nil)
	bare := e.createPod("debug", nil, nil, nil)
	var m, b *enrich.Pod
	eventually(t, "both pods in the store", func() bool {
		m, b = e.store.Pod(string(mirror.UID)), e.store.Pod(string(bare.UID))
		return m != nil && b != nil
	})
	if !m.Static || m.Ownerless || m.Workload.Kind != "Node" || m.Workload.Name != e.node.Name {
		t.Errorf("mirror pod: static=%v ownerless=%v workload=%+v", m.Static, m.Ownerless, m.Workload)
	}
	if b.Static || !b.Ownerless || b.Workload != (engine.Workload{Kind: "Pod", Name: "debug", Namespace: e.ns, UID: string(bare.UID)}) {
		t.Errorf("bare pod: static=%v ownerless=%v workload=%+v", b.Static, b.Ownerless, b.Workload)
	}
}

func TestServiceClusterIPResolvesPeer(t *testing.T) {
	e := newEnv(t, enrich.Options{}, true)
	svc, err := e.client.CoreV1().Services(e.ns).Create(e.ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "cart"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create service: %v", err)
	}
	eventually(t, "service "+svc.Spec.ClusterIP+" in the store", func() bool {
		p, _ := e.store.PeerAt(svc.Spec.ClusterIP, time.Now())
		return p.Service == "cart" && p.Namespace == e.ns
	})
}

// cgroupPath is pid's cgroup v2 path from /proc/<pid>/cgroup.
func cgroupPath(t *testing.T, pid int) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if p, ok := strings.CutPrefix(line, "0::"); ok {
			return p
		}
	}
	t.Fatalf("no cgroup v2 line in /proc/%d/cgroup: %q", pid, b)
	return ""
}

func TestAgentResolvesPeersOnOtherNodes(t *testing.T) {
	e := newEnv(t, enrich.Options{}, true)
	ip := fmt.Sprintf("10.1.%d.9", seq.Add(1)%250)
	remote := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "remote", Namespace: e.ns, Labels: map[string]string{"app": "remote"}},
		Spec: corev1.PodSpec{NodeName: "some-other-node", AutomountServiceAccountToken: new(bool),
			Containers: []corev1.Container{{Name: "app", Image: "registry.example/shop/remote:1.0"}}},
	}
	remote, err := e.client.CoreV1().Pods(e.ns).Create(e.ctx, remote, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create remote pod: %v", err)
	}
	remote.Status = *runningStatus(ip, "containerd://"+strings.Repeat("c", 64), "x@sha256:cc")
	if _, err := e.client.CoreV1().Pods(e.ns).UpdateStatus(e.ctx, remote, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("set remote pod status: %v", err)
	}
	local := e.createPod("local", nil, nil, runningStatus("10.2.0.1", "containerd://"+strings.Repeat("d", 64), "x@sha256:dd"))

	eventually(t, "remote pod as a peer", func() bool {
		p, _ := e.store.PeerAt(ip, time.Now())
		return p.Pod == "remote"
	})
	p, _ := e.store.PeerAt(ip, time.Now())
	if p.Namespace != e.ns || p.PodUID != string(remote.UID) || p.Workload.Kind != "Pod" || p.Workload.Name != "remote" {
		t.Errorf("remote peer = %+v", p)
	}
	// The reduced copy keeps no container of another node's pod...
	if _, ok := e.store.Container(strings.Repeat("c", 64)); ok {
		t.Error("another node's container was stored")
	}
	// ...and never replaces this node's complete record.
	eventually(t, "local pod with its container", func() bool {
		_, ok := e.store.Container(strings.Repeat("d", 64))
		return ok
	})
	if lp := e.store.Pod(string(local.UID)); lp.Labels["app"] != "web" || lp.ServiceAccount != "default" {
		t.Errorf("local pod record reduced: %+v", lp.Pod)
	}
}
