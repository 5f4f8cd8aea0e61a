// Package node adds a real Kubernetes node to the test control plane: the
// kubelet (built by `make testenv` from the same pinned k8s.io/kubernetes as
// the control plane) and containerd, runc and the CNI plugins from Debian run
// as child processes with their own configuration, state and cgroup root, so
// tests exercise riposte on real pods and containers: real cgroup paths,
// container ids, images, kubectl exec, ReplicaSets and Deployments.
//
// Images come from no registry: Start writes two docker-archive tarballs (a
// pause image, and a workload image holding busybox-static) and imports them
// with ctr. Pods use imagePullPolicy Never and dnsPolicy Default (there is no
// cluster DNS); the RunPod and PrepareSpec helpers set both, and pin the pod
// to this node because there is no scheduler.
//
//	n, err := node.Start(ctx, node.Options{ControllerManager: true})
//	...
//	defer n.Stop()
//	pod, err := n.RunPod(ctx, &corev1.Pod{...})
//	out, err := n.Exec(ctx, pod.Namespace, pod.Name, "sh", "-c", "id")
//
// Only one node runs on a machine at a time (Start waits for a host-wide
// lock): the kubelet sets kernel sysctls for the whole host (it insists on
// vm.overcommit_memory=1, kernel.panic=10, …), which Stop restores to the
// values found before. Stop removes everything else too: pods and their
// processes, mounts, network namespaces, the bridge, the cgroups, the temp dir
// ($TMPDIR/riposte-node-*). If the test binary dies without Stop, kubelet and
// containerd die with it and the next Start removes what is left.
//
// The tests of this package and of test/e2e carry the build tag e2enode and
// run with `make e2e-node`, not in `make test`.
//
// Missing parts are errors naming them (ErrMissing): the Debian packages
// containerd, runc, containernetworking-plugins and busybox-static, and the
// kubelet from `make testenv`.
package node
