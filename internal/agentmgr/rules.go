package agentmgr

import (
	"context"
	"fmt"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/ruleset"
	"github.com/riposte-dev/riposte/internal/agent"
	"github.com/riposte-dev/riposte/internal/controller"
)

// ruleSetKey is the one request the rule watch reconciles: any rule or
// playbook change rebuilds the live set from the cache.
var ruleSetKey = reconcile.Request{NamespacedName: types.NamespacedName{Name: "live-rules"}}

// ruleSetReconciler keeps the kernel filter, the kill sets and the matcher
// equal to the rules the controller made Ready, compiling each rule once
// per generation (the controller's generation-keyed registry), and reports
// what it loaded in the node's Lease.
type ruleSetReconciler struct {
	*agentState
	registry *controller.Registry
	last     string
}

func (r *ruleSetReconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.registry = controller.NewRegistry()
	one := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{ruleSetKey}
	})
	return ctrl.NewControllerManagedBy(mgr).
		Named("agent-rules").
		Watches(&v1alpha1.ClusterDetectionRule{}, one).
		Watches(&v1alpha1.DetectionRule{}, one).
		Watches(&v1alpha1.ClusterResponsePlaybook{}, one).
		Watches(&v1alpha1.ResponsePlaybook{}, one).
		Complete(r)
}

// nodeSource reports whether the agent evaluates rules of a source; audit
// and object rules run in the controller.
func nodeSource(s string) bool {
	switch engine.Source(s) {
	case engine.SourceProcess, engine.SourceFile, engine.SourceNetwork:
		return true
	}
	return false
}

func ready(gen, observed int64, conds []metav1.Condition) bool {
	return observed == gen && apimeta.IsStatusConditionTrue(conds, v1alpha1.ReadyCondition)
}

// Reconcile reads the live set from the cache (no API request) and applies
// it when it changed.
func (r *ruleSetReconciler) Reconcile(ctx context.Context, _ reconcile.Request) (reconcile.Result, error) {
	set := &ruleset.Set{}
	loaded := map[types.UID]int64{}
	versions := map[types.UID]int64{}
	live := map[string]bool{}
	// add makes a rule live at generation gen when the controller made that
	// generation Ready; otherwise the generation this agent last loaded
	// stays live, so a new version still being checked (or refused) never
	// leaves a gap in detection.
	add := func(kind, name, ns string, uid types.UID, gen int64, spec *v1alpha1.DetectionRuleSpec, isReady bool) {
		key := controller.RegistryKey(kind, ns, name)
		rule, have, ok := r.registry.Get(key)
		if !isReady {
			if !ok {
				return
			}
			live[key] = true
			set.Rules = append(set.Rules, &ruleset.Rule{Kind: kind, Name: name, Namespace: ns, Spec: *rule.Spec(), Compiled: rule})
			loaded[uid], versions[uid] = have, have
			return
		}
		if !ok || have != gen {
			var err error
			if rule, err = engine.Compile(name, ns, spec); err != nil {
				// The controller made it Ready, so this agent's build disagrees:
				// say so and leave it out rather than run a different rule.
				r.log.Error(err, "compile a Ready rule", "rule", key, "generation", gen)
				return
			}
			r.registry.Put(key, rule, gen)
		}
		live[key] = true
		set.Rules = append(set.Rules, &ruleset.Rule{Kind: kind, Name: name, Namespace: ns, Spec: *spec, Compiled: rule})
		loaded[uid], versions[uid] = gen, gen
	}
	var crs v1alpha1.ClusterDetectionRuleList
	if err := r.client.List(ctx, &crs); err != nil {
		return reconcile.Result{}, fmt.Errorf("list ClusterDetectionRules: %w", err)
	}
	for i := range crs.Items {
		x := &crs.Items[i]
		if nodeSource(x.Spec.Source) && !x.Spec.Suspend {
			add("ClusterDetectionRule", x.Name, "", x.UID, x.Generation, &x.Spec, ready(x.Generation, x.Status.ObservedGeneration, x.Status.Conditions))
		}
	}
	var rs v1alpha1.DetectionRuleList
	if err := r.client.List(ctx, &rs); err != nil {
		return reconcile.Result{}, fmt.Errorf("list DetectionRules: %w", err)
	}
	for i := range rs.Items {
		x := &rs.Items[i]
		if nodeSource(x.Spec.Source) && !x.Spec.Suspend {
			add("DetectionRule", x.Name, x.Namespace, x.UID, x.Generation, &x.Spec, ready(x.Generation, x.Status.ObservedGeneration, x.Status.Conditions))
		}
	}
	for _, key := range r.registry.Keys() {
		if !live[key] {
			r.registry.Delete(key)
		}
	}
	var cps v1alpha1.ClusterResponsePlaybookList
	if err := r.client.List(ctx, &cps); err != nil {
		return reconcile.Result{}, fmt.Errorf("list ClusterResponsePlaybooks: %w", err)
	}
	for _, p := range cps.Items {
		set.Playbooks = append(set.Playbooks, &ruleset.Playbook{Kind: "ClusterResponsePlaybook", Name: p.Name, Spec: p.Spec})
		versions[p.UID] = p.Generation
	}
	var ps v1alpha1.ResponsePlaybookList
	if err := r.client.List(ctx, &ps); err != nil {
		return reconcile.Result{}, fmt.Errorf("list ResponsePlaybooks: %w", err)
	}
	for _, p := range ps.Items {
		set.Playbooks = append(set.Playbooks, &ruleset.Playbook{Kind: "ResponsePlaybook", Name: p.Name, Namespace: p.Namespace, Spec: p.Spec})
		versions[p.UID] = p.Generation
	}
	key := versionKey(versions)
	if key == r.last {
		return reconcile.Result{}, nil
	}
	if r.kernel != nil {
		skipped, err := r.kernel.SetRules(set.Compiled(), agent.InKernelRules(set))
		for _, s := range skipped {
			r.log.Info("in-kernel kill not possible; the kill step runs after the match", "reason", s.Error())
		}
		if err != nil {
			return reconcile.Result{}, fmt.Errorf("load rules into the kernel: %w", err)
		}
	}
	r.last = key
	r.reporter.Set(loaded)
	r.log.Info("rules loaded", "rules", len(set.Rules), "playbooks", len(set.Playbooks))
	return reconcile.Result{}, nil
}

// versionKey identifies rules and playbooks at their generations, so an
// unchanged set is not loaded again.
func versionKey(v map[types.UID]int64) string {
	parts := make([]string, 0, len(v))
	for uid, gen := range v {
		parts = append(parts, fmt.Sprintf("%s=%d", uid, gen))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}
