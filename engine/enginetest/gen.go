package enginetest

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"

	"github.com/riposte-dev/riposte/api/v1alpha1"
	"github.com/riposte-dev/riposte/engine"
)

// Cond is a generated condition: an atom (a boolean CEL expression) or &&,
// || or ! over others. Keeping the tree lets a failure shrink.
type Cond struct {
	Op   string // "atom", "&&", "||" or "!"
	Atom string
	Args []*Cond
}

func (c *Cond) String() string {
	switch c.Op {
	case "atom":
		return c.Atom
	case "!":
		return "!(" + c.Args[0].String() + ")"
	}
	parts := make([]string, len(c.Args))
	for i, a := range c.Args {
		parts[i] = a.String()
	}
	return "(" + strings.Join(parts, " "+c.Op+" ") + ")"
}

// simpler returns every condition one step simpler than c: a node replaced
// by one of its operands.
func (c *Cond) simpler() []*Cond {
	if c.Op == "atom" {
		return nil
	}
	out := append([]*Cond{}, c.Args...)
	for i, a := range c.Args {
		for _, s := range a.simpler() {
			args := append([]*Cond{}, c.Args...)
			args[i] = s
			out = append(out, &Cond{Op: c.Op, Args: args})
		}
	}
	return out
}

// Pools are the values random rules and events draw from. Rules and events
// share them so that they meet often enough to test something.
type Pools struct {
	Kinds                           []engine.Kind // event kinds, and literals rules compare event.kind with
	Sources                         []string
	Binaries, Names, Paths          []string
	Prefixes                        []string // file.path.startsWith arguments
	Ports                           []int64
	IPs, CIDRs                      []string
	Verbs, Resources, Subresources  []string
	Namespaces                      []string
	ContainerIDs                    []string
	Extras                          []string // conditions the constraint analysis cannot use
	ObjectKinds                     []string
	NamespacedRules, ExceptionRatio int // one rule in N is namespaced / has exceptions; 0: never
}

// DefaultPools cover every source and every form the constraint analysis
// understands, and forms it must ignore.
func DefaultPools() *Pools {
	long := strings.Repeat("x", 300)
	return &Pools{
		Kinds:   append(engine.AllKinds(), engine.KindEnforce, "bogus"),
		Sources: []string{"process", "file", "network", "audit", "object"},
		Binaries: []string{"/bin/sh", "/usr/bin/bash", "/usr/bin/curl", "/tmp/x", "/bin/busybox", "sh", "",
			"/usr/bin/nc", "/" + long + "/sh", "/a/b/sh"},
		Names: []string{"sh", "bash", "curl", "x", "busybox", "nc", ""},
		Paths: []string{"/etc/shadow", "/etc/ssh/sshd_config", "/var/run/secrets/kubernetes.io/serviceaccount/token",
			"/proc/1/mem", "/tmp/a", "etc/rel", "", "/et", "/etc", "/etc/", "/etcetera", "/", "/" + long},
		Prefixes:     []string{"/etc/", "/etc/ssh/", "/var/run/secrets/", "/proc/", "/tm", "/", "/etc/shadow", "/var/", "", "/etc", "/" + long[:100]},
		Ports:        []int64{22, 53, 443, 4444, 0, 65535, 65536, -1},
		IPs:          []string{"10.0.0.7", "192.168.1.1", "127.0.0.1", "fd00::1", "::ffff:10.1.1.1", "", "bogus", "::1", "0.0.0.0"},
		CIDRs:        []string{"10.0.0.0/8", "127.0.0.1", "fd00::/8", "192.168.0.0/16", "::/0", "0.0.0.0/0", "::ffff:10.0.0.0/104", "10.0.0.7/32"},
		Verbs:        []string{"create", "get", "list", "delete", ""},
		Resources:    []string{"pods", "secrets", "nodes", "selfsubjectaccessreviews", ""},
		Subresources: []string{"exec", "attach", "proxy", "", "log"},
		Namespaces:   []string{"shop", "kube-system", ""},
		ContainerIDs: []string{"c1", ""},
		Extras: []string{`process.uid == 0`, `process.args.exists(a, a == "-c")`, `file.write`, `size(process.args) > 1`,
			`process.comm == "sh"`, `net.protocol == "tcp"`, `process.name.startsWith("s")`, `file.path.contains("mem")`,
			`true`, `false`, `pod.labels.?app.orValue("") == "web"`, `audit.user.username.startsWith("system:")`,
			`has(object.kind) && object.kind == "Pod"`, `object.kind == "Pod"`, `workload.kind == "Job"`,
			`process.ancestors.exists(a, a.name == "sh")`, `event.kind != "exec"`, `net.peer.ip == "10.0.0.7"`},
		ObjectKinds:     []string{"Pod", "Secret", "ClusterRole", ""},
		NamespacedRules: 5,
		ExceptionRatio:  4,
	}
}

