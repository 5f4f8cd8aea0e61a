package enrich

import (
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/riposte-dev/riposte/engine"
	"github.com/riposte-dev/riposte/host"
)

// MirrorAnnotation marks the API server's mirror of a static pod: the
// kubelet runs the pod from a file on the node and only reports it.
const MirrorAnnotation = "kubernetes.io/config.mirror"

// droppedAnnotations are large and say nothing about identity; keeping them
// would multiply the memory cost per pod.
var droppedAnnotations = []string{
	"kubectl.kubernetes.io/last-applied-configuration",
}

// PodFromKube converts a pod to the store's records: the pod and the
// containers its status lists (init, regular and ephemeral; the previous
// instance of a restarted container as an exited one). Workload is left
// empty: the caller resolves it with TopOwner.
func PodFromKube(kp *corev1.Pod) (*Pod, []*Container) {
	p := &Pod{Pod: engine.Pod{
		UID:            string(kp.UID),
		Name:           kp.Name,
		Namespace:      kp.Namespace,
		Labels:         kp.Labels,
		Annotations:    annotations(kp.Annotations),
		ServiceAccount: kp.Spec.ServiceAccountName,
		HostNetwork:    kp.Spec.HostNetwork,
		HostPID:        kp.Spec.HostPID,
		HostIPC:        kp.Spec.HostIPC,
		IP:             kp.Status.PodIP,
		Node:           kp.Spec.NodeName,
	}}
	_, p.Static = kp.Annotations[MirrorAnnotation]
	p.Ownerless = len(kp.OwnerReferences) == 0
	for _, o := range kp.OwnerReferences {
		p.OwnerReferences = append(p.OwnerReferences, engine.OwnerReference{
			APIVersion: o.APIVersion, Kind: o.Kind, Name: o.Name, UID: string(o.UID),
			Controller: o.Controller != nil && *o.Controller,
		})
	}
	for _, v := range kp.Spec.Volumes {
		if v.HostPath != nil {
			p.HostPath = true
			if len(p.HostPaths) < engine.MaxListItems {
				p.HostPaths = append(p.HostPaths, engine.CleanHostPath(v.HostPath.Path))
			}
		}
	}
	privileged := map[string]bool{}
	caps := map[string]bool{}
	judge := func(name, image string, sc *corev1.SecurityContext) {
		if len(p.Images) < engine.MaxListItems {
			p.Images = append(p.Images, image)
		}
		if sc == nil {
			return
		}
		if sc.Privileged != nil && *sc.Privileged {
			privileged[name] = true
			p.Privileged = true
		}
		if sc.AllowPrivilegeEscalation != nil && *sc.AllowPrivilegeEscalation {
			p.AllowPrivilegeEscalation = true
		}
		if sc.Capabilities != nil {
			for _, c := range sc.Capabilities.Add {
				if len(caps) < engine.MaxListItems {
					caps[engine.CapabilityName(string(c))] = true
				}
			}
		}
	}
	for _, cs := range [][]corev1.Container{kp.Spec.InitContainers, kp.Spec.Containers} {
		for _, c := range cs {
			judge(c.Name, c.Image, c.SecurityContext)
		}
	}
	for _, c := range kp.Spec.EphemeralContainers {
		judge(c.Name, c.Image, c.SecurityContext)
	}
	for c := range caps {
		p.Capabilities = append(p.Capabilities, c)
	}
	sort.Strings(p.Capabilities)
	// A host-network pod shares the node's IP and a finished pod has given
	// its IP back: neither may claim the address.
	if !kp.Spec.HostNetwork && kp.Status.Phase != corev1.PodSucceeded && kp.Status.Phase != corev1.PodFailed {
		for _, ip := range kp.Status.PodIPs {
			p.IPs = append(p.IPs, ip.IP)
		}
		if len(p.IPs) == 0 && kp.Status.PodIP != "" {
			p.IPs = []string{kp.Status.PodIP}
		}
	}

	var out []*Container
	for _, sts := range [][]corev1.ContainerStatus{kp.Status.InitContainerStatuses, kp.Status.ContainerStatuses, kp.Status.EphemeralContainerStatuses} {
		for i := range sts {
			st := &sts[i]
			if c := containerFromStatus(st.Name, st.ContainerID, st.Image, st.ImageID, &st.State, privileged[st.Name]); c != nil {
				out = append(out, c)
			}
			if t := st.LastTerminationState.Terminated; t != nil && t.ContainerID != "" && t.ContainerID != st.ContainerID {
				if c := containerFromStatus(st.Name, t.ContainerID, st.Image, "", &st.LastTerminationState, privileged[st.Name]); c != nil {
					out = append(out, c)
				}
			}
		}
	}
	return p, out
}

func containerFromStatus(name, containerID, image, imageID string, state *corev1.ContainerState, privileged bool) *Container {
	runtime, id := host.SplitContainerID(containerID)
	if id == "" {
		return nil // not started yet: nothing can run in it
	}
	c := &Container{
		ID:          id,
		Runtime:     runtime,
		Name:        name,
		Image:       image,
		ImageDigest: Digest(imageID),
		Privileged:  privileged,
	}
	switch {
	case state.Running != nil:
		c.StartedAt = state.Running.StartedAt.Time
	case state.Terminated != nil:
		c.StartedAt = state.Terminated.StartedAt.Time
		c.ExitedAt = state.Terminated.FinishedAt.Time
	}
	return c
}

// Digest extracts "sha256:…" from an imageID such as
// "docker.io/library/nginx@sha256:…" or "docker-pullable://nginx@sha256:…",
// and returns "" when the image id carries no digest.
func Digest(imageID string) string {
	if i := strings.LastIndexByte(imageID, '@'); i >= 0 {
		return imageID[i+1:]
	}
	if i := strings.Index(imageID, "sha256:"); i >= 0 {
		return imageID[i:]
	}
	return ""
}

func annotations(a map[string]string) map[string]string {
	drop := false
	for _, k := range droppedAnnotations {
		if _, ok := a[k]; ok {
			drop = true
		}
	}
	if !drop {
		return a
	}
	out := make(map[string]string, len(a))
	for k, v := range a {
		out[k] = v
	}
	for _, k := range droppedAnnotations {
		delete(out, k)
	}
	return out
}
