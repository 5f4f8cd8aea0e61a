package bpf

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"golang.org/x/sys/unix"

	"github.com/riposte-dev/riposte/engine"
)

// ErrMissing is returned (wrapped, with what is missing) when the machine
// cannot run the sensors: not root, no BTF, no tracefs.
var ErrMissing = errors.New("eBPF sensors unavailable")

// Outcomes counted per kind, in the kernel's order (c/common.h enum outcome).
const (
	OutcomeSeen      = "seen"
	OutcomeDropped   = "dropped"
	OutcomeSubmitted = "submitted"
	OutcomeLost      = "lost"
)

// Outcomes lists the outcomes in counter order.
var Outcomes = []string{OutcomeSeen, OutcomeDropped, OutcomeSubmitted, OutcomeLost}

// Options tune the sensors.
type Options struct {
	// ReportSelf reports the agent's own activity (tests that drive events
	// from the test process itself set it); by default it is dropped in the
	// kernel so the agent does not observe its own map updates and reads.
	ReportSelf bool
	// Always lists kinds submitted whatever the filter says.
	Always []engine.Kind
	// HostPID is a process in the host's mount namespace (default 1, init):
	// any other mount namespace is a container's.
	HostPID int
}

// Sensors are the loaded and attached programs, their maps and the ring
// buffer reader. Methods are safe for concurrent use, except that one
// goroutine reads.
type Sensors struct {
	objs  sensorsObjects
	links []link.Link
	rd    *ringbuf.Reader

	mu     sync.Mutex // serialises filter and kill-map updates
	gen    uint32     // the live filter generation
	base   sensorsFilterCfg
	filter *Filter
	kills  struct{ bins, names map[string]KillTarget }

	// HostMntNS is the host's mount namespace: another one is a container.
	HostMntNS uint32
}

// Check reports what this machine lacks to run the sensors, wrapped in
// ErrMissing, or nil.
func Check() error {
	var missing []string
	if os.Geteuid() != 0 {
		missing = append(missing, "root (effective uid 0) to load eBPF programs")
	}
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		missing = append(missing, "kernel BTF at /sys/kernel/btf/vmlinux (CONFIG_DEBUG_INFO_BTF=y)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: missing %s", ErrMissing, strings.Join(missing, "; "))
	}
	return nil
}

// ensureTracefs mounts tracefs when nothing provides it: syscall tracepoints
// are attached by the ids tracefs lists.
func ensureTracefs() error {
	for _, p := range []string{"/sys/kernel/tracing/events", "/sys/kernel/debug/tracing/events"} {
		if _, err := os.Stat(p); err == nil {
			return nil
		}
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("%w: missing tracefs at /sys/kernel/tracing and mounting it failed: %v", ErrMissing, err)
	}
	return nil
}

// Load loads the sensors, sets a filter that drops everything, attaches
// every program and opens the ring buffer.
func Load(opts Options) (*Sensors, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if err := ensureTracefs(); err != nil {
		return nil, err
	}
	spec, err := loadSensors()
	if err != nil {
		return nil, fmt.Errorf("load sensor spec: %w", err)
	}
	s := &Sensors{}
	if err := spec.LoadAndAssign(&s.objs, nil); err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load sensors: %+v", ve)
		}
		if errors.Is(err, unix.EPERM) {
			return nil, fmt.Errorf("%w: the kernel refused to load eBPF programs (EPERM): %v", ErrMissing, err)
		}
		return nil, fmt.Errorf("load sensors: %w", err)
	}
	// The host's mount namespace is init's (or HostPID's); where it is
	// hidden (a sandbox), the agent's own stands in for it.
	hostPID := opts.HostPID
	if hostPID <= 0 {
		hostPID = 1
	}
	ns, err := mntNS(fmt.Sprintf("/proc/%d/ns/mnt", hostPID))
	if err != nil {
		ns, err = mntNS("/proc/self/ns/mnt")
	}
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("read host mount namespace: %w", err)
	}
	s.HostMntNS = ns
	s.base.HostMntns = ns
	if !opts.ReportSelf {
		s.base.AgentTgid = uint32(os.Getpid())
	}
	for _, k := range opts.Always {
		if n := kindNumber(k); n != 0 {
			s.base.Always |= 1 << n
		}
	}
	if err := s.SetFilter(NewFilter(nil)); err != nil {
		s.Close()
		return nil, err
	}
	for name, ps := range spec.Programs {
		prog := progByName(&s.objs.sensorsPrograms, name)
		if prog == nil {
			continue
		}
		l, err := attach(ps.SectionName, prog)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("attach %s (%s): %w", name, ps.SectionName, err)
		}
		s.links = append(s.links, l)
	}
	s.rd, err = ringbuf.NewReader(s.objs.Events)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return s, nil
}

