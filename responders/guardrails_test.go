package responders_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/responders"
)

func waitFor(t *testing.T, cond func() bool) error {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if cond() {
			return nil
		}
	}
	return errors.New("timed out after 30s")
}

func noPolicy(t *testing.T, ns, pod string) {
	t.Helper()
	var np networkingv1.NetworkPolicy
	if err := kc.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: "riposte-isolate-" + pod}, &np); !apierrors.IsNotFound(err) {
		t.Fatalf("NetworkPolicy exists (%v)", err)
	}
}

func TestDryRunChangesNothingAndRecordsWhatWouldHappen(t *testing.T) {
	ns := namespace(t)
	d, pods := deployment(t, ns, 2)
	p := &pods[0]
	spec := steps(
		v1alpha1.Step{Action: v1alpha1.ActionIsolate},
		v1alpha1.Step{Action: v1alpha1.ActionScale},
		v1alpha1.Step{Action: v1alpha1.ActionLabel, Values: map[string]string{"x": "y"}, RequireApproval: true},
	)
	for _, global := range []bool{false, true} {
		s := spec
		s.DryRun = !global
		inc := incident(t, ns, subjectOf(p), playbook(t, s))
		r := runner(responders.Defaults(responders.Deps{Client: kc}))
		r.DryRun = global
		inc, out := run(t, r, inc)
		if !out.Done {
			t.Fatalf("dry run not done: %+v", out)
		}
		wantPhase(t, inc, "isolate", v1alpha1.StepDryRun, "would isolate pod "+ns+"/"+p.Name+": NetworkPolicy riposte-isolate-"+p.Name)
		wantPhase(t, inc, "scale", v1alpha1.StepDryRun, "would scale Deployment "+ns+"/"+d.Name+" to 0 replicas")
		wantPhase(t, inc, "label", v1alpha1.StepDryRun, "would after approval: set labels x=y")
	}
	noPolicy(t, ns, p.Name)
	var got appsv1.Deployment
	if err := kc.Get(ctxT(t), client.ObjectKeyFromObject(d), &got); err != nil || *got.Spec.Replicas != 2 {
		t.Fatalf("replicas changed by a dry run: %v %v", got.Spec.Replicas, err)
	}
	if l := getPod(t, ns, p.Name).Labels; l["x"] != "" || l[v1alpha1.IsolateLabel] != "" {
		t.Fatalf("labels changed by a dry run: %v", l)
	}
}

func TestProtectedNamespaceIsRefusedUnlessPlaybookOptsIn(t *testing.T) {
	ns := "kube-system"
	p := barePod(t, ns)
	t.Cleanup(func() { _ = kc.Delete(ctxT(t), p) })
	inc := incident(t, namespace(t), subjectOf(p), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionIsolate})))
	r := runner(responders.Defaults(responders.Deps{Client: kc}))
	inc, out := run(t, r, inc)
	wantPhase(t, inc, "isolate", v1alpha1.StepSkipped, `refused: namespace "kube-system" is protected; set allowProtectedNamespaces: true`)
	if !out.Done {
		t.Fatalf("outcome %+v", out)
	}
	noPolicy(t, ns, p.Name)

	// The controller's own namespace is protected too.
	own := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.Name}}
	r.OwnNamespace = ns
	r.ProtectedNamespaces = []string{}
	inc = incident(t, namespace(t), subjectOf(p), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionIsolate})))
	inc, _ = run(t, r, inc)
	wantPhase(t, inc, "isolate", v1alpha1.StepSkipped, "is protected")
	_ = own

	spec := steps(v1alpha1.Step{Action: v1alpha1.ActionIsolate})
	spec.AllowProtectedNamespaces = true
	inc = incident(t, namespace(t), subjectOf(p), playbook(t, spec))
	inc, _ = run(t, r, inc)
	wantPhase(t, inc, "isolate", v1alpha1.StepSucceeded, "NetworkPolicy kube-system/")
}

