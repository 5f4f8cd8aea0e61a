// Package rollout makes rule rollout visible. Each agent keeps one Lease in
// the controller's namespace (riposte-agent-<node>) whose annotation lists the
// rules it has loaded as uid=generation; it writes only when that set changes
// (coalesced) and to renew the Lease, so API writes stay bounded by the node
// count. The controller reads the Leases from its cache and reports each
// rule's `nodes: loaded/total`; a Lease not renewed in time no longer counts.
package rollout
