// Package node performs the response actions only the node agent can do: it
// isolates a pod in the kernel with BPF_PROG_TYPE_CGROUP_SKB programs attached
// (ingress and egress) to the pod's cgroup v2 directory — which holds whatever
// CNI is installed and whether or not it enforces NetworkPolicy — and kills a
// process (SIGKILL) or a whole container (cgroup.kill).
//
// The programs are built from instructions in Go (no C toolchain): the allow
// list of a playbook is compiled into immediate comparisons on each packet's
// peer address (IPv4 or IPv6) and TCP/UDP port, so no maps are needed. Attachments are BPF
// links pinned in bpffs when PinDir is set, so an agent restart neither drops
// an isolation nor loses the handle needed to revert it.
package node
