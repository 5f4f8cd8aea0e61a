package responders

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/evidence"
)

// EvidenceStore keeps evidence bundles (evidence.Dir on a node folder or PVC).
type EvidenceStore interface {
	Write(ctx context.Context, id string, files []evidence.File, now time.Time) (evidence.Sealed, error)
}

// LogReader reads container logs through the API server (which asks the kubelet).
type LogReader interface {
	Logs(ctx context.Context, namespace, pod, container string, previous bool, lines int64) ([]byte, error)
}

// ClientsetLogs reads logs with a client-go clientset.
type ClientsetLogs struct{ Clientset kubernetes.Interface }

// Logs implements LogReader.
func (l ClientsetLogs) Logs(ctx context.Context, ns, pod, container string, previous bool, lines int64) ([]byte, error) {
	return l.Clientset.CoreV1().Pods(ns).GetLogs(pod, &corev1.PodLogOptions{Container: container, Previous: previous, TailLines: &lines, Timestamps: true}).DoRaw(ctx)
}

// Capture writes the API-side evidence of the subject pod — manifest, owner
// chain, Events, logs (current and previous), the Incident and its sample
// events — into an evidence bundle, before the pod can disappear. Secrets and
// environment values are redacted unless the step opts in.
type Capture struct {
	// Reader should bypass caches (a manager's APIReader): Events are listed by
	// field selector and evidence must be what the API server holds now.
	Reader client.Reader
	Logs   LogReader
	Store  EvidenceStore
	// Node adds the node-side evidence when the capture runs on the pod's node.
	Node Node
}

func toYAML(obj any, keepSecrets bool) ([]byte, error) {
	var m map[string]any
	if u, ok := obj.(*unstructured.Unstructured); ok {
		m = u.DeepCopy().Object
	} else {
		var err error
		if m, err = runtime.DefaultUnstructuredConverter.ToUnstructured(obj); err != nil {
			return nil, err
		}
	}
	if !keepSecrets {
		evidence.Redact(m)
	}
	return yaml.Marshal(m)
}

// Plan implements Action.
func (a *Capture) Plan(ctx context.Context, req *Request) (string, error) {
	s := req.Subject()
	red := "secrets and env values redacted"
	if req.Step.Capture != nil && req.Step.Capture.IncludeSecrets {
		red = "secrets and env values kept"
	}
	return fmt.Sprintf("capture pod %s/%s manifest, owner chain, events and logs into an evidence bundle (%s)", s.Namespace, s.Pod, red), nil
}

