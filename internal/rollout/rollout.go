package rollout

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/riposte-dev/riposte/api/v1alpha1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// leasePrefix starts the name of every agent's Lease.
const leasePrefix = "riposte-agent-"

// Defaults for Reporter.
const (
	DefaultRenew       = time.Minute
	DefaultMinInterval = 5 * time.Second
)

// LeaseName is the Lease of the agent on node.
func LeaseName(node string) string { return leasePrefix + node }

// Encode renders a loaded set as the annotation value: sorted uid=generation
// pairs joined by commas (about 45 bytes a rule).
func Encode(loaded map[types.UID]int64) string {
	parts := make([]string, 0, len(loaded))
	for uid, gen := range loaded {
		parts = append(parts, string(uid)+"="+strconv.FormatInt(gen, 10))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// Decode parses an annotation value; malformed pairs are skipped.
func Decode(s string) map[types.UID]int64 {
	out := map[types.UID]int64{}
	for _, p := range strings.Split(s, ",") {
		uid, g, ok := strings.Cut(p, "=")
		if !ok {
			continue
		}
		if gen, err := strconv.ParseInt(g, 10, 64); err == nil {
			out[types.UID(uid)] = gen
		}
	}
	return out
}

// Reporter is the agent's side: it publishes the loaded set in its Lease.
type Reporter struct {
	Client    client.Client
	Namespace string
	Node      string
	// Renew is how often the Lease is renewed when nothing changes.
	Renew time.Duration
	// MinInterval coalesces changes: at most one write per interval (the
	// first change after a quiet interval is written at once).
	MinInterval time.Duration
	Log         logr.Logger

	mu      sync.Mutex
	current string
	changed chan struct{}
}

// Set records the rules the agent has loaded now. It never blocks.
func (r *Reporter) Set(loaded map[types.UID]int64) {
	r.mu.Lock()
	r.current = Encode(loaded)
	if r.changed == nil {
		r.changed = make(chan struct{}, 1)
	}
	r.mu.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// Run writes the Lease on change (coalesced) and on renewal until ctx ends.
func (r *Reporter) Run(ctx context.Context) error {
	renew, minInterval := r.Renew, r.MinInterval
	if renew <= 0 {
		renew = DefaultRenew
	}
	if minInterval <= 0 {
		minInterval = DefaultMinInterval
	}
	r.mu.Lock()
	if r.changed == nil {
		r.changed = make(chan struct{}, 1)
	}
	changed := r.changed
	r.mu.Unlock()
	t := time.NewTicker(renew)
	defer t.Stop()
	var last time.Time
	for {
		last = time.Now()
		if err := r.Write(ctx, renew); err != nil && ctx.Err() == nil {
			// Retried at the next tick or change.
			r.Log.Error(err, "report loaded rules")
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-changed:
			// The first change after a quiet spell is written at once (a
			// rule's rollout shows in a second); changes closer together
			// than minInterval are coalesced into one write.
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(minInterval - time.Since(last)):
			}
		}
	}
}

// Write creates or updates the Lease with the current set now.
func (r *Reporter) Write(ctx context.Context, renew time.Duration) error {
	r.mu.Lock()
	value := r.current
	r.mu.Unlock()
	now := metav1.NewMicroTime(time.Now())
	secs := int32(3 * renew / time.Second)
	lease := &coordinationv1.Lease{}
	key := client.ObjectKey{Namespace: r.Namespace, Name: LeaseName(r.Node)}
	err := r.Client.Get(ctx, key, lease)
	if apierrors.IsNotFound(err) {
		lease = &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace,
				Labels: map[string]string{v1alpha1.AgentLabel: "true"}, Annotations: map[string]string{v1alpha1.LoadedRulesAnnotation: value}},
			Spec: coordinationv1.LeaseSpec{HolderIdentity: &r.Node, LeaseDurationSeconds: &secs, RenewTime: &now},
		}
		if err := r.Client.Create(ctx, lease); err != nil {
			return fmt.Errorf("create lease %s: %w", key, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("get lease %s: %w", key, err)
	}
	if lease.Annotations == nil {
		lease.Annotations = map[string]string{}
	}
	lease.Annotations[v1alpha1.LoadedRulesAnnotation] = value
	if lease.Labels == nil {
		lease.Labels = map[string]string{}
	}
	lease.Labels[v1alpha1.AgentLabel] = "true"
	lease.Spec.HolderIdentity, lease.Spec.LeaseDurationSeconds, lease.Spec.RenewTime = &r.Node, &secs, &now
	if err := r.Client.Update(ctx, lease); err != nil {
		return fmt.Errorf("update lease %s: %w", key, err)
	}
	return nil
}

// Tracker is the controller's side: it counts the agents that loaded a
// rule's generation, reading Leases through a (cached) reader.
type Tracker struct {
	Reader    client.Reader
	Namespace string
	Now       func() time.Time
}

// Nodes returns how many live agents loaded generation (or newer) of the
// rule uid, and how many live agents there are.
func (t *Tracker) Nodes(ctx context.Context, uid types.UID, generation int64) (loaded, total int, err error) {
	var leases coordinationv1.LeaseList
	if err := t.Reader.List(ctx, &leases, client.InNamespace(t.Namespace), client.MatchingLabels{v1alpha1.AgentLabel: "true"}); err != nil {
		return 0, 0, fmt.Errorf("list agent leases: %w", err)
	}
	now := time.Now()
	if t.Now != nil {
		now = t.Now()
	}
	for _, l := range leases.Items {
		if l.Spec.RenewTime == nil || l.Spec.LeaseDurationSeconds == nil ||
			now.After(l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds)*time.Second)) {
			continue // an agent that stopped reporting is not a node to wait for
		}
		total++
		if g, ok := Decode(l.Annotations[v1alpha1.LoadedRulesAnnotation])[uid]; ok && g >= generation {
			loaded++
		}
	}
	return loaded, total, nil
}
