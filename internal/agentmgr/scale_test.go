package agentmgr

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/test/cluster"
)

// everyRequest audits every request at Metadata level, Leases and watches
// included: the benchmark counts the agents' requests from the API server's
// own record.
const everyRequest = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  nonResourceURLs: ["/healthz*", "/readyz*", "/livez*"]
- level: Metadata
`

// scaleEnv is a control plane with the agents' RBAC, bound to a group whose
// members are the benchmark's agents (client certificates agent-0, …), and
// the shipped rule library marked Ready as the controller would.
type scaleEnv struct {
	cl    *cluster.Cluster
	admin client.Client
}

func newScaleEnv(b *testing.B) *scaleEnv {
	b.Helper()
	cl := cluster.StartT(b, cluster.Options{AuditPolicy: everyRequest})
	ctx := context.Background()
	if _, err := cl.InstallCRDs(ctx, "../../config/crd/bases"); err != nil {
		b.Fatal(err)
	}
	admin, err := client.New(cl.AdminConfig(), client.Options{Scheme: scheme()})
	if err != nil {
		b.Fatal(err)
	}
	if err := admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "riposte-system"}}); err != nil {
		b.Fatal(err)
	}
	if out, err := cl.Kubectl(ctx, "apply", "-f", "../../config/rbac/agent.yaml").CombinedOutput(); err != nil {
		b.Fatalf("apply config/rbac/agent.yaml: %v %s", err, out)
	}
	group := []rbacv1.Subject{{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: "riposte:benchmark-agents"}}
	for _, o := range []client.Object{
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "benchmark-agents"}, Subjects: group,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "riposte-agent"}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "benchmark-agents", Namespace: "riposte-system"}, Subjects: group,
			RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "riposte-agent"}},
	} {
		if err := admin.Create(ctx, o); err != nil {
			b.Fatal(err)
		}
	}
	if out, err := cl.Kubectl(ctx, "apply", "-R", "-f", "../../rules").CombinedOutput(); err != nil {
		b.Fatalf("apply rules: %v %s", err, out)
	}
	var rules v1alpha1.ClusterDetectionRuleList
	if err := admin.List(ctx, &rules); err != nil {
		b.Fatal(err)
	}
	for i := range rules.Items {
		markReady(b, admin, &rules.Items[i])
	}
	return &scaleEnv{cl: cl, admin: admin}
}

func markReady(b *testing.B, c client.Client, r *v1alpha1.ClusterDetectionRule) {
	b.Helper()
	r.Status.ObservedGeneration = r.Generation
	apimeta.SetStatusCondition(&r.Status.Conditions, metav1.Condition{Type: v1alpha1.ReadyCondition, Status: metav1.ConditionTrue, Reason: v1alpha1.LoadedReason, Message: "benchmark"})
	if err := c.Status().Update(context.Background(), r); err != nil {
		b.Fatal(err)
	}
}

// startAgents runs n agents' Kubernetes halves (agentmgr.Run with
// KubernetesOnly), each with its own node name and client certificate.
func (e *scaleEnv) startAgents(b *testing.B, ctx context.Context, n int) {
	b.Helper()
	for i := range n {
		cfg, err := e.cl.UserConfig(fmt.Sprintf("agent-%d", i), "riposte:benchmark-agents")
		if err != nil {
			b.Fatal(err)
		}
		o := Options{Node: fmt.Sprintf("node-%d", i), Namespace: "riposte-system", KubernetesOnly: true, SkipNameValidation: true, Log: logr.Discard()}
		go func() { _ = Run(ctx, cfg, o) }()
	}
}

// waitLeases waits until every agent's Lease reports rule uid at generation gen.
func (e *scaleEnv) waitLeases(b *testing.B, n int, uid string, gen int64) time.Duration {
	b.Helper()
	begin := time.Now()
	want := fmt.Sprintf("%s=%d", uid, gen)
	for {
		var leases coordinationv1.LeaseList
		if err := e.admin.List(context.Background(), &leases, client.InNamespace("riposte-system")); err != nil {
			b.Fatal(err)
		}
		done := 0
		for _, l := range leases.Items {
			if strings.Contains(l.Annotations[v1alpha1.LoadedRulesAnnotation], want) {
				done++
			}
		}
		if done == n {
			return time.Since(begin)
		}
		if time.Since(begin) > 5*time.Minute {
			b.Fatalf("%d of %d agents report %s after 5 minutes", done, n, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// auditCounts counts, from the audit log past offset, the requests of the
// benchmark's agents by "verb resource".
func (e *scaleEnv) auditCounts(b *testing.B, offset int64) (map[string]int, int64) {
	b.Helper()
	f, err := os.Open(filepath.Join(e.cl.Dir(), "audit.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Seek(offset, 0); err != nil {
		b.Fatal(err)
	}
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var read int64
	for sc.Scan() {
		read += int64(len(sc.Bytes())) + 1
		var ev engine.Audit
		if json.Unmarshal(sc.Bytes(), &ev) != nil || !strings.HasPrefix(ev.User.Username, "agent-") {
			continue
		}
		// A watch is logged when it starts (ResponseStarted) and ends; count it once.
		if ev.Stage != "ResponseComplete" && !(ev.Stage == "ResponseStarted" && ev.Verb == "watch") {
			continue
		}
		if ev.Stage == "ResponseComplete" && ev.Verb == "watch" {
			continue
		}
		counts[ev.Verb+" "+ev.ObjectRef.Resource]++
	}
	return counts, offset + read
}

func logSize(b *testing.B, e *scaleEnv) int64 {
	b.Helper()
	fi, err := os.Stat(filepath.Join(e.cl.Dir(), "audit.log"))
	if err != nil {
		b.Fatal(err)
	}
	return fi.Size()
}

// cpuSeconds is the user+system CPU the process has used.
func cpuSeconds(b *testing.B, pid int) float64 {
	b.Helper()
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	f := strings.Fields(string(raw[strings.LastIndexByte(string(raw), ')')+2:]))
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100 // USER_HZ
}

func describe(counts map[string]int, agents int, minutes float64) (total float64, detail string) {
	keys := make([]string, 0, len(counts))
	n := 0
	for k, v := range counts {
		keys = append(keys, k)
		n += v
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.2f", k, float64(counts[k])/float64(agents)/minutes))
	}
	return float64(n) / float64(agents) / minutes, strings.Join(parts, ", ")
}

// BenchmarkAgentsAtScale runs 50 agents' Kubernetes halves — the same code
// `riposte agent` runs, each with its own node name and identity, without
// the kernel part — against one real kube-apiserver with the shipped rule
// library, and counts their requests in the API server's audit log: per
// agent per minute at steady state (two minutes, so every agent renews its
// Lease), and for one rule change (a new generation made Ready), with the
// API server's CPU over each window. Run by `make bench-scale`.
func BenchmarkAgentsAtScale(b *testing.B) {
	const agents = 50
	e := newScaleEnv(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var probe v1alpha1.ClusterDetectionRule
	if err := e.admin.Get(ctx, client.ObjectKey{Name: "shell-in-container"}, &probe); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	e.startAgents(b, ctx, agents)
	synced := e.waitLeases(b, agents, string(probe.UID), probe.Generation)
	b.Logf("%d agents started and reported the library loaded in %s", agents, synced.Round(time.Millisecond))
	apiserver := e.cl.PIDs()[1]
	// Let start-up requests and the first renewals settle.
	time.Sleep(10 * time.Second)

	off := logSize(b, e)
	cpu0, t0 := cpuSeconds(b, apiserver), time.Now()
	time.Sleep(2 * time.Minute)
	steady, off := e.auditCounts(b, off)
	minutes := time.Since(t0).Minutes()
	cpu := (cpuSeconds(b, apiserver) - cpu0) / minutes
	perAgent, detail := describe(steady, agents, minutes)
	b.Logf("steady state over %.1f min: %.2f requests per agent per minute (%s); kube-apiserver CPU %.2f s/min", minutes, perAgent, detail, cpu)
	b.ReportMetric(perAgent, "req/agent/min")
	b.ReportMetric(cpu, "apiserver-cpu-s/min")

	// One rule change: a new generation, made Ready by the "controller".
	cpu0 = cpuSeconds(b, apiserver)
	if err := e.admin.Get(ctx, client.ObjectKeyFromObject(&probe), &probe); err != nil {
		b.Fatal(err)
	}
	probe.Spec.Severity = "critical"
	if err := e.admin.Update(ctx, &probe); err != nil {
		b.Fatal(err)
	}
	markReady(b, e.admin, &probe)
	took := e.waitLeases(b, agents, string(probe.UID), probe.Generation)
	change, _ := e.auditCounts(b, off)
	changeCPU := cpuSeconds(b, apiserver) - cpu0
	perChange, changeDetail := describe(change, agents, 1)
	b.Logf("one rule change: every agent reported the new generation within %s; %.2f requests per agent in that time (%s); kube-apiserver CPU %.2f s",
		took.Round(time.Millisecond), perChange, changeDetail, changeCPU)
	b.ReportMetric(perChange, "req/agent/change")
	b.Logf("total %s", time.Since(start).Round(time.Second))
}

// BenchmarkAgentMemory measures one agent's Kubernetes half with the shipped
// library in a cluster of 10,000 pods, 110 of them on its node: the Go heap
// it holds once its caches and identity store are synced (after GC, less the
// heap before it started). The kernel half's maps are kernel memory, listed
// in docs/benchmarks.md from their sizes.
func BenchmarkAgentMemory(b *testing.B) {
	const pods, onNode = 10000, 110
	e := newScaleEnv(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.createPods(b, pods, onNode)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cfg, err := e.cl.UserConfig("agent-0", "riposte:benchmark-agents")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		_ = Run(ctx, cfg, Options{Node: "node-0", Namespace: "riposte-system", KubernetesOnly: true, SkipNameValidation: true, Log: logr.Discard()})
	}()
	var probe v1alpha1.ClusterDetectionRule
	if err := e.admin.Get(ctx, client.ObjectKey{Name: "shell-in-container"}, &probe); err != nil {
		b.Fatal(err)
	}
	e.waitLeases(b, 1, string(probe.UID), probe.Generation)
	time.Sleep(20 * time.Second) // the identity source writes every pod into its store
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapInuse-before.HeapInuse) / (1 << 20)
	b.Logf("agent heap with %d pods in the cluster (%d on its node) and the shipped library: %.1f MiB", pods, onNode, heap)
	b.ReportMetric(heap, "heap-MiB")
}

// createPods writes n pod objects spread over nodes, onNode of them on
// node-0, each with an IP (no kubelet runs: the status says where they are).
func (e *scaleEnv) createPods(b *testing.B, n, onNode int) {
	b.Helper()
	ctx := context.Background()
	if err := e.admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "scale"}}); err != nil {
		b.Fatal(err)
	}
	if err := e.cl.EnsureServiceAccount(ctx, "scale", "default"); err != nil {
		b.Fatal(err)
	}
	begin := time.Now()
	sem := make(chan struct{}, 16)
	errs := make(chan error, n)
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			node := fmt.Sprintf("node-%d", 1+i%90)
			if i < onNode {
				node = "node-0"
			}
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%d", i), Namespace: "scale", Labels: map[string]string{"app": fmt.Sprintf("app-%d", i%200)},
					OwnerReferences: nil},
				Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1.0"}}},
			}
			if err := e.admin.Create(ctx, p); err != nil {
				errs <- err
				return
			}
			ip := fmt.Sprintf("10.%d.%d.%d", 1+i/65536, (i/256)%256, i%256)
			p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "app", ContainerID: fmt.Sprintf("containerd://%064x", i), ImageID: "sha256:" + strings.Repeat("a", 64), Ready: true}}}
			errs <- e.admin.Status().Update(ctx, p)
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("%d pods written in %s", n, time.Since(begin).Round(time.Second))
}
