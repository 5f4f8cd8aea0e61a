package engine

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"path"
	"strconv"
	"strings"

	"github.com/google/cel-go/common/types"
	"github.com/google/cel-go/common/types/ref"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// Profile is the WorkloadProfile of the event's workload and container, as
// rules see it in the CEL variable profile: its name, whether it is Ready
// (reviewed, for the image running), and through profile.allows(event) and
// profile.missing(event) whether the event stays inside its behaviour. An
// event without a profile sees one that is not Ready and allows everything.
type Profile struct {
	// Name is namespace/name of the WorkloadProfile.
	Name string `json:"name,omitempty"`
	// Ready is true when the profile is reviewed and the workload runs its image.
	Ready bool `json:"ready,omitempty"`

	behaviour v1alpha1.ProfileBehaviour
	idx       profileIndex
}

// Profile list bounds, the WorkloadProfile CRD's: a profile read from a file
// (a rule test, a replay) that exceeds them is refused, so the cost of
// allows stays what the CRD admits.
const (
	MaxProfileExecutables = 256
	MaxProfilePairs       = 512
	MaxProfileWriteDirs   = 256
	MaxProfileOutbound    = 256
	MaxProfileListening   = 64
)

// ProfileEntry is the behaviour one event needs from a profile: what the
// learner records and what allows looks up. Kind is exec, write, connect or
// listen.
type ProfileEntry struct {
	Kind           string
	Executable     string
	Pair           v1alpha1.ProcessPair // Parent is empty when the parent is unknown
	WriteDirectory string
	Peer           v1alpha1.ProfilePeer
	Port           v1alpha1.ProfilePort
}

// Profile entry kinds.
const (
	ProfileExec    = "exec"
	ProfileWrite   = "write"
	ProfileConnect = "connect"
	ProfileListen  = "listen"
)

// NewProfile indexes a behaviour for the per-event lookups. b is not copied
// and must not change afterwards.
func NewProfile(name string, ready bool, b v1alpha1.ProfileBehaviour) (*Profile, error) {
	p := &Profile{Name: name, Ready: ready, behaviour: b}
	if err := p.index(); err != nil {
		return nil, fmt.Errorf("profile %s: %w", name, err)
	}
	return p, nil
}

// Named returns the profile's name and readiness without its behaviour, for
// evidence that names the profile (an Incident's sample event).
func (p *Profile) Named() *Profile { return &Profile{Name: p.Name, Ready: p.Ready} }

// Behaviour returns the profile's behaviour (not to be modified).
func (p *Profile) Behaviour() v1alpha1.ProfileBehaviour { return p.behaviour }

type svcKey struct{ ns, name string }
type wlKey struct{ kind, ns, name string }
type pairKey struct{ parent, child string }
type portKey struct {
	port  int32
	proto string
}
type cidrEntry struct {
	prefix netip.Prefix
	port   portKey
}

type profileIndex struct {
	exec     map[string]struct{}
	pairs    map[pairKey]struct{}
	dirs     map[string]struct{}
	subtrees []string // "/var/cache/" for an entry "/var/cache/**"
	services map[svcKey][]portKey
	wls      map[wlKey][]portKey
	cidrs    []cidrEntry
	listen   map[portKey]struct{}
}

func (p *Profile) index() error {
	b := &p.behaviour
	switch {
	case len(b.Executables) > MaxProfileExecutables:
		return fmt.Errorf("executables: %d entries, at most %d", len(b.Executables), MaxProfileExecutables)
	case len(b.ProcessPairs) > MaxProfilePairs:
		return fmt.Errorf("processPairs: %d entries, at most %d", len(b.ProcessPairs), MaxProfilePairs)
	case len(b.WriteDirectories) > MaxProfileWriteDirs:
		return fmt.Errorf("writeDirectories: %d entries, at most %d", len(b.WriteDirectories), MaxProfileWriteDirs)
	case len(b.Outbound) > MaxProfileOutbound:
		return fmt.Errorf("outbound: %d entries, at most %d", len(b.Outbound), MaxProfileOutbound)
	case len(b.Listening) > MaxProfileListening:
		return fmt.Errorf("listening: %d entries, at most %d", len(b.Listening), MaxProfileListening)
	}
	x := profileIndex{
		exec: map[string]struct{}{}, pairs: map[pairKey]struct{}{}, dirs: map[string]struct{}{},
		services: map[svcKey][]portKey{}, wls: map[wlKey][]portKey{}, listen: map[portKey]struct{}{},
	}
	for _, e := range b.Executables {
		x.exec[e] = struct{}{}
	}
	for _, pp := range b.ProcessPairs {
		x.pairs[pairKey{pp.Parent, pp.Child}] = struct{}{}
	}
	for i, d := range b.WriteDirectories {
		if !strings.HasPrefix(d, "/") {
			return fmt.Errorf("writeDirectories[%d]: %q is not an absolute path", i, d)
		}
		if t, ok := strings.CutSuffix(d, "/**"); ok {
			x.subtrees = append(x.subtrees, t+"/")
			continue
		}
		x.dirs[d] = struct{}{}
	}
	for i, o := range b.Outbound {
		pk := portKey{o.Port, o.Protocol}
		n := 0
		if o.Service != "" {
			n++
			ns, name, ok := strings.Cut(o.Service, "/")
			if !ok || ns == "" || name == "" {
				return fmt.Errorf("outbound[%d].service: %q is not namespace/name", i, o.Service)
			}
			x.services[svcKey{ns, name}] = append(x.services[svcKey{ns, name}], pk)
		}
		if o.Workload != "" {
			n++
			parts := strings.Split(o.Workload, "/")
			if len(parts) != 3 || parts[0] == "" || parts[2] == "" {
				return fmt.Errorf("outbound[%d].workload: %q is not Kind/namespace/name", i, o.Workload)
			}
			k := wlKey{parts[0], parts[1], parts[2]}
			x.wls[k] = append(x.wls[k], pk)
		}
		if o.CIDR != "" {
			n++
			pre, err := parseCIDR(o.CIDR)
			if err != nil {
				return fmt.Errorf("outbound[%d].cidr: %w", i, err)
			}
			x.cidrs = append(x.cidrs, cidrEntry{pre, pk})
		}
		if n != 1 {
			return fmt.Errorf("outbound[%d]: set exactly one of service, workload and cidr", i)
		}
	}
	for _, l := range b.Listening {
		x.listen[portKey{l.Port, l.Protocol}] = struct{}{}
	}
	p.idx = x
	return nil
}

