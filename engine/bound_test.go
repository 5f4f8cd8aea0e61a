package engine

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestBoundCutsWhatTheCostEstimateAssumes: an audit event and a process
// event as an attacker would shape them (hundreds of arguments, huge
// strings, deep and wide request objects) come out within the bounds the
// rules' static cost estimates assume, marked truncated and counted; a small
// event is left alone.
func TestBoundCutsWhatTheCostEstimateAssumes(t *testing.T) {
	before := TruncatedEvents()
	small := Event{Kind: KindExec, Process: Process{Binary: "/bin/sh", Args: []string{"sh", "-c", "id"}}}
	if Bound(&small) || small.Truncated {
		t.Fatal("a small event was cut")
	}
	long := strings.Repeat("é", MaxString) // 2 bytes a character: cut mid-character unless careful
	var args []string
	for range 512 {
		args = append(args, long)
	}
	deep := map[string]any{}
	cur := deep
	for range 100 {
		next := map[string]any{}
		cur["x"] = next
		cur = next
	}
	wide := make([]any, 10000)
	for i := range wide {
		wide[i] = long
	}
	labels := map[string]string{}
	for i := range 1000 {
		labels[strings.Repeat("k", i+1)] = long
	}
	ev := Event{Kind: KindExec, Process: Process{Binary: long, Args: args, Ancestors: make([]Ancestor, 100)}, Pod: Pod{Labels: labels},
		Audit: Audit{UserAgent: long, SourceIPs: args, RequestObject: map[string]any{"deep": deep, "wide": wide, "s": long}}}
	Normalize(&ev)
	if !ev.Truncated || TruncatedEvents() != before+1 {
		t.Fatalf("truncated %v, counted %d, want true and one more than %d", ev.Truncated, TruncatedEvents(), before)
	}
	p := &ev.Process
	if len(p.Args) != MaxArgs || len(p.Ancestors) != MaxAncestors || len(p.Binary) > MaxString || len(p.Cmdline) > MaxString || len(p.Name) > MaxString {
		t.Errorf("process: %d args, %d ancestors, binary %d, cmdline %d bytes", len(p.Args), len(p.Ancestors), len(p.Binary), len(p.Cmdline))
	}
	for _, a := range p.Args {
		if len(a) > MaxString || !utf8.ValidString(a) {
			t.Fatalf("argument of %d bytes, valid UTF-8 %v", len(a), utf8.ValidString(a))
		}
	}
	if len(ev.Pod.Labels) > MaxListItems || len(ev.Audit.SourceIPs) > MaxListItems || len(ev.Audit.UserAgent) > MaxString {
		t.Errorf("labels %d, sourceIPs %d, userAgent %d bytes", len(ev.Pod.Labels), len(ev.Audit.SourceIPs), len(ev.Audit.UserAgent))
	}
	depth := 0
	for m := ev.Audit.RequestObject["deep"]; m != nil; depth++ {
		next, _ := m.(map[string]any)["x"]
		m = next
	}
	if depth > maxDepth {
		t.Errorf("request object %d levels deep, want at most %d", depth, maxDepth)
	}
	if w := ev.Audit.RequestObject["wide"].([]any); len(w) != MaxListItems || len(w[0].(string)) > MaxString {
		t.Errorf("wide list: %d items of %d bytes", len(w), len(w[0].(string)))
	}
	// What a rule sees is what the event's JSON form carries.
	b, _ := json.Marshal(&ev)
	if !strings.Contains(string(b), `"truncated":true`) {
		t.Error("the JSON form does not say the event was truncated")
	}
}

func BenchmarkNormalizeProcessEvent(b *testing.B) {
	ev := Event{Kind: KindExec, Process: Process{Binary: "/usr/bin/curl", Args: []string{"curl", "-s", "http://example.com/x"},
		Ancestors: []Ancestor{{Binary: "/bin/sh", Args: []string{"sh", "-c", "curl -s http://example.com/x"}}}},
		Pod: Pod{Name: "web-1", Namespace: "shop", Labels: map[string]string{"app": "web"}}}
	b.ReportAllocs()
	for b.Loop() {
		e := ev
		e.Process.Cmdline, e.Process.Name = "", ""
		Normalize(&e)
	}
}
