package recorder

import (
	"fmt"
	"math/rand"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/riposte-dev/riposte/engine"
)

var t0 = time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)

func exec(id string, at time.Time, pid int64, args ...string) *engine.Event {
	return &engine.Event{Kind: engine.KindExec, Time: at, Container: engine.Container{ID: id},
		Process: engine.Process{PID: pid, Binary: "/bin/busybox", Args: args}}
}

// TestTimelineKeepsTheLastEventsOfItsContainerInOrder: a container's
// timeline holds its last Events events up to the match, oldest first,
// none older than Age and none of another container or the host.
func TestTimelineKeepsTheLastEventsOfItsContainerInOrder(t *testing.T) {
	r := New(Options{Events: 4, Age: time.Minute})
	r.Add(exec("", t0, 1, "host"))
	r.Add(exec("b", t0, 2, "other"))
	for i := range 6 {
		r.Add(exec("a", t0.Add(time.Duration(i)*time.Second), int64(10+i), fmt.Sprint(i)))
	}
	got := r.Timeline("a", t0.Add(5*time.Second))
	var args []string
	for _, e := range got {
		args = append(args, e.Args[0])
	}
	if strings.Join(args, ",") != "2,3,4,5" {
		t.Errorf("timeline %v, want the last 4 in order: 2,3,4,5", args)
	}
	if got := r.Timeline("a", t0.Add(3*time.Second)); len(got) != 2 {
		t.Errorf("up to the 4th event: %d entries, want 2 (events after the match are not before it)", len(got))
	}
	if got := r.Timeline("a", t0.Add(2*time.Minute)); len(got) != 0 {
		t.Errorf("older than Age: %d entries kept", len(got))
	}
	if got := r.Timeline("nope", t0); got != nil {
		t.Errorf("unknown container: %v", got)
	}
}

// TestRecorderStaysWithinItsBoundsAndCountsEvictions: under a random
// stream over many containers with huge arguments, the recorder holds at
// most Containers containers of at most Events entries each, every string
// cut, and counts each container it evicted.
func TestRecorderStaysWithinItsBoundsAndCountsEvictions(t *testing.T) {
	r := New(Options{Events: 8, Containers: 16})
	rng := rand.New(rand.NewSource(2))
	huge := strings.Repeat("x", 10000)
	seen := map[string]bool{}
	for i := range 5000 {
		id := fmt.Sprintf("c%d", rng.Intn(100))
		seen[id] = true
		args := make([]string, rng.Intn(40))
		for j := range args {
			args[j] = huge
		}
		r.Add(exec(id, t0.Add(time.Duration(i)*time.Millisecond), int64(i), args...))
		if r.Containers() > 16 {
			t.Fatalf("%d containers > 16", r.Containers())
		}
	}
	for id := range seen {
		tl := r.Timeline(id, t0.Add(time.Hour))
		if len(tl) > 8 {
			t.Fatalf("%s: %d entries > 8", id, len(tl))
		}
		for _, e := range tl {
			if len(e.Args) > maxArgs {
				t.Fatalf("%d args kept", len(e.Args))
			}
			for _, a := range e.Args {
				if len(a) > maxString {
					t.Fatalf("argument of %d bytes kept", len(a))
				}
			}
		}
	}
	var m dto.Metric
	if err := r.evicted.Write(&m); err != nil {
		t.Fatal(err)
	}
	if m.Counter.GetValue() == 0 {
		t.Error("100 containers through 16 slots evicted none")
	}
}