func pick[T any](r *rand.Rand, xs []T) T { return xs[r.IntN(len(xs))] }

func q(s string) string { return fmt.Sprintf("%q", s) }

func list[T any](r *rand.Rand, xs []T, f func(T) string) string {
	n := 1 + r.IntN(3)
	parts := make([]string, n)
	for i := range parts {
		parts[i] = f(pick(r, xs))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func num(n int64) string { return fmt.Sprint(n) }

// Atom returns one boolean CEL expression over the pools.
func (p *Pools) Atom(r *rand.Rand) string {
	kind := func() string { return q(string(pick(r, p.Kinds))) }
	switch r.IntN(34) {
	case 0:
		return "event.kind == " + kind()
	case 1:
		return "event.kind in " + list(r, p.Kinds, func(k engine.Kind) string { return q(string(k)) })
	case 2:
		return kind() + " == event.kind"
	case 3:
		return "process.binary == " + q(pick(r, p.Binaries))
	case 4:
		return q(pick(r, p.Binaries)) + " == process.binary"
	case 5:
		return "process.binary in " + list(r, p.Binaries, q)
	case 6:
		return "event.process.binary == " + q(pick(r, p.Binaries))
	case 7:
		return "process.name == " + q(pick(r, p.Names))
	case 8:
		return "process.name in " + list(r, p.Names, q)
	case 9:
		return "process.binary.endsWith(" + q("/"+pick(r, p.Names)) + ")"
	case 10:
		return "process.binary.endsWith(" + q(pick(r, p.Names)) + ")"
	case 11:
		return "file.path.startsWith(" + q(pick(r, p.Prefixes)) + ")"
	case 12:
		return "file.path == " + q(pick(r, p.Paths))
	case 13:
		return "file.path in " + list(r, p.Paths, q)
	case 14:
		return q(pick(r, p.Paths)) + " == file.path"
	case 15:
		return "net.peer.port == " + num(pick(r, p.Ports))
	case 16:
		return num(pick(r, p.Ports)) + " == net.peer.port"
	case 17:
		return "net.peer.port in " + list(r, p.Ports, num)
	case 18:
		return "net.local.port == " + num(pick(r, p.Ports))
	case 19:
		return "net.local.port in " + list(r, p.Ports, num)
	case 20:
		return "net.peer.ip.inCIDR(" + q(pick(r, p.CIDRs)) + ")"
	case 21:
		return "audit.verb == " + q(pick(r, p.Verbs))
	case 22:
		return "audit.objectRef.resource in " + list(r, p.Resources, q)
	case 23:
		return "audit.objectRef.subresource == " + q(pick(r, p.Subresources))
	case 24:
		return `container.id != ""`
	case 25:
		return `"" != container.id`
	case 26:
		return `container.id == ""`
	case 27:
		return "pod.namespace == " + q(pick(r, p.Namespaces))
	case 28:
		return "audit.verb in " + list(r, p.Verbs, q)
	case 29:
		return "process.binary.endsWith(" + q(pick(r, p.Binaries)) + ")"
	case 30:
		return "audit.objectRef.resource == " + q(pick(r, p.Resources))
	case 31:
		return "object.kind == " + q(pick(r, p.ObjectKinds))
	case 32:
		return "object.kind in " + list(r, p.ObjectKinds, q)
	}
	return pick(r, p.Extras)
}

// Cond returns a random condition of at most depth levels of &&, || and !.
func (p *Pools) Cond(r *rand.Rand, depth int) *Cond {
	if depth == 0 || r.IntN(3) == 0 {
		return &Cond{Op: "atom", Atom: p.Atom(r)}
	}
	switch r.IntN(8) {
	case 0:
		return &Cond{Op: "!", Args: []*Cond{p.Cond(r, depth-1)}}
	case 1, 2, 3:
		return &Cond{Op: "||", Args: []*Cond{p.Cond(r, depth-1), p.Cond(r, depth-1)}}
	}
	n := 2 + r.IntN(3)
	c := &Cond{Op: "&&"}
	for range n {
		c.Args = append(c.Args, p.Cond(r, depth-1))
	}
	return c
}

// RuleCase is a generated rule: what both the engine and the oracle compile.
type RuleCase struct {
	Name, Namespace string
	Source          string
	Cond            *Cond
	Exceptions      []*Cond
}

// Spec is the rule's spec.
func (c *RuleCase) Spec() *v1alpha1.DetectionRuleSpec {
	s := &v1alpha1.DetectionRuleSpec{Source: c.Source, Severity: "low", Condition: c.Cond.String()}
	for i, e := range c.Exceptions {
		s.Exceptions = append(s.Exceptions, v1alpha1.Exception{Name: fmt.Sprintf("e%d", i), Condition: e.String()})
	}
	return s
}

func (c *RuleCase) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "source: %s", c.Source)
	if c.Namespace != "" {
		fmt.Fprintf(&b, " (DetectionRule in namespace %s)", c.Namespace)
	}
	fmt.Fprintf(&b, "\ncondition: %s", c.Cond)
	for i, e := range c.Exceptions {
		fmt.Fprintf(&b, "\nexceptions[%d]: %s", i, e)
	}
	return b.String()
}

