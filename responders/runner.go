package responders

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// DefaultProtectedNamespaces are refused unless a playbook opts in; the Runner
// adds its own namespace (OwnNamespace).
var DefaultProtectedNamespaces = []string{"kube-system"}

// Runner executes the playbooks of Incidents. One Runner serves all Incidents;
// Run for one Incident must not be called concurrently with itself (a
// controller's work queue guarantees that).
type Runner struct {
	Client  client.Client
	Actions Actions
	// DryRun turns every playbook into a dry run (the global flag).
	DryRun bool
	// ProtectedNamespaces replaces DefaultProtectedNamespaces when not nil.
	ProtectedNamespaces []string
	// OwnNamespace is the controller's namespace, always protected.
	OwnNamespace string
	// StepTimeout bounds one action (default 30s).
	StepTimeout time.Duration
	// AgentTimeout bounds how long a step delegated to the node agent may wait
	// for its report (default 2m); then the step fails.
	AgentTimeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// AfterStep, when set, is called after a step's final phase is persisted;
	// returning an error stops Run (tests use it to simulate a crash).
	AfterStep func(inc *v1alpha1.Incident, st v1alpha1.StepStatus) error

	mu           sync.Mutex
	reservations map[string][]reservation
}

type reservation struct {
	incident string
	at       time.Time
}

// Outcome tells the caller whether to come back.
type Outcome struct {
	// Done is true when every step reached a final phase.
	Done bool
	// AwaitingApproval is true when a step waits for riposte.dev/approve=true;
	// the caller should reconcile again when the Incident's annotations change.
	AwaitingApproval bool
	// RequeueAfter, when set, is when to look again without an event: a step
	// waits for the node agent and fails if it has not answered by then.
	RequeueAfter time.Duration
}

func (r *Runner) agentTimeout() time.Duration {
	if r.AgentTimeout > 0 {
		return r.AgentTimeout
	}
	return 2 * time.Minute
}

func (r *Runner) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Run advances inc's playbooks as far as they can go and persists every
// transition in inc's status. inc must be fresh from the API server (or cache).
// It runs nothing for an Incident riposte has not authorized (its
// Authorized condition, for the Incident's current generation): whoever
// can write an Incident chooses its subject.
func (r *Runner) Run(ctx context.Context, inc *v1alpha1.Incident) (Outcome, error) {
	if len(inc.Spec.Playbooks) == 0 || !Authorized(inc) {
		return Outcome{Done: true}, nil
	}
	if inc.Annotations[v1alpha1.RevertAnnotation] == "true" {
		return r.revert(ctx, inc)
	}
	var out Outcome
	out.Done = true
	for _, ref := range inc.Spec.Playbooks {
		po, err := r.runPlaybook(ctx, inc, ref)
		if err != nil {
			return Outcome{}, err
		}
		out.Done = out.Done && po.Done
		out.AwaitingApproval = out.AwaitingApproval || po.AwaitingApproval
		if po.RequeueAfter > 0 && (out.RequeueAfter == 0 || po.RequeueAfter < out.RequeueAfter) {
			out.RequeueAfter = po.RequeueAfter
		}
	}
	return out, r.setPhase(ctx, inc)
}

// PlaybookKey is how a playbook is named in StepStatus.Playbook: the name of a
// ClusterResponsePlaybook, namespace/name of a ResponsePlaybook.
func PlaybookKey(ref v1alpha1.PlaybookRef) string {
	if ref.Kind == "ResponsePlaybook" {
		return ref.Namespace + "/" + ref.Name
	}
	return ref.Name
}

func (r *Runner) playbook(ctx context.Context, ref v1alpha1.PlaybookRef) (*v1alpha1.ResponsePlaybookSpec, error) {
	return PlaybookSpec(ctx, r.Client, ref)
}