func attach(section string, prog *ebpf.Program) (link.Link, error) {
	switch {
	case strings.HasPrefix(section, "tp_btf/"):
		return link.AttachTracing(link.TracingOptions{Program: prog})
	case strings.HasPrefix(section, "tracepoint/"):
		parts := strings.SplitN(strings.TrimPrefix(section, "tracepoint/"), "/", 2)
		if len(parts) != 2 {
			return nil, fmt.Errorf("malformed section %q", section)
		}
		return link.Tracepoint(parts[0], parts[1], prog, nil)
	}
	return nil, fmt.Errorf("no attach rule for section %q", section)
}

func progByName(p *sensorsPrograms, name string) *ebpf.Program {
	return map[string]*ebpf.Program{
		"on_exec": p.OnExec, "on_fork": p.OnFork, "on_exit": p.OnExit,
		"on_sys_exit": p.OnSysExit,
	}[name]
}

// mntNS returns the inode number of a mount namespace link.
func mntNS(path string) (uint32, error) {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0, err
	}
	return uint32(st.Ino), nil
}

// Close detaches everything and frees the maps.
func (s *Sensors) Close() error {
	if s.rd != nil {
		s.rd.Close()
	}
	for _, l := range s.links {
		l.Close()
	}
	s.links = nil
	return s.objs.Close()
}

// SetFilter writes a filter into the kernel without reattaching anything:
// the new generation is written beside the live one, then made live with one
// map update, then the old generation is deleted.
func (s *Sensors) SetFilter(f *Filter) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := s.gen ^ 1
	if s.filter == nil {
		next = s.gen // first filter: nothing is live yet
	}
	if err := s.clearGen(next); err != nil {
		return err
	}
	cfg := s.base
	cfg.KindRules = f.kindRules
	cfg.HostOk, cfg.BinAny, cfg.BaseAny, cfg.PathAny = f.hostOK, f.binAny, f.baseAny, f.pathAny
	cfg.PportAny, cfg.LportAny, cfg.CidrAny = f.pportAny, f.lportAny, f.cidrAny
	if err := s.objs.Filter.Put(next, &cfg); err != nil {
		return fmt.Errorf("write filter config: %w", err)
	}
	for b, m := range f.bins {
		if err := s.objs.FilterBins.Put(strKey(next, b), m); err != nil {
			return fmt.Errorf("write filter binary %q: %w", b, err)
		}
	}
	for n, m := range f.names {
		if err := s.objs.FilterNames.Put(nameKey(next, n), m); err != nil {
			return fmt.Errorf("write filter base name %q: %w", n, err)
		}
	}
	for p, m := range f.paths {
		if err := s.objs.FilterPaths.Put(pathKey(next, p), m); err != nil {
			return fmt.Errorf("write filter path prefix %q: %w", p, err)
		}
	}
	for p, m := range f.pports {
		if err := s.objs.FilterPports.Put(sensorsPortKey{Gen: next, Port: uint32(p)}, m); err != nil {
			return fmt.Errorf("write filter peer port %d: %w", p, err)
		}
	}
	for p, m := range f.lports {
		if err := s.objs.FilterLports.Put(sensorsPortKey{Gen: next, Port: uint32(p)}, m); err != nil {
			return fmt.Errorf("write filter local port %d: %w", p, err)
		}
	}
	for p, m := range f.cidr4 {
		k := sensorsLpmV4Key{Prefixlen: 8 + uint32(p.Bits()), Gen: uint8(next), A: p.Addr().As4()}
		if err := s.objs.FilterCidr4.Put(k, m); err != nil {
			return fmt.Errorf("write filter CIDR %s: %w", p, err)
		}
	}
	for p, m := range f.cidr6 {
		k := sensorsLpmV6Key{Prefixlen: 8 + uint32(p.Bits()), Gen: uint8(next), A: p.Addr().As16()}
		if err := s.objs.FilterCidr6.Put(k, m); err != nil {
			return fmt.Errorf("write filter CIDR %s: %w", p, err)
		}
	}
	if err := s.objs.Active.Put(uint32(0), next); err != nil {
		return fmt.Errorf("switch filter generation: %w", err)
	}
	old := s.gen
	s.gen, s.filter = next, f
	if old != next {
		if err := s.clearGen(old); err != nil {
			return err
		}
	}
	return nil
}

