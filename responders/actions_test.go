package responders_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/evidence"
	"github.com/riposte-dev/riposte/responders"
)

// clusterDNS creates a DNS Service in ns (selector k8s-app=test-dns) with an
// EndpointSlice holding addr, as the cluster's resolver.
func clusterDNS(t *testing.T, ns, addr string) (types.NamespacedName, string) {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "test-dns"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"k8s-app": "test-dns"},
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}},
	}
	if err := kc.Create(ctxT(t), svc); err != nil {
		t.Fatal(err)
	}
	port, proto := int32(53), corev1.ProtocolUDP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "test-dns-manual", Labels: map[string]string{
			discoveryv1.LabelServiceName: "test-dns", discoveryv1.LabelManagedBy: "riposte-test"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}}},
		Ports:       []discoveryv1.EndpointPort{{Port: &port, Protocol: &proto}},
	}
	if err := kc.Create(ctxT(t), es); err != nil {
		t.Fatal(err)
	}
	return client.ObjectKeyFromObject(svc), svc.Spec.ClusterIP
}

// TestIsolateCreatesDenyAllPolicyAndRevertRemovesIt: the NetworkPolicy
// denies everything but the allow list; allowDNS opens port 53 of the
// cluster DNS only (its pods, its cluster IP and its endpoints in the
// kernel layer's list), not port 53 of every address, which would leave an
// isolated pod a way out to any server listening there.
func TestIsolateCreatesDenyAllPolicyAndRevertRemovesIt(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	dns, clusterIP := clusterDNS(t, ns, "10.250.0.9")
	ref := playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionIsolate, Isolate: &v1alpha1.IsolateParams{
		AllowDNS: true, AllowEgress: []v1alpha1.AllowedPeer{{CIDR: "10.0.0.5/32", Port: 443}},
	}}))
	inc := incident(t, ns, subjectOf(p), ref)
	r := runner(responders.Defaults(responders.Deps{Client: kc, ClusterDNS: dns}))

	inc, out := run(t, r, inc)
	if !out.Done || inc.Status.Phase != v1alpha1.PhaseResponded {
		t.Fatalf("outcome %+v phase %q", out, inc.Status.Phase)
	}
	st := wantPhase(t, inc, "isolate", v1alpha1.StepSucceeded, "kernel: delegated to the riposte agent on node \"riposte-test-node\"")
	if !strings.Contains(st.Message, "port 53 of the cluster DNS "+dns.String()+" only") {
		t.Errorf("isolate message %q does not say DNS is limited to %s", st.Message, dns)
	}
	if st.StartedAt == nil || st.FinishedAt == nil {
		t.Fatalf("step times not recorded: %+v", st)
	}
	var np networkingv1.NetworkPolicy
	if err := kc.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: "riposte-isolate-" + p.Name}, &np); err != nil {
		t.Fatalf("NetworkPolicy: %v", err)
	}
	if got := np.Spec.PodSelector.MatchLabels; len(got) != 1 || got[v1alpha1.IsolateLabel] != string(p.UID) {
		t.Fatalf("podSelector %v, want only %s=%s", got, v1alpha1.IsolateLabel, p.UID)
	}
	if len(np.Spec.PolicyTypes) != 2 || len(np.Spec.Ingress) != 0 {
		t.Fatalf("policyTypes %v ingress %v: want Ingress+Egress and no ingress rule", np.Spec.PolicyTypes, np.Spec.Ingress)
	}
	if len(np.Spec.Egress) != 2 || len(np.Spec.Egress[0].Ports) != 2 || np.Spec.Egress[0].Ports[0].Port.IntValue() != 53 ||
		np.Spec.Egress[1].To[0].IPBlock.CIDR != "10.0.0.5/32" || np.Spec.Egress[1].Ports[0].Port.IntValue() != 443 {
		t.Fatalf("egress %+v: want DNS (udp+tcp 53) and 10.0.0.5/32:443 only", np.Spec.Egress)
	}
	to := np.Spec.Egress[0].To
	if len(to) != 3 || to[0].PodSelector == nil || to[0].PodSelector.MatchLabels["k8s-app"] != "test-dns" ||
		to[0].NamespaceSelector == nil || to[0].NamespaceSelector.MatchLabels[corev1.LabelMetadataName] != ns ||
		to[1].IPBlock == nil || to[1].IPBlock.CIDR != clusterIP+"/32" || to[2].IPBlock == nil || to[2].IPBlock.CIDR != "10.250.0.9/32" {
		t.Fatalf("DNS egress to %+v: want the DNS pods of %s, %s/32 and 10.250.0.9/32", to, ns, clusterIP)
	}
	wantAllow := clusterIP + "/32:53,10.250.0.9/32:53,10.0.0.5/32:443"
	if got := getPod(t, ns, p.Name); got.Labels[v1alpha1.IsolateLabel] != string(p.UID) || got.Annotations[v1alpha1.IsolateAllowAnnotation] != wantAllow {
		t.Fatalf("pod label %s=%q annotation %s=%q", v1alpha1.IsolateLabel, got.Labels[v1alpha1.IsolateLabel], v1alpha1.IsolateAllowAnnotation, got.Annotations[v1alpha1.IsolateAllowAnnotation])
	}
	// Running again changes nothing: the step is already Succeeded.
	again, _ := run(t, r, inc)
	if s := step(t, again, "isolate"); !s.FinishedAt.Equal(st.FinishedAt) {
		t.Fatalf("isolate ran twice")
	}

	annotate(t, inc, v1alpha1.RevertAnnotation)
	inc, _ = run(t, r, inc)
	wantPhase(t, inc, "isolate", v1alpha1.StepReverted, "deleted NetworkPolicy")
	if inc.Status.Phase != v1alpha1.PhaseReverted {
		t.Fatalf("incident phase %q, want Reverted", inc.Status.Phase)
	}
	if err := kc.Get(ctxT(t), client.ObjectKeyFromObject(&np), &np); !apierrors.IsNotFound(err) {
		t.Fatalf("NetworkPolicy after revert: %v", err)
	}
	if got := getPod(t, ns, p.Name); got.Labels[v1alpha1.IsolateLabel] != "" || got.Annotations[v1alpha1.IsolateAllowAnnotation] != "" {
		t.Fatalf("isolate label or allow annotation still on the pod after revert: %v %v", got.Labels, got.Annotations)
	}
}

