package gitops

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/klog/v2/textlogger"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/yaml"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/config/argocd"
	"github.com/riposte-dev/riposte/internal/rollout"
	"github.com/riposte-dev/riposte/test/stack"
)

var updateArgoCD = flag.Bool("update-argocd", false,
	"write the live objects the Argo CD health checks ran on to config/argocd/health/riposte.dev/<Kind>/testdata/flux-*.yaml")

// The rules of the team repository (testdata/commits).
const (
	canaryRule   = "canary-secret-read"      // audit: runs in the controller
	shellRule    = "team-shell-in-container" // process: runs on the agents
	playbookName = "notify-security"
)

// latencyCommits is how many more commits change the shell rule after the
// scripted four, so commit-to-live is timed over enough commits.
const latencyCommits = 8

// TestRulePullRequestsGoLiveThroughFlux runs the GitOps loop end to end:
// Flux's own controllers sync a team's rules repository into the real
// control plane, riposte's controller and webhook judge every revision, and
// the riposte agent loads the node rules.
//
//  1. A valid audit rule, process rule and playbook go live; the
//     Kustomization turns Ready only after every rule is Ready (the process
//     rule: loaded on the node); reading a canary Secret makes an Incident
//     and the playbook notifies.
//  2. The audit rule's CEL broken: Flux's server-side dry run is refused by
//     the webhook, the Kustomization is not Ready and names the rule and the
//     CEL line:column, and the live version still makes an Incident.
//  3. A rule whose embedded test fails: refused the same way, naming the
//     test.
//  4. The fix: Ready again, the new generation loaded on the node.
//
// Then a reconcile request on a rule is answered in its status, and more
// commits time push → rule live (docs/benchmarks.md).
func TestRulePullRequestsGoLiveThroughFlux(t *testing.T) {
	begin := time.Now()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	hook := newNotifySink(t)
	s := startStack(ctx, t, root)
	c := s.Client
	startFlux(ctx, t, s)
	// The shipped config/flux as it is, all of it, against Flux's CRDs.
	if out, err := s.Cluster.Kubectl(ctx, "apply", "--dry-run=server", "-k", filepath.Join(root, "config", "flux")).CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply --dry-run=server -k config/flux: %v\n%s", err, out)
	}
	startAgent(ctx, t, s)
	repo := newGitRepo(t)
	t.Logf("control plane, riposte controller, Flux and the agent up after %s", time.Since(begin).Round(time.Millisecond))
	shots := &snapshots{}

	// ---- commit 1: a valid rule and playbook go live.
	rev1, pushed := repo.commit(t, "Add a canary Secret rule, a shell rule and the security team's playbook", fixture(t, "1-valid", hook.URL()))
	applyFluxConfig(ctx, t, s, repo.URL)
	live1 := observeRollout(ctx, t, s, rev1, pushed, 1, shots)
	for _, name := range []string{canaryRule, shellRule} {
		r := getRule(ctx, t, c, name)
		ready := apimeta.FindStatusCondition(r.Status.Conditions, v1alpha1.ReadyCondition)
		t.Logf("%s: Ready %s %q, nodes %q", name, ready.Reason, ready.Message, r.Status.Nodes)
		shots.add("ready-"+name, r)
	}
	var pb v1alpha1.ClusterResponsePlaybook
	if err := c.Get(ctx, client.ObjectKey{Name: playbookName}, &pb); err != nil {
		t.Fatal(err)
	}
	shots.add("ready-"+playbookName, &pb)

	ns := "team-a"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	first := readCanary(ctx, t, s, ns, "canary-db")
	waitFor(ctx, t, "the playbook notifies about the first Incident", func() (bool, string) {
		return hook.received("canary-db"), fmt.Sprintf("%d notifications", hook.count())
	})
	waitFor(ctx, t, "the first Incident's response is recorded", func() (bool, string) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(first), first); err != nil {
			return false, err.Error()
		}
		return first.Status.Phase == "Responded", fmt.Sprintf("phase %q, steps %+v", first.Status.Phase, first.Status.Steps)
	})
	shots.add("responded", first)

	// ---- commit 2: a typo in the canary rule's CEL.
	rev2, _ := repo.commit(t, "canary rule: match on the object's name", fixture(t, "2-broken-cel", hook.URL()))
	requestSync(ctx, t, s)
	msg := waitRefused(ctx, t, s, rev2)
	for _, want := range []string{`ClusterDetectionRule/` + canaryRule, `admission webhook "rules.riposte.dev" denied the request`, `CompileFailed: compile rule "` + canaryRule + `": condition 3:16: undefined field 'nme'`} {
		if !strings.Contains(msg, want) {
			t.Errorf("the Kustomization's message does not name %q:\n%s", want, msg)
		}
	}
	// The live version of the rule keeps detecting while the broken
	// revision is what Flux has from Git.
	second := readCanary(ctx, t, s, ns, "canary-payments")
	if second.Name == first.Name {
		t.Errorf("the second read folded into the first Incident %s", first.Name)
	}
	k := getFlux(ctx, t, c, kustomizationGVK, "riposte-rules")
	if r := getRule(ctx, t, c, canaryRule); r.Generation != 1 || !isReady(r) {
		t.Errorf("the canary rule changed while its broken revision was refused: generation %d, conditions %+v", r.Generation, r.Status.Conditions)
	}
	if !strings.HasSuffix(k.Status.LastAttemptedRevision, rev2) || strings.HasSuffix(k.Status.LastAppliedRevision, rev2) || isTrue(k.Status.Conditions, "Ready") {
		t.Errorf("when the live rule fired again the Kustomization was not holding the broken revision: attempted %s, applied %s, %+v",
			k.Status.LastAttemptedRevision, k.Status.LastAppliedRevision, k.Status.Conditions)
	}

	// ---- commit 3: the typo fixed, and a shell rule change whose own test fails.
	rev3, _ := repo.commit(t, "canary rule: fix the field name; shell rule: add a zsh test", fixture(t, "3-failing-test", hook.URL()))
	requestSync(ctx, t, s)
	msg = waitRefused(ctx, t, s, rev3)
	for _, want := range []string{`ClusterDetectionRule/` + shellRule, `TestFailed: rule "` + shellRule + `"`, `test "zsh in a container fires" failed`} {
		if !strings.Contains(msg, want) {
			t.Errorf("the Kustomization's message does not name %q:\n%s", want, msg)
		}
	}
	if r := getRule(ctx, t, c, shellRule); r.Generation != 1 || r.Status.Nodes != "1/1" {
		t.Errorf("the shell rule changed while its failing revision was refused: generation %d, nodes %q", r.Generation, r.Status.Nodes)
	}

	// ---- commit 4: the fix goes live and is loaded on the node.
	rev4, pushed := repo.commit(t, "shell rule: zsh is a shell too", fixture(t, "4-fix", hook.URL()))
	requestSync(ctx, t, s)
	live4 := observeRollout(ctx, t, s, rev4, pushed, 2, shots)
	r := getRule(ctx, t, c, shellRule)
	if r.Status.ObservedGeneration != 2 || r.Status.Nodes != "1/1" {
		t.Errorf("after the fix the shell rule is at observed generation %d with nodes %q, want 2 and 1/1", r.Status.ObservedGeneration, r.Status.Nodes)
	}
	if got := rollout.Decode(getLease(ctx, t, c).Annotations[v1alpha1.LoadedRulesAnnotation])[r.UID]; got != 2 {
		t.Errorf("the agent's Lease reports generation %d of the shell rule, want 2", got)
	}

	// ---- a reconcile request on a rule is answered in its status.
	requested := time.Now().Format(time.RFC3339Nano)
	if out, err := s.Cluster.Kubectl(ctx, "annotate", "--overwrite", "clusterdetectionrule", shellRule, "reconcile.fluxcd.io/requestedAt="+requested).CombinedOutput(); err != nil {
		t.Fatalf("kubectl annotate: %v\n%s", err, out)
	}
	waitFor(ctx, t, "the reconcile request is answered in status.lastHandledReconcileAt", func() (bool, string) {
		r := getRule(ctx, t, c, shellRule)
		return r.Status.LastHandledReconcileAt == requested, fmt.Sprintf("lastHandledReconcileAt %q", r.Status.LastHandledReconcileAt)
	})

	// ---- more commits, each a change of the shell rule, timed to live.
	lives := []stages{live1, live4}
	shells := []string{"ash", "dash", "ksh", "mksh", "fish", "tcsh", "csh", "yash"}[:latencyCommits]
	shell := string(fixture(t, "4-fix", hook.URL())["rules/shell.yaml"])
	names := `"sh", "bash", "zsh"`
	for i, name := range shells {
		next := names + `, "` + name + `"`
		shell = strings.Replace(shell, names, next, 1)
		names = next
		rev, pushed := repo.commit(t, "shell rule: "+name+" is a shell too", map[string][]byte{"rules/shell.yaml": []byte(shell)})
		requestSync(ctx, t, s)
		lives = append(lives, observeRollout(ctx, t, s, rev, pushed, int64(3+i), nil))
	}
	reportLatency(t, lives)

	shots.check(t, root, c.Scheme())
	t.Logf("test body took %s", time.Since(begin).Round(time.Millisecond))
}

