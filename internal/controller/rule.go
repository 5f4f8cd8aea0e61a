package controller

import (
	"context"
	"fmt"
	"time"

	"github.com/fluxcd/pkg/apis/meta"
	"github.com/fluxcd/pkg/runtime/conditions"
	"github.com/fluxcd/pkg/runtime/patch"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/internal/incident"
	"github.com/riposte-dev/riposte/internal/rulecheck"
)

// FieldOwner is the field manager of every write the controller makes.
const FieldOwner = "riposte-controller"

// playbooksIndex indexes rules by the playbooks they name, so a playbook
// change requeues exactly the rules that use it.
const playbooksIndex = ".spec.playbooks"

// Condition types the rule and playbook reconcilers own: in a conflict the
// patch helper keeps the controller's value.
var ownedConditions = []string{v1alpha1.ReadyCondition, v1alpha1.ReconcilingCondition, v1alpha1.StalledCondition}

// retryInterval is how soon a rule that may heal by itself (a playbook that
// does not exist yet, nodes still loading) is looked at again.
const retryInterval = 30 * time.Second

// EventRecorder records Kubernetes events about an object. Both client-go's
// events.EventRecorder and fluxcd's events.Recorder satisfy it.
type EventRecorder interface {
	Eventf(regarding runtime.Object, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// Rollout reports how many agents run a given generation of a rule.
// total is 0 when no agent reports at all.
type Rollout interface {
	Nodes(ctx context.Context, uid types.UID, generation int64) (loaded, total int, err error)
}

// ruleReconciler is what the DetectionRule and ClusterDetectionRule
// reconcilers share: both kinds have the same spec and status.
type ruleReconciler struct {
	client.Client
	Registry *Registry
	Recorder EventRecorder
	Rollout  Rollout
}

// statusObject is any riposte kind seen through the parts the reconcilers
// need: metadata and conditions.
type statusObject interface {
	client.Object
	conditions.Setter
}

// reconcileRule runs the body of a rule reconcile: everything but fetching
// the object and patching it, which the callers do.
func (r *ruleReconciler) reconcileRule(ctx context.Context, kind string, obj statusObject, spec *v1alpha1.DetectionRuleSpec, status *v1alpha1.DetectionRuleStatus) (ctrl.Result, error) {
	key := RegistryKey(kind, obj.GetNamespace(), obj.GetName())
	if v, ok := meta.ReconcileAnnotationValue(obj.GetAnnotations()); ok {
		status.SetLastHandledReconcileRequest(v)
	}
	if obj.GetGeneration() != status.ObservedGeneration {
		conditions.MarkReconciling(obj, v1alpha1.ProgressingReason, "reconciling generation %d", obj.GetGeneration())
	}

	if spec.Suspend {
		r.Registry.Delete(key)
		conditions.Delete(obj, v1alpha1.StalledCondition)
		conditions.Delete(obj, v1alpha1.ReconcilingCondition)
		conditions.MarkFalse(obj, v1alpha1.ReadyCondition, meta.SuspendedReason, "rule is suspended")
		status.Nodes = ""
		status.ObservedGeneration = obj.GetGeneration()
		return ctrl.Result{}, nil
	}

	// A live rule of this generation has compiled and passed its tests
	// already: requeues for rollout and playbook changes only re-resolve
	// the playbooks.
	var f *rulecheck.Failure
	rule, gen, live := r.Registry.Get(key)
	if live && gen == obj.GetGeneration() {
		f = rulecheck.Playbooks(ctx, playbookLookup{r.Client}, obj.GetNamespace(), spec.Playbooks)
	} else {
		rule, f = rulecheck.Check(ctx, playbookLookup{r.Client}, obj.GetName(), obj.GetNamespace(), spec)
	}
	if f != nil {
		// A rule that cannot be checked right now is not live: only Ready
		// rules are, so Git tooling and the live set always agree.
		r.Registry.Delete(key)
		conditions.MarkFalse(obj, v1alpha1.ReadyCondition, f.Reason, "%s", f.Message)
		status.ObservedGeneration = obj.GetGeneration()
		status.Nodes = ""
		// Events go last: the conditions are the record, and a recorder
		// failure must not leave them half set.
		defer r.event(obj, corev1.EventTypeWarning, f.Reason, f.Message)
		if f.Permanent {
			conditions.MarkStalled(obj, f.Reason, "%s", f.Message)
			return ctrl.Result{}, nil
		}
		conditions.MarkReconciling(obj, f.Reason, "%s", f.Message)
		return ctrl.Result{RequeueAfter: retryInterval}, nil
	}

	wasReady := conditions.IsReady(obj) && status.ObservedGeneration == obj.GetGeneration()
	r.Registry.Put(key, rule, obj.GetGeneration())
	status.EstimatedCost = rule.Cost()
	status.Prefilter = rule.ExplainPrefilter()
	status.ObservedGeneration = obj.GetGeneration()
	conditions.Delete(obj, v1alpha1.StalledCondition)
	msg := fmt.Sprintf("rule compiled (estimated cost %d) and passed %d embedded tests", rule.Cost(), len(spec.Tests))
	matches, err := r.matches(ctx, kind, obj)
	if err != nil {
		return ctrl.Result{}, err
	}
	status.Matches = matches

	result := ctrl.Result{}
	if r.Rollout != nil && needsAgents(rule) {
		loaded, total, err := r.Rollout.Nodes(ctx, obj.GetUID(), obj.GetGeneration())
		if err != nil {
			return ctrl.Result{}, err
		}
		status.Nodes = fmt.Sprintf("%d/%d", loaded, total)
		if loaded < total {
			// Valid but not yet everywhere: in progress for kstatus, so
			// Flux's wait and Argo's health hold until the nodes catch up.
			conditions.MarkReconciling(obj, v1alpha1.RolloutReason, "%d of %d nodes loaded generation %d", loaded, total, obj.GetGeneration())
			conditions.MarkTrue(obj, v1alpha1.ReadyCondition, v1alpha1.RolloutReason, "%s; %d of %d nodes loaded it", msg, loaded, total)
			return ctrl.Result{RequeueAfter: 10 * time.Second}, nil
		}
		msg = fmt.Sprintf("%s; loaded on %d/%d nodes", msg, loaded, total)
		result.RequeueAfter = nodeRecheck
	} else {
		status.Nodes = ""
	}
	conditions.Delete(obj, v1alpha1.ReconcilingCondition)
	conditions.MarkTrue(obj, v1alpha1.ReadyCondition, v1alpha1.LoadedReason, "%s", msg)
	if !wasReady {
		r.event(obj, corev1.EventTypeNormal, v1alpha1.LoadedReason, msg)
	}
	return result, nil
}

// matches sums the counts of the rule's Incidents (from the cache). Incident
// changes requeue the rule (incidentRule), so the figure follows them.
func (r *ruleReconciler) matches(ctx context.Context, kind string, obj client.Object) (int64, error) {
	var list v1alpha1.IncidentList
	if err := r.List(ctx, &list, client.MatchingLabels(incident.RuleSelector(kind, obj.GetNamespace(), obj.GetName()))); err != nil {
		return 0, fmt.Errorf("list incidents of the rule: %w", err)
	}
	var n int64
	for i := range list.Items {
		n += list.Items[i].Status.Count
	}
	return n, nil
}

// incidentRule maps an Incident to the rule that made it, for a reconciler
// of kind.
func incidentRule(kind string) handler.MapFunc {
	return func(_ context.Context, o client.Object) []reconcile.Request {
		l := o.GetLabels()
		if l[v1alpha1.RuleKindLabel] != kind || l[v1alpha1.RuleLabel] == "" {
			return nil
		}
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: l[v1alpha1.RuleNamespaceLabel], Name: l[v1alpha1.RuleLabel]}}}
	}
}