// Filter returns the live filter.
func (s *Sensors) Filter() *Filter {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.filter
}

// clearGen deletes every map entry of a generation.
func (s *Sensors) clearGen(gen uint32) error {
	var errs []error
	del := func(m *ebpf.Map, keyOf func(k []byte) bool, size int) {
		var keys [][]byte
		k := make([]byte, size)
		it := m.Iterate()
		var v uint64
		for it.Next(&k, &v) {
			if keyOf(k) {
				keys = append(keys, append([]byte(nil), k...))
			}
		}
		if err := it.Err(); err != nil {
			errs = append(errs, fmt.Errorf("iterate %s: %w", m, err))
		}
		for _, k := range keys {
			if err := m.Delete(k); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
				errs = append(errs, fmt.Errorf("delete from %s: %w", m, err))
			}
		}
	}
	u32gen := func(k []byte) bool { return le.Uint32(k) == gen }
	lpmgen := func(k []byte) bool { return uint32(k[4]) == gen }
	del(s.objs.FilterBins, u32gen, 4+pathMax)
	del(s.objs.FilterNames, u32gen, 4+64)
	del(s.objs.FilterPports, u32gen, 8)
	del(s.objs.FilterLports, u32gen, 8)
	del(s.objs.FilterPaths, lpmgen, 4+1+pathMax-1)
	del(s.objs.FilterCidr4, lpmgen, 12)
	del(s.objs.FilterCidr6, lpmgen, 24)
	return errors.Join(errs...)
}

func strKey(gen uint32, s string) sensorsStrKey {
	k := sensorsStrKey{Gen: gen}
	copyStr(k.S[:], s)
	return k
}

func nameKey(gen uint32, s string) sensorsNameKey {
	k := sensorsNameKey{Gen: gen}
	copyStr(k.S[:], s)
	return k
}

func pathKey(gen uint32, p string) sensorsLpmPathKey {
	k := sensorsLpmPathKey{Prefixlen: 8 + 8*uint32(len(p)), Gen: uint8(gen)}
	copyStr(k.S[:], p)
	return k
}

func copyStr(dst []int8, s string) {
	for i := 0; i < len(s) && i < len(dst); i++ {
		dst[i] = int8(s[i])
	}
}

// KillTarget is an in-kernel kill-map entry: the rule's slot (index + 1,
// reported back in the exec record) and where its playbook lets the kernel
// kill. By default only processes of known containers outside the
// protected namespaces are killed.
type KillTarget struct {
	Slot uint32
	// Host lets the kernel kill host processes (not in any container).
	Host bool
	// Protected lets it kill in containers of protected namespaces.
	Protected bool
}

