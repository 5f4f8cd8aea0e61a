package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/responders"
)

// KernelAnnotation is written on an Incident by the agent that attached (or
// released) its pod's kernel isolation, so the Incident records both layers.
const KernelAnnotation = "riposte.dev/kernel-isolation"

// Enforcer runs in the agent: it makes the kernel isolations on its node match
// the API. A pod on this node is isolated in the kernel while it carries the
// label riposte.dev/isolate=<its uid> that the isolate step's NetworkPolicy
// selects, with the exceptions of its riposte.dev/isolate-allow annotation,
// and released once the label is gone (revert). Attach and release are
// reported on every Incident whose isolate step put the label there (several
// rules may match one pod and isolate it). Being
// level-triggered it is restart-safe without state of its own, and the
// controller never has to reach the node.
//
// It also does the node part of steps the controller delegated (a step
// Running with undo node=delegated): process and container kills, and the
// node-side evidence bundle of capture, reporting each in
// responders.NodeResultsAnnotation exactly once.
type Enforcer struct {
	// Client reads Incidents and annotates them (the agent's cached client).
	Client   client.Client
	Local    *Local
	NodeName string
	// Store keeps node-side evidence (a node folder or PVC); nil reports
	// delegated captures as failed.
	Store responders.EvidenceStore
}

// SyncResult says what one Sync changed, by pod UID.
type SyncResult struct {
	Attached, Released []string
	// Absent are wanted pods without a cgroup here (gone, or not yet started).
	Absent []string
	// Delegated are the step keys whose node part was done and reported.
	Delegated []string
}

// delegated does the node part of one step; failures become the result's Error.
func (e *Enforcer) delegated(ctx context.Context, inc *v1alpha1.Incident, st v1alpha1.StepStatus) responders.NodeResult {
	s := inc.Spec.Subject
	fail := func(err error) responders.NodeResult { return responders.NodeResult{Error: err.Error()} }
	switch st.Action {
	case v1alpha1.ActionKill:
		switch st.Undo["target"] {
		case "process":
			if s.PID <= 0 {
				return fail(errors.New("the incident's subject names no process"))
			}
			if err := e.Local.KillProcess(ctx, int(s.PID), s.ContainerID); errors.Is(err, responders.ErrGone) {
				return responders.NodeResult{Message: fmt.Sprintf("process %d (%s) already gone: exited, or killed in the kernel at exec", s.PID, s.Binary)}
			} else if err != nil {
				return fail(err)
			}
			return responders.NodeResult{Message: fmt.Sprintf("process %d (%s) killed with SIGKILL", s.PID, s.Binary)}
		case "container":
			if err := e.Local.KillContainer(ctx, s.PodUID, s.ContainerID); err != nil {
				return fail(err)
			}
			return responders.NodeResult{Message: fmt.Sprintf("container %s (%s) killed", s.Container, s.ContainerID)}
		}
	case v1alpha1.ActionCapture:
		if e.Store == nil {
			return fail(errors.New("no evidence store configured on the agent"))
		}
		files, err := e.Local.Evidence(ctx, s.PodUID, s.ContainerID, st.Undo["includeSecrets"] == "true")
		if err != nil {
			return fail(err)
		}
		id := fmt.Sprintf("%s/%s/%s-node", inc.Namespace, inc.Name, strings.ReplaceAll(st.Playbook+"-"+st.Name, "/", "_"))
		sealed, err := e.Store.Write(ctx, id, files, time.Now())
		if err != nil {
			return fail(fmt.Errorf("store node evidence: %w", err))
		}
		at := metav1.NewTime(sealed.CapturedAt)
		return responders.NodeResult{
			Message:  fmt.Sprintf("%d files at %s, manifest sha256 %s", sealed.Files, sealed.Location, sealed.ManifestSHA256),
			Evidence: &v1alpha1.Evidence{Location: sealed.Location, ManifestSHA256: sealed.ManifestSHA256, Files: int32(sealed.Files), CapturedAt: &at},
		}
	}
	return fail(fmt.Errorf("step %s (%s) cannot be done by the node agent", st.Name, st.Action))
}

// report adds one result to the Incident's node-results annotation; the
// optimistic lock keeps concurrent reports (and other annotations) intact.
func (e *Enforcer) report(ctx context.Context, inc *v1alpha1.Incident, key string, r responders.NodeResult) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var fresh v1alpha1.Incident
		if err := e.Client.Get(ctx, client.ObjectKeyFromObject(inc), &fresh); err != nil {
			return err
		}
		results := responders.NodeResults(&fresh)
		results[key] = r
		data, err := json.Marshal(results)
		if err != nil {
			return err
		}
		base := client.MergeFromWithOptions(fresh.DeepCopy(), client.MergeFromWithOptimisticLock{})
		if fresh.Annotations == nil {
			fresh.Annotations = map[string]string{}
		}
		fresh.Annotations[responders.NodeResultsAnnotation] = string(data)
		if err := e.Client.Patch(ctx, &fresh, base); err != nil {
			return fmt.Errorf("report %s on incident %s/%s: %w", key, inc.Namespace, inc.Name, err)
		}
		return nil
	})
}

type wanted struct {
	peers []responders.Peer
	// incs are the Incidents whose isolate step isolates the pod: several
	// rules may match the same pod, and each Incident records the kernel layer.
	incs []*v1alpha1.Incident
}

