package bpf

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	"github.com/riposte-dev/riposte/engine"
)

// MaxSlots is how many rules the kernel filter tells apart: every map value
// is a 64-bit mask of rule slots. Rules beyond it share the last slot, which
// then passes everything of their kinds (loose, still sound).
const MaxSlots = 64

// MaxPath is the longest path, in bytes, the kernel half records: a path of
// this length may be the first MaxPath bytes of a longer one.
const MaxPath = pathMax - 1

// Limits of the kernel keys (c/common.h). A rule value that does not fit
// leaves its rule unconstrained on that field, which is sound; an event value
// never longer than these is what the kernel reports.
const (
	maxBinary   = pathMax - 2 // a 255-byte binary may be a truncated longer one
	maxBasename = 62          // NAME_MAX_B - 2
	maxPrefix   = pathMax - 1 // LPM data: generation byte + 255 path bytes
)

// Filter is the in-kernel prefilter derived from rule constraints: the
// union over rules, each rule one bit slot, written to the BPF maps by
// (*Sensors).SetFilter. Pass is its Go model and mirrors the C code exactly.
type Filter struct {
	// Slots names the rules of each slot (several when constraints were
	// identical or rules overflowed MaxSlots).
	Slots [][]string

	kindRules [kindSlots]uint64
	hostOK    uint64
	binAny    uint64
	baseAny   uint64
	pathAny   uint64
	pportAny  uint64
	lportAny  uint64
	cidrAny   uint64

	bins   map[string]uint64
	names  map[string]uint64
	paths  map[string]uint64 // prefix -> slots of it and every shorter prefix of it
	pports map[uint16]uint64
	lports map[uint16]uint64
	cidr4  map[netip.Prefix]uint64 // prefix -> slots of it and every prefix containing it
	cidr6  map[netip.Prefix]uint64

	constraints []engine.Constraints // per slot, after merging
}

// RuleConstraints is a rule's name and derived constraints: what the filter
// is built from.
type RuleConstraints struct {
	Name        string
	Constraints engine.Constraints
}

// NewFilter builds the union filter of rules. Rules whose kinds the kernel
// never produces (audit, object) take no slot.
func NewFilter(rules []RuleConstraints) *Filter {
	f := &Filter{
		bins: map[string]uint64{}, names: map[string]uint64{}, paths: map[string]uint64{},
		pports: map[uint16]uint64{}, lports: map[uint16]uint64{},
		cidr4: map[netip.Prefix]uint64{}, cidr6: map[netip.Prefix]uint64{},
	}
	// One slot per distinct constraint: identical rules share a slot.
	index := map[string]int{}
	for _, r := range rules {
		c := kernelView(r.Constraints)
		if len(c.Kinds) == 0 {
			continue
		}
		key := fmt.Sprintf("%#v", c) // %#v tells nil (unconstrained) from empty (nothing)
		i, ok := index[key]
		if !ok {
			i = len(f.constraints)
			if i >= MaxSlots {
				i = MaxSlots - 1
				// The overflow slot passes every kind of every rule in it.
				last := &f.constraints[i]
				kinds := append(slices.Clone(last.Kinds), c.Kinds...)
				slices.Sort(kinds)
				*last = engine.Constraints{Kinds: slices.Compact(kinds)}
			} else {
				index[key] = i
				f.constraints = append(f.constraints, c)
				f.Slots = append(f.Slots, nil)
			}
		}
		f.Slots[i] = append(f.Slots[i], r.Name)
	}
	for i, c := range f.constraints {
		f.add(uint64(1)<<i, c)
	}
	f.closePrefixes()
	return f
}