// Rule returns a random rule.
func (p *Pools) Rule(r *rand.Rand, name string) *RuleCase {
	c := &RuleCase{Name: name, Source: pick(r, p.Sources), Cond: p.Cond(r, 3)}
	if p.NamespacedRules > 0 && r.IntN(p.NamespacedRules) == 0 {
		c.Namespace = pick(r, p.Namespaces[:len(p.Namespaces)-1])
	}
	if p.ExceptionRatio > 0 && r.IntN(p.ExceptionRatio) == 0 {
		for range 1 + r.IntN(2) {
			c.Exceptions = append(c.Exceptions, p.Cond(r, 1))
		}
	}
	return c
}

// EventCase is a generated event: a kind and the fields set on it, each a
// named step so that a failure can drop the ones it does not need.
type EventCase struct {
	Kind  engine.Kind
	Steps []Step
}

// Step sets one field of an event.
type Step struct {
	Field string
	Set   func(*engine.Event)
}

// Event builds the event: the steps, then engine.Normalize as every event
// producer does.
func (c *EventCase) Event() *engine.Event {
	ev := &engine.Event{Kind: c.Kind}
	for _, s := range c.Steps {
		s.Set(ev)
	}
	engine.Normalize(ev)
	return ev
}

// JSON renders the event in riposte's JSON form.
func (c *EventCase) JSON() string {
	b, err := json.Marshal(c.Event())
	if err != nil {
		return fmt.Sprintf("<%v>", err)
	}
	return string(b)
}