// EntryOf returns the profile entry an event needs, and false for events no
// profile speaks about (reads, exits, audit, …) or without a container.
func EntryOf(ev *Event) (ProfileEntry, bool) {
	if ev.Container.ID == "" {
		return ProfileEntry{}, false
	}
	switch ev.Kind {
	case KindExec:
		return ProfileEntry{Kind: ProfileExec, Executable: ev.Process.Binary,
			Pair: v1alpha1.ProcessPair{Parent: ev.Process.Parent.Binary, Child: ev.Process.Binary}}, true
	case KindOpen:
		if !ev.File.Write {
			return ProfileEntry{}, false
		}
		return ProfileEntry{Kind: ProfileWrite, WriteDirectory: writeDir(ev.File.Path, ev.Process.Cwd)}, true
	case KindConnect:
		pr := &ev.Net.Peer
		peer := v1alpha1.ProfilePeer{Port: int32(pr.Port), Protocol: ev.Net.Protocol}
		switch {
		case pr.Service != "":
			peer.Service = pr.Namespace + "/" + pr.Service
		case pr.Workload.Name != "":
			peer.Workload = pr.Workload.Kind + "/" + peerNamespace(pr) + "/" + pr.Workload.Name
		default:
			a, err := netip.ParseAddr(pr.IP)
			if err != nil {
				peer.CIDR = "invalid"
			} else {
				a = a.Unmap()
				peer.CIDR = netip.PrefixFrom(a, a.BitLen()).String()
			}
		}
		return ProfileEntry{Kind: ProfileConnect, Peer: peer}, true
	case KindListen:
		return ProfileEntry{Kind: ProfileListen, Port: v1alpha1.ProfilePort{Port: int32(ev.Net.Local.Port), Protocol: ev.Net.Protocol}}, true
	}
	return ProfileEntry{}, false
}

func peerNamespace(pr *Peer) string {
	if pr.Workload.Namespace != "" {
		return pr.Workload.Namespace
	}
	return pr.Namespace
}

