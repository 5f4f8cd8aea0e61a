package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// Kind numbers shared with c/common.h (enum kind).
const (
	kExec uint8 = iota + 1
	kExit
	kFork
	kSetuid
	kCapset
	kPtrace
	kUnshare
	kSetns
	kMount
	kModule
	kBPF
	kOpen
	kConnect
	kAccept
	kListen
	kEnforce
	kMax
)

// kindSlots is the size of the per-kind arrays in the kernel.
const kindSlots = 32

var kindNames = [kMax]engine.Kind{
	kExec: engine.KindExec, kExit: engine.KindExit, kFork: engine.KindFork,
	kSetuid: engine.KindSetuid, kCapset: engine.KindCapset, kPtrace: engine.KindPtrace,
	kUnshare: engine.KindUnshare, kSetns: engine.KindSetns, kMount: engine.KindMount,
	kModule: engine.KindModule, kBPF: engine.KindBPF, kOpen: engine.KindOpen,
	kConnect: engine.KindConnect, kAccept: engine.KindAccept, kListen: engine.KindListen,
	kEnforce: engine.KindEnforce,
}

// kindNumber returns the kernel's number for an event kind, 0 for kinds the
// kernel never produces (audit, object).
func kindNumber(k engine.Kind) uint8 {
	for i, n := range kindNames {
		if n == k && i != 0 {
			return uint8(i)
		}
	}
	return 0
}

// Record layout (c/common.h). Offsets are spelled out so decoding is a
// handful of bounds-checked loads, not reflection.
const (
	hdrSize = 72

	execIno      = 72
	execFlags    = 80
	execEnforce  = 84
	execBinLen   = 88
	execArgsLen  = 90
	execArgc     = 92
	execData     = 96
	pathMax      = 256
	argsMax      = 1024
	execArgsData = execData + pathMax

	forkParentTID = 72
	forkSize      = 80
	exitCode      = 72
	exitSize      = 80

	openFlags   = 72
	openMode    = 76
	openIno     = 80
	openPathLen = 88
	openWrite   = 90
	openPath    = 96

	netFamily = 72
	netProto  = 73
	netLPort  = 74
	netRPort  = 76
	netLAddr  = 80
	netRAddr  = 96
	netSize   = 112

	sysSC   = 72
	sysRet  = 76
	sysArgs = 80
	sysLens = 112
	sysStrs = 120
	strMax  = 128
	sysSize = sysStrs + 3*strMax

	exeUpper      = 1
	exeMemfd      = 2
	exeIncomplete = 4

	openIncomplete = 92
)

// Syscall ids of the privilege records (c/common.h enum sc).
var syscallNames = [...]string{
	1: "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid",
	"setfsuid", "setfsgid", "capset", "ptrace", "unshare", "setns", "mount",
	"init_module", "finit_module", "bpf",
}

// ErrShortRecord is returned for a record shorter than its kind's layout or
// than the size its header claims: the ring buffer never produces one, so it
// means a version mismatch or corruption.
var ErrShortRecord = errors.New("short record")

// ErrUnknownKind is returned for a record of a kind this decoder does not know.
var ErrUnknownKind = errors.New("unknown record kind")

// Meta is what a record carries besides the event.
type Meta struct {
	// KTime is the record's boot-time clock in nanoseconds.
	KTime uint64
	// EnforceSlot is the prefilter slot + 1 of the rule an exec was killed
	// for, 0 when it was not.
	EnforceSlot uint32
	// ParentTID is the thread that forked (fork records).
	ParentTID uint32
	// PathIncomplete: the exec binary or opened file was deeper or longer
	// than the kernel walks, so its path is only the tail and the kernel
	// passed it without judging the path.
	PathIncomplete bool
	// ArgsIncomplete: an exec's arguments filled the kernel's buffer
	// (ArgsMax bytes), so they may be only the first of them.
	ArgsIncomplete bool
}

// ArgsMax is how many bytes of an exec's arguments (NUL-separated) the
// kernel half records.
const ArgsMax = argsMax - 1