// Event returns a random event: any kind, each field set or not.
func (p *Pools) Event(r *rand.Rand) *EventCase {
	c := &EventCase{Kind: pick(r, p.Kinds)}
	add := func(field string, set func(*engine.Event)) {
		if r.IntN(4) > 0 {
			c.Steps = append(c.Steps, Step{field, set})
		}
	}
	bin, name := pick(r, p.Binaries), pick(r, p.Names)
	add("process.binary", func(e *engine.Event) { e.Process.Binary = bin })
	add("process.name", func(e *engine.Event) { e.Process.Name = name })
	args := []string{"sh", "-c", "id"}[:r.IntN(4)]
	add("process.args", func(e *engine.Event) { e.Process.Args = args })
	uid := int64(r.IntN(2))
	add("process.uid", func(e *engine.Event) { e.Process.UID = uid })
	add("process.comm", func(e *engine.Event) { e.Process.Comm = name })
	anc := pick(r, p.Binaries)
	add("process.ancestors", func(e *engine.Event) { e.Process.Ancestors = []engine.Ancestor{{Binary: anc}} })
	path := pick(r, p.Paths)
	add("file.path", func(e *engine.Event) { e.File.Path = path })
	flags := int64(r.IntN(3))
	add("file.flags", func(e *engine.Event) { e.File.Flags = flags })
	pport, lport := pick(r, p.Ports), pick(r, p.Ports)
	add("net.peer.port", func(e *engine.Event) { e.Net.Peer.Port = pport })
	add("net.local.port", func(e *engine.Event) { e.Net.Local.Port = lport })
	ip := pick(r, p.IPs)
	add("net.peer.ip", func(e *engine.Event) { e.Net.Peer.IP = ip })
	proto := pick(r, []string{"tcp", "udp"})
	add("net.protocol", func(e *engine.Event) { e.Net.Protocol = proto })
	verb, res, sub := pick(r, p.Verbs), pick(r, p.Resources), pick(r, p.Subresources)
	add("audit.verb", func(e *engine.Event) { e.Audit.Verb = verb })
	add("audit.objectRef.resource", func(e *engine.Event) { e.Audit.ObjectRef.Resource = res })
	add("audit.objectRef.subresource", func(e *engine.Event) { e.Audit.ObjectRef.Subresource = sub })
	ans := pick(r, p.Namespaces)
	add("audit.objectRef.namespace", func(e *engine.Event) { e.Audit.ObjectRef.Namespace = ans })
	user := pick(r, []string{"system:serviceaccount:shop:api", "alice"})
	add("audit.user.username", func(e *engine.Event) { e.Audit.User.Username = user })
	pns := pick(r, p.Namespaces)
	add("pod.namespace", func(e *engine.Event) { e.Pod.Namespace = pns })
	label := pick(r, []string{"web", "db"})
	add("pod.labels", func(e *engine.Event) { e.Pod.Labels = map[string]string{"app": label} })
	cid := pick(r, p.ContainerIDs)
	add("container.id", func(e *engine.Event) { e.Container.ID = cid })
	wk := pick(r, []string{"Job", "Deployment"})
	add("workload.kind", func(e *engine.Event) { e.Workload.Kind = wk })
	ok, ons := pick(r, p.ObjectKinds), pick(r, p.Namespaces)
	add("object", func(e *engine.Event) {
		e.Object = map[string]any{"kind": ok, "metadata": map[string]any{"namespace": ons}}
	})
	return c
}

// Shrink simplifies a failing rule and event while fails stays true: it
// replaces condition nodes by their operands, drops exceptions and drops
// event fields, one step at a time, until no step keeps the failure. The
// inputs are not modified.
func Shrink(rule *RuleCase, ev *EventCase, fails func(*RuleCase, *EventCase) bool) (*RuleCase, *EventCase) {
	rule, ev = cloneRule(rule), &EventCase{Kind: ev.Kind, Steps: append([]Step{}, ev.Steps...)}
	for progress := true; progress; {
		progress = false
		for _, s := range rule.Cond.simpler() {
			try := cloneRule(rule)
			try.Cond = s
			if fails(try, ev) {
				rule, progress = try, true
				break
			}
		}
		for i := 0; i < len(rule.Exceptions) && !progress; i++ {
			try := cloneRule(rule)
			try.Exceptions = append(try.Exceptions[:i:i], try.Exceptions[i+1:]...)
			if fails(try, ev) {
				rule, progress = try, true
			}
		}
		if rule.Namespace != "" && !progress {
			try := cloneRule(rule)
			try.Namespace = ""
			if fails(try, ev) {
				rule, progress = try, true
			}
		}
		for i := 0; i < len(ev.Steps) && !progress; i++ {
			try := &EventCase{Kind: ev.Kind, Steps: append(ev.Steps[:i:i], ev.Steps[i+1:]...)}
			if fails(rule, try) {
				ev, progress = try, true
			}
		}
	}
	return rule, ev
}

func cloneRule(c *RuleCase) *RuleCase {
	out := *c
	out.Exceptions = append([]*Cond{}, c.Exceptions...)
	return &out
}