func TestNamespacedPlaybookActsOnlyInItsNamespace(t *testing.T) {
	home, other := namespace(t), namespace(t)
	pb := &v1alpha1.ResponsePlaybook{ObjectMeta: metav1.ObjectMeta{Namespace: home, Name: "contain"}, Spec: steps(
		v1alpha1.Step{Action: v1alpha1.ActionLabel, Values: map[string]string{"seen": "yes"}},
		v1alpha1.Step{Action: v1alpha1.ActionCordon},
	)}
	if err := kc.Create(ctxT(t), pb); err != nil {
		t.Fatal(err)
	}
	ref := v1alpha1.PlaybookRef{Kind: "ResponsePlaybook", Namespace: home, Name: "contain"}
	r := runner(responders.Defaults(responders.Deps{Client: kc}))

	foreign := barePod(t, other)
	inc, _ := run(t, r, incident(t, other, subjectOf(foreign), ref))
	wantPhase(t, inc, "label", v1alpha1.StepSkipped, `may only act in namespace "`+home+`", the subject is in "`+other+`"`)
	if getPod(t, other, foreign.Name).Labels["seen"] != "" {
		t.Fatalf("a namespaced playbook labelled a pod of another namespace")
	}

	local := barePod(t, home)
	inc, _ = run(t, r, incident(t, home, subjectOf(local), ref))
	wantPhase(t, inc, "label", v1alpha1.StepSucceeded, "seen=yes")
	// A Node is cluster-scoped: out of reach of a namespaced playbook.
	wantPhase(t, inc, "cordon", v1alpha1.StepSkipped, "namespaced ResponsePlaybook may not")
}

func TestApprovalBlocksUntilIncidentIsAnnotated(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	inc := incident(t, ns, subjectOf(p), playbook(t, steps(
		v1alpha1.Step{Action: v1alpha1.ActionAnnotate, Name: "mark", Values: map[string]string{"riposte.dev/seen": "yes"}},
		v1alpha1.Step{Action: v1alpha1.ActionIsolate, RequireApproval: true},
	)))
	r := runner(responders.Defaults(responders.Deps{Client: kc}))
	for i := 0; i < 2; i++ {
		var out responders.Outcome
		inc, out = run(t, r, inc)
		if !out.AwaitingApproval || out.Done || inc.Status.Phase != v1alpha1.PhaseResponding {
			t.Fatalf("run %d: outcome %+v phase %q, want awaiting approval", i, out, inc.Status.Phase)
		}
		wantPhase(t, inc, "mark", v1alpha1.StepSucceeded, "")
		wantPhase(t, inc, "isolate", v1alpha1.StepAwaitingApproval, "riposte.dev/approve=true")
		noPolicy(t, ns, p.Name)
	}
	annotate(t, inc, v1alpha1.ApproveAnnotation)
	inc, out := run(t, r, inc)
	if !out.Done {
		t.Fatalf("outcome after approval %+v", out)
	}
	wantPhase(t, inc, "isolate", v1alpha1.StepSucceeded, "NetworkPolicy")
}

func TestRateLimitSkipsIncidentsBeyondTheLimit(t *testing.T) {
	ns := namespace(t)
	spec := steps(v1alpha1.Step{Action: v1alpha1.ActionLabel, Values: map[string]string{"hit": "yes"}})
	spec.RateLimit = &v1alpha1.RateLimit{Actions: 1, Period: metav1.Duration{Duration: time.Hour}}
	ref := playbook(t, spec)
	first, second := barePod(t, ns), barePod(t, ns)
	inc1 := incident(t, ns, subjectOf(first), ref)
	inc2 := incident(t, ns, subjectOf(second), ref)
	got1, _ := run(t, runner(responders.Defaults(responders.Deps{Client: kc})), inc1)
	wantPhase(t, got1, "label", v1alpha1.StepSucceeded, "")
	// A new Runner (restart) still counts what the first one did, from the statuses.
	got2, _ := run(t, runner(responders.Defaults(responders.Deps{Client: kc})), inc2)
	wantPhase(t, got2, "label", v1alpha1.StepSkipped, "rate limit: playbook already acted on 1 incidents in the last 1h0m0s (limit 1)")
	if getPod(t, ns, second.Name).Labels["hit"] != "" {
		t.Fatalf("rate-limited incident was acted on")
	}
}