// TestIsolateWithoutClusterDNSOpensNoPort53: when the cluster DNS Service
// does not exist, allowDNS opens nothing (an isolated pod resolves no
// names) and the step says so.
func TestIsolateWithoutClusterDNSOpensNoPort53(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	ref := playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionIsolate, Isolate: &v1alpha1.IsolateParams{AllowDNS: true}}))
	inc := incident(t, ns, subjectOf(p), ref)
	missing := types.NamespacedName{Namespace: ns, Name: "no-such-dns"}
	r := runner(responders.Defaults(responders.Deps{Client: kc, ClusterDNS: missing}))
	inc, _ = run(t, r, inc)
	wantPhase(t, inc, "isolate", v1alpha1.StepSucceeded, "except nothing (allowDNS: no cluster DNS Service "+missing.String()+", so no DNS either)")
	var np networkingv1.NetworkPolicy
	if err := kc.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: "riposte-isolate-" + p.Name}, &np); err != nil {
		t.Fatalf("NetworkPolicy: %v", err)
	}
	if len(np.Spec.Egress) != 0 {
		t.Fatalf("egress %+v: want none", np.Spec.Egress)
	}
	if got := getPod(t, ns, p.Name); got.Annotations[v1alpha1.IsolateAllowAnnotation] != "" {
		t.Fatalf("allow annotation %q, want empty", got.Annotations[v1alpha1.IsolateAllowAnnotation])
	}
}