// Kill-map value flags (c/common.h KILL_*).
const (
	killSlotMask  = 0xffffff
	killHost      = 1 << 24
	killProtected = 1 << 25
)

func (k KillTarget) value() (uint32, error) {
	if k.Slot == 0 || k.Slot > killSlotMask {
		return 0, fmt.Errorf("kill slot %d out of range", k.Slot)
	}
	v := k.Slot
	if k.Host {
		v |= killHost
	}
	if k.Protected {
		v |= killProtected
	}
	return v, nil
}

// SetKill replaces the in-kernel kill sets: exec of an exact binary path or
// base name is killed with SIGKILL before the binary runs where the
// target allows it, and reported with the target's slot.
func (s *Sensors) SetKill(bins, names map[string]KillTarget) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for b, t := range bins {
		if len(b) > maxBinary {
			return fmt.Errorf("kill binary %q: longer than %d bytes", b, maxBinary)
		}
		v, err := t.value()
		if err != nil {
			return fmt.Errorf("kill binary %q: %w", b, err)
		}
		if err := s.objs.KillBins.Put(strKey(0, b), v); err != nil {
			return fmt.Errorf("write kill binary %q: %w", b, err)
		}
	}
	for n, t := range names {
		if len(n) > maxBasename {
			return fmt.Errorf("kill base name %q: longer than %d bytes", n, maxBasename)
		}
		v, err := t.value()
		if err != nil {
			return fmt.Errorf("kill base name %q: %w", n, err)
		}
		if err := s.objs.KillNames.Put(nameKey(0, n), v); err != nil {
			return fmt.Errorf("write kill base name %q: %w", n, err)
		}
	}
	for b := range s.kills.bins {
		if _, keep := bins[b]; !keep {
			s.objs.KillBins.Delete(strKey(0, b))
		}
	}
	for n := range s.kills.names {
		if _, keep := names[n]; !keep {
			s.objs.KillNames.Delete(nameKey(0, n))
		}
	}
	s.kills.bins, s.kills.names = bins, names
	return nil
}

// CgroupClass is what the kernel knows of a container cgroup: that it is a
// container's (container-only rules and the filter) and whether in-kernel
// kill may act there (c/common.h CG_*).
type CgroupClass uint8

// Cgroup classes.
const (
	// CgroupUnknown: a container whose pod is not known yet; never killed
	// in the kernel.
	CgroupUnknown CgroupClass = 1
	// CgroupContainer: a container of a known pod outside the protected
	// namespaces.
	CgroupContainer CgroupClass = 2
	// CgroupProtected: a container of a pod in a protected namespace.
	CgroupProtected CgroupClass = 3
)

// SetContainerCgroup tells the kernel that a cgroup (v2 id) is a
// container's: its processes count as in a container for container-only
// rules even in the host's mount namespace, and class says whether an
// in-kernel kill may act there. Enrichment must call it for every cgroup it
// gives a container id to, before relying on it.
func (s *Sensors) SetContainerCgroup(id uint64, class CgroupClass) error {
	if err := s.objs.ContainerCgroups.Put(id, uint8(class)); err != nil {
		return fmt.Errorf("add container cgroup %d: %w", id, err)
	}
	return nil
}

// RemoveContainerCgroup forgets a container's cgroup (the container is gone).
func (s *Sensors) RemoveContainerCgroup(id uint64) error {
	if err := s.objs.ContainerCgroups.Delete(id); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("remove container cgroup %d: %w", id, err)
	}
	return nil
}

// Read blocks for the next record and returns its bytes, valid until the
// next call. It returns ringbuf.ErrClosed after Close.
func (s *Sensors) Read(rec *ringbuf.Record) error {
	return s.rd.ReadInto(rec)
}

// SetDeadline makes Read return os.ErrDeadlineExceeded after t.
func (s *Sensors) SetDeadline(t time.Time) { s.rd.SetDeadline(t) }

