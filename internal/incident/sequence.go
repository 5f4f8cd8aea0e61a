package incident

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/evidence"
)

// stepSamples are a sequence match's step events, in step order, for
// status.sampleEvents: every step, each already bounded by the engine
// (engine.MaxStepEventBytes, at most engine.MaxSequenceSteps of them), with
// env values and Secret data redacted.
func stepSamples(steps []engine.StepEvent) []runtime.RawExtension {
	out := make([]runtime.RawExtension, len(steps))
	for i, s := range steps {
		out[i] = runtime.RawExtension{Raw: evidence.RedactJSON(s.Event)}
	}
	return out
}

// sequenceCollectors export engine.SequenceTotals with the writer's metrics:
// what sequence rules' partial state did, evictions and expiries included,
// so a chain lost to the bounds is counted.
var sequenceCollectors = func() []prometheus.Collector {
	counter := func(name, help string, get func(engine.SequenceCounts) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help},
			func() float64 { return float64(get(engine.SequenceTotals())) })
	}
	return []prometheus.Collector{
		counter("riposte_sequence_chains_started_total", "Sequence chains started by an event of a rule's first step.",
			func(c engine.SequenceCounts) uint64 { return c.Started }),
		counter("riposte_sequence_chains_completed_total", "Sequence chains completed: sequence matches.",
			func(c engine.SequenceCounts) uint64 { return c.Completed }),
		counter("riposte_sequence_keys_expired_total", "Sequence keys dropped because all their chains fell out of the window.",
			func(c engine.SequenceCounts) uint64 { return c.Expired }),
		counter("riposte_sequence_keys_evicted_total", "Sequence keys evicted with their partial chains to stay within maxKeys or the byte bound.",
			func(c engine.SequenceCounts) uint64 { return c.Evicted }),
		counter("riposte_sequence_keys_discarded_total", "Sequence keys dropped with their rule (removed or changed).",
			func(c engine.SequenceCounts) uint64 { return c.Discarded }),
	}
}()
