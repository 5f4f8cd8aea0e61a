package node_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/host"
	"github.com/riposte-dev/riposte/responders"
	"github.com/riposte-dev/riposte/responders/node"
)

// The test binary doubles as the "container" process: with RIPOSTE_HELPER set
// it runs as an echo server (serve) or an echo client (dial:<addr>) instead of
// the tests, so its sockets are created inside the pod cgroup it starts in.
func TestMain(m *testing.M) {
	switch mode := os.Getenv("RIPOSTE_HELPER"); {
	case mode == "serve":
		ln, err := net.Listen("tcp4", "127.0.0.1:0")
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println(ln.Addr().(*net.TCPAddr).Port)
		for {
			c, err := ln.Accept()
			if err != nil {
				os.Exit(1)
			}
			go echo(c)
		}
	case strings.HasPrefix(mode, "udp:"):
		// An unconnected UDP socket (sendto), as musl's resolver uses.
		to, err := net.ResolveUDPAddr("udp", strings.TrimPrefix(mode, "udp:"))
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		c, err := net.ListenUDP("udp", nil)
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		buf := make([]byte, 64)
		for i := 0; i < 20; i++ {
			if _, err := c.WriteToUDP([]byte("ping"), to); err != nil {
				fmt.Println("refused:", err) // the cgroup's egress filter dropped it
				os.Exit(0)
			}
			_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, _, err := c.ReadFromUDP(buf); err == nil && string(buf[:n]) == "ping" {
				fmt.Println("answered")
				os.Exit(0)
			}
		}
		fmt.Println("no answer")
		os.Exit(0)
	case strings.HasPrefix(mode, "dial:"):
		c, err := net.Dial("tcp", strings.TrimPrefix(mode, "dial:"))
		if err != nil {
			fmt.Println("ERR", err)
			os.Exit(1)
		}
		fmt.Println("connected")
		echo(c)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func echo(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		if _, err := c.Write([]byte(line)); err != nil {
			return
		}
	}
}

// Pod is a kubelet-style pod cgroup (kubepods/besteffort/pod<uid>/<container>)
// under a private root in the real cgroup v2 hierarchy.
type Pod struct {
	Root, UID, ContainerID, Dir string
}

// NewPod creates the cgroups; it fails (never skips) without cgroup v2 or root.
func NewPod(t *testing.T) *Pod {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatalf("this test needs root to create cgroups and load BPF programs")
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(host.DefaultCgroupRoot(), &st); err != nil || st.Type != 0x63677270 {
		t.Fatalf("cgroup v2 is not mounted at %s (statfs: %v): the kernel isolation test needs it", host.DefaultCgroupRoot(), err)
	}
	root, err := os.MkdirTemp(host.DefaultCgroupRoot(), "riposte-test-")
	if err != nil {
		t.Fatalf("create test cgroup root: %v", err)
	}
	p := &Pod{Root: root, UID: fmt.Sprintf("0000aaaa-%04d-4000-8000-%012d", os.Getpid()%10000, time.Now().UnixNano()%1e12), ContainerID: fmt.Sprintf("%064x", time.Now().UnixNano())}
	p.Dir = filepath.Join(root, "kubepods", "besteffort", "pod"+p.UID, p.ContainerID)
	if err := os.MkdirAll(p.Dir, 0o755); err != nil {
		t.Fatalf("create pod cgroup: %v", err)
	}
	t.Cleanup(func() {
		// Children first; a cgroup can only be removed when empty.
		for d := p.Dir; strings.HasPrefix(d, root); d = filepath.Dir(d) {
			for i := 0; i < 50; i++ {
				if err := syscall.Rmdir(d); err == nil || errors.Is(err, os.ErrNotExist) {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	})
	return p
}

// Start runs the test binary as a helper inside the container cgroup and returns
// it with the first line it printed.
func (p *Pod) Start(t *testing.T, mode string) (*exec.Cmd, string) {
	t.Helper()
	return p.StartBinary(t, os.Args[0], mode)
}

// StartBinary is Start with a copy (or another name) of the test binary.
func (p *Pod) StartBinary(t *testing.T, binary, mode string) (*exec.Cmd, string) {
	t.Helper()
	fd, err := os.Open(p.Dir)
	if err != nil {
		t.Fatalf("open container cgroup: %v", err)
	}
	defer fd.Close()
	cmd := exec.Command(binary, "-test.run=^$")
	cmd.Env = append(os.Environ(), "RIPOSTE_HELPER="+mode)
	// Started directly in the cgroup (clone3 CLONE_INTO_CGROUP), so every socket
	// it creates belongs to the pod from the start, as in a real container.
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper in cgroup %s: %v", p.Dir, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || strings.HasPrefix(line, "ERR") {
		t.Fatalf("helper %s: %q %v", mode, line, err)
	}
	return cmd, strings.TrimSpace(line)
}

// StartCommand runs a command inside the container cgroup (a small
// executable, for captures that copy it).
func (p *Pod) StartCommand(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	fd, err := os.Open(p.Dir)
	if err != nil {
		t.Fatalf("open container cgroup: %v", err)
	}
	defer fd.Close()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s in cgroup %s: %v", name, p.Dir, err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	return cmd
}

// roundTrip sends msg and waits up to wait for it to come back.
func roundTrip(c net.Conn, r *bufio.Reader, msg string, wait time.Duration) error {
	if msg != "" {
		if _, err := c.Write([]byte(msg + "\n")); err != nil {
			return err
		}
	}
	_ = c.SetReadDeadline(time.Now().Add(wait))
	got, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if want := msg; want != "" && strings.TrimSpace(got) != want {
		return fmt.Errorf("got %q, want %q", got, want)
	}
	return nil
}

func TestIsolateCutsEstablishedLoopbackConnectionAndReleaseRestoresIt(t *testing.T) {
	pod := NewPod(t)
	_, port := pod.Start(t, "serve")
	c, err := net.Dial("tcp4", "127.0.0.1:"+port)
	if err != nil {
		t.Fatalf("connect to the pod's server: %v", err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	if err := roundTrip(c, r, "before", 2*time.Second); err != nil {
		t.Fatalf("before isolation: %v", err)
	}

	pin := mountBPF(t)
	l := &node.Local{Cgroups: host.Cgroups{Root: pod.Root}, PinDir: pin}
	desc, err := l.IsolatePod(context.Background(), pod.UID, nil)
	if err != nil {
		t.Fatalf("isolate: %v", err)
	}
	t.Logf("isolate: %s", desc)
	if err := roundTrip(c, r, "during", time.Second); err == nil {
		t.Fatalf("the established connection still works while the pod is isolated")
	}
	// A new connection cannot be set up either.
	if nc, err := net.DialTimeout("tcp4", "127.0.0.1:"+port, 500*time.Millisecond); err == nil {
		nc.Close()
		t.Fatalf("a new connection to the isolated pod succeeded")
	}
	// An agent restart: the old process lets go, the isolation stays pinned...
	if err := l.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := roundTrip(c, r, "", 500*time.Millisecond); err == nil {
		t.Fatalf("the isolation ended with the process that attached it")
	}
	// ...and a fresh Local releases it through the pinned links.
	if err := (&node.Local{Cgroups: host.Cgroups{Root: pod.Root}, PinDir: pin}).ReleasePod(context.Background(), pod.UID); err != nil {
		t.Fatalf("release: %v", err)
	}
	// TCP retransmits the dropped "during" line; the echo arrives once released.
	if err := roundTrip(c, r, "", 15*time.Second); err != nil {
		t.Fatalf("after release, the held-back line did not come back: %v", err)
	}
	if err := roundTrip(c, r, "after", 2*time.Second); err != nil {
		t.Fatalf("after release: %v", err)
	}
	if l.Isolated(pod.UID) {
		t.Fatalf("pins still present after release")
	}
}

func TestIsolateAllowsOnlyListedPeers(t *testing.T) {
	pod := NewPod(t)
	allowed, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer allowed.Close()
	blocked, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer blocked.Close()
	_, lo, _ := net.ParseCIDR("127.0.0.0/8")
	allow := []responders.Peer{{Net: lo, Port: uint16(allowed.Addr().(*net.TCPAddr).Port)}}
	l := &node.Local{Cgroups: host.Cgroups{Root: pod.Root}}
	if _, err := l.IsolatePod(context.Background(), pod.UID, allow); err != nil {
		t.Fatalf("isolate: %v", err)
	}
	defer l.ReleasePod(context.Background(), pod.UID)

	// The helper in the pod dials out: the allowed peer answers, the other is unreachable.
	_, line := pod.Start(t, "dial:"+allowed.Addr().String())
	if line != "connected" {
		t.Fatalf("dial to the allowed peer: %q", line)
	}
	fd, _ := os.Open(pod.Dir)
	defer fd.Close()
	b := exec.Command(os.Args[0], "-test.run=^$")
	b.Env = append(os.Environ(), "RIPOSTE_HELPER=dial:"+blocked.Addr().String())
	b.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Process.Kill(); _ = b.Wait() }()
	_ = blocked.(*net.TCPListener).SetDeadline(time.Now().Add(time.Second))
	if c, err := blocked.Accept(); err == nil {
		c.Close()
		t.Fatalf("the pod reached a peer that is not on the allow list")
	}
}

func TestKillProcessChecksContainerAndKills(t *testing.T) {
	pod := NewPod(t)
	cmd, _ := pod.Start(t, "serve")
	l := &node.Local{Cgroups: host.Cgroups{Root: pod.Root}}
	// Another container of the same pod, which the process is not in.
	other := strings.Repeat("f", 64)
	if err := os.Mkdir(filepath.Join(filepath.Dir(pod.Dir), other), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Rmdir(filepath.Join(filepath.Dir(pod.Dir), other)) })
	st, err := host.Proc{}.Stat(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	for name, target := range map[string]responders.ProcessTarget{
		"a reused pid (another start time)":      {PID: cmd.Process.Pid, PodUID: pod.UID, ContainerID: "containerd://" + pod.ContainerID, StartTicks: st.StartTicks + 1},
		"another container of the pod":           {PID: cmd.Process.Pid, PodUID: pod.UID, ContainerID: "containerd://" + other},
		"a container that does not exist":        {PID: cmd.Process.Pid, PodUID: pod.UID, ContainerID: "containerd://" + strings.Repeat("e", 64)},
		"no container, host not allowed":         {PID: cmd.Process.Pid},
		"a container's process taken for host's": {PID: cmd.Process.Pid, Host: true},
	} {
		if err := l.KillProcess(context.Background(), target); err == nil {
			t.Fatalf("%s: killed a process that is not the target's", name)
		}
	}
	if err := l.KillProcess(context.Background(), responders.ProcessTarget{PID: cmd.Process.Pid, PodUID: pod.UID, ContainerID: "containerd://" + pod.ContainerID, StartTicks: st.StartTicks}); err != nil {
		t.Fatalf("kill: %v", err)
	}
	err = cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("helper exit: %v, want killed by SIGKILL", err)
	}
	// Killing it again (a restarted runner) reports it gone, not killed.
	if err := l.KillProcess(context.Background(), responders.ProcessTarget{PID: cmd.Process.Pid, PodUID: pod.UID, ContainerID: "containerd://" + pod.ContainerID}); !errors.Is(err, responders.ErrGone) {
		t.Fatalf("second kill: %v, want ErrGone", err)
	}
}

func TestKillContainerKillsEveryProcessOfItsCgroup(t *testing.T) {
	pod := NewPod(t)
	a, _ := pod.Start(t, "serve")
	b, _ := pod.Start(t, "serve")
	l := &node.Local{Cgroups: host.Cgroups{Root: pod.Root}}
	if err := l.KillContainer(context.Background(), pod.UID, "containerd://"+pod.ContainerID); err != nil {
		t.Fatalf("kill container: %v", err)
	}
	for _, cmd := range []*exec.Cmd{a, b} {
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("pid %d exit: %v, want killed by SIGKILL", cmd.Process.Pid, err)
		}
	}
}

// mountBPF mounts a private bpffs for pinning and unmounts it at cleanup.
func mountBPF(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := syscall.Mount("bpf", dir, "bpf", 0, ""); err != nil {
		t.Fatalf("mount bpffs at %s: %v", dir, err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, syscall.MNT_DETACH) })
	return dir
}

// BenchmarkIsolateRelease measures the kernel layer alone: find the pod
// cgroup, load the program, attach ingress and egress, then detach.
func BenchmarkIsolateRelease(b *testing.B) {
	root, err := os.MkdirTemp(host.DefaultCgroupRoot(), "riposte-bench-")
	if err != nil {
		b.Fatalf("create cgroup root: %v", err)
	}
	uid := "0000bbbb-0000-4000-8000-000000000001"
	dir := filepath.Join(root, "kubepods", "besteffort", "pod"+uid)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	defer func() {
		for d := dir; strings.HasPrefix(d, root); d = filepath.Dir(d) {
			_ = syscall.Rmdir(d)
		}
	}()
	l := &node.Local{Cgroups: host.Cgroups{Root: root}}
	ctx := context.Background()
	for b.Loop() {
		if _, err := l.IsolatePod(ctx, uid, nil); err != nil {
			b.Fatal(err)
		}
		if err := l.ReleasePod(ctx, uid); err != nil {
			b.Fatal(err)
		}
	}
}

func TestIsolateAllowsListedIPv6Peer(t *testing.T) {
	pod := NewPod(t)
	allowed, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatalf("listen on ::1: %v", err)
	}
	defer allowed.Close()
	blocked, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}
	defer blocked.Close()
	_, lo6, _ := net.ParseCIDR("::1/128")
	l := &node.Local{Cgroups: host.Cgroups{Root: pod.Root}}
	if _, err := l.IsolatePod(context.Background(), pod.UID, []responders.Peer{{Net: lo6, Port: uint16(allowed.Addr().(*net.TCPAddr).Port)}}); err != nil {
		t.Fatalf("isolate: %v", err)
	}
	defer l.ReleasePod(context.Background(), pod.UID)
	if _, line := pod.Start(t, "dial:"+allowed.Addr().String()); line != "connected" {
		t.Fatalf("dial to the allowed IPv6 peer: %q", line)
	}
	fd, _ := os.Open(pod.Dir)
	defer fd.Close()
	b := exec.Command(os.Args[0], "-test.run=^$")
	b.Env = append(os.Environ(), "RIPOSTE_HELPER=dial:"+blocked.Addr().String())
	b.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(fd.Fd())}
	if err := b.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Process.Kill(); _ = b.Wait() }()
	_ = blocked.(*net.TCPListener).SetDeadline(time.Now().Add(time.Second))
	if c, err := blocked.Accept(); err == nil {
		c.Close()
		t.Fatalf("the pod reached an IPv6 peer that is not on the allow list")
	}
}