func TestQuarantineRelabelsPodOutAndReplicaSetStartsReplacement(t *testing.T) {
	ns := namespace(t)
	d, pods := deployment(t, ns, 1)
	suspect := pods[0]
	inc := incident(t, ns, subjectOf(&suspect), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionQuarantine})))
	r := runner(responders.Defaults(responders.Deps{Client: kc}))
	inc, _ = run(t, r, inc)
	st := wantPhase(t, inc, "quarantine", v1alpha1.StepSucceeded, "pod-template-hash")
	if st.Undo["label.app"] != d.Name {
		t.Fatalf("undo %v does not record app=%s", st.Undo, d.Name)
	}
	got := getPod(t, ns, suspect.Name)
	if _, ok := got.Labels["app"]; ok || got.Labels[v1alpha1.QuarantinedLabel] != "true" {
		t.Fatalf("suspect labels %v: want app removed and %s=true", got.Labels, v1alpha1.QuarantinedLabel)
	}
	// The ReplicaSet controller releases the suspect and creates a fresh replica.
	fresh := waitPods(t, ns, map[string]string{"app": d.Name}, 1)
	if fresh[0].Name == suspect.Name {
		t.Fatalf("no replacement replica")
	}
	if err := waitFor(t, func() bool { return metav1.GetControllerOf(getPod(t, ns, suspect.Name)) == nil }); err != nil {
		t.Fatalf("the ReplicaSet did not release the suspect pod: %v", err)
	}
	if got.DeletionTimestamp != nil {
		t.Fatalf("the suspect pod is being deleted; it must stay for forensics")
	}

	annotate(t, inc, v1alpha1.RevertAnnotation)
	inc, _ = run(t, r, inc)
	wantPhase(t, inc, "quarantine", v1alpha1.StepReverted, "restored labels app,pod-template-hash")
}

func TestScaleToZeroRecordsPreviousReplicasAndRevertRestoresThem(t *testing.T) {
	ns := namespace(t)
	d, pods := deployment(t, ns, 3)
	inc := incident(t, ns, subjectOf(&pods[0]), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionScale})))
	r := runner(responders.Defaults(responders.Deps{Client: kc}))
	inc, _ = run(t, r, inc)
	st := wantPhase(t, inc, "scale", v1alpha1.StepSucceeded, "from 3 to 0")
	if st.Undo["previousReplicas"] != "3" || st.Undo["kind"] != "Deployment" || st.Undo["name"] != d.Name {
		t.Fatalf("undo %v", st.Undo)
	}
	var got appsv1.Deployment
	if err := kc.Get(ctxT(t), client.ObjectKeyFromObject(d), &got); err != nil || *got.Spec.Replicas != 0 {
		t.Fatalf("deployment replicas %v (%v), want 0", got.Spec.Replicas, err)
	}
	waitPods(t, ns, map[string]string{"app": d.Name}, 0)

	annotate(t, inc, v1alpha1.RevertAnnotation)
	inc, _ = run(t, r, inc)
	wantPhase(t, inc, "scale", v1alpha1.StepReverted, "back to 3")
	if err := kc.Get(ctxT(t), client.ObjectKeyFromObject(d), &got); err != nil || *got.Spec.Replicas != 3 {
		t.Fatalf("deployment replicas after revert %v (%v), want 3", got.Spec.Replicas, err)
	}
	waitPods(t, ns, map[string]string{"app": d.Name}, 3)
}

func TestScaleRefusesToGoBelowMinHealthyReplicas(t *testing.T) {
	ns := namespace(t)
	d, pods := deployment(t, ns, 2)
	one := int32(1)
	inc := incident(t, ns, subjectOf(&pods[0]), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionScale, Scale: &v1alpha1.ScaleParams{MinHealthyReplicas: &one}})))
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc})), inc)
	wantPhase(t, inc, "scale", v1alpha1.StepSkipped, "below minHealthyReplicas 1")
	var got appsv1.Deployment
	if err := kc.Get(ctxT(t), client.ObjectKeyFromObject(d), &got); err != nil || *got.Spec.Replicas != 2 {
		t.Fatalf("deployment replicas %v (%v), want 2 untouched", got.Spec.Replicas, err)
	}
}

func TestLabelAndAnnotateSetValuesAndRevertRestoresPrevious(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	inc := incident(t, ns, subjectOf(p), playbook(t, steps(
		v1alpha1.Step{Action: v1alpha1.ActionLabel, Values: map[string]string{"app": "suspect", "riposte.dev/incident": "yes"}},
		v1alpha1.Step{Action: v1alpha1.ActionAnnotate, Values: map[string]string{"riposte.dev/note": "shell seen"}},
	)))
	r := runner(responders.Defaults(responders.Deps{Client: kc}))
	inc, _ = run(t, r, inc)
	wantPhase(t, inc, "label", v1alpha1.StepSucceeded, "app=suspect")
	wantPhase(t, inc, "annotate", v1alpha1.StepSucceeded, "riposte.dev/note=shell seen")
	got := getPod(t, ns, p.Name)
	if got.Labels["app"] != "suspect" || got.Labels["riposte.dev/incident"] != "yes" || got.Annotations["riposte.dev/note"] != "shell seen" {
		t.Fatalf("labels %v annotations %v", got.Labels, got.Annotations)
	}
	annotate(t, inc, v1alpha1.RevertAnnotation)
	run(t, r, inc)
	got = getPod(t, ns, p.Name)
	if _, ok := got.Labels["riposte.dev/incident"]; got.Labels["app"] != "web" || ok || got.Annotations["riposte.dev/note"] != "" {
		t.Fatalf("after revert labels %v annotations %v, want app=web only", got.Labels, got.Annotations)
	}
}