// Do implements Action. A rerun replaces the bundle with a fresh capture.
func (a *Capture) Do(ctx context.Context, req *Request) (Result, error) {
	if req.Undo[UndoNode] == "delegated" && req.Undo["bundle"] != "" {
		return a.nodePart(req)
	}
	s := req.Subject()
	params := req.Step.Capture
	if params == nil {
		params = &v1alpha1.CaptureParams{}
	}
	var files []evidence.File
	var missing []string
	add := func(name string, data []byte) { files = append(files, evidence.File{Name: name, Data: data}) }

	inc, err := json.MarshalIndent(req.Incident, "", "  ")
	if err != nil {
		return Result{}, err
	}
	add("incident.json", inc)
	if len(req.Incident.Status.SampleEvents) > 0 {
		ev, _ := json.MarshalIndent(req.Incident.Status.SampleEvents, "", "  ")
		add("events/matched.json", ev)
	}
	// The flight recorder: what the container did before the first match.
	if len(req.Incident.Status.Timeline) > 0 {
		tl, _ := json.MarshalIndent(req.Incident.Status.Timeline, "", "  ")
		add("events/timeline.json", tl)
	}

	if s.Pod != "" {
		p, err := pod(ctx, a.Reader, s)
		if err != nil {
			missing = append(missing, err.Error())
		} else {
			y, err := toYAML(p, params.IncludeSecrets)
			if err != nil {
				return Result{}, fmt.Errorf("encode pod: %w", err)
			}
			add("pod.yaml", y)
			owners, errs := a.owners(ctx, p, params.IncludeSecrets)
			if len(owners) > 0 {
				add("owners.yaml", owners)
			}
			missing = append(missing, errs...)
			var evs corev1.EventList
			if err := a.Reader.List(ctx, &evs, client.InNamespace(p.Namespace), client.MatchingFields{"involvedObject.uid": string(p.UID)}); err != nil {
				missing = append(missing, fmt.Sprintf("events: %v", err))
			} else {
				y, _ := yaml.Marshal(evs.Items)
				add("kube-events.yaml", y)
			}
			missing = append(missing, a.logs(ctx, p, params, add)...)
		}
	}
	delegate := false
	var cut []string
	switch {
	case a.Node != nil && (s.PodUID != "" || req.Target().Host):
		ne, err := a.Node.Evidence(ctx, req.Target(), params.IncludeSecrets)
		if err != nil {
			missing = append(missing, fmt.Sprintf("node: %v", err))
		}
		files = append(files, ne.Files...)
		cut = ne.Cut
	case s.PodUID != "" && s.Node != "":
		// The agent on the pod's node writes a second bundle there.
		delegate = true
	default:
		missing = append(missing, "node: processes, open files, sockets and executables need the node agent")
	}
	if len(missing) > 0 {
		add("not-captured.txt", []byte(strings.Join(missing, "\n")+"\n"))
	}
	sealed, err := a.Store.Write(ctx, bundleID(req, ""), files, time.Now())
	if err != nil {
		return Result{}, fmt.Errorf("store evidence: %w", err)
	}
	at := metav1.NewTime(sealed.CapturedAt)
	msg := fmt.Sprintf("%d files at %s, manifest sha256 %s", sealed.Files, sealed.Location, sealed.ManifestSHA256)
	if len(missing) > 0 {
		msg += fmt.Sprintf(" (%d items not captured, see not-captured.txt)", len(missing))
	}
	msg += cutMessage(cut)
	res := Result{
		Message:  msg,
		Undo:     map[string]string{"bundle": sealed.Location},
		Evidence: &v1alpha1.Evidence{Location: sealed.Location, ManifestSHA256: sealed.ManifestSHA256, Files: int32(sealed.Files), CapturedAt: &at},
	}
	if delegate {
		res.Undo[UndoNode] = "delegated"
		res.Undo["includeSecrets"] = strconv.FormatBool(params.IncludeSecrets)
		res.Message = msg + "; " + waitingFor(req)
		return res, ErrWaiting
	}
	return res, nil
}

// nodePart finishes a capture whose API bundle is recorded and whose node
// bundle the agent writes.
func (a *Capture) nodePart(req *Request) (Result, error) {
	r, ok := nodeResult(req)
	switch {
	case !ok:
		return Result{Message: fmt.Sprintf("API bundle at %s; %s", req.Undo["bundle"], waitingFor(req))}, ErrWaiting
	case r.Error != "":
		return Result{}, fmt.Errorf("API bundle at %s; node %s: %s", req.Undo["bundle"], req.Subject().Node, r.Error)
	}
	msg := fmt.Sprintf("API bundle at %s; node %s: %s", req.Undo["bundle"], req.Subject().Node, r.Message)
	return Result{Message: msg, Evidence: r.Evidence}, nil
}

// DoOnNode implements NodeAction: the node bundle of a capture (processes,
// executables, changed files, flight recorder), written to this node's
// evidence store. The controller delegates it to the subject's node.
func (a *Capture) DoOnNode(ctx context.Context, req *Request) (Result, error) {
	if a.Node == nil || a.Store == nil {
		return Result{}, errors.New("no node agent or evidence store in this process")
	}
	includeSecrets := req.Step.Capture != nil && req.Step.Capture.IncludeSecrets
	ne, err := a.Node.Evidence(ctx, req.Target(), includeSecrets)
	if err != nil {
		evidence.Discard(ne.Files)
		return Result{}, err
	}
	sealed, err := a.Store.Write(ctx, bundleID(req, "-node"), ne.Files, time.Now())
	if err != nil {
		return Result{}, fmt.Errorf("store node evidence: %w", err)
	}
	at := metav1.NewTime(sealed.CapturedAt)
	return Result{
		Message:  fmt.Sprintf("%d files at %s, manifest sha256 %s", sealed.Files, sealed.Location, sealed.ManifestSHA256) + cutMessage(ne.Cut),
		Evidence: &v1alpha1.Evidence{Location: sealed.Location, ManifestSHA256: sealed.ManifestSHA256, Files: int32(sealed.Files), CapturedAt: &at},
	}, nil
}