var errCrash = errors.New("simulated controller crash")

func TestRestartBetweenStepsFinishesWithoutRepeatingFirstStep(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	h := newHook(t)
	inc := incident(t, ns, subjectOf(p), playbook(t, steps(
		v1alpha1.Step{Action: v1alpha1.ActionNotify, Notify: &v1alpha1.NotifyParams{URL: h.URL}},
		v1alpha1.Step{Action: v1alpha1.ActionLabel, Values: map[string]string{"contained": "yes"}},
	)))
	first := runner(responders.Defaults(responders.Deps{Client: kc}))
	first.AfterStep = func(*v1alpha1.Incident, v1alpha1.StepStatus) error { return errCrash }
	if _, err := first.Run(ctxT(t), get(t, inc)); !errors.Is(err, errCrash) {
		t.Fatalf("first runner: %v", err)
	}
	mid := get(t, inc)
	wantPhase(t, mid, "notify", v1alpha1.StepSucceeded, "")
	wantPhase(t, mid, "label", v1alpha1.StepPending, "")

	second := runner(responders.Defaults(responders.Deps{Client: kc}))
	done, out := run(t, second, inc)
	if !out.Done || done.Status.Phase != v1alpha1.PhaseResponded {
		t.Fatalf("outcome %+v phase %q", out, done.Status.Phase)
	}
	wantPhase(t, done, "label", v1alpha1.StepSucceeded, "contained=yes")
	if n := len(h.received()); n != 1 {
		t.Fatalf("webhook called %d times, want 1: the first step was repeated", n)
	}
	if s := step(t, done, "notify"); !s.FinishedAt.Equal(step(t, mid, "notify").FinishedAt) {
		t.Fatalf("notify status rewritten by the second runner")
	}
}

func TestRestartInsideScaleReusesRecordedReplicas(t *testing.T) {
	// A crash after Prepare persisted Running+undo but before (or after) the
	// scale: the next runner must not record 0 as the previous replicas.
	ns := namespace(t)
	d, pods := deployment(t, ns, 2)
	inc := incident(t, ns, subjectOf(&pods[0]), playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionScale})))
	r := runner(responders.Defaults(responders.Deps{Client: kc}))
	inc, _ = run(t, r, inc)
	// Rewind the status to Running, as a crash right after the scale would leave it.
	rewound := get(t, inc)
	rewound.Status.Steps[0].Phase = v1alpha1.StepRunning
	rewound.Status.Steps[0].FinishedAt = nil
	if err := kc.Status().Update(ctxT(t), rewound); err != nil {
		t.Fatal(err)
	}
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc})), inc)
	st := wantPhase(t, inc, "scale", v1alpha1.StepSucceeded, "from 2 to 0")
	if st.Undo["previousReplicas"] != "2" {
		t.Fatalf("previous replicas %q after restart, want 2", st.Undo["previousReplicas"])
	}
	annotate(t, inc, v1alpha1.RevertAnnotation)
	run(t, r, inc)
	var got appsv1.Deployment
	if err := kc.Get(ctxT(t), client.ObjectKeyFromObject(d), &got); err != nil || *got.Spec.Replicas != 2 {
		t.Fatalf("replicas after revert %v (%v)", got.Spec.Replicas, err)
	}
}