func TestCordonMarksNodeUnschedulableAndRevertUncordons(t *testing.T) {
	ns := namespace(t)
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: uniq("node")}}
	if err := kc.Create(ctxT(t), n); err != nil {
		t.Fatalf("create node: %v", err)
	}
	t.Cleanup(func() { _ = kc.Delete(ctxT(t), n) })
	p := barePod(t, ns)
	subject := subjectOf(p)
	subject.Node = n.Name
	inc := incident(t, ns, subject, playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionCordon})))
	r := runner(responders.Defaults(responders.Deps{Client: kc}))
	inc, _ = run(t, r, inc)
	wantPhase(t, inc, "cordon", v1alpha1.StepSucceeded, "unschedulable")
	if err := kc.Get(ctxT(t), client.ObjectKeyFromObject(n), n); err != nil || !n.Spec.Unschedulable {
		t.Fatalf("node unschedulable=%v (%v)", n.Spec.Unschedulable, err)
	}
	annotate(t, inc, v1alpha1.RevertAnnotation)
	run(t, r, inc)
	if err := kc.Get(ctxT(t), client.ObjectKeyFromObject(n), n); err != nil || n.Spec.Unschedulable {
		t.Fatalf("node unschedulable=%v after revert (%v)", n.Spec.Unschedulable, err)
	}
}

func TestKillPodDeletesItWithGraceZero(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	inc := incident(t, ns, subjectOf(p), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionKill, Kill: &v1alpha1.KillParams{Target: "pod"}})))
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc})), inc)
	wantPhase(t, inc, "kill", v1alpha1.StepSucceeded, "grace period 0")
	var gone corev1.Pod
	if err := kc.Get(ctxT(t), client.ObjectKeyFromObject(p), &gone); !apierrors.IsNotFound(err) {
		t.Fatalf("pod after kill: %v (deletionTimestamp %v)", err, gone.DeletionTimestamp)
	}
}

func TestKillRefusesBelowMinHealthyReplicas(t *testing.T) {
	ns := namespace(t)
	_, pods := deployment(t, ns, 1)
	one := int32(1)
	inc := incident(t, ns, subjectOf(&pods[0]), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionKill, Kill: &v1alpha1.KillParams{Target: "pod", MinHealthyReplicas: &one}})))
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc})), inc)
	wantPhase(t, inc, "kill", v1alpha1.StepSkipped, "below minHealthyReplicas 1")
	if getPod(t, ns, pods[0].Name).DeletionTimestamp != nil {
		t.Fatalf("pod deleted despite the refusal")
	}
}

// hook is a loopback webhook that records what it receives.
type hook struct {
	*httptest.Server
	mu     sync.Mutex
	bodies [][]byte
}

func newHook(t *testing.T) *hook {
	h := &hook{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		h.mu.Lock()
		h.bodies = append(h.bodies, b)
		h.mu.Unlock()
	}))
	t.Cleanup(h.Close)
	return h
}

func (h *hook) received() [][]byte {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][]byte(nil), h.bodies...)
}

