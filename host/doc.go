// Package host reads and acts on the node riposte runs on, in one place:
// process facts from procfs, cgroup v2 discovery on unified and hybrid
// hosts (and the kubelet's and runtimes' cgroup names), a container's
// changed files located through the runtime's own mounts, and kills checked
// against cgroup membership.
//
// Everything a process or container can shape — its command line,
// environment, open files and its own mount table — is read as a claim and
// bounded in size; decisions (which process to kill, where a container's
// files are) rest on what the kernel and the container runtime recorded:
// pids held by pidfds, cgroup membership, the host's mount table.
package host