// Sync converges once; call it on every Incident change and periodically.
func (e *Enforcer) Sync(ctx context.Context) (SyncResult, error) {
	var res SyncResult
	var list v1alpha1.IncidentList
	if err := e.Client.List(ctx, &list); err != nil {
		return res, fmt.Errorf("list incidents: %w", err)
	}
	want := map[string]wanted{}
	isolating := map[string][]*v1alpha1.Incident{}
	reverted := map[string][]*v1alpha1.Incident{}
	var errs []error
	for i := range list.Items {
		inc := &list.Items[i]
		done := responders.NodeResults(inc)
		for _, st := range inc.Status.Steps {
			key := responders.StepKey(st.Playbook, st.Name)
			if _, ok := done[key]; ok || inc.Spec.Subject.Node != e.NodeName || st.Phase != v1alpha1.StepRunning || st.Undo[responders.UndoNode] != "delegated" {
				continue
			}
			r := e.delegated(ctx, inc, st)
			if err := e.report(ctx, inc, key, r); err != nil {
				errs = append(errs, err)
				continue
			}
			res.Delegated = append(res.Delegated, key)
		}
		for _, st := range inc.Status.Steps {
			uid := st.Undo["podUID"]
			if st.Action != v1alpha1.ActionIsolate || uid == "" || st.Undo["kernel"] == "" {
				continue
			}
			switch st.Phase {
			case v1alpha1.StepRunning, v1alpha1.StepSucceeded:
				isolating[uid] = append(isolating[uid], inc)
			case v1alpha1.StepReverted:
				reverted[uid] = append(reverted[uid], inc)
			}
		}
	}
	// What to isolate is what the NetworkPolicies select: pods on this node
	// labelled riposte.dev/isolate=<their uid>, so both layers always agree
	// (a revert removes the label; deleting the Incident keeps both).
	var pods corev1.PodList
	if err := e.Client.List(ctx, &pods, client.HasLabels{responders.IsolateLabel}); err != nil {
		return res, fmt.Errorf("list isolated pods: %w", err)
	}
	for _, p := range pods.Items {
		uid := string(p.UID)
		if p.Spec.NodeName != e.NodeName || p.Labels[responders.IsolateLabel] != uid {
			continue
		}
		peers, err := responders.ParsePeers(p.Annotations[responders.AllowAnnotation])
		if err != nil {
			errs = append(errs, fmt.Errorf("pod %s/%s: %w", p.Namespace, p.Name, err))
			continue
		}
		want[uid] = wanted{peers: peers, incs: isolating[uid]}
	}
	for _, uid := range sortedKeys(want) {
		w := want[uid]
		if e.Local.Isolated(uid) {
			// A deleted pod leaves its pins behind; drop them with it.
			if _, err := PodCgroup(e.Local.root(), uid); errors.Is(err, ErrNotFound) {
				errs = append(errs, e.Local.ReleasePod(ctx, uid))
				res.Released = append(res.Released, uid)
				continue
			}
			// An Incident whose isolate step came after the attach (another
			// rule matched the same pod) records it too.
			for _, inc := range w.incs {
				if strings.HasPrefix(inc.Annotations[KernelAnnotation], "node "+e.NodeName+" attached: ") {
					continue
				}
				desc, err := e.Local.IsolatePod(ctx, uid, w.peers) // a no-op that describes the attach
				if err != nil {
					errs = append(errs, err)
					break
				}
				errs = append(errs, e.annotate(ctx, inc, "attached: "+desc))
			}
			continue
		}
		desc, err := e.Local.IsolatePod(ctx, uid, w.peers)
		if errors.Is(err, ErrNotFound) {
			res.Absent = append(res.Absent, uid)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Attached = append(res.Attached, uid)
		for _, inc := range w.incs {
			errs = append(errs, e.annotate(ctx, inc, "attached: "+desc))
		}
	}
	for _, uid := range e.Local.isolatedPods() {
		if _, ok := want[uid]; ok {
			continue
		}
		if err := e.Local.ReleasePod(ctx, uid); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Released = append(res.Released, uid)
		for _, inc := range reverted[uid] {
			errs = append(errs, e.annotate(ctx, inc, "released"))
		}
	}
	return res, errors.Join(errs...)
}

func (e *Enforcer) annotate(ctx context.Context, inc *v1alpha1.Incident, what string) error {
	value := fmt.Sprintf("node %s %s at %s", e.NodeName, what, time.Now().UTC().Format(time.RFC3339))
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{KernelAnnotation: value}}})
	if err := e.Client.Patch(ctx, inc.DeepCopy(), client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("annotate incident %s/%s: %w", inc.Namespace, inc.Name, err)
	}
	return nil
}

// isolatedPods lists the pod UIDs this Local holds or finds pinned.
func (l *Local) isolatedPods() []string {
	l.mu.Lock()
	set := map[string]bool{}
	for uid := range l.links {
		set[uid] = true
	}
	l.mu.Unlock()
	if l.PinDir != "" {
		ents, _ := os.ReadDir(l.PinDir)
		for _, e := range ents {
			if uid, ok := strings.CutPrefix(e.Name(), "isolate-"); ok {
				if uid, ok = strings.CutSuffix(uid, "-egress"); ok {
					set[uid] = true
				}
			}
		}
	}
	out := make([]string, 0, len(set))
	for uid := range set {
		out = append(out, uid)
	}
	sort.Strings(out)
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