func TestNotifyPostsRiposteAndFalcosidekickPayloads(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	h := newHook(t)
	inc := incident(t, ns, subjectOf(p), playbook(t, steps(
		v1alpha1.Step{Action: v1alpha1.ActionNotify, Notify: &v1alpha1.NotifyParams{URL: h.URL + "/riposte"}},
		v1alpha1.Step{Action: v1alpha1.ActionNotify, Notify: &v1alpha1.NotifyParams{URL: h.URL + "/", Format: "falcosidekick"}},
	)))
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc})), inc)
	wantPhase(t, inc, "notify", v1alpha1.StepSucceeded, "HTTP 200")
	wantPhase(t, inc, "notify-2", v1alpha1.StepSucceeded, "falcosidekick")
	got := h.received()
	if len(got) != 2 {
		t.Fatalf("webhook received %d payloads, want 2", len(got))
	}
	var msg responders.Message
	if err := json.Unmarshal(got[0], &msg); err != nil || msg.Incident != inc.Name || msg.Rule != "shell-in-container" || msg.Subject.PodUID != string(p.UID) {
		t.Fatalf("riposte payload %s (%v)", got[0], err)
	}
	var falco map[string]any
	if err := json.Unmarshal(got[1], &falco); err != nil {
		t.Fatal(err)
	}
	fields, _ := falco["output_fields"].(map[string]any)
	if falco["priority"] != "Error" || falco["rule"] != "shell-in-container" || falco["source"] != "syscall" ||
		fields["k8s.pod.name"] != p.Name || fields["k8s.ns.name"] != ns || !strings.Contains(falco["output"].(string), "shell") {
		t.Fatalf("falcosidekick payload %s", got[1])
	}
}

func TestCaptureWritesBundleWithMatchingHashesAndRedactsEnv(t *testing.T) {
	ns := namespace(t)
	_, pods := deployment(t, ns, 1)
	p := &pods[0]
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: uniq("ev")},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: p.Name, UID: p.UID},
		Reason:         "SuspiciousExec", Message: "sh started", Type: "Warning",
	}
	if err := kc.Create(ctxT(t), ev); err != nil {
		t.Fatalf("create event: %v", err)
	}
	root := t.TempDir()
	store := &evidence.Dir{Root: root, Node: "node-a"}
	for _, keep := range []bool{false, true} {
		inc := incident(t, ns, subjectOf(p), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionCapture, Capture: &v1alpha1.CaptureParams{IncludeSecrets: keep}})))
		// The agent's flight recorder, as it writes it into status.
		inc.Status.Timeline = []v1alpha1.TimelineEntry{{Time: metav1.NowMicro(), Kind: "exec", PID: 7, Binary: "/bin/busybox", Args: []string{"cat", "/etc/hostname"}}}
		if err := kc.Status().Update(ctxT(t), inc); err != nil {
			t.Fatalf("write the timeline: %v", err)
		}
		inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc, Logs: responders.ClientsetLogs{Clientset: cs}, Store: store})), inc)
		wantPhase(t, inc, "capture", v1alpha1.StepSucceeded, "manifest sha256")
		if len(inc.Status.Evidence) != 1 {
			t.Fatalf("evidence %+v", inc.Status.Evidence)
		}
		e := inc.Status.Evidence[0]
		path := strings.TrimPrefix(e.Location, "node-a:")
		m, err := evidence.Verify(path, e.ManifestSHA256)
		if err != nil {
			t.Fatalf("verify bundle: %v", err)
		}
		names := map[string]bool{}
		for _, f := range m.Files {
			names[f.Name] = true
		}
		for _, want := range []string{"incident.json", "events/timeline.json", "pod.yaml", "owners.yaml", "kube-events.yaml", "logs/app.log"} {
			if !names[want] {
				t.Fatalf("bundle lacks %s: %v", want, names)
			}
		}
		if int(e.Files) != len(m.Files) {
			t.Fatalf("incident says %d files, manifest lists %d", e.Files, len(m.Files))
		}
		read := func(n string) string {
			b, err := os.ReadFile(filepath.Join(path, n))
			if err != nil {
				t.Fatal(err)
			}
			return string(b)
		}
		if pod := read("pod.yaml"); strings.Contains(pod, "hunter2") != keep || !strings.Contains(pod, p.Name) {
			t.Fatalf("includeSecrets=%t but pod.yaml has hunter2=%t", keep, strings.Contains(pod, "hunter2"))
		}
		if o := read("owners.yaml"); !strings.Contains(o, "kind: ReplicaSet") || !strings.Contains(o, "kind: Deployment") || strings.Contains(o, "hunter2") != keep {
			t.Fatalf("owner chain:\n%s", o)
		}
		if !strings.Contains(read("kube-events.yaml"), "SuspiciousExec") {
			t.Fatalf("events not captured")
		}
		// An unscheduled pod has no logs yet: the API server returns them empty.
		if l := read("logs/app.log"); l != "" {
			t.Fatalf("logs/app.log: %q", l)
		}
	}

	// A pod bound to a node whose kubelet cannot be reached: the bundle says
	// what is missing instead of failing the capture.
	bound := barePod(t, ns)
	subject := subjectOf(bound)
	subject.Node = "" // no node known: nothing to delegate the node part to
	inc := incident(t, ns, subject, playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionCapture})))
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc, Logs: responders.ClientsetLogs{Clientset: cs}, Store: store})), inc)
	wantPhase(t, inc, "capture", v1alpha1.StepSucceeded, "2 items not captured, see not-captured.txt")
	path := strings.TrimPrefix(inc.Status.Evidence[0].Location, "node-a:")
	if _, err := evidence.Verify(path, inc.Status.Evidence[0].ManifestSHA256); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(path, "not-captured.txt")); err != nil || !strings.Contains(string(b), "logs/app.log") {
		t.Fatalf("not-captured.txt: %q %v", b, err)
	}
}

