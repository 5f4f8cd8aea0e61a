package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/riposte-dev/riposte/test/cluster"
	"github.com/riposte-dev/riposte/test/proc"
	"github.com/riposte-dev/riposte/test/stack"
)

// Name is the node's name (the kubelet runs with --hostname-override
// localhost, and kube-apiserver reaches it at localhost:<port> through
// --kubelet-preferred-address-types=Hostname).
const Name = "localhost"

// Options choose the control plane under the node.
type Options struct {
	// ControllerManager also starts kube-controller-manager, so Deployments
	// get ReplicaSets and Pods.
	ControllerManager bool
	// Controller, when set, runs riposte's controller too (test/stack with
	// these options; ControllerManager above wins over theirs).
	Controller *stack.Options
	// StartTimeout bounds Start when ctx has no deadline; default 4 min
	// (about 15 s on an idle machine, far more when it is compiling).
	StartTimeout time.Duration
	// BinDir holds the kubelet (and the control plane); default as
	// cluster.BinDir.
	BinDir string
}

// Node is a running control plane with one real node.
type Node struct {
	// Cluster is the control plane; Stack is set when the controller runs.
	Cluster *cluster.Cluster
	Stack   *stack.Stack
	// Client is an admin clientset.
	Client kubernetes.Interface
	// Subnet is the pods' network (the node's CNI bridge is its .1).
	Subnet *net.IPNet

	st                  state
	parts               parts
	lock                *hostLock
	containerd, kubelet *proc.Process
	phases              []string
	started             time.Duration
	cleaned             bool
}

// Start brings up the control plane, containerd with the two images, and the
// kubelet, and returns once the Node is Ready. On error nothing is left.
func Start(ctx context.Context, opts Options) (_ *Node, err error) {
	begin := time.Now()
	bin, err := binDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	p, err := findParts(bin)
	if err != nil {
		return nil, err
	}
	if opts.StartTimeout == 0 {
		opts.StartTimeout = 4 * time.Minute
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, opts.StartTimeout)
		defer cancel()
	}
	n := &Node{parts: p}
	defer func() {
		if err != nil {
			if serr := n.Stop(); serr != nil {
				err = fmt.Errorf("%w (and stopping: %v)", err, serr)
			}
		}
	}()
	phase := time.Now()
	done := func(name string) {
		n.phases = append(n.phases, fmt.Sprintf("%s %s", name, time.Since(phase).Round(time.Millisecond)))
		phase = time.Now()
	}
	if n.lock, err = lockHost(ctx); err != nil {
		return nil, err
	}
	sweepStale(p.ip)
	done("host lock")

	if opts.Controller != nil {
		so := *opts.Controller
		so.ControllerManager = opts.ControllerManager
		if n.Stack, err = stack.Start(ctx, so); err != nil {
			return nil, err
		}
		n.Cluster = n.Stack.Cluster
	} else if n.Cluster, err = cluster.Start(ctx, cluster.Options{ControllerManager: opts.ControllerManager, BinDir: opts.BinDir}); err != nil {
		return nil, err
	}
	if n.Client, err = kubernetes.NewForConfig(n.Cluster.AdminConfig()); err != nil {
		return nil, err
	}
	done("control plane")

	dir, err := os.MkdirTemp("", TempDirPrefix)
	if err != nil {
		return nil, fmt.Errorf("create node temp dir: %w", err)
	}
	suffix := strings.TrimPrefix(filepath.Base(dir), TempDirPrefix)
	n.st = state{
		Dir: dir, Owner: os.Getpid(),
		CgroupRoot: "/" + filepath.Base(dir),
		Bridge:     "rpn" + suffix,
		Address:    filepath.Join(dir, "containerd.sock"),
		Created:    absentHostDirs(),
	}
	if len(n.st.Bridge) > 15 {
		n.st.Bridge = n.st.Bridge[:15] // IFNAMSIZ
	}
	if err := n.st.write(); err != nil {
		return nil, err
	}
	if n.Subnet, err = freeSubnet(); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	done("containerd")
	images, err := writeImages(ctx, dir, p.busybox)
	if err != nil {
		return nil, err
	}
	for _, img := range images {
		// One archive per call: ctr imports only the first otherwise.
		if out, err := n.ctr(ctx, "images", "import", img); err != nil {
			return nil, fmt.Errorf("import %s: %w\n%s", filepath.Base(img), err, out)
		}
		os.Remove(img)
	}
	done("images")
	if err := n.startKubelet(ctx); err != nil {
		return nil, err
	}
	done("kubelet to Node Ready")
	n.started = time.Since(begin)
	return n, nil
}

// freeSubnet picks a 10.244.x.0/24 that no address of this host is in, so
// nodes never share routes with anything else on the machine.
func freeSubnet() (*net.IPNet, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, fmt.Errorf("list host addresses: %w", err)
	}
	for range 100 {
		_, subnet, _ := net.ParseCIDR(fmt.Sprintf("10.244.%d.0/24", 1+rand.IntN(250)))
		used := false
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && (subnet.Contains(ipn.IP) || ipn.Contains(subnet.IP)) {
				used = true
			}
		}
		if !used {
			return subnet, nil
		}
	}
	return nil, errors.New("no free 10.244.x.0/24 for the pod network")
}

