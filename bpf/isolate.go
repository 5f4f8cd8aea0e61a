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

// Where the isolation program reads: __sk_buff.protocol (include/uapi/linux/bpf.h),
// and the IP header, which a cgroup_skb program sees at offset 0 of the
// packet in both directions, copied to the stack by bpf_skb_load_bytes.
const (
	skbProtocol = 16
	ethPIPv4    = 0x0008 // htons(ETH_P_IP) as a little-endian read
	ethPIPv6    = 0xDD86 // htons(ETH_P_IPV6)
	ipprotoTCP  = 6
	ipprotoUDP  = 17

	hdrBuf   = -48 // the IP header: 20 bytes of IPv4, 40 of IPv6
	portsBuf = -8  // the transport header's source and destination ports
)

// portField is how a network-order port reads as a little-endian u16.
func portField(port uint16) int32 { return int32(port>>8 | port<<8) }

// ipField is how a network-order IPv4 word reads as a little-endian u32.
func ipField(b []byte) int32 { return int32(binary.LittleEndian.Uint32(b)) }

// IsolationInstructions builds the cgroup_skb isolation filter for one
// direction: 1 (pass) when the packet's peer — its destination leaving the
// cgroup, its source entering it — matches a peer of allow (IPv4 or IPv6
// network, optional port), else 0 (drop). It judges each packet by its own
// headers, not the socket's remote end, so datagrams of an unconnected UDP
// socket (a resolver's sendto) are judged like any other. A port is known
// for TCP and UDP (IPv6 without extension headers, IPv4 first fragments);
// otherwise only peers without a port match. Anything but IPv4 and IPv6 is
// dropped.
func IsolationInstructions(allow []Peer, ingress bool) (asm.Instructions, error) {
	// Offsets of the peer's address in the header, and of its port.
	addr4, addr6, port := int16(16), int16(24), int16(2) // destination
	if ingress {
		addr4, addr6, port = 12, 8, 0 // source
	}
	load := func(off int16, n int32, fail string) asm.Instructions {
		return asm.Instructions{
			asm.Mov.Reg(asm.R1, asm.R6),
			asm.Mov.Imm(asm.R2, int32(off)),
			asm.Mov.Reg(asm.R3, asm.RFP),
			asm.Add.Imm(asm.R3, int32(hdrBuf)),
			asm.Mov.Imm(asm.R4, n),
			asm.FnSkbLoadBytes.Call(),
			asm.JNE.Imm(asm.R0, 0, fail),
		}
	}
	// R6 the context, R7 the IP version, R8 the transport header's offset
	// (0: no ports), R9 the peer's port (0: unknown).
	insns := asm.Instructions{
		asm.Mov.Reg(asm.R6, asm.R1),
		asm.Mov.Imm(asm.R8, 0),
		asm.Mov.Imm(asm.R9, 0),
		asm.LoadMem(asm.R2, asm.R6, skbProtocol, asm.Word),
		asm.JEq.Imm(asm.R2, ethPIPv4, "v4"),
		asm.JEq.Imm(asm.R2, ethPIPv6, "v6"),
		asm.Ja.Label("drop"),
	}
	// IPv4: the header length, the protocol, no fragment offset.
	v4 := load(0, 20, "drop")
	v4[0] = v4[0].WithSymbol("v4")
	insns = append(insns, v4...)
	insns = append(insns,
		asm.Mov.Imm(asm.R7, 4),
		asm.LoadMem(asm.R2, asm.RFP, hdrBuf+9, asm.Byte),
		asm.JEq.Imm(asm.R2, ipprotoTCP, "v4frag"),
		asm.JNE.Imm(asm.R2, ipprotoUDP, "match"),
		asm.LoadMem(asm.R2, asm.RFP, hdrBuf+6, asm.Half).WithSymbol("v4frag"),
		asm.And.Imm(asm.R2, 0xff1f), // the 13-bit fragment offset, read little-endian
		asm.JNE.Imm(asm.R2, 0, "match"),
		asm.LoadMem(asm.R8, asm.RFP, hdrBuf, asm.Byte),
		asm.And.Imm(asm.R8, 0x0f),
		asm.LSh.Imm(asm.R8, 2),
		asm.Ja.Label("ports"),
	)
	// IPv6: the next header directly after the fixed one.
	v6 := load(0, 40, "drop")
	v6[0] = v6[0].WithSymbol("v6")
	insns = append(insns, v6...)
	insns = append(insns,
		asm.Mov.Imm(asm.R7, 6),
		asm.LoadMem(asm.R2, asm.RFP, hdrBuf+6, asm.Byte),
		asm.Mov.Imm(asm.R8, 40),
		asm.JEq.Imm(asm.R2, ipprotoTCP, "ports"),
		asm.JEq.Imm(asm.R2, ipprotoUDP, "ports"),
		asm.Mov.Imm(asm.R8, 0),
		asm.Ja.Label("match"),
	)
	// The ports, when the transport header is in the packet.
	insns = append(insns,
		asm.Mov.Reg(asm.R1, asm.R6).WithSymbol("ports"),
		asm.Mov.Reg(asm.R2, asm.R8),
		asm.Mov.Reg(asm.R3, asm.RFP),
		asm.Add.Imm(asm.R3, portsBuf),
		asm.Mov.Imm(asm.R4, 4),
		asm.FnSkbLoadBytes.Call(),
		asm.JNE.Imm(asm.R0, 0, "match"),
		asm.LoadMem(asm.R9, asm.RFP, portsBuf+port, asm.Half),
		asm.Ja.Label("match"),
	)
	// The allow list, one peer after the other.
	insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("match"))
	for i, p := range allow {
		next := fmt.Sprintf("next%d", i)
		if p.Net != nil {
			mask := p.Net.Mask
			switch ip4 := p.Net.IP.To4(); {
			case ip4 != nil && len(mask) == 4:
				insns = append(insns,
					asm.JNE.Imm(asm.R7, 4, next),
					asm.LoadMem(asm.R3, asm.RFP, hdrBuf+addr4, asm.Word),
					asm.And.Imm32(asm.R3, ipField(mask)),
					asm.JNE.Imm32(asm.R3, ipField(ip4.Mask(mask)), next),
				)
			case len(p.Net.IP) == 16 && len(mask) == 16:
				// Word by word; words the prefix does not cover are skipped.
				insns = append(insns, asm.JNE.Imm(asm.R7, 6, next))
				net6 := p.Net.IP.Mask(mask)
				for w := 0; w < 4; w++ {
					m := mask[4*w : 4*w+4]
					if ipField(m) == 0 {
						continue
					}
					insns = append(insns,
						asm.LoadMem(asm.R3, asm.RFP, hdrBuf+addr6+int16(4*w), asm.Word),
						asm.And.Imm32(asm.R3, ipField(m)),
						asm.JNE.Imm32(asm.R3, ipField(net6[4*w:4*w+4]), next),
					)
				}
			default:
				return nil, fmt.Errorf("peer %s: not an IPv4 or IPv6 network", p.Net)
			}
		}
		if p.Port != 0 {
			insns = append(insns, asm.JNE.Imm(asm.R9, portField(p.Port), next))
		}
		insns = append(insns,
			asm.Ja.Label("allow"),
			asm.Mov.Imm(asm.R0, 0).WithSymbol(next), // no-op landing pad for the jumps above
		)
	}
	insns = append(insns, asm.Mov.Imm(asm.R0, 0).WithSymbol("drop"), asm.Return())
	if len(allow) > 0 { // the verifier rejects unreachable code
		insns = append(insns, asm.Mov.Imm(asm.R0, 1).WithSymbol("allow"), asm.Return())
	}
	return insns, nil
}

// IsolationProgram loads the cgroup_skb filter for allow in one direction;
// attached to a pod's cgroup for ingress and egress (one program each) it
// cuts the pod off the network in the kernel, whatever the CNI does with
// NetworkPolicies.
func IsolationProgram(allow []Peer, ingress bool) (*ebpf.Program, error) {
	insns, err := IsolationInstructions(allow, ingress)
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