// TestNotifyOfANamespacedPlaybookGoesOnlyWhereTheAdminAllowed: a tenant's
// ResponsePlaybook may post only to an allowed URL prefix (compared as URLs:
// another host that starts with the allowed one is refused), a redirect is
// never followed, and what the endpoint answers stays out of the Incident.
func TestNotifyOfANamespacedPlaybookGoesOnlyWhereTheAdminAllowed(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	h := newHook(t)
	var redirected atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { redirected.Add(1) }))
	t.Cleanup(target.Close)
	talker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/hooks/redirect":
			http.Redirect(w, r, target.URL+"/metadata", http.StatusTemporaryRedirect)
		default:
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte("secret-token-from-the-endpoint"))
		}
	}))
	t.Cleanup(talker.Close)
	pb := &v1alpha1.ResponsePlaybook{ObjectMeta: metav1.ObjectMeta{Name: uniq("pb"), Namespace: ns}, Spec: steps(
		v1alpha1.Step{Name: "allowed", Action: v1alpha1.ActionNotify, ContinueOnError: true, Notify: &v1alpha1.NotifyParams{URL: h.URL + "/hooks/shop"}},
		v1alpha1.Step{Name: "other-path", Action: v1alpha1.ActionNotify, ContinueOnError: true, Notify: &v1alpha1.NotifyParams{URL: h.URL + "/admin"}},
		v1alpha1.Step{Name: "other-host", Action: v1alpha1.ActionNotify, ContinueOnError: true, Notify: &v1alpha1.NotifyParams{URL: strings.Replace(h.URL, "127.0.0.1", "127.0.0.1.nip.io", 1) + "/hooks/x"}},
		v1alpha1.Step{Name: "redirect", Action: v1alpha1.ActionNotify, ContinueOnError: true, Notify: &v1alpha1.NotifyParams{URL: talker.URL + "/hooks/redirect"}},
		v1alpha1.Step{Name: "body", Action: v1alpha1.ActionNotify, ContinueOnError: true, Notify: &v1alpha1.NotifyParams{URL: talker.URL + "/hooks/body"}},
	)}
	if err := kc.Create(ctxT(t), pb); err != nil {
		t.Fatal(err)
	}
	inc := incident(t, ns, subjectOf(p), v1alpha1.PlaybookRef{Kind: "ResponsePlaybook", Namespace: ns, Name: pb.Name})
	allowed := []string{h.URL + "/hooks", talker.URL + "/hooks"}
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc, NotifyAllowed: allowed})), inc)
	wantPhase(t, inc, "allowed", v1alpha1.StepSucceeded, "HTTP 200")
	wantPhase(t, inc, "other-path", v1alpha1.StepSkipped, "may only notify URLs the cluster admin allowed")
	wantPhase(t, inc, "other-host", v1alpha1.StepSkipped, "may only notify URLs the cluster admin allowed")
	wantPhase(t, inc, "redirect", v1alpha1.StepFailed, "HTTP 307")
	body := wantPhase(t, inc, "body", v1alpha1.StepFailed, "HTTP 403 Forbidden")
	if strings.Contains(body.Message, "secret-token") {
		t.Errorf("the endpoint's answer went into the Incident: %s", body.Message)
	}
	if n := redirected.Load(); n != 0 {
		t.Errorf("the redirect was followed %d times", n)
	}
	if got := len(h.received()); got != 1 {
		t.Errorf("the allowed hook received %d payloads, want 1", got)
	}
}
