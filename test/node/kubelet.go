package node

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/riposte-dev/riposte/test/proc"
)

// kubeletConfig is the KubeletConfiguration of the test node.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Pods go below a cgroup root of their own, apart from anything else on the
# machine; cgroupfs because containerd's runc does not use systemd here.
cgroupDriver: cgroupfs
cgroupRoot: %[1]s
failSwapOn: false
# Test machines may still run a cgroup v1 (hybrid) hierarchy.
failCgroupV1: false
containerRuntimeEndpoint: unix://%[2]s
staticPodPath: %[3]s
fileCheckFrequency: 1s
address: 127.0.0.1
port: %[4]d
healthzBindAddress: 127.0.0.1
healthzPort: %[5]d
readOnlyPort: 0
podLogsDir: %[6]s
volumePluginDir: %[7]s
localStorageCapacityIsolation: false
# No eviction and no image garbage collection: the imported images have no
# registry to come back from.
evictionHard: {}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# The kubelet's own iptables chains would outlive the node.
makeIPTablesUtilChains: false
resolvConf: /etc/resolv.conf
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
`

func (n *Node) startKubelet(ctx context.Context) error {
	dir := n.st.Dir
	if err := createCgroupRoot(n.st.CgroupRoot); err != nil {
		return err
	}
	ports, err := proc.FreePorts(2)
	if err != nil {
		return err
	}
	for _, d := range []string{"manifests", "pod-logs", "volume-plugins", "kubelet", "kubelet-pki"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return err
		}
	}
	cfg := fmt.Sprintf(kubeletConfig, n.st.CgroupRoot, n.st.Address, filepath.Join(dir, "manifests"),
		ports[0], ports[1], filepath.Join(dir, "pod-logs"), filepath.Join(dir, "volume-plugins"))
	cfgPath := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write kubelet config: %w", err)
	}
	// The kubelet authenticates as system:node:localhost in system:nodes,
	// so the Node authorizer lets it register and update its Node and pods.
	user, err := n.Cluster.UserConfig("system:node:"+Name, "system:nodes")
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(dir, "kubelet.kubeconfig")
	if err := writeKubeconfig(kubeconfig, n.Cluster.Host(), n.Cluster.CAData(), user.CertData, user.KeyData); err != nil {
		return fmt.Errorf("write kubelet kubeconfig: %w", err)
	}
	if n.kubelet, err = proc.Start(dir, "kubelet", n.parts.kubelet, []string{
		"--config=" + cfgPath,
		"--kubeconfig=" + kubeconfig,
		"--hostname-override=" + Name,
		"--root-dir=" + filepath.Join(dir, "kubelet"),
		"--cert-dir=" + filepath.Join(dir, "kubelet-pki"),
	}, nil); err != nil {
		return err
	}
	return n.waitNodeReady(ctx)
}
