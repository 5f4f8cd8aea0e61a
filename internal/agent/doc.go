// Package agent is the node agent's event pipeline on one host: it loads the
// eBPF sensors (package bpf), writes the kernel prefilter derived from the
// live rules, reads the ring buffer, completes each event from the process
// table, matches it against the rules and hands alerts and in-kernel
// enforcement reports to the caller. It also decides which rules the kernel
// can enforce exactly (kill at exec) and probes which enforcement the kernel
// allows (BPF LSM or bpf_send_signal).
package agent