// writeDir is the directory a write lands in. A relative path is taken from
// the working directory, and "." and ".." are resolved, so a write cannot
// claim a directory it does not land in.
func writeDir(p, cwd string) string {
	if !strings.HasPrefix(p, "/") {
		p = path.Join(cwd, p)
		if !strings.HasPrefix(p, "/") {
			p = "/" + p
		}
	} else if strings.Contains(p, "/.") || strings.Contains(p, "//") {
		p = path.Clean(p)
	}
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// Allows reports whether the event stays inside the profile. It is true for
// a profile that is not Ready and for events no profile speaks about.
func (p *Profile) Allows(ev *Event) bool {
	return p.missing(ev) == ""
}

// Missing names the entry the event needs and the profile lacks, as a
// reviewer would add it ("executable /bin/sh"), or "" when it is allowed.
func (p *Profile) Missing(ev *Event) string {
	switch k := p.missing(ev); k {
	case "":
		return ""
	default:
		e, _ := EntryOf(ev)
		return describe(k, e)
	}
}

// missing returns which part of the profile the event is outside of
// ("exec", "pair", "write", "connect", "listen"), or "". It does not allocate
// for absolute paths and resolved peers.
func (p *Profile) missing(ev *Event) string {
	if p == nil || !p.Ready || ev.Container.ID == "" {
		return ""
	}
	x := &p.idx
	switch ev.Kind {
	case KindExec:
		if _, ok := x.exec[ev.Process.Binary]; !ok {
			return ProfileExec
		}
		if par := ev.Process.Parent.Binary; par != "" {
			if _, ok := x.pairs[pairKey{par, ev.Process.Binary}]; !ok {
				return "pair"
			}
		}
	case KindOpen:
		if !ev.File.Write {
			return ""
		}
		d := writeDir(ev.File.Path, ev.Process.Cwd)
		if _, ok := x.dirs[d]; ok {
			return ""
		}
		for _, s := range x.subtrees {
			if d == s[:len(s)-1] || strings.HasPrefix(d, s) {
				return ""
			}
		}
		return ProfileWrite
	case KindConnect:
		if !x.allowsPeer(ev) {
			return ProfileConnect
		}
	case KindListen:
		if !portIn(x.listen, int32(ev.Net.Local.Port), ev.Net.Protocol) {
			return ProfileListen
		}
	}
	return ""
}

func (x *profileIndex) allowsPeer(ev *Event) bool {
	pr := &ev.Net.Peer
	port, proto := int32(pr.Port), ev.Net.Protocol
	switch {
	case pr.Service != "":
		return portsAllow(x.services[svcKey{pr.Namespace, pr.Service}], port, proto)
	case pr.Workload.Name != "":
		return portsAllow(x.wls[wlKey{pr.Workload.Kind, peerNamespace(pr), pr.Workload.Name}], port, proto)
	}
	a, err := netip.ParseAddr(pr.IP)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, c := range x.cidrs {
		if c.prefix.Contains(a) && portsAllow([]portKey{c.port}, port, proto) {
			return true
		}
	}
	return false
}

// portsAllow: port 0 in the profile allows any port, an empty protocol any
// protocol.
func portsAllow(ps []portKey, port int32, proto string) bool {
	for _, k := range ps {
		if (k.port == 0 || k.port == port) && (k.proto == "" || k.proto == proto) {
			return true
		}
	}
	return false
}

func portIn(m map[portKey]struct{}, port int32, proto string) bool {
	for _, k := range [...]portKey{{port, proto}, {port, ""}, {0, proto}, {0, ""}} {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

func describe(missing string, e ProfileEntry) string {
	switch missing {
	case ProfileExec:
		return "executable " + e.Executable
	case "pair":
		return "process pair " + e.Pair.Parent + " -> " + e.Pair.Child
	case ProfileWrite:
		return "write directory " + e.WriteDirectory
	case ProfileConnect:
		return "outbound " + DescribePeer(e.Peer)
	case ProfileListen:
		return "listening " + strconv.Itoa(int(e.Port.Port)) + "/" + e.Port.Protocol
	}
	return missing
}

// DescribePeer writes a peer the way Incidents and reports name it:
// "service shop/db:5432/tcp".
func DescribePeer(p v1alpha1.ProfilePeer) string {
	var what string
	switch {
	case p.Service != "":
		what = "service " + p.Service
	case p.Workload != "":
		what = "workload " + p.Workload
	default:
		what = p.CIDR
	}
	return what + ":" + strconv.Itoa(int(p.Port)) + "/" + p.Protocol
}

// profileJSON is a Profile's JSON form (rule tests, replay).
type profileJSON struct {
	Name                      string `json:"name,omitempty"`
	Ready                     bool   `json:"ready,omitempty"`
	v1alpha1.ProfileBehaviour `json:",inline"`
}

// MarshalJSON writes the profile with its behaviour.
func (p *Profile) MarshalJSON() ([]byte, error) {
	return json.Marshal(profileJSON{Name: p.Name, Ready: p.Ready, ProfileBehaviour: p.behaviour})
}

// UnmarshalJSON reads a profile, refusing lists over the CRD's bounds.
func (p *Profile) UnmarshalJSON(b []byte) error {
	var j profileJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	np, err := NewProfile(j.Name, j.Ready, j.ProfileBehaviour)
	if err != nil {
		return err
	}
	*p = *np
	return nil
}

// noProfile is what events without a profile see.
var noProfile = &Profile{}

func profileAllows(lhs, rhs ref.Val) ref.Val {
	p, ok1 := lhs.Value().(*Profile)
	ev, ok2 := rhs.Value().(*Event)
	if !ok1 || !ok2 {
		return types.NewErr("profile.allows: want a profile and an event")
	}
	return types.Bool(p.Allows(ev))
}

func profileMissing(lhs, rhs ref.Val) ref.Val {
	p, ok1 := lhs.Value().(*Profile)
	ev, ok2 := rhs.Value().(*Event)
	if !ok1 || !ok2 {
		return types.NewErr("profile.missing: want a profile and an event")
	}
	return types.String(p.Missing(ev))
}
