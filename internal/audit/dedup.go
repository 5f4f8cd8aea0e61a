package audit

import (
	"encoding/binary"
	"hash/maphash"
	"sync"

	"github.com/riposte-dev/riposte/engine"
)

// DefaultDedupWindow is how many recent events the duplicate filter
// remembers: at 1,000 audit events/s, the last two minutes, about the span of
// the API server's five retries of a batch with the default 10 s backoff
// (10 + 15 + 22.5 + 34 + 51 s). Full, it holds 5.7 MB (44 bytes an event,
// measured with go1.26 maps).
const DefaultDedupWindow = 1 << 17

// window remembers the keys of the last n events it admitted, so an event
// the API server sends again (a batch retried after a lost response) is
// matched once. Memory is bounded: the oldest key is forgotten when a new
// one comes, and the forgetting is counted.
//
// The key is not the audit ID alone: kube-apiserver takes the audit ID from
// the client's Audit-ID header when one is sent, so an attacker could give a
// malicious request the ID of an earlier harmless one. The key hashes what
// the API server itself sets and a retry repeats byte for byte: the two
// timestamps (microseconds), the stage, the verb, the request URI, the
// user, the source addresses, the object reference and the response code.
// Two different requests share all of them only if they are the same
// request. The hash seed is random per process, so keys cannot be aimed at
// each other.
type window struct {
	mu   sync.Mutex
	seed maphash.Seed
	keys map[uint64]struct{}
	ring []uint64
	next int
	full bool
}

func newWindow(n int) *window {
	return &window{seed: maphash.MakeSeed(), keys: make(map[uint64]struct{}, n), ring: make([]uint64, n)}
}

// admit filters batch in place to the events not seen within the window and
// returns them with the number of duplicates dropped and of keys evicted.
func (w *window) admit(batch []engine.Event) (fresh []engine.Event, dup, evicted int) {
	var h maphash.Hash
	h.SetSeed(w.seed)
	keys := make([]uint64, len(batch))
	for i := range batch {
		keys[i] = key(&h, &batch[i].Audit)
	}
	fresh = batch[:0]
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, k := range keys {
		if _, seen := w.keys[k]; seen {
			dup++
			continue
		}
		if w.full {
			delete(w.keys, w.ring[w.next])
			evicted++
		}
		w.keys[k] = struct{}{}
		w.ring[w.next] = k
		if w.next++; w.next == len(w.ring) {
			w.next, w.full = 0, true
		}
		fresh = append(fresh, batch[i])
	}
	return fresh, dup, evicted
}

func key(h *maphash.Hash, a *engine.Audit) uint64 {
	h.Reset()
	var b [8]byte
	num := func(v int64) {
		binary.LittleEndian.PutUint64(b[:], uint64(v))
		_, _ = h.Write(b[:])
	}
	str := func(s string) {
		num(int64(len(s))) // length-prefixed: ("ab","c") and ("a","bc") differ
		_, _ = h.WriteString(s)
	}
	str(a.AuditID)
	str(a.Stage)
	num(a.RequestReceivedTimestamp.UnixMicro())
	num(a.StageTimestamp.UnixMicro())
	str(a.Verb)
	str(a.RequestURI)
	str(a.User.Username)
	str(a.User.UID)
	str(a.ImpersonatedUser.Username)
	num(int64(len(a.SourceIPs)))
	for _, ip := range a.SourceIPs {
		str(ip)
	}
	str(a.UserAgent)
	o := &a.ObjectRef
	for _, s := range []string{o.Resource, o.Subresource, o.APIGroup, o.Namespace, o.Name, o.UID, o.ResourceVersion} {
		str(s)
	}
	num(a.ResponseStatus.Code)
	return h.Sum64()
}
