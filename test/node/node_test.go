//go:build e2enode

package node_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/test/node"
)

var shared *node.Node

func TestMain(m *testing.M) {
	var n *node.Node
	var sysctls map[string]string
	code := func() int {
		sysctls = readSysctls()
		return node.Main(m, node.Options{}, func(x *node.Node) { shared, n = x, x })
	}()
	if n != nil && code == 0 {
		code = checkLeftovers(n, sysctls)
	}
	os.Exit(code)
}

// TestPodRunsInAContainerOfItsOwn proves the node runs real containers: the
// pod's process sits in the kubelet's cgroup layout under the node's cgroup
// root, named by the container id the API reports, sees the image's files
// and has an address from the node's pod network.
func TestPodRunsInAContainerOfItsOwn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	pod, err := shared.RunPod(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "sleeper", Namespace: "node-test"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Command: []string{"sleep", "3600"},
		}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pod Running %s after create", time.Since(start).Round(time.Millisecond))
	_, id := host.SplitContainerID(pod.Status.ContainerStatuses[0].ContainerID)
	if pod.Status.ContainerStatuses[0].Image != node.BusyboxImage {
		t.Errorf("image = %q, want %q", pod.Status.ContainerStatuses[0].Image, node.BusyboxImage)
	}
	if ip := pod.Status.PodIP; !shared.Subnet.Contains(parseIP(ip)) {
		t.Errorf("pod IP %q not in the node's subnet %s", ip, shared.Subnet)
	}

	start = time.Now()
	out, err := shared.Exec(ctx, pod.Namespace, pod.Name, "cat", "/proc/self/cgroup", "/etc/shadow")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl exec took %s", time.Since(start).Round(time.Millisecond))
	want := fmt.Sprintf("0::%s/kubepods/besteffort/pod%s/%s", shared.CgroupRoot(), pod.UID, id)
	if !strings.Contains(string(out), want+"\n") {
		t.Errorf("/proc/self/cgroup of an exec'd process:\n%s\nwant the line %s", out, want)
	}
	if !strings.Contains(string(out), "root:*:") {
		t.Errorf("the image's /etc/shadow was not read:\n%s", out)
	}
	ref, ok := host.ParsePath(strings.TrimPrefix(want, "0::"))
	if !ok || ref.ContainerID != id || ref.PodUID != string(pod.UID) {
		t.Errorf("host.ParsePath(%q) = %+v, %v; want container %s of pod %s", want, ref, ok, id, pod.UID)
	}
}

// TestExecFailureCarriesStderr: a command that fails in the container is an
// error naming what kubectl printed.
func TestExecFailureCarriesStderr(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	pod, err := shared.RunPod(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "failing-exec", Namespace: "node-test"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Command: []string{"sleep", "3600"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = shared.Exec(ctx, pod.Namespace, pod.Name, "sh", "-c", "echo nope >&2; exit 3")
	if err == nil || !strings.Contains(err.Error(), "nope") || !strings.Contains(err.Error(), "exit code 3") {
		t.Fatalf("err = %v, want exit code 3 with stderr", err)
	}
}

func parseIP(s string) []byte {
	var a, b, c, d byte
	if _, err := fmt.Sscanf(s, "%d.%d.%d.%d", &a, &b, &c, &d); err != nil {
		return nil
	}
	return []byte{a, b, c, d}
}

var sysctlNames = []string{"vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops", "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes"}

func readSysctls() map[string]string {
	out := map[string]string{}
	for _, name := range sysctlNames {
		v, _ := os.ReadFile(filepath.Join("/proc/sys", name))
		out[name] = strings.TrimSpace(string(v))
	}
	return out
}

// checkLeftovers reports what a stopped node left on the host: processes,
// its temp dir, mounts, cgroups, the bridge, changed sysctls.
func checkLeftovers(n *node.Node, sysctls map[string]string) int {
	var problems []string
	for _, pid := range n.PIDs() {
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			problems = append(problems, fmt.Sprintf("process group %d still exists", pid))
		}
	}
	if _, err := os.Stat(n.Dir()); !errors.Is(err, os.ErrNotExist) {
		problems = append(problems, "temp dir "+n.Dir()+" still exists")
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mounts), n.Dir()) {
		problems = append(problems, "mounts below "+n.Dir()+" remain")
	}
	for _, h := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup/memory", "/sys/fs/cgroup/cpu", "/sys/fs/cgroup/pids", "/sys/fs/cgroup"} {
		if _, err := os.Stat(filepath.Join(h, n.CgroupRoot())); err == nil {
			problems = append(problems, "cgroup "+filepath.Join(h, n.CgroupRoot())+" remains")
		}
	}
	if _, err := os.Stat(filepath.Join("/sys/class/net", n.Bridge())); err == nil {
		problems = append(problems, "bridge "+n.Bridge()+" remains")
	}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil || e.Name() == strconv.Itoa(os.Getpid()) {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(cmdline), n.Dir()) {
			problems = append(problems, fmt.Sprintf("process %s still runs: %s", e.Name(), strings.ReplaceAll(string(cmdline), "\x00", " ")))
		}
	}
	for name, v := range readSysctls() {
		if v != sysctls[name] {
			problems = append(problems, fmt.Sprintf("sysctl %s = %s, was %s", name, v, sysctls[name]))
		}
	}
	for _, p := range problems {
		fmt.Fprintln(os.Stderr, "FAIL: leftover:", p)
	}
	if len(problems) > 0 {
		return 1
	}
	return 0
}
