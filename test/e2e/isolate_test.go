//go:build e2enode

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/test/node"
)

// TestIsolateCutsOffARealPodInTheKernelAndRevertRestoresIt proves the
// response on real containers. The node's bridge CNI ignores NetworkPolicy,
// so a pod that reaches an HTTP server on the host can only be cut off by
// riposte's kernel layer. A `kubectl exec` of a shell in a Deployment's pod
// becomes a shell-in-container Incident whose shipped playbook
// capture-and-isolate captures evidence and isolates the pod: the controller
// writes the NetworkPolicy and labels the pod, the `riposte agent` binary
// attaches cgroup_skb programs to the pod's cgroup. From then on the pod's
// requests to the host never arrive; allowDNS keeps port 53 of the cluster
// DNS (a kube-dns Service whose endpoint is the host's bridge address)
// open, and port 53 of any other address closed. After riposte.dev/revert=true
// they arrive again and the NetworkPolicy is gone.
func TestIsolateCutsOffARealPodInTheKernelAndRevertRestoresIt(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	n := riposteOnNode(ctx, t, root, controllermgr.Response{}, nil, "shell-in-container").Node
	c := n.Stack.Client
	// The whole shipped library stays loaded: namespace-escape-attempt must
	// not fire on runc's own init at container start or at kubectl exec (it
	// did, and its playbook isolated every new pod); the assertion below that
	// the shell's Incident is the only one isolating the pod checks it.
	pod := deploymentPod(ctx, t, n, "shop", "web")
	// Two HTTP servers on the host's address on the pods' bridge (the CNI
	// plugin gives the bridge that address with the first pod): one on a
	// free port, one on port 53 as the cluster's DNS (the kube-dns Service's
	// endpoint), which the playbook's allowDNS keeps open. A third on port
	// 53 of the host's other address is not the cluster DNS: an isolated
	// pod must not reach it.
	gw := n.Gateway().String()
	web := serveHTTP(t, net.JoinHostPort(gw, "0"), "riposte e2e: reached the host")
	dns := serveHTTP(t, net.JoinHostPort(gw, "53"), "riposte e2e: reached the host on port 53")
	other53 := serveHTTP(t, net.JoinHostPort(otherHostIP(t, n.Gateway()), "53"), "riposte e2e: reached another address on port 53")
	clusterIP := kubeDNS(ctx, t, c, gw)
	// wget runs without a shell (timeout execs it): neither is an applet the
	// shipped rule counts as a shell, so they make no Incident. The timeout
	// applet bounds the wait, because Debian's static busybox 1.35 wget
	// crashes (SIGSEGV) with -T; the context only guards against a hang.
	fetch := func(s *server) (string, time.Duration, error) {
		ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		begin := time.Now()
		out, err := n.Exec(ctx, "shop", pod.Name, "timeout", "5", "wget", "-q", "-O", "-", s.url)
		return string(out), time.Since(begin).Round(time.Millisecond), err
	}
	mustFetch := func(s *server, when string) {
		t.Helper()
		before := s.requests.Load()
		out, took, err := fetch(s)
		if err != nil {
			t.Fatalf("%s: wget %s from pod %s: %v", when, s.url, pod.Name, err)
		}
		if out != s.body {
			t.Fatalf("%s: wget %s returned %q, want %q", when, s.url, out, s.body)
		}
		if got := s.requests.Load(); got != before+1 {
			t.Fatalf("%s: the server on %s saw %d requests, want %d", when, s.url, got, before+1)
		}
		t.Logf("%s: wget %s answered in %s", when, s.url, took)
	}
	mustFetch(web, "before the incident")
	mustFetch(dns, "before the incident")
	mustFetch(other53, "before the incident")

	begin := time.Now()
	if out, err := n.Exec(ctx, "shop", pod.Name, "sh", "-c", "id"); err != nil {
		t.Fatal(err)
	} else {
		t.Logf("kubectl exec sh -c id: %q", out)
	}

	var inc *v1alpha1.Incident
	var isolate v1alpha1.StepStatus
	waitFor(ctx, t, "the shell-in-container Incident of the pod with its isolate step Succeeded", func() (bool, string) {
		var incs v1alpha1.IncidentList
		if err := c.List(ctx, &incs); err != nil {
			return false, err.Error()
		}
		for i := range incs.Items {
			in := &incs.Items[i]
			if in.Spec.Rule != "shell-in-container" || in.Spec.Subject.Pod != pod.Name {
				continue
			}
			st, ok := step(in, v1alpha1.ActionIsolate)
			if !ok {
				return false, fmt.Sprintf("incident %s: no isolate step yet: %s", in.Name, steps(in))
			}
			if st.Phase == v1alpha1.StepFailed || st.Phase == v1alpha1.StepSkipped {
				t.Fatalf("incident %s: isolate step %s: %s", in.Name, st.Phase, st.Message)
			}
			inc, isolate = in, st
			return st.Phase == v1alpha1.StepSucceeded, fmt.Sprintf("incident %s: %s", in.Name, steps(in))
		}
		return false, fmt.Sprintf("no shell-in-container incident for pod %s among %d", pod.Name, len(incs.Items))
	})
	toSucceeded := time.Since(begin)
	// The shell's Incident is the only one that isolates the pod, so the
	// kernel layer and the times below are its own.
	var incs v1alpha1.IncidentList
	if err := c.List(ctx, &incs); err != nil {
		t.Fatal(err)
	}
	for i := range incs.Items {
		// Nothing in this test unshares or enters namespaces but runc's own
		// init, at container start and at each kubectl exec.
		if in := &incs.Items[i]; in.Spec.Rule == "namespace-escape-attempt" {
			t.Errorf("incident %s: namespace-escape-attempt fired on runc's init: %s (subject %+v)", in.Name, in.Spec.Output, in.Spec.Subject)
		}
		if in := &incs.Items[i]; in.Spec.Subject.Pod == pod.Name && in.Name != inc.Name {
			if _, ok := step(in, v1alpha1.ActionIsolate); ok {
				t.Errorf("incident %s (%s: %s) isolates the pod too: %s", in.Name, in.Spec.Rule, in.Spec.Output, steps(in))
			}
		}
	}

	// The isolate step is Succeeded once the controller has written the
	// NetworkPolicy and the label; the kernel layer is the agent's, which
	// reports it on the Incident.
	kernel := ""
	waitFor(ctx, t, "the riposte agent reports the kernel layer attached on the Incident", func() (bool, string) {
		var in v1alpha1.Incident
		if err := c.Get(ctx, client.ObjectKeyFromObject(inc), &in); err != nil {
			return false, err.Error()
		}
		kernel = in.Annotations[v1alpha1.KernelIsolationAnnotation]
		return strings.Contains(kernel, " attached: "), fmt.Sprintf("%s=%q", v1alpha1.KernelIsolationAnnotation, kernel)
	})
	toAttached := time.Since(begin)
	t.Logf("exec → isolate step Succeeded %s, → kernel layer attached by the agent %s", toSucceeded.Round(time.Millisecond), toAttached.Round(time.Millisecond))
	t.Logf("isolate step: %s", isolate.Message)
	t.Logf("%s: %s", v1alpha1.KernelIsolationAnnotation, kernel)

	uid := string(pod.UID)
	policy := "riposte-isolate-" + pod.Name
	allow := clusterIP + "/32:53," + gw + "/32:53"
	wantMsg := fmt.Sprintf("NetworkPolicy shop/%s denies all ingress and egress except %s/32:53, %s/32:53 (port 53 of the cluster DNS kube-system/kube-dns only); kernel: delegated to the riposte agent on node %q", policy, clusterIP, gw, node.Name)
	if isolate.Message != wantMsg {
		t.Errorf("isolate step message\n got %q\nwant %q", isolate.Message, wantMsg)
	}
	wantUndo := map[string]string{"networkPolicy": policy, "podUID": uid, "allow": allow, "kernel": "delegated", "nodeName": node.Name}
	if !reflect.DeepEqual(isolate.Undo, wantUndo) {
		t.Errorf("isolate step undo\n got %v\nwant %v", isolate.Undo, wantUndo)
	}
	cgroup := filepath.Join(host.DefaultCgroupRoot(), n.CgroupRoot(), "kubepods", "besteffort", "pod"+uid)
	wantKernel := fmt.Sprintf("node %s attached: cgroup_skb ingress+egress attached to %s, allowing %s/32:53, %s/32:53 at ", node.Name, cgroup, clusterIP, gw)
	if !strings.HasPrefix(kernel, wantKernel) {
		t.Errorf("%s\n got %q\nwant prefix %q", v1alpha1.KernelIsolationAnnotation, kernel, wantKernel)
	}

	var np networkingv1.NetworkPolicy
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: policy}, &np); err != nil {
		t.Fatalf("the isolate step's NetworkPolicy: %v", err)
	}
	if want := map[string]string{v1alpha1.IsolateLabel: uid}; !reflect.DeepEqual(np.Spec.PodSelector.MatchLabels, want) || len(np.Spec.PodSelector.MatchExpressions) > 0 {
		t.Errorf("NetworkPolicy %s selects %+v, want matchLabels %v", policy, np.Spec.PodSelector, want)
	}
	if want := []networkingv1.PolicyType{networkingv1.PolicyTypeIngress, networkingv1.PolicyTypeEgress}; !reflect.DeepEqual(np.Spec.PolicyTypes, want) || len(np.Spec.Ingress) != 0 {
		t.Errorf("NetworkPolicy %s: policy types %v and %d ingress rules, want %v and none", policy, np.Spec.PolicyTypes, len(np.Spec.Ingress), want)
	}
	if len(np.Spec.Egress) != 1 || len(np.Spec.Egress[0].To) != 3 || len(np.Spec.Egress[0].Ports) != 2 {
		t.Errorf("NetworkPolicy %s egress %+v, want one rule: port 53 (UDP and TCP) to the DNS pods, its cluster IP and its endpoint", policy, np.Spec.Egress)
	}
	var labelled corev1.Pod
	if err := c.Get(ctx, client.ObjectKeyFromObject(pod), &labelled); err != nil {
		t.Fatal(err)
	}
	if got := labelled.Labels[v1alpha1.IsolateLabel]; got != uid {
		t.Errorf("pod label %s=%q, want the pod's uid %s", v1alpha1.IsolateLabel, got, uid)
	}

	// The playbook captures after it isolated: wait for the capture to end.
	var fresh v1alpha1.Incident
	waitFor(ctx, t, "the capture step after the isolation ends", func() (bool, string) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(inc), &fresh); err != nil {
			return false, err.Error()
		}
		st, _ := step(&fresh, v1alpha1.ActionCapture)
		return st.Phase == v1alpha1.StepSucceeded || st.Phase == v1alpha1.StepFailed, steps(&fresh)
	})
	if st, _ := step(&fresh, v1alpha1.ActionCapture); st.Phase != v1alpha1.StepSucceeded {
		t.Errorf("capture step %s: %s", st.Phase, st.Message)
	} else {
		t.Logf("capture step: %s", st.Message)
	}
	if len(fresh.Status.Evidence) == 0 {
		t.Errorf("no evidence in the Incident's status after the capture step")
	}
	for _, e := range fresh.Status.Evidence {
		if e.ManifestSHA256 == "" || e.Files == 0 {
			t.Errorf("evidence %+v: want a manifest hash and files", e)
		}
		t.Logf("evidence: %s, %d files, manifest sha256 %s", e.Location, e.Files, e.ManifestSHA256)
	}

	// Cut off in the kernel although the CNI ignores the NetworkPolicy: the
	// request never reaches the host.
	before := web.requests.Load()
	out, took, err := fetch(web)
	if err == nil {
		t.Fatalf("isolated: wget %s from pod %s succeeded: %q", web.url, pod.Name, out)
	}
	if got := web.requests.Load(); got != before {
		t.Errorf("isolated: the server on %s saw %d requests from the pod, want none", web.url, got-before)
	}
	t.Logf("isolated: wget %s failed after %s: %v", web.url, took, oneLine(err))
	mustFetch(dns, "isolated, port 53 of the cluster DNS (allowDNS)")
	before = other53.requests.Load()
	if out, took, err := fetch(other53); err == nil || other53.requests.Load() != before {
		t.Fatalf("isolated: port 53 of an address that is not the cluster DNS answered: %q", out)
	} else {
		t.Logf("isolated: wget %s (port 53, not the cluster DNS) failed after %s", other53.url, took)
	}

	// Someone who may patch pods removes the isolate label: the admission
	// policy refuses it, even for a cluster admin.
	unlabel := func() ([]byte, error) {
		return n.Cluster.Kubectl(ctx, "label", "-n", "shop", "pod", pod.Name, v1alpha1.IsolateLabel+"-").CombinedOutput()
	}
	if out, err := unlabel(); err == nil || !strings.Contains(string(out), "riposte-isolation") {
		t.Fatalf("removing the isolate label: %v %s, want a refusal by the admission policy riposte-isolation", err, out)
	} else {
		t.Logf("removing the isolate label refused: %s", oneLine(fmt.Errorf("%s", out)))
	}
	// Forced: with the policy's binding deleted (the API server drops it
	// within moments), the label goes. The kernel layer holds, because the
	// Incident still asks for it, and the controller puts the label back.
	if out, err := n.Cluster.Kubectl(ctx, "delete", "validatingadmissionpolicybinding", "riposte-isolation").CombinedOutput(); err != nil {
		t.Fatalf("delete the policy binding: %v %s", err, out)
	}
	waitFor(ctx, t, "the label removed with the policy gone", func() (bool, string) {
		out, err := unlabel()
		return err == nil, string(out)
	})
	forced := time.Now()
	before = web.requests.Load()
	if out, _, err := fetch(web); err == nil || web.requests.Load() != before {
		t.Fatalf("with the isolate label removed by force, the pod reached the host: %q", out)
	}
	waitFor(ctx, t, "the controller puts the isolate label back", func() (bool, string) {
		var p corev1.Pod
		if err := c.Get(ctx, client.ObjectKeyFromObject(pod), &p); err != nil {
			return false, err.Error()
		}
		return p.Labels[v1alpha1.IsolateLabel] == uid, fmt.Sprintf("labels %v", p.Labels)
	})
	t.Logf("label removed by force: the kernel layer held, the controller put the label back %s later", time.Since(forced).Round(time.Millisecond))
	if out, err := n.Cluster.Kubectl(ctx, "apply", "-k", filepath.Join(n.Stack.Root, "config/admission")).CombinedOutput(); err != nil {
		t.Fatalf("put the admission policy back: %v %s", err, out)
	}

	// Revert, as a user would.
	if out, err := n.Cluster.Kubectl(ctx, "annotate", "-n", inc.Namespace, "incidents.riposte.dev", inc.Name, v1alpha1.RevertAnnotation+"=true").CombinedOutput(); err != nil {
		t.Fatalf("kubectl annotate incident %s: %v\n%s", inc.Name, err, out)
	}
	begin = time.Now()
	waitFor(ctx, t, "the isolate step Reverted and the agent reports the kernel layer released", func() (bool, string) {
		var in v1alpha1.Incident
		if err := c.Get(ctx, client.ObjectKeyFromObject(inc), &in); err != nil {
			return false, err.Error()
		}
		st, _ := step(&in, v1alpha1.ActionIsolate)
		kernel = in.Annotations[v1alpha1.KernelIsolationAnnotation]
		isolate = st
		return st.Phase == v1alpha1.StepReverted && strings.Contains(kernel, " released at "),
			fmt.Sprintf("isolate %s: %s; %s=%q", st.Phase, st.Message, v1alpha1.KernelIsolationAnnotation, kernel)
	})
	t.Logf("revert → isolate Reverted and kernel layer released %s: %s; %s", time.Since(begin).Round(time.Millisecond), isolate.Message, kernel)
	if want := fmt.Sprintf("node %s released at ", node.Name); !strings.HasPrefix(kernel, want) {
		t.Errorf("%s %q, want prefix %q", v1alpha1.KernelIsolationAnnotation, kernel, want)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "shop", Name: policy}, &np); !apierrors.IsNotFound(err) {
		t.Errorf("NetworkPolicy %s after revert: %v, want NotFound", policy, err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(pod), &labelled); err != nil {
		t.Fatal(err)
	}
	if v, ok := labelled.Labels[v1alpha1.IsolateLabel]; ok {
		t.Errorf("pod label %s=%q after revert, want none", v1alpha1.IsolateLabel, v)
	}
	mustFetch(web, "after revert")
}

