package engine

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// BenchmarkSequence compares a sequence rule with a plain rule on the same
// exec events, through the matcher. "miss": the events are candidates (by
// base name) but satisfy no step, being outside containers (the plain
// rule's condition is false); "hit": every event
// satisfies a step (a, then b, over 100 containers: half start a chain, half
// complete one), where the plain rule (on a or b) matches every event.
func BenchmarkSequence(b *testing.B) {
	plain, err := Compile("plain", "", &v1alpha1.DetectionRuleSpec{Source: "process", Severity: "low", Output: `"x"`,
		Condition: `event.kind == "exec" && container.id != "" && process.name in ["a", "b"]`})
	if err != nil {
		b.Fatal(err)
	}
	seq, err := Compile("seq", "", &v1alpha1.DetectionRuleSpec{Source: "process", Severity: "low", Output: `"x"`,
		Sequence: &v1alpha1.Sequence{Key: []string{"container.id"}, Window: metav1.Duration{Duration: time.Hour}, Steps: []v1alpha1.SequenceStep{
			{Name: "a", Condition: `event.kind == "exec" && container.id != "" && process.name == "a"`},
			{Name: "b", Condition: `event.kind == "exec" && container.id != "" && process.name == "b"`},
		}}})
	if err != nil {
		b.Fatal(err)
	}
	stream := func(hit bool) []Event {
		evs := make([]Event, 1000)
		t0 := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
		for i := range evs {
			name := []string{"a", "b"}[(i/100)%2]
			id := ""
			if hit {
				id = fmt.Sprintf("c%d", i%100)
			}
			evs[i] = Event{Kind: KindExec, Time: t0.Add(time.Duration(i) * time.Millisecond), Container: Container{ID: id},
				Process: Process{PID: int64(i), Binary: "/bin/" + name, Name: name, Args: []string{name, "-x"}}}
			Normalize(&evs[i])
		}
		return evs
	}
	for _, hit := range []bool{false, true} {
		evs := stream(hit)
		for _, r := range []*Rule{plain, seq} {
			what := "miss"
			if hit {
				what = "hit"
			}
			b.Run(fmt.Sprintf("%s/%s", r.Name(), what), func(b *testing.B) {
				m := NewMatcher([]*Rule{r})
				var dst []Match
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					dst = m.Match(&evs[i%len(evs)], dst[:0])
					i++
				}
			})
		}
	}
}