// Decoder turns ring-buffer records into events. Boot is the wall-clock time
// of boot, which record times are relative to.
type Decoder struct {
	Boot time.Time
	Node string
}

// Decode fills ev from one record. ev is reset first; its slices are
// always fresh, so the process table may keep them.
func (d *Decoder) Decode(b []byte, ev *engine.Event) (Meta, error) {
	var m Meta
	if len(b) < hdrSize {
		return m, fmt.Errorf("decode record of %d bytes: %w", len(b), ErrShortRecord)
	}
	kind := b[0]
	if kind == 0 || kind >= kMax || kind == kEnforce {
		return m, fmt.Errorf("decode record: kind %d: %w", kind, ErrUnknownKind)
	}
	size := int(le.Uint16(b[2:]))
	if size < hdrSize || size > len(b) {
		return m, fmt.Errorf("decode %s record: header size %d, have %d bytes: %w", kindNames[kind], size, len(b), ErrShortRecord)
	}
	b = b[:size]
	*ev = engine.Event{}
	ev.Kind = kindNames[kind]
	ev.Node = d.Node
	m.KTime = le.Uint64(b[8:])
	ev.Time = d.Boot.Add(time.Duration(m.KTime))
	p := &ev.Process
	p.PID = int64(le.Uint32(b[16:]))
	p.TID = int64(le.Uint32(b[20:]))
	p.PPID = int64(le.Uint32(b[24:]))
	p.UID = int64(le.Uint32(b[28:]))
	p.GID = int64(le.Uint32(b[32:]))
	p.EUID = int64(le.Uint32(b[36:]))
	p.CgroupID = le.Uint64(b[40:])
	p.MntNS = uint64(le.Uint32(b[48:]))
	p.PidNS = uint64(le.Uint32(b[52:]))
	p.Comm = cstring(b[56:72])

	need := func(n int) error {
		if len(b) < n {
			return fmt.Errorf("decode %s record: %d bytes, layout needs %d: %w", ev.Kind, len(b), n, ErrShortRecord)
		}
		return nil
	}
	switch kind {
	case kExec:
		if err := need(execData + pathMax); err != nil {
			return m, err
		}
		p.Exe.Inode = le.Uint64(b[execIno:])
		fl := le.Uint32(b[execFlags:])
		p.Exe.Upper = fl&exeUpper != 0
		p.Exe.Memfd = fl&exeMemfd != 0
		m.PathIncomplete = fl&exeIncomplete != 0
		m.EnforceSlot = le.Uint32(b[execEnforce:])
		bl := int(le.Uint16(b[execBinLen:]))
		if bl > pathMax-1 {
			return m, fmt.Errorf("decode exec record: binary length %d > %d: %w", bl, pathMax-1, ErrShortRecord)
		}
		p.Binary = cstring(b[execData : execData+bl])
		al := int(le.Uint16(b[execArgsLen:]))
		if al > argsMax || execArgsData+al > len(b) {
			return m, fmt.Errorf("decode exec record: args length %d: %w", al, ErrShortRecord)
		}
		p.Args = splitArgs(b[execArgsData:execArgsData+al], nil)
		m.ArgsIncomplete = al >= ArgsMax
	case kFork:
		if err := need(forkSize); err != nil {
			return m, err
		}
		m.ParentTID = le.Uint32(b[forkParentTID:])
	case kExit:
		if err := need(exitSize); err != nil {
			return m, err
		}
		ev.Syscall.Ret = int64(int32(le.Uint32(b[exitCode:])))
	case kOpen:
		if err := need(openPath); err != nil {
			return m, err
		}
		pl := int(le.Uint16(b[openPathLen:]))
		if pl > pathMax-1 || openPath+pl > len(b) {
			return m, fmt.Errorf("decode open record: path length %d: %w", pl, ErrShortRecord)
		}
		ev.File.Path = string(b[openPath : openPath+pl])
		ev.File.Flags = int64(le.Uint32(b[openFlags:]))
		ev.File.Mode = int64(le.Uint32(b[openMode:]))
		ev.File.Inode = le.Uint64(b[openIno:])
		ev.File.Write = le.Uint16(b[openWrite:]) != 0
		m.PathIncomplete = le.Uint16(b[openIncomplete:]) != 0
	case kConnect, kAccept, kListen:
		if err := need(netSize); err != nil {
			return m, err
		}
		n := &ev.Net
		switch b[netProto] {
		case 6:
			n.Protocol = "tcp"
		case 17:
			n.Protocol = "udp"
		}
		n.Local.Port = int64(le.Uint16(b[netLPort:]))
		n.Peer.Port = int64(le.Uint16(b[netRPort:]))
		switch b[netFamily] {
		case 4:
			n.Family = "ipv4"
			n.Local.IP = netip.AddrFrom4([4]byte(b[netLAddr : netLAddr+4])).String()
			if kind != kListen {
				n.Peer.IP = netip.AddrFrom4([4]byte(b[netRAddr : netRAddr+4])).String()
			}
		case 6:
			n.Family = "ipv6"
			n.Local.IP = netip.AddrFrom16([16]byte(b[netLAddr : netLAddr+16])).String()
			if kind != kListen {
				n.Peer.IP = netip.AddrFrom16([16]byte(b[netRAddr : netRAddr+16])).String()
			}
		default:
			return m, fmt.Errorf("decode %s record: address family %d", ev.Kind, b[netFamily])
		}
	default: // privilege and escape signals
		if err := need(sysLens); err != nil {
			return m, err
		}
		sc := le.Uint32(b[sysSC:])
		if sc == 0 || int(sc) >= len(syscallNames) {
			return m, fmt.Errorf("decode %s record: syscall id %d: %w", ev.Kind, sc, ErrUnknownKind)
		}
		s := &ev.Syscall
		s.Name = syscallNames[sc]
		s.Ret = int64(int32(le.Uint32(b[sysRet:])))
		a := func(i int) uint64 { return le.Uint64(b[sysArgs+8*i:]) }
		id := func(v uint64) int64 { return int64(int32(uint32(v))) } // uid_t -1 stays -1
		s.UID, s.GID = -1, -1
		switch s.Name {
		case "setuid", "setfsuid":
			s.UID = id(a(0))
		case "setgid", "setfsgid":
			s.GID = id(a(0))
		case "setreuid", "setresuid":
			s.UID = id(a(1)) // the effective id is the one that grants
		case "setregid", "setresgid":
			s.GID = id(a(1))
		case "capset":
			s.CapEffective, s.CapPermitted, s.CapInheritable = a(1), a(2), a(3)
		case "ptrace":
			s.Request, s.TargetPID = int64(a(0)), int64(int32(uint32(a(1))))
		case "unshare":
			s.Flags = a(0)
		case "setns":
			s.Flags = a(1)
		case "mount":
			s.Flags = a(3)
			if len(b) >= sysSize {
				str := func(i int) string {
					l := min(int(le.Uint16(b[sysLens+2*i:])), strMax-1)
					o := sysStrs + i*strMax
					return string(b[o : o+l])
				}
				s.Source, s.Target, s.FSType = str(0), str(1), str(2)
			}
		case "bpf":
			s.BPFCmd = int64(a(0))
		}
	}
	return m, nil
}

var le = binary.LittleEndian

// cstring returns b up to its first NUL.
func cstring(b []byte) string {
	if i := indexByte(b, 0); i >= 0 {
		b = b[:i]
	}
	return string(b)
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

// splitArgs splits NUL-separated argv. A truncated last argument is kept.
func splitArgs(b []byte, dst []string) []string {
	if len(b) > 0 && b[len(b)-1] == 0 {
		b = b[:len(b)-1]
	}
	if len(b) == 0 {
		return nil
	}
	return append(dst, strings.Split(string(b), "\x00")...)
}
