package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/riposte-dev/riposte/test/proc"
)

// containerdConfig is containerd's configuration: everything it keeps
// (images, snapshots, state, network namespaces, the socket) lives in the
// node's temp dir; the rest is containerd's default.
const containerdConfig = `version = 2
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = %[3]q

[plugins."io.containerd.internal.v1.opt"]
  path = %[4]q

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %[5]q
  # runc cannot lower oom_score_adj without CAP_SYS_RESOURCE, which test
  # machines may lack; pods then keep the shim's score.
  restrict_oom_score_adj = true
  # Network namespaces under the state dir instead of /var/run/netns, so
  # Stop finds and removes them with the rest of the node.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = %[6]q
    conf_dir = %[7]q
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
  # runc's state beside containerd's instead of /run/containerd/runc.
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
      Root = %[8]q
`

// cniConfig is the pod network: a bridge of the node's own with host-local
// addresses from its subnet, and no masquerading (no iptables rules to
// clean up); the CRI plugin adds the loopback itself.
const cniConfig = `{
  "cniVersion": "0.4.0",
  "name": %[1]q,
  "plugins": [{
    "type": "bridge",
    "bridge": %[2]q,
    "isGateway": true,
    "ipMasq": false,
    "hairpinMode": true,
    "ipam": {
      "type": "host-local",
      "dataDir": %[3]q,
      "ranges": [[{"subnet": %[4]q, "gateway": %[5]q}]],
      "routes": [{"dst": "0.0.0.0/0"}]
    }
  }]
}
`

func (n *Node) startContainerd(ctx context.Context) error {
	dir := n.st.Dir
	cniDir := filepath.Join(dir, "cni")
	if err := os.MkdirAll(cniDir, 0o755); err != nil {
		return err
	}
	cni := fmt.Sprintf(cniConfig, filepath.Base(dir), n.st.Bridge, filepath.Join(dir, "cni-ipam"), n.Subnet.String(), n.Gateway().String())
	if err := os.WriteFile(filepath.Join(cniDir, "10-riposte-node.conflist"), []byte(cni), 0o644); err != nil {
		return fmt.Errorf("write CNI config: %w", err)
	}
	cfg := fmt.Sprintf(containerdConfig,
		filepath.Join(dir, "containerd", "root"), filepath.Join(dir, "containerd", "state"),
		n.st.Address, filepath.Join(dir, "containerd", "opt"),
		PauseImage, CNIBinDir, cniDir, filepath.Join(dir, "containerd", "runc"))
	cfgPath := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return fmt.Errorf("write containerd config: %w", err)
	}
	var err error
	if n.containerd, err = proc.Start(dir, "containerd", n.parts.containerd, []string{"--config", cfgPath}, nil); err != nil {
		return err
	}
	var last error = errors.New("not checked yet")
	for {
		if done, _ := n.containerd.Exited(); done {
			return n.containerd.Failure("wait for containerd", fmt.Errorf("exited (last check: %v)", last))
		}
		attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
		out, err := n.ctr(attempt, "version")
		cancel()
		if err == nil {
			return nil
		}
		last = fmt.Errorf("ctr version: %v: %s", err, out)
		select {
		case <-ctx.Done():
			return n.containerd.Failure("wait for containerd", fmt.Errorf("%w (last check: %v)", ctx.Err(), last))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
