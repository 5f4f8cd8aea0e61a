// Package responders runs response playbooks for Incidents.
//
// Each action (capture, isolate, quarantine, kill, scale, label, annotate,
// cordon, notify) lives in its own file behind the small Action interface; a
// Runner executes a playbook's steps in order for one Incident and records every
// step's phase, times, message and undo data in the Incident status. The status
// is the source of truth: a Runner that restarts reads it back, never repeats a
// step that finished, and re-enters a step that was Running with the undo data
// persisted before the step changed anything, so every action is written to be
// idempotent.
//
// Guardrails are enforced by the Runner before an action sees a request: playbook
// and global dry-run, protected namespaces, the namespace scope of a namespaced
// ResponsePlaybook, a per-playbook rate limit, approval through the
// riposte.dev/approve=true annotation, and revert through riposte.dev/revert=true.
// minHealthyReplicas is checked by the actions it belongs to (scale, kill).
//
// Node-local work (cgroup_skb isolation in the kernel, SIGKILL of a process,
// killing a container's cgroup) goes through the Node interface; package
// responders/node implements it for the process that runs on the node.
package responders
