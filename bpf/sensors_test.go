package bpf

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf/ringbuf"

	"github.com/riposte-dev/riposte/engine"
)

// collector reads the ring buffer in the background and keeps every event.
type collector struct {
	s     *Sensors
	mu    sync.Mutex
	evs   []engine.Event
	metas []Meta
	bad   []error
	wg    sync.WaitGroup
}

// loadForTest loads the sensors or fails: these tests prove kernel
// behaviour, a machine that cannot load them must not pass them.
func loadForTest(t *testing.T, opts Options) (*Sensors, *collector) {
	t.Helper()
	s, err := Load(opts)
	if err != nil {
		t.Fatalf("the sensors must load on this machine (run the tests as root on a kernel with BTF): %v", err)
	}
	c := &collector{s: s}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		d := Decoder{Boot: BootTime()}
		var rec ringbuf.Record
		for {
			if err := s.Read(&rec); err != nil {
				if errors.Is(err, ringbuf.ErrClosed) {
					return
				}
				continue
			}
			var ev engine.Event
			m, err := d.Decode(rec.RawSample, &ev)
			if err != nil {
				c.mu.Lock()
				c.bad = append(c.bad, err)
				c.mu.Unlock()
				continue
			}
			c.mu.Lock()
			c.evs = append(c.evs, ev)
			c.metas = append(c.metas, m)
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		s.Close()
		c.wg.Wait()
		if len(c.bad) > 0 {
			t.Errorf("undecodable records: %v", c.bad)
		}
	})
	return s, c
}

// wait returns the first event for which ok is true, failing after 5 s.
func (c *collector) wait(t *testing.T, what string, ok func(*engine.Event) bool) engine.Event {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		c.mu.Lock()
		for i := range c.evs {
			if ok(&c.evs[i]) {
				ev := c.evs[i]
				c.mu.Unlock()
				return ev
			}
		}
		c.mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("no %s event within 5s", what)
	return engine.Event{}
}

func (c *collector) snapshot() []engine.Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]engine.Event(nil), c.evs...)
}

func (c *collector) count(ok func(*engine.Event) bool) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for i := range c.evs {
		if ok(&c.evs[i]) {
			n++
		}
	}
	return n
}

// passAll is a filter under which every kind passes.
func passAll() *Filter {
	return NewFilter([]RuleConstraints{{Name: "all", Constraints: engine.Constraints{Kinds: engine.AllKinds()}}})
}

func run(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %v: %v: %s", name, args, err, out)
	}
	return cmd
}