// server is an HTTP server of the test that counts the requests it answers.
type server struct {
	url, body string
	requests  atomic.Int64
}

// serveHTTP serves body on addr until the test ends.
func serveHTTP(t *testing.T, addr, body string) *server {
	t.Helper()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", addr, err)
	}
	s := &server{url: "http://" + l.Addr().String() + "/", body: body}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.requests.Add(1)
			_, _ = fmt.Fprint(w, body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return s
}

// otherHostIP is an IPv4 address of this host other than loopback and the
// pods' gateway, which pods reach through the gateway.
func otherHostIP(t *testing.T, gw net.IP) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.Equal(gw) && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	t.Fatalf("this host has no IPv4 address besides loopback and the pods' gateway %s: the test needs one to prove port 53 of other addresses is closed", gw)
	return ""
}

// kubeDNS creates the cluster DNS Service kube-system/kube-dns with one
// endpoint, addr, as a cluster's CoreDNS would have, and returns its
// cluster IP.
func kubeDNS(ctx context.Context, t *testing.T, c client.Client, addr string) string {
	t.Helper()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"k8s-app": "kube-dns"},
			Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}, {Name: "dns-tcp", Port: 53, Protocol: corev1.ProtocolTCP}}},
	}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatalf("create the cluster DNS Service: %v", err)
	}
	port, udp := int32(53), corev1.ProtocolUDP
	es := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: "kube-dns-host", Labels: map[string]string{
			discoveryv1.LabelServiceName: "kube-dns", discoveryv1.LabelManagedBy: "riposte-e2e"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{addr}}},
		Ports:       []discoveryv1.EndpointPort{{Name: ptr("dns"), Port: &port, Protocol: &udp}},
	}
	if err := c.Create(ctx, es); err != nil {
		t.Fatalf("create the cluster DNS EndpointSlice: %v", err)
	}
	return svc.Spec.ClusterIP
}

func ptr[T any](v T) *T { return &v }

// step is the Incident's first step of action a.
func step(in *v1alpha1.Incident, a v1alpha1.Action) (v1alpha1.StepStatus, bool) {
	for _, st := range in.Status.Steps {
		if st.Action == a {
			return st, true
		}
	}
	return v1alpha1.StepStatus{}, false
}

// steps lists the Incident's steps and phases, for waiting messages.
func steps(in *v1alpha1.Incident) string {
	var s []string
	for _, st := range in.Status.Steps {
		s = append(s, fmt.Sprintf("%s %s %q", st.Action, st.Phase, st.Message))
	}
	return fmt.Sprintf("phase %q, steps [%s]", in.Status.Phase, strings.Join(s, "; "))
}

// oneLine is err's text (kubectl's error and stderr) on one line.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
