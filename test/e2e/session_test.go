//go:build e2enode

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/test/node"
)

// TestTheIncidentNamesTheUserBehindAnExecAndNobodyForTheEntrypoint: a
// named user (a client certificate for alice in group devs, allowed
// pods/exec by a RoleBinding) runs a shell in one pod with kubectl's SPDY
// POST form and in another with its WebSocket GET form, through the real
// kube-apiserver and kubelet. Each shell-in-container Incident says the
// process came from an exec (the node's kernel) and its status.session
// names alice, her groups, the audit id, the verb of the form used and the
// exact command. A pod whose own entrypoint starts a shell gets an
// Incident whose session is the entrypoint and names nobody.
func TestTheIncidentNamesTheUserBehindAnExecAndNobodyForTheEntrypoint(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	rn := riposteOnNode(ctx, t, root, controllermgr.Response{DryRun: true}, nil, "shell-in-container")
	n := rn.Node
	c := n.Stack.Client
	kubeconfig := userKubeconfig(ctx, t, n, "alice", "devs")

	post := deploymentPod(ctx, t, n, "shop", "post")
	ws := deploymentPod(ctx, t, n, "shop", "ws")
	entry, err := n.RunPod(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "entry", Namespace: "shop"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "app",
			// argv[0] busybox: the outer shell is not one the rule counts;
			// cat runs before the shell that fires, so it is in the
			// flight recorder's timeline before the alert.
			Command: []string{"/bin/busybox", "sh", "-c", "sleep 3; cat /etc/hostname; /bin/sh -c 'echo entrypoint-shell; sleep 600'"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}

	forms := []struct {
		pod       *corev1.Pod
		verb      string
		websocket string // KUBECTL_REMOTE_COMMAND_WEBSOCKETS
		command   []string
	}{
		{post, "create", "false", []string{"sh", "-c", "echo spdy-post; id"}},
		{ws, "get", "true", []string{"sh", "-c", "echo websocket-get; id"}},
	}
	for _, f := range forms {
		args := append([]string{"--kubeconfig=" + kubeconfig, "exec", "-n", "shop", f.pod.Name, "-c", "app", "--"}, f.command...)
		cmd := n.Cluster.Kubectl(ctx, args...)
		cmd.Env = append(cmd.Env, "KUBECTL_REMOTE_COMMAND_WEBSOCKETS="+f.websocket)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Fatalf("kubectl exec as alice (%s form): %v\n%s", f.verb, err, out.String())
		}
		t.Logf("alice's kubectl exec (%s form) into %s: %q", f.verb, f.pod.Name, out.String())
	}

	byPod := map[string]*v1alpha1.Incident{}
	waitFor(ctx, t, "shell-in-container Incidents with a session for the three pods", func() (bool, string) {
		var incs v1alpha1.IncidentList
		if err := c.List(ctx, &incs); err != nil {
			return false, err.Error()
		}
		var have []string
		for i := range incs.Items {
			in := &incs.Items[i]
			if in.Spec.Rule != "shell-in-container" {
				continue
			}
			have = append(have, fmt.Sprintf("%s origin %q count %d session %+v", in.Spec.Subject.Pod, in.Spec.Subject.Origin, in.Status.Count, in.Status.Session))
			// Both halves written: the agent's (count, samples, timeline)
			// and the controller's (session).
			if in.Status.Session != nil && in.Status.Count > 0 {
				byPod[in.Spec.Subject.Pod] = in
			}
		}
		return byPod[post.Name] != nil && byPod[ws.Name] != nil && byPod[entry.Name] != nil, fmt.Sprint(have)
	})

	for _, f := range forms {
		in := byPod[f.pod.Name]
		s := in.Status.Session
		t.Logf("%s: %s; session %+v", f.pod.Name, in.Spec.Output, *s)
		if in.Spec.Subject.Origin != v1alpha1.SessionExec {
			t.Errorf("%s: subject origin %q, want exec", f.pod.Name, in.Spec.Subject.Origin)
		}
		if s.Origin != v1alpha1.SessionExec || s.User != "alice" || !slices.Contains(s.Groups, "devs") ||
			s.Verb != f.verb || s.Subresource != "exec" || s.Container != "app" || s.AuditID == "" || len(s.SourceIPs) == 0 {
			t.Errorf("%s (%s form): session %+v, want alice (devs) by %s of pods/exec into app with an audit id", f.pod.Name, f.verb, *s, f.verb)
		}
		if !reflect.DeepEqual(s.Command, f.command) {
			t.Errorf("%s: session command %q, want %q", f.pod.Name, s.Command, f.command)
		}
	}
	in := byPod[entry.Name]
	s := in.Status.Session
	t.Logf("%s: %s; session %+v", entry.Name, in.Spec.Output, *s)
	if in.Spec.Subject.Origin != v1alpha1.SessionEntrypoint || s.Origin != v1alpha1.SessionEntrypoint || s.User != "" || s.AuditID != "" {
		t.Errorf("entrypoint shell: subject origin %q, session %+v, want entrypoint naming nobody", in.Spec.Subject.Origin, *s)
	}
	// The flight recorder: what the container did before the alert.
	t.Logf("entry Incident: count %d, %d sample events, %d timeline entries", in.Status.Count, len(in.Status.SampleEvents), len(in.Status.Timeline))
	var catAt, shellAt time.Time
	for _, e := range in.Status.Timeline {
		t.Logf("timeline: %s %s pid %d %s %q %s", e.Time.UTC().Format(time.RFC3339Nano), e.Kind, e.PID, e.Binary, e.Args, e.Origin)
		if e.Kind == "exec" && reflect.DeepEqual(e.Args, []string{"cat", "/etc/hostname"}) {
			catAt = e.Time.Time
		}
		if e.Kind == "exec" && len(e.Args) > 0 && e.Args[0] == "/bin/sh" {
			shellAt = e.Time.Time
		}
	}
	if catAt.IsZero() || shellAt.IsZero() || !catAt.Before(shellAt) {
		t.Errorf("entrypoint Incident's timeline lacks the cat before the shell (cat at %s, shell at %s)", catAt, shellAt)
	}
}

// userKubeconfig writes a kubeconfig for user (a client certificate of the
// cluster's CA) and lets the user exec into pods of namespace shop.
func userKubeconfig(ctx context.Context, t *testing.T, n *node.Node, user string, groups ...string) string {
	t.Helper()
	if err := n.EnsureNamespace(ctx, "shop"); err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "exec", Namespace: "shop"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list"}},
			{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create", "get"}},
		},
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "exec-" + user, Namespace: "shop"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "exec"},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: user}},
	}
	if _, err := n.Client.RbacV1().Roles("shop").Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Client.RbacV1().RoleBindings("shop").Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cfg, err := n.Cluster.UserConfig(user, groups...)
	if err != nil {
		t.Fatal(err)
	}
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[user] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: user}
	kc.CurrentContext = "c"
	path := filepath.Join(t.TempDir(), user+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		t.Fatal(err)
	}
	return path
}