func TestFailedStepStopsLaterStepsUnlessContinueOnError(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	inc := incident(t, ns, subjectOf(p), playbook(t, steps(
		v1alpha1.Step{Action: v1alpha1.ActionNotify, Notify: &v1alpha1.NotifyParams{URL: "http://127.0.0.1:1/"}},
		v1alpha1.Step{Action: v1alpha1.ActionLabel, Values: map[string]string{"a": "b"}},
	)))
	inc, _ = run(t, runner(responders.Defaults(responders.Deps{Client: kc})), inc)
	wantPhase(t, inc, "notify", v1alpha1.StepFailed, "connection refused")
	wantPhase(t, inc, "label", v1alpha1.StepSkipped, `not run: step "notify" failed`)
	if inc.Status.Phase != v1alpha1.PhaseFailed || !strings.Contains(string(inc.Status.Phase), "Failed") {
		t.Fatalf("phase %q", inc.Status.Phase)
	}
}

func TestRateLimitHoldsWhenIncidentsRunConcurrently(t *testing.T) {
	ns := namespace(t)
	spec := steps(v1alpha1.Step{Action: v1alpha1.ActionLabel, Values: map[string]string{"hit": "yes"}})
	spec.RateLimit = &v1alpha1.RateLimit{Actions: 2, Period: metav1.Duration{Duration: time.Hour}}
	ref := playbook(t, spec)
	var incs []*v1alpha1.Incident
	for i := 0; i < 6; i++ {
		incs = append(incs, get(t, incident(t, ns, subjectOf(barePod(t, ns)), ref)))
	}
	r := runner(responders.Defaults(responders.Deps{Client: kc}))
	errs := make(chan error, len(incs))
	for _, inc := range incs {
		go func() { _, err := r.Run(ctxT(t), inc); errs <- err }()
	}
	for range incs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	phases := map[v1alpha1.StepPhase]int{}
	for _, inc := range incs {
		phases[step(t, get(t, inc), "label").Phase]++
	}
	if phases[v1alpha1.StepSucceeded] != 2 || phases[v1alpha1.StepSkipped] != 4 {
		t.Fatalf("phases %v, want 2 Succeeded and 4 Skipped", phases)
	}
}

func TestDelegatedStepFailsWhenNoAgentAnswers(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	subject := subjectOf(p)
	subject.PID, subject.ContainerID = 4242, "containerd://abc"
	inc := incident(t, ns, subject, playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionKill, Kill: &v1alpha1.KillParams{Target: "process"}})))
	r := runner(responders.Defaults(responders.Deps{Client: kc}))
	r.AgentTimeout = 300 * time.Millisecond
	got, out := run(t, r, inc)
	wantPhase(t, got, "kill", v1alpha1.StepRunning, `waiting for the riposte agent on node "riposte-test-node"`)
	if out.Done || out.RequeueAfter <= 0 || out.RequeueAfter > 2*time.Second {
		t.Fatalf("outcome %+v, want a requeue shortly after the agent timeout", out)
	}
	time.Sleep(out.RequeueAfter)
	got, _ = run(t, r, inc)
	wantPhase(t, got, "kill", v1alpha1.StepFailed, `no report from the riposte agent on node "riposte-test-node" within 300ms`)
}

func TestRevertStopsAStepStillWaitingForTheAgent(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	subject := subjectOf(p)
	subject.PID, subject.ContainerID = 4242, "containerd://abc"
	inc := incident(t, ns, subject, playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionKill, Kill: &v1alpha1.KillParams{Target: "process"}})))
	r := runner(responders.Defaults(responders.Deps{Client: kc}))
	got, _ := run(t, r, inc)
	wantPhase(t, got, "kill", v1alpha1.StepRunning, "waiting for the riposte agent")
	annotate(t, inc, v1alpha1.RevertAnnotation)
	got, _ = run(t, r, inc)
	wantPhase(t, got, "kill", v1alpha1.StepSkipped, "not finished: incident reverted")
	if got.Status.Phase != v1alpha1.PhaseReverted {
		t.Fatalf("phase %q", got.Status.Phase)
	}
}