// kernelView keeps the part of a rule's constraints the kernel checks and
// drops values too long for its keys (leaving the field unconstrained).
func kernelView(c engine.Constraints) engine.Constraints {
	var out engine.Constraints
	for _, k := range c.Kinds {
		if kindNumber(k) != 0 && k != engine.KindEnforce {
			out.Kinds = append(out.Kinds, k)
		}
	}
	slices.Sort(out.Kinds)
	out.ContainerOnly = c.ContainerOnly
	fits := func(vals []string, max int) []string {
		if vals == nil {
			return nil
		}
		for _, v := range vals {
			if len(v) > max {
				return nil
			}
		}
		return slices.Clone(vals)
	}
	out.Binaries = fits(c.Binaries, maxBinary)
	out.Basenames = fits(c.Basenames, maxBasename)
	if c.PathPrefixes != nil {
		out.PathPrefixes = []string{}
		for _, p := range c.PathPrefixes {
			if len(p) > maxPrefix {
				p = p[:maxPrefix] // a shorter prefix admits more: sound
			}
			out.PathPrefixes = append(out.PathPrefixes, p)
		}
	}
	out.PeerPorts = slices.Clone(c.PeerPorts)
	out.LocalPorts = slices.Clone(c.LocalPorts)
	out.PeerCIDRs = slices.Clone(c.PeerCIDRs)
	return out
}

func (f *Filter) add(bit uint64, c engine.Constraints) {
	for _, k := range c.Kinds {
		f.kindRules[kindNumber(k)] |= bit
	}
	if !c.ContainerOnly {
		f.hostOK |= bit
	}
	if c.Binaries == nil {
		f.binAny |= bit
	}
	for _, b := range c.Binaries {
		f.bins[b] |= bit
	}
	if c.Basenames == nil {
		f.baseAny |= bit
	}
	for _, n := range c.Basenames {
		f.names[n] |= bit
	}
	if c.PathPrefixes == nil {
		f.pathAny |= bit
	}
	for _, p := range c.PathPrefixes {
		f.paths[p] |= bit
	}
	ports := func(any *uint64, m map[uint16]uint64, vals []int64) {
		if vals == nil {
			*any |= bit
		}
		for _, v := range vals {
			if v >= 0 && v <= 65535 { // other values match no event
				m[uint16(v)] |= bit
			}
		}
	}
	ports(&f.pportAny, f.pports, c.PeerPorts)
	ports(&f.lportAny, f.lports, c.LocalPorts)
	if c.PeerCIDRs == nil {
		f.cidrAny |= bit
	}
	for _, p := range c.PeerCIDRs {
		p = p.Masked()
		if p.Addr().Is4() {
			f.cidr4[p] |= bit
		} else {
			f.cidr6[p] |= bit
		}
	}
}

// closePrefixes makes every prefix carry the slots of its own prefixes: an
// LPM trie returns only the longest match.
func (f *Filter) closePrefixes() {
	out := map[string]uint64{}
	for p, m := range f.paths {
		for q, n := range f.paths {
			if strings.HasPrefix(p, q) {
				m |= n
			}
		}
		out[p] = m
	}
	f.paths = out
	closeCIDR := func(in map[netip.Prefix]uint64) map[netip.Prefix]uint64 {
		out := map[netip.Prefix]uint64{}
		for p, m := range in {
			for q, n := range in {
				if q.Bits() <= p.Bits() && q.Contains(p.Addr()) {
					m |= n
				}
			}
			out[p] = m
		}
		return out
	}
	f.cidr4 = closeCIDR(f.cidr4)
	f.cidr6 = closeCIDR(f.cidr6)
}

// View is an event as the kernel filter sees it.
type View struct {
	Kind engine.Kind
	// InContainer is true when the process's mount namespace is not the host's.
	InContainer bool
	// Binary is the exec'd file (exec), Path the opened file (open): at most
	// 255 bytes, as the kernel reports them.
	Binary string
	Path   string
	// LocalPort, PeerPort and Peer describe a connection; Peer is invalid
	// when there is none (listen).
	LocalPort, PeerPort uint16
	Peer                netip.Addr
	// PathIncomplete: the kernel could not walk the whole path (Meta);
	// then it does not judge binary, base name or path.
	PathIncomplete bool
}

// Pass is the Go model of the kernel filter: c/common.h base_mask,
// exec_mask, the open path check and net_pass, line for line.
func (f *Filter) Pass(v View) bool { return f.Mask(v) != 0 }

