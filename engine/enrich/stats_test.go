package enrich

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/riposte-dev/riposte/engine"
)

func TestCollectorExportsCounters(t *testing.T) {
	s, _ := newTestStore(t)
	ev := engine.Event{Time: t0, Process: engine.Process{CgroupID: 7}, Net: engine.Net{Peer: engine.Peer{IP: "10.9.9.9"}}}
	s.Enrich(&ev)
	reg := prometheus.NewPedanticRegistry()
	if err := reg.Register(s.Collector()); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "riposte_enrich_resolutions_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var kind, outcome string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "kind":
					kind = l.GetValue()
				case "outcome":
					outcome = l.GetValue()
				}
			}
			got[kind+"/"+outcome] = m.GetCounter().GetValue()
		}
	}
	if len(got) != int(numKinds)*int(numOutcomes) {
		t.Errorf("series = %d, want %d", len(got), int(numKinds)*int(numOutcomes))
	}
	if got["container/unresolved"] != 1 || got["peer/unresolved"] != 1 || got["container/resolved"] != 0 {
		t.Errorf("counters = %v", got)
	}
}
