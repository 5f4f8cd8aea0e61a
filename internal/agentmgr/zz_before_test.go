package agentmgr

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// BenchmarkOldAgentRequests measures the wave-1 agent binary (polling) for
// the before figure. Not committed.
func BenchmarkOldAgentRequests(b *testing.B) {
	e := newScaleEnv(b)
	cfg, err := e.cl.UserConfig("agent-old", "riposte:benchmark-agents")
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	kc := clientcmdapi.NewConfig()
	kc.Clusters["t"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos["a"] = &clientcmdapi.AuthInfo{ClientCertificateData: cfg.CertData, ClientKeyData: cfg.KeyData}
	kc.Contexts["t"] = &clientcmdapi.Context{Cluster: "t", AuthInfo: "a"}
	kc.CurrentContext = "t"
	kcp := filepath.Join(dir, "kc")
	if err := clientcmd.WriteToFile(*kc, kcp); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command("/tmp/old-riposte-bin", "agent", "--node", "node-0", "--namespace", "riposte-system", "--metrics-addr", "0", "--pin-dir", "", "--evidence-dir", dir)
	cmd.Env = []string{"KUBECONFIG=" + kcp, "HOME=" + dir}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	var probe v1alpha1.ClusterDetectionRule
	if err := e.admin.Get(context.Background(), client.ObjectKey{Name: "shell-in-container"}, &probe); err != nil {
		b.Fatal(err)
	}
	e.waitLeases(b, 1, string(probe.UID), probe.Generation)
	time.Sleep(10 * time.Second)
	off := logSize(b, e)
	apiserver := e.cl.PIDs()[1]
	cpu0, t0 := cpuSeconds(b, apiserver), time.Now()
	time.Sleep(2 * time.Minute)
	counts, _ := e.auditCounts(b, off)
	minutes := time.Since(t0).Minutes()
	per, detail := describe(counts, 1, minutes)
	b.Logf("old agent steady state: %.2f requests per minute (%s); apiserver CPU %.2f s/min", per, detail, (cpuSeconds(b, apiserver)-cpu0)/minutes)
}