// udpEcho answers every datagram on a loopback port with itself, and counts
// what it received.
func udpEcho(t *testing.T, network, addr string) (*net.UDPConn, *atomic.Int64) {
	t.Helper()
	c, err := net.ListenPacket(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	var got atomic.Int64
	go func() {
		buf := make([]byte, 64)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			got.Add(1)
			_, _ = c.WriteTo(buf[:n], from)
		}
	}()
	return c.(*net.UDPConn), &got
}

// TestIsolateJudgesUnconnectedUDPByItsPackets: a resolver that does not
// connect its UDP socket (musl's sendto) has no remote address on the
// socket; the kernel layer judges each datagram by its own addresses, so a
// query to the allowed DNS peer is answered and the same query to another
// address on port 53 never leaves.
func TestIsolateJudgesUnconnectedUDPByItsPackets(t *testing.T) {
	pod := NewPod(t)
	allowed, allowedGot := udpEcho(t, "udp4", "127.0.0.1:0")
	other, otherGot := udpEcho(t, "udp4", "127.0.0.2:"+strconv.Itoa(allowed.LocalAddr().(*net.UDPAddr).Port))
	port := uint16(allowed.LocalAddr().(*net.UDPAddr).Port)
	_, one, _ := net.ParseCIDR("127.0.0.1/32")
	l := &node.Local{Cgroups: host.Cgroups{Root: pod.Root}}
	if _, err := l.IsolatePod(context.Background(), pod.UID, []responders.Peer{{Net: one, Port: port}}); err != nil {
		t.Fatalf("isolate: %v", err)
	}
	defer l.ReleasePod(context.Background(), pod.UID)
	if _, line := pod.Start(t, "udp:"+allowed.LocalAddr().String()); line != "answered" {
		t.Fatalf("a datagram to the allowed peer %s: %q (server received %d)", allowed.LocalAddr(), line, allowedGot.Load())
	}
	if _, line := pod.Start(t, "udp:"+other.LocalAddr().String()); !strings.HasPrefix(line, "refused") || otherGot.Load() != 0 {
		t.Fatalf("a datagram to %s, same port, not allowed: %q, the server received %d", other.LocalAddr(), line, otherGot.Load())
	}
}
