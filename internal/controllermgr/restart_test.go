package controllermgr_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// receiver counts the deliveries of each notify step; the first delivery to
// /slow is held until the controller that sent it goes away, the later ones
// are answered at once.
type receiver struct {
	mu          sync.Mutex
	got         map[string]int
	slowStarted chan struct{}
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	// Read to the end: only then does the server notice the client hang up
	// (and end the request's context).
	_, _ = io.Copy(io.Discard, req.Body)
	r.mu.Lock()
	r.got[req.URL.Path]++
	first := req.URL.Path == "/slow" && r.got["/slow"] == 1
	r.mu.Unlock()
	if first {
		close(r.slowStarted)
		<-req.Context().Done() // the sender hung up: the controller stopped
	}
}

func (r *receiver) count(path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[path]
}

// The controller is stopped in the middle of a playbook step and a new one
// started against the same API server: the step that had finished is not run
// again, the one in flight (left Running in the Incident's status) is run
// again by the new controller, and the step after it runs once. Each notify
// step posts to a loopback receiver that counts deliveries.
func TestControllerRestartMidPlaybookRepeatsNoFinishedStep(t *testing.T) {
	ctx := context.Background()
	const ns = "e2e-restart"
	if err := shared.EnsureServiceAccount(ctx, ns, "default"); err != nil {
		t.Fatal(err)
	}
	recv := &receiver{got: map[string]int{}, slowStarted: make(chan struct{})}
	srv := httptest.NewServer(recv)
	defer srv.Close()

	notify := func(name, path string) v1alpha1.Step {
		return v1alpha1.Step{Name: name, Action: v1alpha1.ActionNotify, Notify: &v1alpha1.NotifyParams{URL: srv.URL + path}}
	}
	pb := &v1alpha1.ClusterResponsePlaybook{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-restart-notify"},
		Spec: v1alpha1.ResponsePlaybookSpec{Steps: []v1alpha1.Step{
			notify("first", "/first"), notify("slow", "/slow"), notify("last", "/last"),
		}},
	}
	rule := &v1alpha1.ClusterDetectionRule{
		ObjectMeta: metav1.ObjectMeta{Name: "e2e-restart-victim"},
		Spec: v1alpha1.DetectionRuleSpec{
			Source:    "object",
			Severity:  "high",
			Condition: `event.kind == "object" && event.op == "create" && object.kind == "Pod" && pod.namespace == "` + ns + `" && pod.labels["app"] == "restart-victim"`,
			Output:    `"restart victim " + pod.name`,
			Playbooks: []string{pb.Name},
		},
	}
	for _, o := range []client.Object{pb, rule} {
		if err := k8s.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = k8s.Delete(ctx, o) }()
	}
	waitReady(t, ctx, rule)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "victim", Namespace: ns, Labels: map[string]string{"app": "restart-victim"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = k8s.Delete(ctx, pod) }()

	select {
	case <-recv.slowStarted:
	case <-time.After(60 * time.Second):
		t.Fatalf("the slow step was not reached in 60 s (%d deliveries to /first)", recv.count("/first"))
	}
	incident := func() (v1alpha1.Incident, error) {
		var list v1alpha1.IncidentList
		if err := k8s.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{v1alpha1.RuleLabel: rule.Name}); err != nil {
			return v1alpha1.Incident{}, err
		}
		if len(list.Items) != 1 {
			return v1alpha1.Incident{}, fmt.Errorf("%d incidents, want 1", len(list.Items))
		}
		return list.Items[0], nil
	}
	// The status says what the killed controller had done: the first step
	// finished, the slow one running (persisted before it was sent).
	var before v1alpha1.Incident
	eventually(t, 30*time.Second, "first step Succeeded and slow step Running in the status", func() (err error) {
		if before, err = incident(); err != nil {
			return err
		}
		st := before.Status.Steps
		if len(st) < 2 || st[0].Phase != v1alpha1.StepSucceeded || st[1].Phase != v1alpha1.StepRunning {
			return fmt.Errorf("steps %+v", st)
		}
		return nil
	})

	if err := env.RestartController(); err != nil {
		t.Fatalf("restart the controller: %v", err)
	}

	var after v1alpha1.Incident
	eventually(t, 60*time.Second, "every step Succeeded after the restart", func() (err error) {
		if after, err = incident(); err != nil {
			return err
		}
		if len(after.Status.Steps) != 3 {
			return fmt.Errorf("steps %+v", after.Status.Steps)
		}
		for _, st := range after.Status.Steps {
			if st.Phase != v1alpha1.StepSucceeded {
				return fmt.Errorf("step %s: %s %s", st.Name, st.Phase, st.Message)
			}
		}
		return nil
	})
	got := map[string]int{"/first": recv.count("/first"), "/slow": recv.count("/slow"), "/last": recv.count("/last")}
	t.Logf("deliveries across the restart: %v", got)
	if got["/first"] != 1 {
		t.Errorf("the finished step was delivered %d times, want 1", got["/first"])
	}
	if got["/slow"] != 2 {
		t.Errorf("the step in flight was delivered %d times, want 2 (the interrupted one and the new controller's)", got["/slow"])
	}
	if got["/last"] != 1 {
		t.Errorf("the step after the restart was delivered %d times, want 1", got["/last"])
	}
	if a, b := after.Status.Steps[0], before.Status.Steps[0]; !a.FinishedAt.Equal(b.FinishedAt) || !a.StartedAt.Equal(b.StartedAt) {
		t.Errorf("the finished step's record changed across the restart: %+v, was %+v", a, b)
	}
	if a, b := after.Status.Steps[1], before.Status.Steps[1]; !a.StartedAt.Equal(b.StartedAt) {
		t.Errorf("the step in flight restarted its clock: started %v, was %v", a.StartedAt, b.StartedAt)
	}
}