// Mask returns the slots of the rules an event may match.
func (f *Filter) Mask(v View) uint64 {
	n := kindNumber(v.Kind)
	if n == 0 {
		return 0
	}
	m := f.kindRules[n]
	if !v.InContainer {
		m &= f.hostOK
	}
	if m == 0 {
		return 0
	}
	switch v.Kind {
	case engine.KindExec:
		if v.PathIncomplete {
			return m
		}
		bin := v.Binary
		var binM uint64
		if len(bin) < pathMax-1 {
			binM = f.bins[bin]
		}
		m &= binM | f.binAny
		// A path of 255 bytes may be a truncated longer one: its base name
		// is unknown and not judged.
		if len(bin) < pathMax-1 {
			var nameM uint64
			name := bin[strings.LastIndexByte(bin, '/')+1:]
			if len(name) < 63 {
				nameM = f.names[name]
			}
			m &= nameM | f.baseAny
		}
	case engine.KindOpen:
		if v.PathIncomplete {
			return m
		}
		m &= f.lookupPath(v.Path) | f.pathAny
	case engine.KindConnect, engine.KindAccept, engine.KindListen:
		m &= f.pports[v.PeerPort] | f.pportAny
		m &= f.lports[v.LocalPort] | f.lportAny
		if m == 0 {
			return 0
		}
		var ipM uint64
		if v.Peer.IsValid() {
			ipM = f.lookupIP(v.Peer)
		}
		m &= ipM | f.cidrAny
	}
	return m
}

func (f *Filter) lookupPath(p string) uint64 {
	if len(p) > maxPrefix {
		p = p[:maxPrefix]
	}
	best, bestLen := uint64(0), -1
	for q, m := range f.paths {
		if len(q) > bestLen && strings.HasPrefix(p, q) {
			best, bestLen = m, len(q)
		}
	}
	return best
}

func (f *Filter) lookupIP(a netip.Addr) uint64 {
	a = a.Unmap()
	set := f.cidr6
	if a.Is4() {
		set = f.cidr4
	}
	best, bestBits := uint64(0), -1
	for p, m := range set {
		if p.Bits() > bestBits && p.Contains(a) {
			best, bestBits = m, p.Bits()
		}
	}
	return best
}

// Explain renders the kernel filter: per slot, the rules in it and what the
// kernel checks for them. `riposte compile --explain` prints it.
func (f *Filter) Explain() string {
	var b strings.Builder
	if len(f.constraints) == 0 {
		b.WriteString("kernel filter: no rule sees agent events; every sensor drops in the kernel\n")
		return b.String()
	}
	fmt.Fprintf(&b, "kernel filter: %d slot(s) of %d\n", len(f.constraints), MaxSlots)
	for i, c := range f.constraints {
		names := slices.Clone(f.Slots[i])
		sort.Strings(names)
		fmt.Fprintf(&b, "  slot %d [%s]: %s\n", i, strings.Join(names, ", "), explainKernel(c))
	}
	return b.String()
}

func explainKernel(c engine.Constraints) string {
	kinds := make([]string, len(c.Kinds))
	for i, k := range c.Kinds {
		kinds[i] = string(k)
	}
	parts := []string{"kind in [" + strings.Join(kinds, ",") + "]"}
	if c.ContainerOnly {
		parts = append(parts, "mount namespace is not the host's")
	}
	if c.Binaries != nil {
		parts = append(parts, "exec binary in ["+strings.Join(c.Binaries, ",")+"]")
	}
	if c.Basenames != nil {
		parts = append(parts, "exec basename in ["+strings.Join(c.Basenames, ",")+"]")
	}
	if c.PathPrefixes != nil {
		parts = append(parts, "open path has prefix in ["+strings.Join(c.PathPrefixes, ",")+"]")
	}
	if c.PeerPorts != nil {
		parts = append(parts, fmt.Sprintf("peer port in %v", c.PeerPorts))
	}
	if c.LocalPorts != nil {
		parts = append(parts, fmt.Sprintf("local port in %v", c.LocalPorts))
	}
	if c.PeerCIDRs != nil {
		parts = append(parts, fmt.Sprintf("peer ip in %v", c.PeerCIDRs))
	}
	return strings.Join(parts, " && ")
}

// ExplainRules renders the derived kernel filter of a rule set.
func ExplainRules(rules []RuleConstraints) string { return NewFilter(rules).Explain() }
