package host

import (
	"strings"
	"testing"
)

const (
	testID  = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testUID = "8d3f2a1c-1b2c-4d5e-8f90-123456789abc"
)

var uidUnderscored = strings.ReplaceAll(testUID, "-", "_")

// A container that can create cgroups below its own (privileged, or with
// cgroup delegation) makes one shaped like a neighbour's pod and container
// and moves into it.
const (
	victimUID = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee"
	victimID  = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

var (
	nestedFakeSystemd  = "/kubepods-besteffort-pod" + strings.ReplaceAll(victimUID, "-", "_") + ".slice/cri-containerd-" + victimID + ".scope"
	nestedFakeCgroupfs = "/kubepods/besteffort/pod" + victimUID + "/" + victimID
)

func TestParsePath(t *testing.T) {
	tests := []struct {
		name, path string
		want       Ref
		ok         bool
	}{
		{"v1/v2 cgroupfs containerd besteffort", "/kubepods/besteffort/pod" + testUID + "/" + testID,
			Ref{ContainerID: testID, PodUID: testUID}, true},
		{"cgroupfs guaranteed (no qos level)", "/kubepods/pod" + testUID + "/" + testID,
			Ref{ContainerID: testID, PodUID: testUID}, true},
		{"cgroupfs under a test root", "/riposte-test/kubepods/burstable/pod" + testUID + "/" + testID,
			Ref{ContainerID: testID, PodUID: testUID}, true},
		{"systemd containerd", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidUnderscored + ".slice/cri-containerd-" + testID + ".scope",
			Ref{ContainerID: testID, PodUID: testUID, Runtime: "containerd"}, true},
		{"systemd guaranteed", "/kubepods.slice/kubepods-pod" + uidUnderscored + ".slice/cri-containerd-" + testID + ".scope",
			Ref{ContainerID: testID, PodUID: testUID, Runtime: "containerd"}, true},
		{"systemd cri-o", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidUnderscored + ".slice/crio-" + testID + ".scope",
			Ref{ContainerID: testID, PodUID: testUID, Runtime: "cri-o"}, true},
		{"cgroupfs cri-o", "/kubepods/besteffort/pod" + testUID + "/crio-" + testID,
			Ref{ContainerID: testID, PodUID: testUID, Runtime: "cri-o"}, true},
		{"systemd docker", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidUnderscored + ".slice/docker-" + testID + ".scope",
			Ref{ContainerID: testID, PodUID: testUID, Runtime: "docker"}, true},
		{"v1 containerd systemd colon form", "/system.slice/containerd.service/kubepods-besteffort-pod" + uidUnderscored + ".slice:cri-containerd:" + testID,
			Ref{ContainerID: testID, PodUID: testUID, Runtime: "containerd"}, true},
		{"process in a sub-cgroup of the container", "/kubepods/besteffort/pod" + testUID + "/" + testID + "/init.scope",
			Ref{ContainerID: testID, PodUID: testUID}, true},
		{"docker outside kubernetes", "/docker/" + testID, Ref{ContainerID: testID}, true},
		{"docker-in-docker: kubelet's container wins", "/kubepods/pod" + testUID + "/" + testID + "/docker/" + strings.Repeat("f", 64),
			Ref{ContainerID: testID, PodUID: testUID}, true},
		{"systemd: a fake pod and container nested in a container stay the outer container's",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidUnderscored + ".slice/cri-containerd-" + testID + ".scope" + nestedFakeSystemd,
			Ref{ContainerID: testID, PodUID: testUID, Runtime: "containerd"}, true},
		{"cgroupfs: a fake pod and container nested in a container stay the outer container's",
			"/kubepods/besteffort/pod" + testUID + "/" + testID + nestedFakeCgroupfs,
			Ref{ContainerID: testID, PodUID: testUID}, true},
		{"a container outside kubernetes faking a pod below it stays itself",
			"/docker/" + testID + nestedFakeCgroupfs, Ref{ContainerID: testID}, true},
		{"a pod segment with no container directly below names none",
			"/kubepods/besteffort/pod" + testUID + "/sub/" + testID, Ref{}, false},
		{"conmon is not a container", "/kubepods.slice/kubepods-pod" + uidUnderscored + ".slice/crio-conmon-" + testID + ".scope", Ref{}, false},
		{"pod cgroup itself", "/kubepods/besteffort/pod" + testUID, Ref{}, false},
		{"host", "/system.slice/sshd.service", Ref{}, false},
		{"root", "/", Ref{}, false},
		{"empty", "", Ref{}, false},
		{"short id", "/kubepods/besteffort/pod" + testUID + "/" + testID[:63], Ref{}, false},
		{"upper-case hex is not an id", "/kubepods/besteffort/pod" + testUID + "/" + strings.ToUpper(testID), Ref{}, false},
		{"bad pod uid leaves pod empty", "/kubepods/besteffort/podnot-a-uid/" + testID, Ref{ContainerID: testID}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := ParsePath(tt.path)
			if ok != tt.ok || got != tt.want {
				t.Errorf("ParsePath(%q) = %+v, %v; want %+v, %v", tt.path, got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestSplitContainerIDMatchesParsePath(t *testing.T) {
	for _, s := range []string{"containerd://" + testID, "cri-o://" + testID, "docker://" + testID} {
		runtime, id := SplitContainerID(s)
		if id != testID || runtime == "" {
			t.Errorf("SplitContainerID(%q) = %q, %q", s, runtime, id)
		}
	}
}

// FuzzParsePath checks that the parser never panics and never reports an id
// or uid that is not literally in the path in a valid form. The seeds run
// in plain `go test`.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{
		"/kubepods/besteffort/pod" + testUID + "/" + testID,
		"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + uidUnderscored + ".slice/cri-containerd-" + testID + ".scope",
		"/kubepods.slice/kubepods-pod" + uidUnderscored + ".slice/crio-" + testID + ".scope",
		"/system.slice/containerd.service/kubepods-besteffort-pod" + uidUnderscored + ".slice:cri-containerd:" + testID,
		"/docker/" + testID, "/", "", "::", "/a:b:c", "pod/", ".slice", "kubepods-pod.slice",
		// A neighbour's pod and container faked inside a container's cgroup.
		"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + uidUnderscored + ".slice/cri-containerd-" + testID + ".scope" + nestedFakeSystemd,
		"/kubepods/besteffort/pod" + testUID + "/" + testID + nestedFakeCgroupfs,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, path string) {
		ref, ok := ParsePath(path)
		if !ok {
			if ref != (Ref{}) {
				t.Fatalf("not ok but ref %+v", ref)
			}
			return
		}
		if !isHexID(ref.ContainerID) || !strings.Contains(path, ref.ContainerID) {
			t.Fatalf("bad container id %q from %q", ref.ContainerID, path)
		}
		if ref.PodUID != "" {
			if canonicalUID(ref.PodUID) != ref.PodUID || !strings.Contains(strings.ReplaceAll(path, "_", "-"), ref.PodUID) {
				t.Fatalf("bad pod uid %q from %q", ref.PodUID, path)
			}
		}
		// What a container does below its own cgroup never changes whose it is.
		for _, fake := range []string{nestedFakeSystemd, nestedFakeCgroupfs} {
			if nested, ok := ParsePath(path + fake); !ok || nested != ref {
				t.Fatalf("ParsePath(%q + fake) = %+v, %v; want %+v", path, nested, ok, ref)
			}
		}
		switch ref.Runtime {
		case "", "containerd", "cri-o", "docker":
		default:
			t.Fatalf("bad runtime %q", ref.Runtime)
		}
	})
}