// maxCutLines bounds the lines of cutMessage: a pod of many containers
// has a line or two for each; the bundle lists them all.
const maxCutLines = 4

// cutMessage puts what a capture's bounds left out into the step's message.
func cutMessage(cut []string) string {
	if len(cut) == 0 {
		return ""
	}
	if len(cut) > maxCutLines {
		cut = append(cut[:maxCutLines:maxCutLines], fmt.Sprintf("%d more in node/not-captured.txt", len(cut)-maxCutLines))
	}
	return "; cut by capture bounds: " + strings.Join(cut, "; ")
}

// bundleID names a step's evidence bundle: namespace/incident/playbook-step.
func bundleID(req *Request, suffix string) string {
	return fmt.Sprintf("%s/%s/%s%s", req.Incident.Namespace, req.Incident.Name, strings.ReplaceAll(req.Playbook+"-"+req.StepName, "/", "_"), suffix)
}

// owners walks the controller chain (Pod → ReplicaSet → Deployment, Job →
// CronJob, a static pod's Node) generically, so any owner kind is captured.
func (a *Capture) owners(ctx context.Context, p *corev1.Pod, keepSecrets bool) ([]byte, []string) {
	var docs []string
	var errs []string
	refs, ns := p.OwnerReferences, p.Namespace
	for depth := 0; depth < 5 && len(refs) > 0; depth++ {
		var ref *metav1.OwnerReference
		for i := range refs {
			if refs[i].Controller != nil && *refs[i].Controller {
				ref = &refs[i]
			}
		}
		if ref == nil {
			ref = &refs[0]
		}
		gv, err := schema.ParseGroupVersion(ref.APIVersion)
		if err != nil {
			errs = append(errs, fmt.Sprintf("owner %s %s: %v", ref.Kind, ref.Name, err))
			break
		}
		u := &unstructured.Unstructured{}
		u.SetGroupVersionKind(gv.WithKind(ref.Kind))
		key := client.ObjectKey{Namespace: ns, Name: ref.Name}
		if ref.Kind == "Node" {
			key.Namespace = ""
		}
		if err := a.Reader.Get(ctx, key, u); err != nil {
			errs = append(errs, fmt.Sprintf("owner %s %s: %v", ref.Kind, ref.Name, err))
			break
		}
		y, err := toYAML(u, keepSecrets)
		if err != nil {
			errs = append(errs, fmt.Sprintf("owner %s %s: %v", ref.Kind, ref.Name, err))
			break
		}
		docs = append(docs, string(y))
		refs = u.GetOwnerReferences()
	}
	if len(docs) == 0 {
		return nil, errs
	}
	return []byte(strings.Join(docs, "---\n")), errs
}

func (a *Capture) logs(ctx context.Context, p *corev1.Pod, params *v1alpha1.CaptureParams, add func(string, []byte)) []string {
	if a.Logs == nil {
		return []string{"logs: no log reader configured"}
	}
	lines := params.LogLines
	if lines == 0 {
		lines = 1000
	}
	var missing []string
	for _, c := range p.Spec.Containers {
		for _, prev := range []bool{false, true} {
			name := "logs/" + c.Name + ".log"
			if prev {
				name = "logs/" + c.Name + ".previous.log"
				if !restarted(p, c.Name) {
					continue
				}
			}
			b, err := a.Logs.Logs(ctx, p.Namespace, p.Name, c.Name, prev, lines)
			if err != nil {
				missing = append(missing, fmt.Sprintf("%s: %v", name, err))
				continue
			}
			add(name, b)
		}
	}
	return missing
}

func restarted(p *corev1.Pod, container string) bool {
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == container {
			return cs.RestartCount > 0
		}
	}
	return false
}