// PlaybookSpec reads the spec of the playbook ref names.
func PlaybookSpec(ctx context.Context, c client.Reader, ref v1alpha1.PlaybookRef) (*v1alpha1.ResponsePlaybookSpec, error) {
	switch ref.Kind {
	case "ResponsePlaybook":
		var p v1alpha1.ResponsePlaybook
		if err := c.Get(ctx, client.ObjectKey{Namespace: ref.Namespace, Name: ref.Name}, &p); err != nil {
			return nil, err
		}
		return &p.Spec, nil
	case "ClusterResponsePlaybook", "":
		var p v1alpha1.ClusterResponsePlaybook
		if err := c.Get(ctx, client.ObjectKey{Name: ref.Name}, &p); err != nil {
			return nil, err
		}
		return &p.Spec, nil
	default:
		return nil, fmt.Errorf("unknown playbook kind %q", ref.Kind)
	}
}

// NamedStep is a playbook step with the unique name it has in an
// Incident's status.
type NamedStep struct {
	Name string
	Step v1alpha1.Step
}

// NamedSteps names a playbook's steps as the Runner records them.
func NamedSteps(steps []v1alpha1.Step) []NamedStep {
	out := make([]NamedStep, len(steps))
	for i, n := range stepNames(steps) {
		out[i] = NamedStep{Name: n, Step: steps[i]}
	}
	return out
}

// stepNames gives every step a unique name: its Name, else its action, with
// the 1-based position appended when that name was already taken.
func stepNames(steps []v1alpha1.Step) []string {
	names := make([]string, len(steps))
	seen := map[string]bool{}
	for i, s := range steps {
		n := s.Name
		if n == "" {
			n = string(s.Action)
		}
		if seen[n] {
			n = fmt.Sprintf("%s-%d", n, i+1)
		}
		seen[n] = true
		names[i] = n
	}
	return names
}

func findStep(inc *v1alpha1.Incident, playbook, name string) int {
	for i, s := range inc.Status.Steps {
		if s.Playbook == playbook && s.Name == name {
			return i
		}
	}
	return -1
}

func final(p v1alpha1.StepPhase) bool {
	switch p {
	case v1alpha1.StepSucceeded, v1alpha1.StepFailed, v1alpha1.StepSkipped, v1alpha1.StepDryRun, v1alpha1.StepReverted:
		return true
	}
	return false
}

func (r *Runner) runPlaybook(ctx context.Context, inc *v1alpha1.Incident, ref v1alpha1.PlaybookRef) (Outcome, error) {
	key := PlaybookKey(ref)
	spec, err := r.playbook(ctx, ref)
	if err != nil {
		// A playbook deleted after the Incident was created cannot be run; say so once.
		if apierrors.IsNotFound(err) {
			if findStep(inc, key, "resolve") < 0 {
				now := metav1.NewTime(r.now())
				inc.Status.Steps = append(inc.Status.Steps, v1alpha1.StepStatus{
					Playbook: key, Name: "resolve", Phase: v1alpha1.StepFailed, FinishedAt: &now,
					Message: fmt.Sprintf("%s %s not found", ref.Kind, key),
				})
				return Outcome{Done: true}, r.persist(ctx, inc)
			}
			return Outcome{Done: true}, nil
		}
		return Outcome{}, fmt.Errorf("get playbook %s: %w", key, err)
	}
	names := stepNames(spec.Steps)

	// Admission: the first time this playbook is seen for this Incident the
	// playbook-wide guardrails decide, and every step is listed as Pending so
	// the status shows the whole plan.
	if !r.admitted(inc, key) {
		reason := r.admit(ctx, inc, ref, spec)
		for i, s := range spec.Steps {
			st := v1alpha1.StepStatus{Playbook: key, Name: names[i], Action: s.Action, Phase: v1alpha1.StepPending}
			if reason != "" {
				now := metav1.NewTime(r.now())
				st.Phase, st.Message, st.FinishedAt = v1alpha1.StepSkipped, reason, &now
			}
			inc.Status.Steps = append(inc.Status.Steps, st)
		}
		// Every path of the first step persists before acting, so a refusal
		// is the only admission that needs its own write (one write fewer on
		// the way to the first action).
		if reason != "" {
			return Outcome{Done: true}, r.persist(ctx, inc)
		}
	}

	dry := r.DryRun || spec.DryRun
	stopped := ""
	for i, step := range spec.Steps {
		idx := findStep(inc, key, names[i])
		if idx < 0 { // the playbook grew after admission
			inc.Status.Steps = append(inc.Status.Steps, v1alpha1.StepStatus{Playbook: key, Name: names[i], Action: step.Action, Phase: v1alpha1.StepPending})
			idx = len(inc.Status.Steps) - 1
		}
		st := &inc.Status.Steps[idx]
		if stopped != "" && !final(st.Phase) {
			now := metav1.NewTime(r.now())
			st.Phase, st.Message, st.FinishedAt = v1alpha1.StepSkipped, stopped, &now
			if err := r.persist(ctx, inc); err != nil {
				return Outcome{}, err
			}
			continue
		}
		if final(st.Phase) {
			if st.Phase == v1alpha1.StepFailed && !step.ContinueOnError {
				stopped = fmt.Sprintf("not run: step %q failed", names[i])
			}
			continue
		}
		req := &Request{Incident: inc, Playbook: key, Spec: spec, Step: step, StepName: names[i], Undo: st.Undo}
		if err := r.runStep(ctx, inc, idx, req, dry); err != nil {
			return Outcome{}, err
		}
		st = &inc.Status.Steps[idx]
		switch st.Phase {
		case v1alpha1.StepAwaitingApproval:
			return Outcome{AwaitingApproval: true}, nil
		case v1alpha1.StepRunning: // waiting for the node agent
			return Outcome{RequeueAfter: r.agentTimeout() - r.now().Sub(st.StartedAt.Time) + time.Second}, nil
		case v1alpha1.StepFailed:
			if !step.ContinueOnError {
				stopped = fmt.Sprintf("not run: step %q failed", names[i])
			}
		}
		if r.AfterStep != nil {
			if err := r.AfterStep(inc, *st); err != nil {
				return Outcome{}, err
			}
		}
	}
	return Outcome{Done: true}, nil
}

