package responders_test

import (
	"context"
	"sort"
	"testing"
	"time"

	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/controller"
	"github.com/riposte-dev/riposte/internal/trust"
	"github.com/riposte-dev/riposte/responders"
)

// startController runs a manager with the Incident reconciler, as
// `riposte controller` would, and returns a function that stops it (a crash as
// far as the Incidents can tell: nothing is flushed on the way out).
func startController(t *testing.T) (stop func()) {
	t.Helper()
	mgr, err := ctrl.NewManager(shared.AdminConfig(), ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatalf("manager: %v", err)
	}
	r := &responders.Runner{Client: mgr.GetClient(), Actions: responders.Defaults(responders.Deps{Client: mgr.GetClient()}), OwnNamespace: "riposte-system"}
	auth := &trust.Authorizer{Signer: signer, Reader: mgr.GetClient()}
	if err := (&controller.IncidentReconciler{Client: mgr.GetClient(), Runner: r, Authorizer: auth}).SetupWithManager(mgr); err != nil {
		t.Fatalf("setup: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				t.Errorf("manager: %v", err)
			}
		}
	}
	t.Cleanup(stop)
	return stop
}

func waitStep(t *testing.T, inc *v1alpha1.Incident, name string, phase v1alpha1.StepPhase) *v1alpha1.Incident {
	t.Helper()
	var got *v1alpha1.Incident
	if err := waitFor(t, func() bool {
		got = get(t, inc)
		for _, s := range got.Status.Steps {
			if s.Name == name && s.Phase == phase {
				return true
			}
		}
		return false
	}); err != nil {
		t.Fatalf("step %s never reached %s: %+v", name, phase, got.Status.Steps)
	}
	return got
}

func TestControllerKilledBetweenStepsResumesWithoutRepeatingTheFirst(t *testing.T) {
	ns := namespace(t)
	p := barePod(t, ns)
	h := newHook(t)
	stop := startController(t)
	inc := incident(t, ns, subjectOf(p), playbook(t, steps(
		v1alpha1.Step{Action: v1alpha1.ActionNotify, Notify: &v1alpha1.NotifyParams{URL: h.URL}},
		v1alpha1.Step{Action: v1alpha1.ActionIsolate, RequireApproval: true},
	)))
	waitStep(t, inc, "isolate", v1alpha1.StepAwaitingApproval)
	wantPhase(t, get(t, inc), "notify", v1alpha1.StepSucceeded, "HTTP 200")
	stop()

	// Approved while no controller runs; the next one picks it up from the status.
	annotate(t, inc, v1alpha1.ApproveAnnotation)
	startController(t)
	waitStep(t, inc, "isolate", v1alpha1.StepSucceeded)
	if n := len(h.received()); n != 1 {
		t.Fatalf("webhook called %d times, want 1", n)
	}
	var np networkingv1.NetworkPolicy
	if err := kc.Get(ctxT(t), client.ObjectKey{Namespace: ns, Name: "riposte-isolate-" + p.Name}, &np); err != nil {
		t.Fatalf("NetworkPolicy: %v", err)
	}
	_ = waitFor(t, func() bool { return get(t, inc).Status.Phase == v1alpha1.PhaseResponded })
	if ph := get(t, inc).Status.Phase; ph != v1alpha1.PhaseResponded {
		t.Fatalf("phase %q", ph)
	}
}

// TestControllerIsolatesEveryNewIncident goes through the real watch and
// reconcile path and logs the time from creating the Incident to its
// NetworkPolicy existing (tests never assert timings; see docs/benchmarks.md).
func TestControllerIsolatesEveryNewIncident(t *testing.T) {
	ns := namespace(t)
	startController(t)
	ref := playbook(t, steps(v1alpha1.Step{Action: v1alpha1.ActionIsolate}))
	var lat []time.Duration
	for i := 0; i < 20; i++ {
		p := barePod(t, ns)
		start := time.Now()
		incident(t, ns, subjectOf(p), ref)
		key := client.ObjectKey{Namespace: ns, Name: "riposte-isolate-" + p.Name}
		if err := waitForFast(func() bool {
			var np networkingv1.NetworkPolicy
			return kc.Get(context.Background(), key, &np) == nil
		}); err != nil {
			t.Fatalf("no NetworkPolicy for %s: %v", p.Name, err)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("match → NetworkPolicy through the controller: p50 %s, max %s (n=%d)", lat[len(lat)/2].Round(time.Millisecond), lat[len(lat)-1].Round(time.Millisecond), len(lat))
}

func waitForFast(cond func() bool) error {
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		if cond() {
			return nil
		}
	}
	return context.DeadlineExceeded
}
