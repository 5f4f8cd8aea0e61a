package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/session"
)

// DefaultSessionWait is how long an exec Incident waits for its API server
// request: kube-apiserver's audit webhook batches for up to 30s by default.
const DefaultSessionWait = 45 * time.Second

// Session messages.
const (
	sessionEntrypointMessage = "started by the container's entrypoint: no user"
	sessionUnknownMessage    = "origin unknown: the process tree predates the agent or runs on the host"
)

// SessionReconciler writes status.session of an agent's container Incident:
// who is behind its process. A process below the container's init names no
// user; one below a runtime exec is joined with the API server's exec
// request for the same pod and container (session.Store, fed by the audit
// webhook only) and, when none arrives within Wait, says so. Only Incidents
// an agent created (origin label agent, which the admission policy
// riposte-incidents reserves to the node's agent) are joined: the process's
// origin comes from that node's kernel.
type SessionReconciler struct {
	client.Client
	Store *session.Store
	// Wait is how long after its creation an exec Incident waits for its
	// request (default DefaultSessionWait).
	Wait time.Duration
	Now  func() time.Time

	wake chan event.GenericEvent
}

// Waker returns the function the session store calls when a request
// arrives for a pod with waiting Incidents. Call it before SetupWithManager
// and pass it to session.NewStore.
func (r *SessionReconciler) Waker() func(session.Waiter) {
	if r.wake == nil {
		r.wake = make(chan event.GenericEvent, 1024)
	}
	ch := r.wake
	return func(w session.Waiter) {
		inc := &v1alpha1.Incident{}
		inc.Namespace, inc.Name = w.Namespace, w.Name
		select {
		case ch <- event.GenericEvent{Object: inc}:
		default:
			// Full: the Incident is joined at its deadline instead.
		}
	}
}

// SetupWithManager registers the reconciler for agents' container
// Incidents without a session, and for the store's wake-ups.
func (r *SessionReconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.wake == nil {
		r.wake = make(chan event.GenericEvent, 1024)
	}
	needs := predicate.NewPredicateFuncs(func(o client.Object) bool {
		inc, ok := o.(*v1alpha1.Incident)
		return ok && needsSession(inc)
	})
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.Incident{}, builder.WithPredicates(needs)).
		WatchesRawSource(source.Channel(r.wake, &handler.EnqueueRequestForObject{})).
		Named("incident-session").
		Complete(r)
}

func needsSession(inc *v1alpha1.Incident) bool {
	return inc.Status.Session == nil && inc.Labels[v1alpha1.OriginLabel] == string(v1alpha1.OriginAgent) && inc.Spec.Subject.ContainerID != ""
}

// Reconcile decides the Incident's session, or waits for its request.
func (r *SessionReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	inc := &v1alpha1.Incident{}
	if err := r.Get(ctx, req.NamespacedName, inc); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if !needsSession(inc) {
		return ctrl.Result{}, nil
	}
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	wait := r.Wait
	if wait <= 0 {
		wait = DefaultSessionWait
	}
	s, retry := Decide(r.Store, inc, now(), wait)
	if s == nil {
		sub := &inc.Spec.Subject
		r.Store.Wait(sub.Namespace, sub.Pod, session.Waiter{Namespace: inc.Namespace, Name: inc.Name})
		return ctrl.Result{RequeueAfter: retry}, nil
	}
	body, err := json.Marshal(map[string]any{"status": map[string]any{"session": s}})
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("encode session: %w", err)
	}
	if err := r.Status().Patch(ctx, inc, client.RawPatch(types.MergePatchType, body), client.FieldOwner("riposte-controller")); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(fmt.Errorf("patch incident session: %w", err))
	}
	return ctrl.Result{}, nil
}

// Decide is the session of an agent's container Incident at now, or nil
// and how long to wait when its process came from an exec whose request
// may still arrive (until the Incident is wait old).
func Decide(store *session.Store, inc *v1alpha1.Incident, now time.Time, wait time.Duration) (*v1alpha1.Session, time.Duration) {
	sub := &inc.Spec.Subject
	switch sub.Origin {
	case v1alpha1.SessionEntrypoint:
		return &v1alpha1.Session{Origin: v1alpha1.SessionEntrypoint, Message: sessionEntrypointMessage}, 0
	case v1alpha1.SessionExec:
	default:
		return &v1alpha1.Session{Origin: v1alpha1.SessionUnknown, Message: sessionUnknownMessage}, 0
	}
	q := session.Query{Namespace: sub.Namespace, Pod: sub.Pod, Container: sub.Container, Command: sub.OriginCommand}
	switch {
	case sub.OriginTime != nil:
		q.Started = sub.OriginTime.Time
	case inc.Status.FirstSeen != nil:
		q.Started = inc.Status.FirstSeen.Time
	default:
		q.Started = inc.CreationTimestamp.Time
	}
	res := store.Lookup(q)
	switch {
	case res.Exec != nil:
		return sessionOf(res.Exec, res.Candidates), 0
	case res.Ambiguous:
		return &v1alpha1.Session{Origin: v1alpha1.SessionExec, Candidates: int32(res.Candidates),
			Message: fmt.Sprintf("%d API server execs by different users match: nobody is named", res.Candidates)}, 0
	}
	deadline := inc.CreationTimestamp.Add(wait)
	if now.Before(deadline) {
		return nil, deadline.Sub(now)
	}
	return &v1alpha1.Session{Origin: v1alpha1.SessionExec, Message: session.NoAPIExec}, 0
}

func sessionOf(e *session.Exec, candidates int) *v1alpha1.Session {
	t := metav1.NewTime(e.Received)
	return &v1alpha1.Session{
		Origin: v1alpha1.SessionExec, User: e.User, UID: e.UID, Groups: e.Groups,
		ImpersonatedBy: e.ImpersonatedBy, SourceIPs: e.SourceIPs, UserAgent: e.UserAgent,
		AuditID: e.AuditID, Verb: e.Verb, Subresource: e.Subresource, Command: e.Command,
		Container: e.Container, RequestReceived: &t, Candidates: int32(candidates),
	}
}