func realPath(t *testing.T, p string) string {
	t.Helper()
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestExecEventCarriesExactProcessFields(t *testing.T) {
	s, c := loadForTest(t, Options{})
	if err := s.SetFilter(passAll()); err != nil {
		t.Fatal(err)
	}
	cmd := run(t, "/bin/true", "first arg", "second")
	pid := int64(cmd.Process.Pid)
	ev := c.wait(t, "exec", func(e *engine.Event) bool { return e.Kind == engine.KindExec && e.Process.PID == pid })
	p := ev.Process
	if want := realPath(t, "/bin/true"); p.Binary != want {
		t.Errorf("binary = %q, want %q", p.Binary, want)
	}
	if want := []string{"/bin/true", "first arg", "second"}; !slices.Equal(p.Args, want) {
		t.Errorf("args = %q, want %q", p.Args, want)
	}
	if p.PPID != int64(os.Getpid()) || p.TID != pid || p.UID != 0 || p.GID != 0 || p.EUID != 0 {
		t.Errorf("ids: ppid %d tid %d uid %d gid %d euid %d; want ppid %d tid %d and root", p.PPID, p.TID, p.UID, p.GID, p.EUID, os.Getpid(), pid)
	}
	if p.Comm != "true" {
		t.Errorf("comm = %q, want true", p.Comm)
	}
	if p.MntNS != uint64(s.HostMntNS) {
		t.Errorf("mntns = %d, want the host's %d", p.MntNS, s.HostMntNS)
	}
	var st = mustStat(t, "/bin/true")
	if p.Exe.Inode != st || p.Exe.Upper || p.Exe.Memfd {
		t.Errorf("exe = %+v, want inode %d, not upper, not memfd", p.Exe, st)
	}
	if p.CgroupID == 0 || p.PidNS == 0 {
		t.Errorf("cgroup %d pidns %d: want both set", p.CgroupID, p.PidNS)
	}
	if d := time.Since(ev.Time); d < 0 || d > 10*time.Second {
		t.Errorf("event time %v is %v from now", ev.Time, d)
	}
	// The fork that made the child and its exit are reported too.
	c.wait(t, "fork", func(e *engine.Event) bool {
		return e.Kind == engine.KindFork && e.Process.PID == pid && e.Process.PPID == int64(os.Getpid())
	})
	c.wait(t, "exit", func(e *engine.Event) bool {
		return e.Kind == engine.KindExit && e.Process.PID == pid && e.Syscall.Ret == 0
	})
}

func mustStat(t *testing.T, p string) uint64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

func TestOpenEventResolvesPathAndTellsWrites(t *testing.T) {
	s, c := loadForTest(t, Options{})
	if err := s.SetFilter(passAll()); err != nil {
		t.Fatal(err)
	}
	dir := realPath(t, t.TempDir())
	file := filepath.Join(dir, "secret")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	// cat opens by a relative path: the event still carries the absolute one.
	cmd := exec.Command("/bin/cat", "secret")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cat: %v %s", err, out)
	}
	pid := int64(cmd.Process.Pid)
	ev := c.wait(t, "open", func(e *engine.Event) bool {
		return e.Kind == engine.KindOpen && e.Process.PID == pid && e.File.Path == file
	})
	if ev.File.Write || ev.File.Flags&3 != 0 || ev.File.Inode != mustStat(t, file) || ev.File.Mode&0o777 != 0o600 {
		t.Errorf("read open: %+v; want read-only, inode %d, mode 0600", ev.File, mustStat(t, file))
	}
	cmd = run(t, "/bin/sh", "-c", "echo y >> "+file)
	pid = int64(cmd.Process.Pid)
	ev = c.wait(t, "write open", func(e *engine.Event) bool {
		return e.Kind == engine.KindOpen && e.Process.PID == pid && e.File.Path == file
	})
	if !ev.File.Write || ev.File.Flags&0x401 != 0x401 {
		t.Errorf("append open: %+v; want write with O_WRONLY|O_APPEND", ev.File)
	}
}