// runStep takes one step from Pending, AwaitingApproval or Running to its next
// phase, persisting before and after the action so a crash in between is seen
// as Running by the next Runner.
func (r *Runner) runStep(ctx context.Context, inc *v1alpha1.Incident, idx int, req *Request, dry bool) error {
	st := &inc.Status.Steps[idx]
	act, ok := r.Actions[req.Step.Action]
	if !ok {
		msg := fmt.Sprintf("action %q is not available in this process", req.Step.Action)
		if req.Step.Action == v1alpha1.ActionCapture {
			msg = "capture is off: the controller has no evidence store (start it with --evidence-dir)"
		}
		return r.finish(ctx, inc, idx, v1alpha1.StepFailed, msg, Result{})
	}
	if dry {
		plan, err := act.Plan(ctx, req)
		if err != nil {
			plan = "cannot plan: " + err.Error()
		}
		if req.Step.RequireApproval {
			plan = "after approval: " + plan
		}
		return r.finish(ctx, inc, idx, v1alpha1.StepDryRun, "would "+plan, Result{})
	}
	if err := r.stepGuard(req); err != nil {
		return r.finish(ctx, inc, idx, v1alpha1.StepSkipped, err.Error(), Result{})
	}
	if req.Step.RequireApproval && st.Phase != v1alpha1.StepRunning && inc.Annotations[v1alpha1.ApproveAnnotation] != "true" {
		if st.Phase == v1alpha1.StepAwaitingApproval {
			return nil
		}
		st.Phase = v1alpha1.StepAwaitingApproval
		st.Message = fmt.Sprintf("waiting for annotation %s=true on the Incident", v1alpha1.ApproveAnnotation)
		return r.persist(ctx, inc)
	}
	if st.Phase != v1alpha1.StepRunning {
		if p, ok := act.(Preparer); ok && st.Undo == nil {
			undo, err := p.Prepare(ctx, req)
			if err != nil {
				return r.finish(ctx, inc, idx, phaseOf(err), err.Error(), Result{})
			}
			st.Undo = undo
			req.Undo = undo
		}
		now := metav1.NewTime(r.now())
		st.Phase, st.StartedAt, st.Message = v1alpha1.StepRunning, &now, ""
		if err := r.persist(ctx, inc); err != nil {
			return err
		}
	}
	timeout := r.StepTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	res, err := act.Do(actx, req)
	cancel()
	if err != nil {
		if ctx.Err() != nil { // shutting down: leave the step Running for the next Runner
			return ctx.Err()
		}
		if errors.Is(err, ErrWaiting) {
			if st.StartedAt != nil && r.now().Sub(st.StartedAt.Time) >= r.agentTimeout() {
				return r.finish(ctx, inc, idx, v1alpha1.StepFailed, fmt.Sprintf("no report from the riposte agent on node %q within %s", req.Subject().Node, r.agentTimeout()), res)
			}
			return r.wait(ctx, inc, idx, res)
		}
		return r.finish(ctx, inc, idx, phaseOf(err), err.Error(), res)
	}
	return r.finish(ctx, inc, idx, v1alpha1.StepSucceeded, res.Message, res)
}

