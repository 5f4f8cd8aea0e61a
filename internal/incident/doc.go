// Package incident turns rule matches into Incident objects. Matches of one
// rule about one subject inside the rule's throttle window fold into one
// Incident (count, lastSeen, a few sample events); the folding happens in
// memory and a single flusher writes the result, rate limited, so a burst of
// matches costs a bounded number of API writes.
package incident
