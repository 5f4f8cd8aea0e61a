package engine

import (
	"sync"
	"time"
)

// Throttle folds repeated matches of a rule with the same throttle key inside
// the rule's window into the first one. It is safe for concurrent use.
type Throttle struct {
	mu      sync.Mutex
	entries map[throttleKey]*throttleEntry
	sweepAt time.Time
	// Suppressed counts every match folded into an earlier one.
	Suppressed uint64
}

type throttleKey struct {
	rule *Rule
	key  string
}

type throttleEntry struct {
	until      time.Time
	window     time.Duration
	suppressed uint64
}

// NewThrottle returns an empty throttle.
func NewThrottle() *Throttle { return &Throttle{entries: map[throttleKey]*throttleEntry{}} }

// Allow reports whether a match at time now should be reported. When it opens
// a new window it also returns how many matches the previous window of the
// same key suppressed, so nothing is lost silently.
func (t *Throttle) Allow(r *Rule, key string, now time.Time) (allow bool, suppressedBefore uint64) {
	if r.window <= 0 {
		return true, 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.sweep(now)
	k := throttleKey{r, key}
	e, ok := t.entries[k]
	if ok && now.Before(e.until) {
		e.suppressed++
		t.Suppressed++
		return false, 0
	}
	var prev uint64
	if ok {
		prev = e.suppressed
	}
	t.entries[k] = &throttleEntry{until: now.Add(r.window), window: r.window}
	return true, prev
}

// sweep drops windows expired for a whole window at most once a second, so
// memory stays bounded by the keys active lately. A dropped window's
// suppressed count stays in Suppressed.
func (t *Throttle) sweep(now time.Time) {
	if now.Before(t.sweepAt) {
		return
	}
	t.sweepAt = now.Add(time.Second)
	for k, e := range t.entries {
		if !now.Before(e.until.Add(e.window)) {
			delete(t.entries, k)
		}
	}
}