// Counts are the summed per-CPU counters: [kind][outcome].
type Counts map[engine.Kind][4]uint64

// Counters sums the per-CPU counters.
func (s *Sensors) Counters() (Counts, error) {
	out := Counts{}
	for n := kExec; n < kMax; n++ {
		var c [4]uint64
		for o := range 4 {
			var per []uint64
			if err := s.objs.Counters.Lookup(uint32(n)*4+uint32(o), &per); err != nil {
				return nil, fmt.Errorf("read counter %s/%s: %w", kindNames[n], Outcomes[o], err)
			}
			for _, v := range per {
				c[o] += v
			}
		}
		out[kindNames[n]] = c
	}
	return out, nil
}

// LostByCPU returns, for each possible CPU, how many events its programs
// could not submit because the ring buffer was full (every kind summed).
// A storm shows on the CPUs that produced it.
func (s *Sensors) LostByCPU() ([]uint64, error) {
	var out []uint64
	for n := kExec; n < kMax; n++ {
		var per []uint64
		if err := s.objs.Counters.Lookup(uint32(n)*4+3, &per); err != nil {
			return nil, fmt.Errorf("read counter %s/%s: %w", kindNames[n], OutcomeLost, err)
		}
		if out == nil {
			out = make([]uint64, len(per))
		}
		for cpu, v := range per {
			out[cpu] += v
		}
	}
	return out, nil
}

// Proc is what the kernel remembers of a process: its last exec (time,
// binary) and parent, copied to children at fork.
type Proc struct {
	ExecTime uint64
	PPID     int64
	Binary   string
	// Origin is how the process's tree entered its pid namespace (Origin*
	// constants); Root is the tgid of the process that crossed into it and
	// RootTime the kernel clock (boot time) of that fork.
	Origin   uint8
	Root     uint32
	RootTime uint64
}

// Origins recorded by the kernel (ORIGIN_* in c/common.h).
const (
	OriginUnknown    uint8 = 0 // a host process, or one that predates the sensors
	OriginEntrypoint uint8 = 1 // below the pid namespace's init
	OriginExec       uint8 = 2 // below a process that joined the namespace (runc exec)
)

// Proc returns the kernel's record of a process; ok is false when the
// kernel has not seen it exec (or fork from a process that did) since load.
func (s *Sensors) Proc(pid uint32) (Proc, bool) {
	var v sensorsProcV
	if err := s.objs.Procs.Lookup(pid, &v); err != nil {
		return Proc{}, false
	}
	n := min(int(v.BinLen), len(v.Bin))
	b := make([]byte, n)
	for i := range n {
		b[i] = byte(v.Bin[i])
	}
	return Proc{ExecTime: v.Ktime, PPID: int64(v.Ppid), Binary: string(b), Origin: v.Origin, Root: v.Root, RootTime: v.RootKtime}, true
}

// BootTime is the wall-clock time of boot: record times are relative to it.
func BootTime() time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Now()
	}
	return time.Now().Add(-time.Duration(ts.Nano()))
}

// ViewOf is the kernel filter's view of a decoded event. InContainer is
// "mount namespace is not the host's"; cgroups added with
// AddContainerCgroup also count in the kernel, which ViewOf does not know.
func ViewOf(ev *engine.Event, hostMntNS uint32) View {
	v := View{Kind: ev.Kind, InContainer: uint32(ev.Process.MntNS) != hostMntNS}
	switch ev.Kind {
	case engine.KindExec:
		v.Binary = ev.Process.Binary
	case engine.KindOpen:
		v.Path = ev.File.Path
	case engine.KindConnect, engine.KindAccept, engine.KindListen:
		v.LocalPort, v.PeerPort = uint16(ev.Net.Local.Port), uint16(ev.Net.Peer.Port)
		v.Peer, _ = netip.ParseAddr(ev.Net.Peer.IP)
	}
	return v
}