func TestConnectAndListenEventsCarryAddresses(t *testing.T) {
	s, c := loadForTest(t, Options{})
	if err := s.SetFilter(passAll()); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			conn.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	cmd := run(t, "/bin/bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d", port))
	pid := int64(cmd.Process.Pid)
	ev := c.wait(t, "connect", func(e *engine.Event) bool { return e.Kind == engine.KindConnect && e.Process.PID == pid })
	n := ev.Net
	if n.Family != "ipv4" || n.Protocol != "tcp" || n.Peer.IP != "127.0.0.1" || n.Peer.Port != int64(port) {
		t.Errorf("connect: %+v; want tcp ipv4 to 127.0.0.1:%d", n, port)
	}
	// IPv6 and listen from a child: python binds [::1]:0 and listens.
	cmd = run(t, "/usr/bin/perl", "-MIO::Socket::IP", "-e",
		`my $s = IO::Socket::IP->new(LocalHost => "::1", LocalPort => 47613, Listen => 1, ReuseAddr => 1) or die $!; my $c = IO::Socket::IP->new(PeerHost => "::1", PeerPort => 47613) or die $!;`)
	pid = int64(cmd.Process.Pid)
	ev = c.wait(t, "listen", func(e *engine.Event) bool { return e.Kind == engine.KindListen && e.Process.PID == pid })
	if n := ev.Net; n.Family != "ipv6" || n.Local.IP != "::1" || n.Local.Port != 47613 || n.Peer.IP != "" || n.Peer.Port != 0 {
		t.Errorf("listen: %+v; want ipv6 [::1]:47613 with no peer", n)
	}
	ev = c.wait(t, "connect6", func(e *engine.Event) bool { return e.Kind == engine.KindConnect && e.Process.PID == pid })
	if n := ev.Net; n.Family != "ipv6" || n.Peer.IP != "::1" || n.Peer.Port != 47613 {
		t.Errorf("connect6: %+v; want [::1]:47613", n)
	}
	// IPv4 listen and accept read both addresses from the socket: a child
	// listens on 127.0.0.1, connects from 127.0.0.1 and accepts.
	cmd = run(t, "/usr/bin/perl", "-MIO::Socket::IP", "-e",
		`my $s = IO::Socket::IP->new(LocalHost => "127.0.0.1", LocalPort => 47614, Listen => 1, ReuseAddr => 1) or die $!; my $c = IO::Socket::IP->new(PeerHost => "127.0.0.1", PeerPort => 47614) or die $!; $s->accept or die $!; print $c->sockport;`)
	pid = int64(cmd.Process.Pid)
	ev = c.wait(t, "listen4", func(e *engine.Event) bool { return e.Kind == engine.KindListen && e.Process.PID == pid })
	if n := ev.Net; n.Family != "ipv4" || n.Local.IP != "127.0.0.1" || n.Local.Port != 47614 || n.Peer.IP != "" {
		t.Errorf("listen4: %+v; want 127.0.0.1:47614 with no peer", n)
	}
	ev = c.wait(t, "accept4", func(e *engine.Event) bool { return e.Kind == engine.KindAccept && e.Process.PID == pid })
	if n := ev.Net; n.Family != "ipv4" || n.Local.IP != "127.0.0.1" || n.Local.Port != 47614 || n.Peer.IP != "127.0.0.1" || n.Peer.Port == 0 {
		t.Errorf("accept4: %+v; want 127.0.0.1:47614 from 127.0.0.1", n)
	}
}

func TestPrivilegeSignalsAreReported(t *testing.T) {
	s, c := loadForTest(t, Options{})
	if err := s.SetFilter(passAll()); err != nil {
		t.Fatal(err)
	}
	// perl's $< = assignment calls setreuid/setresuid; unshare comes from the tool.
	cmd := run(t, "/usr/bin/perl", "-e", `$) = "1234 1234"; $> = 4321;`)
	pid := int64(cmd.Process.Pid)
	ev := c.wait(t, "setuid", func(e *engine.Event) bool {
		return e.Kind == engine.KindSetuid && e.Process.PID == pid && e.Syscall.UID == 4321
	})
	if ev.Syscall.Name == "" {
		t.Errorf("setuid event without a syscall name: %+v", ev.Syscall)
	}
	if _, err := exec.LookPath("unshare"); err == nil {
		cmd = run(t, "unshare", "--uts", "/bin/true")
		pid = int64(cmd.Process.Pid)
		ev = c.wait(t, "unshare", func(e *engine.Event) bool { return e.Kind == engine.KindUnshare && e.Process.PID == pid })
		if ev.Syscall.Name != "unshare" || ev.Syscall.Flags&0x04000000 == 0 {
			t.Errorf("unshare: %+v; want CLONE_NEWUTS", ev.Syscall)
		}
	}
}

