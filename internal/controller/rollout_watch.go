package controller

import (
	"time"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	coordinationv1 "k8s.io/api/coordination/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// nodeRecheck is how often a Ready node rule is looked at again, so an agent
// whose Lease expired stops counting even when nothing else changes.
const nodeRecheck = 5 * time.Minute

// agentLeaseChanged passes an agent Lease's creation, deletion and changes
// of the loaded set, not its renewals: renewals come every minute from every
// node and would requeue every rule each time.
var agentLeaseChanged = predicate.Funcs{
	CreateFunc: func(e event.CreateEvent) bool { return isAgentLease(e.Object) },
	DeleteFunc: func(e event.DeleteEvent) bool { return isAgentLease(e.Object) },
	UpdateFunc: func(e event.UpdateEvent) bool {
		return isAgentLease(e.ObjectNew) &&
			e.ObjectOld.GetAnnotations()[v1alpha1.LoadedRulesAnnotation] != e.ObjectNew.GetAnnotations()[v1alpha1.LoadedRulesAnnotation]
	},
	GenericFunc: func(event.GenericEvent) bool { return false },
}

func isAgentLease(o client.Object) bool {
	_, ok := o.(*coordinationv1.Lease)
	return ok && o.GetLabels()[v1alpha1.AgentLabel] == "true"
}
