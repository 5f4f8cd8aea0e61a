package responders

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Label sets the step's Values as labels (or, with Annotations, annotations) on
// the subject's pod, recording previous values for revert.
type Label struct {
	Client      client.Client
	Annotations bool
}

// Undo keys: "had.<key>" holds a previous value, "new.<key>" marks a key the
// pod did not have (values may be anything, so no marker value is safe).
const (
	undoHad = "had."
	undoNew = "new."
)

func (a *Label) field() string {
	if a.Annotations {
		return "annotations"
	}
	return "labels"
}

func describe(values map[string]string) string {
	var s []string
	for _, k := range slices.Sorted(maps.Keys(values)) {
		s = append(s, k+"="+values[k])
	}
	return strings.Join(s, ",")
}

// Plan implements Action.
func (a *Label) Plan(ctx context.Context, req *Request) (string, error) {
	s := req.Subject()
	return fmt.Sprintf("set %s %s on pod %s/%s", a.field(), describe(req.Step.Values), s.Namespace, s.Pod), nil
}

// Prepare records the previous values.
func (a *Label) Prepare(ctx context.Context, req *Request) (map[string]string, error) {
	if len(req.Step.Values) == 0 {
		return nil, refused("the step has no values to set")
	}
	p, err := pod(ctx, a.Client, req.Subject())
	if err != nil {
		return nil, err
	}
	have := p.Labels
	if a.Annotations {
		have = p.Annotations
	}
	undo := map[string]string{}
	for k := range req.Step.Values {
		if v, ok := have[k]; ok {
			undo[undoHad+k] = v
		} else {
			undo[undoNew+k] = ""
		}
	}
	return undo, nil
}

// Do implements Action.
func (a *Label) Do(ctx context.Context, req *Request) (Result, error) {
	s := req.Subject()
	values := map[string]any{}
	for k, v := range req.Step.Values {
		values[k] = v
	}
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Pod}}
	if err := mergePatch(ctx, a.Client, p, metaPatch(a.field(), values)); err != nil {
		return Result{}, fmt.Errorf("set %s on pod %s/%s: %w", a.field(), s.Namespace, s.Pod, err)
	}
	return Result{Message: fmt.Sprintf("set %s %s on pod %s/%s", a.field(), describe(req.Step.Values), s.Namespace, s.Pod)}, nil
}

// Revert implements Reverter.
func (a *Label) Revert(ctx context.Context, req *Request) (string, error) {
	s := req.Subject()
	values := map[string]any{}
	var keys []string
	for k, v := range req.Undo {
		switch {
		case strings.HasPrefix(k, undoHad):
			values[strings.TrimPrefix(k, undoHad)] = v
		case strings.HasPrefix(k, undoNew):
			values[strings.TrimPrefix(k, undoNew)] = nil
		default:
			continue
		}
		keys = append(keys, k[4:])
	}
	slices.Sort(keys)
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Pod}}
	if err := ignoreNotFound(mergePatch(ctx, a.Client, p, metaPatch(a.field(), values))); err != nil {
		return "", fmt.Errorf("restore %s on pod %s/%s: %w", a.field(), s.Namespace, s.Pod, err)
	}
	return fmt.Sprintf("restored %s %s", a.field(), strings.Join(keys, ",")), nil
}