// TestDeepPathIsPassedNotJudgedByItsTail: a file deeper than the kernel
// walks reaches user space even though its tail does not have the rule's
// prefix, flagged incomplete.
func TestDeepPathIsPassedNotJudgedByItsTail(t *testing.T) {
	s, c := loadForTest(t, Options{})
	dir := realPath(t, t.TempDir())
	deep := dir
	for range 70 {
		deep = filepath.Join(deep, "d")
	}
	if err := os.MkdirAll(deep, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(deep, "f")
	os.WriteFile(file, nil, 0o644)
	if err := s.SetFilter(NewFilter([]RuleConstraints{{Name: "under-dir", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindOpen}, PathPrefixes: []string{dir + "/"}}}})); err != nil {
		t.Fatal(err)
	}
	cmd := run(t, "/bin/cat", file)
	pid := int64(cmd.Process.Pid)
	ev := c.wait(t, "open of the deep file", func(e *engine.Event) bool {
		return e.Kind == engine.KindOpen && e.Process.PID == pid && strings.HasSuffix(e.File.Path, "/d/d/f")
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, e := range c.evs {
		if e.Process.PID == pid && e.File.Path == ev.File.Path && !c.metas[i].PathIncomplete {
			t.Errorf("deep path %q not flagged incomplete", e.File.Path)
		}
	}
}

// TestContainerCgroupCountsAsContainer: a process in the host's mount
// namespace but in a cgroup enrichment calls a container's passes a
// container-only rule; removed, it is dropped again.
func TestContainerCgroupCountsAsContainer(t *testing.T) {
	s, c := loadForTest(t, Options{})
	trueBin := realPath(t, "/bin/true")
	// The marker binary passes on the host: once its exec is read, every
	// earlier event that passed has been read (the ring buffer is ordered).
	marker := filepath.Join(realPath(t, t.TempDir()), "marker")
	data, err := os.ReadFile(trueBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(marker, data, 0o755); err != nil {
		t.Fatal(err)
	}
	f := NewFilter([]RuleConstraints{
		{Name: "c", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindExec}, Binaries: []string{trueBin}, ContainerOnly: true}},
		{Name: "marker", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindExec}, Binaries: []string{marker}}},
	})
	if err := s.SetFilter(f); err != nil {
		t.Fatal(err)
	}
	runBin := func(bin string) int64 {
		cmd := exec.Command(bin)
		if err := cmd.Run(); err != nil {
			t.Fatal(err)
		}
		return int64(cmd.Process.Pid)
	}
	runTrue := func() int64 { return runBin(trueBin) }
	pid := runTrue()
	// Our own cgroup (the child inherits it) becomes a "container".
	cg := cgroupID(t)
	if err := s.SetContainerCgroup(cg, CgroupUnknown); err != nil {
		t.Fatal(err)
	}
	pid2 := runTrue()
	ev := c.wait(t, "exec from the container cgroup", func(e *engine.Event) bool { return e.Kind == engine.KindExec && e.Process.PID == pid2 })
	if ev.Process.CgroupID != cg {
		t.Errorf("event cgroup id %d, want %d", ev.Process.CgroupID, cg)
	}
	if err := s.RemoveContainerCgroup(cg); err != nil {
		t.Fatal(err)
	}
	pid3 := runTrue()
	mpid := runBin(marker)
	c.wait(t, "exec of the marker", func(e *engine.Event) bool { return e.Kind == engine.KindExec && e.Process.PID == mpid })
	for _, p := range []int64{pid, pid3} {
		if n := c.count(func(e *engine.Event) bool { return e.Kind == engine.KindExec && e.Process.PID == p }); n != 0 {
			t.Errorf("host exec %d passed a container-only rule", p)
		}
	}
}

// cgroupID is the cgroup v2 id of this process: the inode of its directory.
func cgroupID(t *testing.T) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		rest, ok := strings.CutPrefix(line, "0::")
		if !ok {
			continue
		}
		for _, root := range []string{"/sys/fs/cgroup/unified", "/sys/fs/cgroup"} {
			if fi, err := os.Stat(filepath.Join(root, rest, "cgroup.procs")); err == nil {
				dir, _ := os.Stat(filepath.Dir(filepath.Join(root, rest, "cgroup.procs")))
				_ = fi
				return dir.Sys().(*syscall.Stat_t).Ino
			}
		}
	}
	t.Fatal("no cgroup v2 id for this process")
	return 0
}
