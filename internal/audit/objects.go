package audit

import "github.com/riposte-dev/riposte/engine"

// resultObject counts, in riposte_audit_events_total, the object events
// derived from audit events (engine.ObjectFromAudit) and matched against
// object rules.
const resultObject = "object_derived"

// matchObject matches the object event an audit event carries, if any, so
// object rules fire from the audit stream with the actor beside the object
// (the audit event is kept in it, sourcePod included). It returns matches
// for reuse.
func (s *Source) matchObject(m *engine.Matcher, ev *engine.Event, matches []engine.Match) []engine.Match {
	obj, ok := engine.ObjectFromAudit(ev)
	if !ok {
		return matches
	}
	s.m.events.WithLabelValues(resultObject).Inc()
	matches = m.Match(&obj, matches[:0])
	for _, mt := range matches {
		s.m.matches.Inc()
		s.sink.Record(mt, &obj)
	}
	return matches
}
