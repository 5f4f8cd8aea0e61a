package agentmgr

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/internal/profile"
)

// DefaultProfileInterval is how often the agent writes what its pods did to
// their WorkloadProfiles.
const DefaultProfileInterval = time.Minute

// profiles is the agent's part of WorkloadProfiles: the reviewed ones judge
// events (Index), the others are learnt (Learner, written by the Syncer).
type profiles struct {
	index   profile.Index
	learner *profile.Learner
	syncer  *profile.Syncer
}

// setupProfiles watches WorkloadProfiles into the index and starts the
// syncer.
func (a *agentState) setupProfiles(mgr manager.Manager) error {
	p := &profiles{}
	p.learner = profile.NewLearner(profile.Options{Reviewed: p.index.Reviewed})
	interval := a.opts.ProfileInterval
	if interval <= 0 {
		interval = DefaultProfileInterval
	}
	p.syncer = &profile.Syncer{Learner: p.learner, Writer: &profile.Writer{Client: a.client, Reader: a.reader}, Interval: interval,
		OnError: func(err error) { a.log.Error(err, "write WorkloadProfile") }}
	a.profiles = p
	if !a.opts.SkipNameValidation {
		registerMetrics(
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "riposte_agent_profile_truncated_total",
				Help: "Observations not learnt because their profile was full (a list's bound or its bytes)."},
				func() float64 { return float64(p.learner.Stats().Truncated) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "riposte_agent_profile_dropped_events_total",
				Help: "Events of workloads not learnt because the agent learns its maximum number of profiles."},
				func() float64 { return float64(p.learner.Stats().DroppedWorkloadEvents) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "riposte_agent_profile_write_failures_total",
				Help: "Learnt reports that could not be written to their WorkloadProfile."},
				func() float64 { return float64(p.syncer.Failures()) }),
		)
	}
	if err := mgr.Add(manager.RunnableFunc(p.syncer.Run)); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("agent-profiles").
		For(&v1alpha1.WorkloadProfile{}).
		Complete(reconcile.Func(func(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
			var wp v1alpha1.WorkloadProfile
			if err := a.client.Get(ctx, req.NamespacedName, &wp); err != nil {
				if apierrors.IsNotFound(err) {
					p.index.Delete(req.String())
					return reconcile.Result{}, nil
				}
				return reconcile.Result{}, err
			}
			if err := p.index.Set(&wp); err != nil {
				// The CRD's bounds admit what the engine does; a peer that does
				// not parse leaves the workload unjudged: say so.
				a.log.Error(err, "WorkloadProfile not used", "profile", req.String())
			}
			return reconcile.Result{}, nil
		}))
}

// enrich fills identity, then the profile the rules see, then learns.
func (a *agentState) enrich(ev *engine.Event) {
	a.store.Enrich(ev)
	if a.profiles == nil {
		return
	}
	a.profiles.index.Attach(ev)
	a.profiles.learner.Observe(ev)
}