// ctr runs ctr against the node's containerd in the k8s.io namespace, where
// the CRI plugin keeps its images and containers.
func (n *Node) ctr(ctx context.Context, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, n.parts.ctr, append([]string{"--address", n.st.Address, "--namespace", "k8s.io"}, args...)...)
	return cmd.CombinedOutput()
}

// writeKubeconfig writes a kubeconfig for cfg's client certificate.
func writeKubeconfig(path, server string, ca, cert, key []byte) error {
	kc := clientcmdapi.NewConfig()
	kc.Clusters["test"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	kc.AuthInfos["user"] = &clientcmdapi.AuthInfo{ClientCertificateData: cert, ClientKeyData: key}
	kc.Contexts["test"] = &clientcmdapi.Context{Cluster: "test", AuthInfo: "user"}
	kc.CurrentContext = "test"
	return clientcmd.WriteToFile(*kc, path)
}

// Stop tears everything down: the kubelet, every container and sandbox,
// containerd and its shims, mounts, cgroups, the bridge, the control plane,
// the temp dirs; then it restores the host's sysctls. It is safe to call on
// a partly started node.
func (n *Node) Stop() error {
	var errs []error
	if n.kubelet != nil {
		n.kubelet.Stop(10 * time.Second)
		n.kubelet = nil
	}
	if n.containerd != nil {
		// Kill the containers, then let containerd delete their tasks so
		// the shims clean up after themselves and exit.
		killCgroupProcesses(n.st.CgroupRoot)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		if out, err := n.ctr(ctx, "containers", "list", "--quiet"); err == nil {
			for _, id := range strings.Fields(string(out)) {
				_, _ = n.ctr(ctx, "tasks", "delete", "--force", id)
			}
		}
		cancel()
		n.containerd.Stop(10 * time.Second)
		n.containerd = nil
	}
	if n.st.Dir != "" && !n.cleaned {
		errs = append(errs, cleanup(&n.st, n.parts.ip))
		n.cleaned = true
	}
	if n.Stack != nil {
		errs = append(errs, n.Stack.Stop())
		n.Stack, n.Cluster = nil, nil
	} else if n.Cluster != nil {
		errs = append(errs, n.Cluster.Stop())
		n.Cluster = nil
	}
	if n.lock != nil {
		errs = append(errs, n.lock.restore())
		n.lock = nil
	}
	return errors.Join(errs...)
}

// Dir is the node's temp dir: containerd.log, kubelet.log, configuration,
// state. Stop removes it.
func (n *Node) Dir() string { return n.st.Dir }

// CgroupRoot is the kubelet's cgroupRoot, e.g. /riposte-node-123: pods'
// cgroups are <root>/kubepods/<qos>/pod<uid>/<container id>.
func (n *Node) CgroupRoot() string { return n.st.CgroupRoot }

// Bridge is the name of the pods' CNI bridge on the host.
func (n *Node) Bridge() string { return n.st.Bridge }

// Gateway is the host's address on the pods' bridge, reachable from pods.
func (n *Node) Gateway() net.IP {
	ip := make(net.IP, 4)
	copy(ip, n.Subnet.IP.To4())
	ip[3] = 1
	return ip
}

// StartDuration is how long Start took, for logging.
func (n *Node) StartDuration() time.Duration { return n.started }

// StartPhases says how long each step of Start took, for logging.
func (n *Node) StartPhases() string { return strings.Join(n.phases, ", ") }

// PIDs are containerd's and the kubelet's process ids (their process
// groups too), for leftover checks.
func (n *Node) PIDs() []int {
	var pids []int
	for _, p := range []*proc.Process{n.containerd, n.kubelet} {
		if p != nil {
			pids = append(pids, p.PID())
		}
	}
	return pids
}

// waitNodeReady polls the Node until its Ready condition is True.
func (n *Node) waitNodeReady(ctx context.Context) error {
	last := "not registered"
	for {
		for _, p := range []*proc.Process{n.kubelet, n.containerd} {
			if done, _ := p.Exited(); done {
				return p.Failure("wait for Node "+Name+" Ready", errors.New("exited"))
			}
		}
		node, err := n.Client.CoreV1().Nodes().Get(ctx, Name, metav1.GetOptions{})
		if err == nil {
			last = "no Ready condition"
			for _, c := range node.Status.Conditions {
				if c.Type == corev1.NodeReady {
					if c.Status == corev1.ConditionTrue {
						return nil
					}
					last = fmt.Sprintf("Ready=%s %s: %s", c.Status, c.Reason, c.Message)
				}
			}
		}
		select {
		case <-ctx.Done():
			return n.kubelet.Failure("wait for Node "+Name+" Ready", fmt.Errorf("%w (last: %s)\n%s", ctx.Err(), last, n.containerd.Tail(20)))
		case <-time.After(200 * time.Millisecond):
		}
	}
}
