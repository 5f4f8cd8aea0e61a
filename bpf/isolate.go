package bpf

import (
	"encoding/binary"
	"fmt"

	"net"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Peer is a destination an isolated cgroup may still reach: a network (nil
// for any address) and a port (0 for any).
type Peer struct {
	Net  *net.IPNet
	Port uint16
}

// Offsets in struct __sk_buff (include/uapi/linux/bpf.h); cgroup_skb programs
// read the socket's fields through them.
const (
	skbFamily     = 88
	skbRemoteIP4  = 92
	skbRemoteIP6  = 100 // four network-order words
	skbRemotePort = 132
	afInet        = 2
	afInet6       = 10
)

// portField is how __sk_buff.remote_port reads for port on a little-endian
// machine: the network-order 16 bits shifted into the upper half.
func portField(port uint16) int32 {
	be := port>>8 | port<<8
	return int32(uint32(be) << 16)
}

// ipField is how a network-order IPv4 word reads as a little-endian u32.
func ipField(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) }

// IsolationInstructions builds the cgroup_skb isolation filter: 1 (pass) when the socket's peer matches a
// peer of allow (IPv4 or IPv6 network, optional port), else 0 (drop). The same program serves ingress and egress
// because the socket's remote end is the peer in both directions.
func IsolationInstructions(allow []Peer) (asm.Instructions, error) {
	insns := asm.Instructions{asm.Mov.Reg(asm.R6, asm.R1)}
	for i, p := range allow {
		next := fmt.Sprintf("next%d", i)
		if p.Net != nil {
			mask := p.Net.Mask
			switch ip4 := p.Net.IP.To4(); {
			case ip4 != nil && len(mask) == 4:
				insns = append(insns,
					asm.LoadMem(asm.R2, asm.R6, skbFamily, asm.Word),
					asm.JNE.Imm32(asm.R2, afInet, next),
					asm.LoadMem(asm.R3, asm.R6, skbRemoteIP4, asm.Word),
					asm.And.Imm32(asm.R3, ipField(mask)),
					asm.JNE.Imm32(asm.R3, ipField(ip4.Mask(mask)), next),
				)
			case len(p.Net.IP) == 16 && len(mask) == 16:
				// Word by word; words the prefix does not cover are skipped.
				insns = append(insns,
					asm.LoadMem(asm.R2, asm.R6, skbFamily, asm.Word),
					asm.JNE.Imm32(asm.R2, afInet6, next),
				)
				net6 := p.Net.IP.Mask(mask)
				for w := 0; w < 4; w++ {
					m := mask[4*w : 4*w+4]
					if ipField(m) == 0 {
						continue
					}
					insns = append(insns,
						asm.LoadMem(asm.R3, asm.R6, int16(skbRemoteIP6+4*w), asm.Word),
						asm.And.Imm32(asm.R3, ipField(m)),
						asm.JNE.Imm32(asm.R3, ipField(net6[4*w:4*w+4]), next),
					)
				}
			default:
				return nil, fmt.Errorf("peer %s: not an IPv4 or IPv6 network", p.Net)
			}
		}
		if p.Port != 0 {
			insns = append(insns,
				asm.LoadMem(asm.R4, asm.R6, skbRemotePort, asm.Word),
				asm.JNE.Imm32(asm.R4, portField(p.Port), next),
			)
		}
		insns = append(insns,
			asm.Ja.Label("allow"),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(next), // no-op landing pad for the jumps above
		)
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, 0), asm.Return())
	if len(allow) > 0 { // the verifier rejects unreachable code
		insns = append(insns, asm.Mov.Imm(asm.R0, 1).WithSymbol("allow"), asm.Return())
	}
	return insns, nil
}

// IsolationProgram loads the cgroup_skb filter for allow; attached to a
// pod's cgroup for ingress and egress it cuts the pod off the network in the
// kernel, whatever the CNI does with NetworkPolicies.
func IsolationProgram(allow []Peer) (*ebpf.Program, error) {
	insns, err := IsolationInstructions(allow)
	if err != nil {
		return nil, err
	}
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         "riposte_isolate",
		Type:         ebpf.CGroupSKB,
		Instructions: insns,
		License:      "Apache-2.0",
	})
	if err != nil {
		return nil, fmt.Errorf("load cgroup_skb isolation program: %w", err)
	}
	return prog, nil
}
