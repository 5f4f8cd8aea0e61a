package bpf

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// TestKernelNetworkFilterEqualsModel is TestKernelFilterEqualsModel for
// connects: random peer-port, local-port and CIDR rules through the real
// maps, real connects to IPv4, IPv6 and IPv4-mapped IPv6 peers (refused
// connections still report), kernel verdicts equal to the model's.
func TestKernelNetworkFilterEqualsModel(t *testing.T) {
	s, c := loadForTest(t, Options{})
	peers := []string{"127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"}
	ports := []int64{47001, 47002, 47003}
	cidrs := []string{"127.0.0.0/8", "127.0.0.2/32", "::1/128", "::/0", "10.0.0.0/8", "::ffff:127.0.0.0/104", "0.0.0.0/0"}
	r := rand.New(rand.NewPCG(3, 4))
	var script strings.Builder
	script.WriteString(`use IO::Socket::IP; `)
	for _, h := range peers {
		for _, p := range ports {
			fmt.Fprintf(&script, `IO::Socket::IP->new(PeerHost => "%s", PeerPort => %d, Timeout => 1); `, h, p)
		}
	}
	passed, dropped := 0, 0
	for round := range 10 {
		var rules []RuleConstraints
		for i := range 1 + r.IntN(3) {
			c := engine.Constraints{Kinds: []engine.Kind{engine.KindConnect}}
			if r.IntN(2) == 0 {
				c.PeerPorts = []int64{}
				for _, p := range ports {
					if r.IntN(2) == 0 {
						c.PeerPorts = append(c.PeerPorts, p)
					}
				}
			}
			if r.IntN(3) > 0 {
				c.PeerCIDRs = []netip.Prefix{}
				for _, s := range cidrs {
					if r.IntN(3) == 0 {
						c.PeerCIDRs = append(c.PeerCIDRs, netip.MustParsePrefix(s))
					}
				}
			}
			rules = append(rules, RuleConstraints{Name: fmt.Sprint(i), Constraints: c})
		}
		f := NewFilter(rules)
		if err := s.SetFilter(f); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/usr/bin/perl", "-e", script.String())
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("perl: %v %s", err, out)
		}
		pid := int64(cmd.Process.Pid)
		// Sentinel: an exec that always passes marks the end of the round.
		s.SetFilter(NewFilter([]RuleConstraints{{Name: "s", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindExec}, Basenames: []string{"true"}}}}))
		sc := exec.Command("/bin/true")
		sc.Run()
		c.wait(t, "sentinel", func(e *engine.Event) bool { return e.Process.PID == int64(sc.Process.Pid) })
		time.Sleep(20 * time.Millisecond)
		for _, h := range peers {
			addr := netip.MustParseAddr(h)
			for _, p := range ports {
				v := View{Kind: engine.KindConnect, PeerPort: uint16(p), Peer: addr}
				want := f.Pass(v)
				got := c.count(func(e *engine.Event) bool {
					a, _ := netip.ParseAddr(e.Net.Peer.IP)
					return e.Process.PID == pid && e.Kind == engine.KindConnect && a == addr && e.Net.Peer.Port == p
				}) > 0
				if want {
					passed++
				} else {
					dropped++
				}
				if got != want {
					t.Errorf("round %d: connect [%s]:%d: kernel passed %v, model %v\n%s", round, h, p, got, want, f.Explain())
				}
			}
		}
	}
	t.Logf("%d connects passed and %d dropped, kernel and model agreeing", passed, dropped)
	if passed < 10 || dropped < 10 {
		t.Errorf("too few passes (%d) or drops (%d) to test anything", passed, dropped)
	}
}
