// Package proctable is the node agent's process table: every process of the
// host, recovered from /proc at start, then kept current by the fork, exec and
// exit events the sensors report. It fills process.parent and
// process.ancestors into events, and the binary and arguments of processes
// whose events carry only a pid. Exited processes stay for a grace period so
// events that arrive late still resolve their ancestry.
//
// The kernel prefilter may drop a process's exec; the table notices through a
// per-process exec clock the sensors keep in a map (ExecClock) and re-reads
// /proc for that process before trusting its entry.
package proctable
