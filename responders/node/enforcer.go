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

	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/responders"
)

// KernelAnnotation is written on an Incident by the agent that attached (or
// released) its pod's kernel isolation, so the Incident records both layers.
const KernelAnnotation = "riposte.dev/kernel-isolation"

// Enforcer runs in the agent: it makes the kernel isolations on its node match
// the Incidents. A pod on this node is isolated while some Incident has an
// isolate step Running or Succeeded for it, and released once none has
// (Reverted, or the Incident deleted). Being level-triggered it is restart-safe
// without state of its own, and the controller never has to reach the node.
type Enforcer struct {
	// Client reads Incidents and annotates them (the agent's cached client).
	Client   client.Client
	Local    *Local
	NodeName string
}

// SyncResult says what one Sync changed, by pod UID.
type SyncResult struct {
	Attached, Released []string
	// Absent are wanted pods without a cgroup here (gone, or not yet started).
	Absent []string
}

type wanted struct {
	peers []responders.Peer
	inc   *v1alpha1.Incident
}

// Sync converges once; call it on every Incident change and periodically.
func (e *Enforcer) Sync(ctx context.Context) (SyncResult, error) {
	var res SyncResult
	var list v1alpha1.IncidentList
	if err := e.Client.List(ctx, &list); err != nil {
		return res, fmt.Errorf("list incidents: %w", err)
	}
	want := map[string]wanted{}
	reverted := map[string]*v1alpha1.Incident{}
	var errs []error
	for i := range list.Items {
		inc := &list.Items[i]
		if inc.Spec.Subject.Node != e.NodeName {
			continue
		}
		for _, st := range inc.Status.Steps {
			uid := st.Undo["podUID"]
			if st.Action != v1alpha1.ActionIsolate || uid == "" || st.Undo["kernel"] == "" {
				continue
			}
			switch st.Phase {
			case v1alpha1.StepRunning, v1alpha1.StepSucceeded:
				peers, err := responders.ParsePeers(st.Undo["allow"])
				if err != nil {
					errs = append(errs, fmt.Errorf("incident %s/%s: %w", inc.Namespace, inc.Name, err))
					continue
				}
				want[uid] = wanted{peers: peers, inc: inc}
			case v1alpha1.StepReverted:
				reverted[uid] = inc
			}
		}
	}
	for _, uid := range sortedKeys(want) {
		w := want[uid]
		if e.Local.Isolated(uid) {
			// A deleted pod leaves its pins behind; drop them with it.
			if _, err := PodCgroup(e.Local.root(), uid); errors.Is(err, ErrNotFound) {
				errs = append(errs, e.Local.ReleasePod(ctx, uid))
				res.Released = append(res.Released, uid)
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
		errs = append(errs, e.annotate(ctx, w.inc, "attached: "+desc))
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
		if inc := reverted[uid]; inc != nil {
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