func phaseOf(err error) v1alpha1.StepPhase {
	if errors.Is(err, ErrRefused) {
		return v1alpha1.StepSkipped
	}
	return v1alpha1.StepFailed
}

// wait keeps a step Running while the node agent does its part, recording
// what the controller's part produced; the agent's result annotation wakes
// the Incident up again.
func (r *Runner) wait(ctx context.Context, inc *v1alpha1.Incident, idx int, res Result) error {
	st := &inc.Status.Steps[idx]
	changed := st.Message != res.Message || res.Evidence != nil
	st.Message = res.Message
	for k, v := range res.Undo {
		if st.Undo == nil {
			st.Undo = map[string]string{}
		}
		if st.Undo[k] != v {
			st.Undo[k], changed = v, true
		}
	}
	if res.Evidence != nil {
		inc.Status.Evidence = append(inc.Status.Evidence, *res.Evidence)
	}
	if !changed {
		return nil
	}
	return r.persist(ctx, inc)
}

func (r *Runner) finish(ctx context.Context, inc *v1alpha1.Incident, idx int, phase v1alpha1.StepPhase, msg string, res Result) error {
	st := &inc.Status.Steps[idx]
	now := metav1.NewTime(r.now())
	if st.StartedAt == nil {
		st.StartedAt = &now
	}
	st.Phase, st.Message, st.FinishedAt = phase, msg, &now
	if len(res.Undo) > 0 {
		if st.Undo == nil {
			st.Undo = map[string]string{}
		}
		maps.Copy(st.Undo, res.Undo)
	}
	if res.Evidence != nil {
		inc.Status.Evidence = append(inc.Status.Evidence, *res.Evidence)
	}
	return r.persist(ctx, inc)
}

// persist writes the Runner's part of the status (steps, evidence, phase). On a
// conflict it re-reads the Incident and reapplies that part, because the Runner
// is the only writer of those fields while other writers (deduplication
// counting matches) may bump the resourceVersion at any time.
func (r *Runner) persist(ctx context.Context, inc *v1alpha1.Incident) error {
	steps, evidence, phase := inc.Status.Steps, inc.Status.Evidence, inc.Status.Phase
	first := true
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if !first {
			var fresh v1alpha1.Incident
			if err := r.Client.Get(ctx, client.ObjectKeyFromObject(inc), &fresh); err != nil {
				return err
			}
			fresh.Status.Steps, fresh.Status.Evidence, fresh.Status.Phase = steps, evidence, phase
			fresh.DeepCopyInto(inc)
		}
		first = false
		return r.Client.Status().Update(ctx, inc)
	})
	if err != nil {
		return fmt.Errorf("update status of incident %s/%s: %w", inc.Namespace, inc.Name, err)
	}
	return nil
}

func (r *Runner) setPhase(ctx context.Context, inc *v1alpha1.Incident) error {
	phase := v1alpha1.PhaseResponded
	for _, s := range inc.Status.Steps {
		if s.Phase == v1alpha1.StepFailed {
			phase = v1alpha1.PhaseFailed
			break
		}
		if !final(s.Phase) {
			phase = v1alpha1.PhaseResponding
		}
	}
	if inc.Status.Phase == phase {
		return nil
	}
	inc.Status.Phase = phase
	return r.persist(ctx, inc)
}
