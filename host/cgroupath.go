package host

import "strings"

// Ref is what a cgroup path says about the container a process runs in.
type Ref struct {
	// ContainerID is the runtime's 64-hex id, the part after "<runtime>://"
	// in status.containerStatuses[].containerID.
	ContainerID string
	// PodUID is the pod's uid in its canonical dashed form, "" when the path
	// has no kubelet pod segment (a container outside Kubernetes).
	PodUID string
	// Runtime is "containerd", "cri-o" or "docker" when the path names it, ""
	// for the cgroupfs layouts that carry only the bare id.
	Runtime string
}

// Runtime-specific systemd scope prefixes, in the order they are tried.
var scopePrefixes = []struct{ prefix, runtime string }{
	{"cri-containerd-", "containerd"},
	{"crio-", "cri-o"},
	{"docker-", "docker"},
}

// ParsePath extracts the container id (and pod uid, when present) from a
// cgroup path as found in /proc/<pid>/cgroup or under /sys/fs/cgroup. It
// understands cgroup v1 and v2 with the cgroupfs and systemd drivers for
// containerd, CRI-O and Docker:
//
//	/kubepods/besteffort/pod<uid>/<id>
//	/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<u_i_d>.slice/cri-containerd-<id>.scope
//	.../crio-<id>.scope, .../docker-<id>.scope
//	/system.slice/containerd.service/kubepods-besteffort-pod<u_i_d>.slice:cri-containerd:<id>
//
// The path is read from the root: the first segment that names a pod or a
// container decides. Below a pod segment, the segment directly under it is
// the container the kubelet started; anything deeper (a process's own
// sub-cgroup, docker-in-docker, or a privileged container's fake
// ".../kubepods-besteffort-pod<other>.slice/cri-containerd-<other>.scope")
// is inside that container and stays attributed to it. It reports false
// rather than guess: ids must be exactly 64 lowercase hex digits, conmon
// scopes are not containers, and a pod segment with no container directly
// below it names no container.
func ParsePath(path string) (Ref, bool) {
	// Walk segments from the root without allocating a slice of them.
	for rest := path; rest != ""; {
		var seg string
		if i := strings.IndexByte(rest, '/'); i >= 0 {
			seg, rest = rest[:i], rest[i+1:]
		} else {
			seg, rest = rest, ""
		}
		if ref, ok := parseContainerSegment(seg); ok {
			return ref, true
		}
		if uid := parsePodSegment(seg); uid != "" {
			next, _, _ := strings.Cut(rest, "/")
			ref, ok := parseContainerSegment(next)
			if !ok || ref.PodUID != "" {
				return Ref{}, false
			}
			ref.PodUID = uid
			return ref, true
		}
	}
	return Ref{}, false
}

// parseContainerSegment recognises one path segment naming a container.
func parseContainerSegment(seg string) (Ref, bool) {
	if isHexID(seg) {
		return Ref{ContainerID: seg}, true
	}
	// containerd with the systemd driver on cgroup v1 puts "slice:runtime:id"
	// into one segment.
	if i := strings.IndexByte(seg, ':'); i >= 0 {
		slice, rest := seg[:i], seg[i+1:]
		j := strings.IndexByte(rest, ':')
		if j < 0 {
			return Ref{}, false
		}
		kind, id := rest[:j], rest[j+1:]
		if !isHexID(id) {
			return Ref{}, false
		}
		var runtime string
		switch kind {
		case "cri-containerd":
			runtime = "containerd"
		case "crio":
			runtime = "cri-o"
		case "docker":
			runtime = "docker"
		default:
			return Ref{}, false
		}
		return Ref{ContainerID: id, Runtime: runtime, PodUID: parsePodSegment(slice)}, true
	}
	name := strings.TrimSuffix(seg, ".scope")
	for _, p := range scopePrefixes {
		if id, ok := strings.CutPrefix(name, p.prefix); ok && isHexID(id) {
			return Ref{ContainerID: id, Runtime: p.runtime}, true
		}
	}
	return Ref{}, false
}

// parsePodSegment returns the canonical pod uid named by a kubelet pod
// cgroup segment ("pod<uid>" or "kubepods[-<qos>]-pod<u_i_d>.slice"), or "".
func parsePodSegment(seg string) string {
	if s, ok := strings.CutSuffix(seg, ".slice"); ok {
		i := strings.LastIndex(s, "-pod")
		if i < 0 || !strings.HasPrefix(s, "kubepods") {
			return ""
		}
		return canonicalUID(s[i+len("-pod"):])
	}
	if s, ok := strings.CutPrefix(seg, "pod"); ok {
		return canonicalUID(s)
	}
	return ""
}

// canonicalUID validates an 8-4-4-4-12 hex uid whose separators are '-' or
// (systemd escaping) '_' and returns it with dashes, or "" if it is not one.
func canonicalUID(s string) string {
	if len(s) != 36 {
		return ""
	}
	under := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c == '_' {
				under = true
			} else if c != '-' {
				return ""
			}
		default:
			if !isHex(c) {
				return ""
			}
		}
	}
	if under {
		return strings.ReplaceAll(s, "_", "-")
	}
	return s
}

func isHexID(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' }

// SplitContainerID splits a status.containerStatuses[].containerID such as
// "containerd://<id>" into the runtime and the id ParsePath returns.
func SplitContainerID(s string) (runtime, id string) {
	if r, id, ok := strings.Cut(s, "://"); ok {
		return r, id
	}
	return "", s
}
