package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/responders"
)

// Want is a pod this node must keep isolated in the kernel: the peers it may
// still reach and the Incidents whose isolate step asks for it (several
// rules may match one pod; each Incident records the kernel layer).
type Want struct {
	Peers     []responders.Peer
	Incidents []*v1alpha1.Incident
}

// Wanted reads the desired kernel isolations of node from its Incidents:
// every pod whose isolate step, in an Incident riposte authorized, is
// Running or Succeeded with its kernel layer delegated here, with the peers
// the controller recorded in the step. The desired state lives in the
// Incident, not in the pod's labels, so removing the pod's isolate label
// does not lift the kernel layer, and neither does deleting the Incident
// (v1alpha1.IsolationFinalizer). Pods whose isolation a step reverted come
// back in reverted, for reporting the release.
func Wanted(incs []v1alpha1.Incident, node string) (want map[string]Want, reverted map[string][]*v1alpha1.Incident, errs []error) {
	want, reverted = map[string]Want{}, map[string][]*v1alpha1.Incident{}
	for i := range incs {
		inc := &incs[i]
		// Being deleted bumps the generation past the authorized one; the
		// controller's finalizer says the isolation holds until reverted.
		deleting := !inc.DeletionTimestamp.IsZero() && controllerutil.ContainsFinalizer(inc, v1alpha1.IsolationFinalizer)
		if inc.Labels[v1alpha1.NodeLabel] != node || !(responders.Authorized(inc) || deleting) {
			continue
		}
		for _, st := range inc.Status.Steps {
			uid := st.Undo["podUID"]
			if st.Action != v1alpha1.ActionIsolate || uid == "" || st.Undo["kernel"] != "delegated" || st.Undo["nodeName"] != node {
				continue
			}
			switch st.Phase {
			case v1alpha1.StepRunning, v1alpha1.StepSucceeded:
				peers, err := responders.ParsePeers(st.Undo["allow"])
				if err != nil {
					errs = append(errs, fmt.Errorf("incident %s/%s: %w", inc.Namespace, inc.Name, err))
					continue
				}
				w := want[uid]
				if w.Incidents == nil {
					w.Peers = peers
				}
				w.Incidents = append(w.Incidents, inc)
				want[uid] = w
			case v1alpha1.StepReverted:
				reverted[uid] = append(reverted[uid], inc)
			}
		}
	}
	return want, reverted, errs
}

// Isolation converges the kernel isolations of the node it runs on.
type Isolation struct {
	Local *Local
	// Client annotates Incidents with what the kernel layer did.
	Client client.Client
	Node   string

	// reported remembers the attaches this Isolation wrote on Incidents
	// (incident uid/pod uid): a cached Incident may not show them yet.
	reported map[string]bool
}

// Result says what one Converge changed, by pod UID.
type Result struct {
	Attached, Released []string
	// Absent are wanted pods without a cgroup here (gone, or not yet started).
	Absent []string
}

// Converge attaches what want lacks and releases what it no longer holds,
// and records it on the Incidents concerned. Being level-triggered it is
// restart-safe without state of its own (pins survive the agent).
func (iso *Isolation) Converge(ctx context.Context, want map[string]Want, reverted map[string][]*v1alpha1.Incident) (Result, error) {
	var res Result
	var errs []error
	l := iso.Local
	uids := make([]string, 0, len(want))
	for uid := range want {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	for _, uid := range uids {
		w := want[uid]
		if l.Isolated(uid) {
			if !l.PodOnNode(uid) {
				// A deleted pod leaves its pins behind; drop them with it.
				errs = append(errs, l.ReleasePod(ctx, uid))
				res.Released = append(res.Released, uid)
				continue
			}
			// An Incident whose isolate step came after the attach (another
			// rule matched the same pod) records it too.
			for _, inc := range w.Incidents {
				if iso.reported[string(inc.UID)+"/"+uid] || strings.HasPrefix(inc.Annotations[v1alpha1.KernelIsolationAnnotation], "node "+iso.Node+" attached: ") {
					continue
				}
				desc, err := l.IsolatePod(ctx, uid, w.Peers) // a no-op that describes the attach
				if err != nil {
					errs = append(errs, err)
					break
				}
				errs = append(errs, iso.annotate(ctx, inc, "attached: "+desc))
			}
			continue
		}
		desc, err := l.IsolatePod(ctx, uid, w.Peers)
		if errors.Is(err, host.ErrNoCgroup) {
			res.Absent = append(res.Absent, uid)
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		res.Attached = append(res.Attached, uid)
		for _, inc := range w.Incidents {
			errs = append(errs, iso.annotate(ctx, inc, "attached: "+desc))
		}
	}
	held := l.IsolatedPods()
	sort.Strings(held)
	for _, uid := range held {
		if _, ok := want[uid]; ok {
			continue
		}
		if err := l.ReleasePod(ctx, uid); err != nil {
			errs = append(errs, err)
			continue
		}
		res.Released = append(res.Released, uid)
		for _, inc := range reverted[uid] {
			errs = append(errs, iso.annotate(ctx, inc, "released"))
		}
	}
	return res, errors.Join(errs...)
}

func (iso *Isolation) annotate(ctx context.Context, inc *v1alpha1.Incident, what string) error {
	if iso.reported == nil {
		iso.reported = map[string]bool{}
	}
	if uid := isolatedPod(inc, iso.Node); uid != "" {
		iso.reported[string(inc.UID)+"/"+uid] = strings.HasPrefix(what, "attached: ")
	}
	value := fmt.Sprintf("node %s %s at %s", iso.Node, what, time.Now().UTC().Format(time.RFC3339))
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{v1alpha1.KernelIsolationAnnotation: value}}})
	if err := iso.Client.Patch(ctx, inc.DeepCopy(), client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("annotate incident %s/%s: %w", inc.Namespace, inc.Name, err)
	}
	return nil
}

// isolatedPod is the pod uid inc's delegated isolate step names for node.
func isolatedPod(inc *v1alpha1.Incident, node string) string {
	for _, st := range inc.Status.Steps {
		if st.Action == v1alpha1.ActionIsolate && st.Undo["nodeName"] == node {
			return st.Undo["podUID"]
		}
	}
	return ""
}

// Report adds one delegated step's result to the Incident's node-results
// annotation; the optimistic lock keeps concurrent reports (and other
// annotations) intact. reader must read around any cache: a stale copy
// would lose the lock every time.
func Report(ctx context.Context, reader client.Reader, c client.Client, inc *v1alpha1.Incident, key string, r responders.NodeResult) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var fresh v1alpha1.Incident
		if err := reader.Get(ctx, client.ObjectKeyFromObject(inc), &fresh); err != nil {
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
		fresh.Annotations[v1alpha1.NodeResultsAnnotation] = string(data)
		if err := c.Patch(ctx, &fresh, base); err != nil {
			return fmt.Errorf("report %s on incident %s/%s: %w", key, inc.Namespace, inc.Name, err)
		}
		return nil
	})
}