// incidentCounted lets through the Incident events that change a rule's
// matches: creations, deletions and count changes (not step records).
var incidentCounted = predicate.Funcs{
	UpdateFunc: func(e event.UpdateEvent) bool {
		old, ok1 := e.ObjectOld.(*v1alpha1.Incident)
		inc, ok2 := e.ObjectNew.(*v1alpha1.Incident)
		return ok1 && ok2 && old.Status.Count != inc.Status.Count
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

// needsAgents reports whether the rule runs on the node agents rather than
// in the controller (audit and object rules run in the controller).
func needsAgents(rule *engine.Rule) bool {
	s := rule.Source()
	return s != engine.SourceAudit && s != engine.SourceObject
}

func (r *ruleReconciler) event(obj runtime.Object, typ, reason, msg string) {
	if r.Recorder != nil {
		r.Recorder.Eventf(obj, nil, typ, reason, "Reconcile", "%s", msg)
	}
}

// finalize patches the object's status. It runs deferred, so a status is
// written however the reconcile ended; an error while reconciling that left
// no condition is recorded as Ready=False so it is never invisible.
func finalize(ctx context.Context, patcher *patch.SerialPatcher, obj statusObject, recErr error) error {
	if recErr != nil && !conditions.IsFalse(obj, v1alpha1.ReadyCondition) {
		conditions.MarkFalse(obj, v1alpha1.ReadyCondition, meta.FailedReason, "%v", recErr)
	}
	if err := patcher.Patch(ctx, obj, patch.WithOwnedConditions{Conditions: ownedConditions}, patch.WithFieldOwner(FieldOwner)); err != nil {
		if apierrors.IsNotFound(err) {
			return recErr
		}
		if recErr != nil {
			return fmt.Errorf("%w; patch status: %v", recErr, err)
		}
		return fmt.Errorf("patch status of %s: %w", client.ObjectKeyFromObject(obj), err)
	}
	return recErr
}

// playbookLookup resolves playbook references through the (cached) client.
type playbookLookup struct{ c client.Reader }

func (l playbookLookup) PlaybookExists(ctx context.Context, namespace, name string) (bool, error) {
	var obj client.Object = &v1alpha1.ClusterResponsePlaybook{}
	if namespace != "" {
		obj = &v1alpha1.ResponsePlaybook{}
	}
	err := l.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, obj)
	switch {
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	default:
		return false, fmt.Errorf("get playbook %s/%s: %w", namespace, name, err)
	}
}

// PlaybookLookup returns the lookup the reconcilers use, for the webhook.
func PlaybookLookup(c client.Reader) rulecheck.PlaybookLookup { return playbookLookup{c} }