// startStack starts the control plane with riposte's controller (as its
// ServiceAccount, audit webhook pointed at it) and registers the admission
// webhook. The controller logs to stderr with RIPOSTE_TEST_LOG set.
func startStack(ctx context.Context, t *testing.T, root string) *stack.Stack {
	t.Helper()
	log := logr.Discard()
	if os.Getenv("RIPOSTE_TEST_LOG") != "" {
		log = textlogger.NewLogger(textlogger.NewConfig(textlogger.Verbosity(1)))
	}
	s, err := stack.Start(ctx, stack.Options{Root: root, Log: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Stop(); err != nil {
			t.Errorf("stop the stack: %v", err)
		}
	})
	if _, err := s.RegisterWebhook(ctx); err != nil {
		t.Fatal(err)
	}
	return s
}

// applyFluxConfig applies the shipped config/flux through an overlay that
// changes only what a deployment does: the rules repository's URL, a short
// poll interval, and no `riposte` Kustomization (here the controller runs
// beside Flux from test/stack, so the rules depend on nothing).
func applyFluxConfig(ctx context.Context, t *testing.T, s *stack.Stack, url string) {
	t.Helper()
	dir := t.TempDir()
	base, err := filepath.Rel(dir, filepath.Join(s.Root, "config", "flux"))
	if err != nil {
		t.Fatal(err)
	}
	overlay := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
patches:
- patch: |
    $patch: delete
    apiVersion: source.toolkit.fluxcd.io/v1
    kind: GitRepository
    metadata: {name: riposte, namespace: flux-system}
- patch: |
    $patch: delete
    apiVersion: kustomize.toolkit.fluxcd.io/v1
    kind: Kustomization
    metadata: {name: riposte, namespace: flux-system}
- target: {kind: GitRepository, name: riposte-rules}
  patch: |
    - {op: replace, path: /spec/url, value: %q}
    - {op: replace, path: /spec/interval, value: 5s}
- target: {kind: Kustomization, name: riposte-rules}
  patch: |
    - {op: remove, path: /spec/dependsOn}
`, filepath.ToSlash(base), url)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Cluster.Kubectl(ctx, "apply", "-k", dir).CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply -k config/flux overlay: %v\n%s", err, out)
	}
}

// requestSync asks source-controller to fetch now, as a Flux Receiver does
// when the Git host reports a push; the 5 s poll is the fallback.
func requestSync(ctx context.Context, t *testing.T, s *stack.Stack) {
	t.Helper()
	now := time.Now().Format(time.RFC3339Nano)
	if out, err := s.Cluster.Kubectl(ctx, "-n", fluxNamespace, "annotate", "--overwrite", "gitrepository", "riposte-rules",
		"reconcile.fluxcd.io/requestedAt="+now).CombinedOutput(); err != nil {
		t.Fatalf("kubectl annotate gitrepository: %v\n%s", err, out)
	}
}

var (
	gitRepositoryGVK = schema.GroupVersionKind{Group: "source.toolkit.fluxcd.io", Version: "v1", Kind: "GitRepository"}
	kustomizationGVK = schema.GroupVersionKind{Group: "kustomize.toolkit.fluxcd.io", Version: "v1", Kind: "Kustomization"}
)

// fluxObject is what the test reads of a GitRepository or Kustomization.
type fluxObject struct {
	Metadata metav1.ObjectMeta `json:"metadata"`
	Status   struct {
		ObservedGeneration    int64                      `json:"observedGeneration"`
		Conditions            []metav1.Condition         `json:"conditions"`
		Artifact              *struct{ Revision string } `json:"artifact"`
		LastAppliedRevision   string                     `json:"lastAppliedRevision"`
		LastAttemptedRevision string                     `json:"lastAttemptedRevision"`
	} `json:"status"`
}

func getFlux(ctx context.Context, t *testing.T, c client.Client, gvk schema.GroupVersionKind, name string) fluxObject {
	t.Helper()
	var f fluxObject
	if err := readFlux(ctx, c, gvk, name, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

func readFlux(ctx context.Context, c client.Client, gvk schema.GroupVersionKind, name string, f *fluxObject) error {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(gvk)
	if err := c.Get(ctx, client.ObjectKey{Namespace: fluxNamespace, Name: name}, u); err != nil {
		return err
	}
	b, err := json.Marshal(u.Object)
	if err != nil {
		return err
	}
	*f = fluxObject{}
	return json.Unmarshal(b, f)
}

func getRule(ctx context.Context, t *testing.T, c client.Client, name string) *v1alpha1.ClusterDetectionRule {
	t.Helper()
	var r v1alpha1.ClusterDetectionRule
	if err := c.Get(ctx, client.ObjectKey{Name: name}, &r); err != nil {
		t.Fatal(err)
	}
	return &r
}

func getLease(ctx context.Context, t *testing.T, c client.Client) *coordinationv1.Lease {
	t.Helper()
	var l coordinationv1.Lease
	if err := c.Get(ctx, client.ObjectKey{Namespace: stack.Namespace, Name: rollout.LeaseName(agentNode)}, &l); err != nil {
		t.Fatal(err)
	}
	return &l
}

func isTrue(conds []metav1.Condition, typ string) bool {
	return apimeta.IsStatusConditionTrue(conds, typ)
}

// isReady: Ready for the current generation.
func isReady(r *v1alpha1.ClusterDetectionRule) bool {
	return r.Status.ObservedGeneration == r.Generation && isTrue(r.Status.Conditions, v1alpha1.ReadyCondition)
}

// isLive: Ready, loaded on every node, nothing in progress (kstatus
// Current).
func isLive(r *v1alpha1.ClusterDetectionRule) bool {
	return isReady(r) && r.Status.Nodes == "1/1" && !isTrue(r.Status.Conditions, v1alpha1.ReconcilingCondition)
}

// waitRefused waits until kustomize-controller has tried revision rev and
// failed, and returns the Kustomization's Ready message.
func waitRefused(ctx context.Context, t *testing.T, s *stack.Stack, rev string) string {
	t.Helper()
	var msg string
	waitFor(ctx, t, "the Kustomization refuses revision "+rev[:8], func() (bool, string) {
		k := getFlux(ctx, t, s.Client, kustomizationGVK, "riposte-rules")
		ready := apimeta.FindStatusCondition(k.Status.Conditions, "Ready")
		if ready == nil || !strings.HasSuffix(k.Status.LastAttemptedRevision, rev) || ready.Status != metav1.ConditionFalse {
			return false, fmt.Sprintf("attempted %s, conditions %+v", k.Status.LastAttemptedRevision, k.Status.Conditions)
		}
		msg = ready.Reason + ": " + ready.Message
		return true, ""
	})
	t.Logf("Kustomization not Ready at %s: %s", rev[:8], msg)
	return msg
}

// readCanary creates a canary Secret and reads it as the admin, and returns
// the Incident the canary rule makes of that read's audit event.
func readCanary(ctx context.Context, t *testing.T, s *stack.Stack, ns, name string) *v1alpha1.Incident {
	t.Helper()
	c := s.Client
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, StringData: map[string]string{"password": "canary"}}
	if err := c.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	if out, err := s.Cluster.Kubectl(ctx, "-n", ns, "get", "secret", name, "-o", "name").CombinedOutput(); err != nil {
		t.Fatalf("kubectl get secret: %v\n%s", err, out)
	}
	var found *v1alpha1.Incident
	waitFor(ctx, t, "an Incident of "+canaryRule+" for "+ns+"/"+name, func() (bool, string) {
		var list v1alpha1.IncidentList
		if err := c.List(ctx, &list, client.MatchingLabels{"riposte.dev/rule": canaryRule}); err != nil {
			return false, err.Error()
		}
		var have []string
		for i := range list.Items {
			in := &list.Items[i]
			have = append(have, in.Spec.Output)
			if strings.Contains(in.Spec.Output, ns+"/"+name+" read by") {
				found = in
				return true, ""
			}
		}
		return false, fmt.Sprintf("Incidents: %q", have)
	})
	t.Logf("Incident %s/%s: %s", found.Namespace, found.Name, found.Spec.Output)
	return found
}

// stages are the moments a commit was seen on its way to live (zero: not
// seen).
type stages struct {
	Rev      string
	Pushed   time.Time // the push was acknowledged: the change is in Git
	Artifact time.Time // source-controller has the revision as an artifact
	Applied  time.Time // the shell rule has the new generation in the API server
	Ready    time.Time // the controller made it Ready (compiled, tests passed)
	Loaded   time.Time // the agent's Lease lists the new generation
	Live     time.Time // the rule's status shows it loaded on 1/1 nodes (kstatus Current)
	Synced   time.Time // the Kustomization is Ready at the revision
}

// observeRollout polls every 100 ms until commit rev is live and the
// Kustomization Ready at it, recording when each stage was first seen. The
// shell rule must reach generation gen. Each round reads the rules before
// the Kustomization, so a Kustomization seen Ready while a rule was not yet
// live is caught; that is the kstatus health check at work. With shots set
// it also keeps the shell rule as seen while rolling out, and requires
// having seen that state.
func observeRollout(ctx context.Context, t *testing.T, s *stack.Stack, rev string, pushed time.Time, gen int64, shots *snapshots) stages {
	t.Helper()
	c := s.Client
	st := stages{Rev: rev, Pushed: pushed}
	sawRollingOut := false
	deadline := time.Now().Add(3 * time.Minute)
	for {
		now := time.Now()
		var repo, k fluxObject
		if err := readFlux(ctx, c, gitRepositoryGVK, "riposte-rules", &repo); err == nil && st.Artifact.IsZero() &&
			repo.Status.Artifact != nil && strings.HasSuffix(repo.Status.Artifact.Revision, rev) {
			st.Artifact = now
		}
		var others []string // rules and playbooks not yet Ready
		var shell v1alpha1.ClusterDetectionRule
		if err := c.Get(ctx, client.ObjectKey{Name: shellRule}, &shell); err == nil {
			if st.Applied.IsZero() && shell.Generation == gen {
				st.Applied = now
			}
			if shell.Generation == gen && st.Ready.IsZero() && isReady(&shell) {
				st.Ready = now
			}
			if shell.Generation == gen && isReady(&shell) && isTrue(shell.Status.Conditions, v1alpha1.ReconcilingCondition) && !sawRollingOut {
				sawRollingOut = true
				if shots != nil {
					shots.add(fmt.Sprintf("rolling-out-generation-%d", gen), shell.DeepCopy())
				}
			}
			if shell.Generation == gen && st.Live.IsZero() && isLive(&shell) {
				st.Live = now
			}
			if l := (coordinationv1.Lease{}); c.Get(ctx, client.ObjectKey{Namespace: stack.Namespace, Name: rollout.LeaseName(agentNode)}, &l) == nil &&
				st.Loaded.IsZero() && rollout.Decode(l.Annotations[v1alpha1.LoadedRulesAnnotation])[shell.UID] >= gen {
				st.Loaded = now
			}
		}
		var canary v1alpha1.ClusterDetectionRule
		if err := c.Get(ctx, client.ObjectKey{Name: canaryRule}, &canary); err != nil || !isReady(&canary) {
			others = append(others, canaryRule)
		}
		var pb v1alpha1.ClusterResponsePlaybook
		if err := c.Get(ctx, client.ObjectKey{Name: playbookName}, &pb); err != nil || pb.Status.ObservedGeneration != pb.Generation || !isTrue(pb.Status.Conditions, v1alpha1.ReadyCondition) {
			others = append(others, playbookName)
		}
		if err := readFlux(ctx, c, kustomizationGVK, "riposte-rules", &k); err == nil && st.Synced.IsZero() &&
			isTrue(k.Status.Conditions, "Ready") && k.Status.ObservedGeneration == k.Metadata.Generation && strings.HasSuffix(k.Status.LastAppliedRevision, rev) {
			st.Synced = now
			if st.Live.IsZero() || len(others) > 0 {
				t.Errorf("the Kustomization was Ready at %s before every rule was: shell rule %+v nodes %q; not Ready: %v",
					rev[:8], shell.Status.Conditions, shell.Status.Nodes, others)
			}
		}
		if !st.Live.IsZero() && !st.Loaded.IsZero() && !st.Synced.IsZero() {
			break
		}
		if now.After(deadline) || ctx.Err() != nil {
			t.Fatalf("commit %s not live within 3 min: %+v\nGitRepository %+v\nKustomization %+v\nshell rule %+v",
				rev[:8], st, repo.Status, k.Status, shell.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
	switch {
	case !sawRollingOut && shots != nil:
		// The snapshot commits are the first after a quiet spell: the
		// intermediate state lasts until the agent reports, which is long
		// enough to be seen at a 100 ms poll.
		t.Errorf("never saw the shell rule at generation %d rolling out (Ready with Reconciling=True) before it was live", gen)
	case !sawRollingOut:
		// The agent may report within one poll of the controller's Ready.
		t.Logf("generation %d went live within one 100 ms poll of Ready; no rolling-out state seen", gen)
	}
	d := func(at time.Time) string { return at.Sub(pushed).Round(time.Millisecond).String() }
	t.Logf("commit %s: artifact %s, applied %s, Ready %s, loaded on the node %s, status live %s, Kustomization Ready %s (from the push)",
		rev[:8], d(st.Artifact), d(st.Applied), d(st.Ready), d(st.Loaded), d(st.Live), d(st.Synced))
	return st
}

// reportLatency logs push → live (Ready on the controller and loaded on
// the agent) over the commits, as p50 and p99, with the stages between.
func reportLatency(t *testing.T, lives []stages) {
	t.Helper()
	pct := func(name string, f func(s stages) time.Duration) {
		var ds []time.Duration
		for _, s := range lives {
			ds = append(ds, f(s))
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		at := func(p float64) time.Duration {
			// nearest rank
			i := int(p*float64(len(ds))+0.999999) - 1
			if i < 0 {
				i = 0
			}
			return ds[i]
		}
		var all []string
		for _, d := range ds {
			all = append(all, strconv.FormatFloat(d.Seconds(), 'f', 2, 64))
		}
		t.Logf("LATENCY %-34s n=%d p50 %6.2fs p99 %6.2fs min %6.2fs  [%s]", name, len(ds), at(0.5).Seconds(), at(0.99).Seconds(), ds[0].Seconds(), strings.Join(all, " "))
	}
	later := func(a, b time.Time) time.Time {
		if a.After(b) {
			return a
		}
		return b
	}
	pct("push → artifact", func(s stages) time.Duration { return s.Artifact.Sub(s.Pushed) })
	pct("push → applied (new generation)", func(s stages) time.Duration { return s.Applied.Sub(s.Pushed) })
	pct("push → Ready on the controller", func(s stages) time.Duration { return s.Ready.Sub(s.Pushed) })
	pct("push → live (Ready and loaded)", func(s stages) time.Duration { return later(s.Ready, s.Loaded).Sub(s.Pushed) })
	pct("push → status nodes 1/1", func(s stages) time.Duration { return s.Live.Sub(s.Pushed) })
	pct("push → Kustomization Ready", func(s stages) time.Duration { return s.Synced.Sub(s.Pushed) })
}

// snapshots are live objects the test saw, for the Argo CD health checks.
type snapshots struct {
	mu    sync.Mutex
	items []snapshot
}

type snapshot struct {
	name string
	obj  client.Object
}

func (s *snapshots) add(name string, obj client.Object) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, snapshot{name, obj.DeepCopyObject().(client.Object)})
}

// check runs config/argocd's Lua health check of each object's kind on it,
// as Argo CD would have shown it at that moment; with -update-argocd it
// also writes the objects as that check's testdata (flux-<name>.yaml).
func (s *snapshots) check(t *testing.T, root string, sch *runtime.Scheme) {
	t.Helper()
	want := map[string]string{"rolling-out": "Progressing", "ready": "Healthy", "responded": "Healthy"}
	dir := filepath.Join(root, "config", "argocd")
	for _, sn := range s.items {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(sn.obj)
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{Object: u}
		gvk, err := apiutil.GVKForObject(sn.obj, sch)
		if err != nil {
			t.Fatal(err)
		}
		obj.SetAPIVersion(gvk.GroupVersion().String())
		obj.SetKind(gvk.Kind)
		obj.SetManagedFields(nil)
		script, err := argocd.Script(dir, gvk.Group, gvk.Kind)
		if err != nil {
			t.Fatal(err)
		}
		h, err := argocd.Run(script, obj.Object)
		if err != nil {
			t.Fatalf("%s %s: %v", gvk.Kind, sn.name, err)
		}
		t.Logf("Argo CD health of %s %s (%s): %s %q", gvk.Kind, obj.GetName(), sn.name, h.Status, h.Message)
		for prefix, status := range want {
			if strings.HasPrefix(sn.name, prefix) && h.Status != status {
				t.Errorf("Argo CD health of %s %s (%s) is %s %q, want %s", gvk.Kind, obj.GetName(), sn.name, h.Status, h.Message, status)
			}
		}
		if *updateArgoCD {
			b, err := yaml.Marshal(obj.Object)
			if err != nil {
				t.Fatal(err)
			}
			header := fmt.Sprintf("# Captured by test/gitops (go test ./test/gitops -update-argocd) from the live\n# object during the Flux end-to-end test; Argo CD's health: %s %q.\n", h.Status, h.Message)
			path := filepath.Join(dir, "health", gvk.Group, gvk.Kind, "testdata", "flux-"+sn.name+".yaml")
			if err := os.WriteFile(path, append([]byte(header), b...), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// notifySink is the security team's webhook: the playbook's notify step
// posts to it.
type notifySink struct {
	srv *httptest.Server
	mu  sync.Mutex
	got [][]byte
}

func newNotifySink(t *testing.T) *notifySink {
	n := &notifySink{}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		n.mu.Lock()
		n.got = append(n.got, b)
		n.mu.Unlock()
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *notifySink) URL() string { return n.srv.URL + "/riposte" }

func (n *notifySink) received(substr string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, b := range n.got {
		if bytes.Contains(b, []byte(substr)) {
			return true
		}
	}
	return false
}

func (n *notifySink) count() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.got)
}

// waitFor polls cond until it holds. After two minutes (far above the few
// seconds each step takes on a busy 2-core machine) or at ctx's end the test
// fails with what was being waited for and cond's last explanation.
func waitFor(ctx context.Context, t *testing.T, what string, cond func() (bool, string)) {
	t.Helper()
	begin := time.Now()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		ok, why := cond()
		if ok {
			t.Logf("%s: after %s", what, time.Since(begin).Round(time.Millisecond))
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: %v; last: %s", what, ctx.Err(), why)
		case <-time.After(250 * time.Millisecond):
		}
	}
}
