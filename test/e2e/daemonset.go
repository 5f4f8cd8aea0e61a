//go:build e2enode

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

// daemonSetView is the agent container of config/agent/daemonset.yaml as
// this host can reproduce it for a process: its volume mounts, read-only
// where the manifest says, on a read-only root file system
// (readOnlyRootFilesystem), in a private mount namespace. Running the agent
// binary inside it shows what the shipped manifest lets the agent do (write
// cgroup.kill, pin isolations, store evidence, read containers' files), which
// the same binary running on the host would hide.
type daemonSetView struct {
	container corev1.Container
	volumes   map[string]corev1.Volume
	// State is the test's folder standing in for the host's
	// /var/lib/riposte: each volume below it (evidence, the Incident spool)
	// is the folder of the same name in State.
	State string
}

// stateDir is where the manifest keeps the agent's node state.
const stateDir = "/var/lib/riposte/"

func loadDaemonSet(root, state string) (*daemonSetView, error) {
	b, err := os.ReadFile(filepath.Join(root, "config/agent/daemonset.yaml"))
	if err != nil {
		return nil, err
	}
	var ds appsv1.DaemonSet
	if err := yaml.UnmarshalStrict(b, &ds); err != nil {
		return nil, fmt.Errorf("config/agent/daemonset.yaml: %w", err)
	}
	spec := ds.Spec.Template.Spec
	if len(spec.Containers) != 1 || !spec.HostPID {
		return nil, fmt.Errorf("config/agent/daemonset.yaml: want one container with hostPID")
	}
	v := &daemonSetView{container: spec.Containers[0], volumes: map[string]corev1.Volume{}, State: state}
	for _, vol := range spec.Volumes {
		v.volumes[vol.Name] = vol
		if hp := vol.HostPath; hp != nil && strings.HasPrefix(hp.Path, stateDir) {
			if err := os.MkdirAll(filepath.Join(state, strings.TrimPrefix(hp.Path, stateDir)), 0o700); err != nil {
				return nil, err
			}
		}
	}
	return v, nil
}

// script is the shell run by `unshare --mount --propagation private` before
// it execs the agent: each volume's host path (those below
// /var/lib/riposte replaced by v.State's; bpffs a private instance, so the
// test's pins go with it) bound at its mount path, then the root made
// read-only.
func (v *daemonSetView) script(exec []string) (string, error) {
	var b strings.Builder
	b.WriteString("set -eu\n")
	var tmpfs []string // folders this script covered with a tmpfs
	for _, m := range v.container.VolumeMounts {
		vol, ok := v.volumes[m.Name]
		if !ok || vol.HostPath == nil {
			return "", fmt.Errorf("volume %q is not a hostPath", m.Name)
		}
		src := vol.HostPath.Path
		switch {
		case strings.HasPrefix(src, stateDir):
			src = filepath.Join(v.State, strings.TrimPrefix(src, stateDir))
		case m.MountPath == "/sys/fs/bpf":
			fmt.Fprintf(&b, "mount -t bpf bpf %s\n", shq(m.MountPath))
			continue
		}
		// A mount path the host lacks (the node state folders) gets a tmpfs on
		// its nearest existing parent, as the container image would have it.
		target := m.MountPath
		if under(target, tmpfs) {
			// Its parent is a tmpfs of this script already.
			fmt.Fprintf(&b, "mkdir -p %s\n", shq(target))
		} else if _, err := os.Stat(target); err != nil {
			parent := filepath.Dir(target)
			for ; parent != "/"; parent = filepath.Dir(parent) {
				if _, err := os.Stat(parent); err == nil {
					break
				}
			}
			fmt.Fprintf(&b, "mount -t tmpfs tmpfs %s\nmkdir -p %s\n", shq(parent), shq(target))
			tmpfs = append(tmpfs, parent)
		}
		// Volumes are recursive binds, as the container runtime makes them
		// (the cgroup mount holds the v2 hierarchy as a submount on a hybrid host).
		fmt.Fprintf(&b, "mount --rbind %s %s\n", shq(src), shq(target))
		if m.ReadOnly {
			fmt.Fprintf(&b, "mount -o remount,bind,ro %s\n", shq(target))
		}
	}
	if sc := v.container.SecurityContext; sc != nil && sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
		b.WriteString("mount -o remount,bind,ro /\n")
	}
	b.WriteString("exec")
	for _, a := range exec {
		b.WriteString(" " + shq(a))
	}
	b.WriteString("\n")
	return b.String(), nil
}

// args are the agent's arguments as the manifest gives them, with the
// downward-API variables it sets resolved.
func (v *daemonSetView) args(env map[string]string) []string {
	out := slices.Clone(v.container.Args)
	for i, a := range out {
		for k, val := range env {
			out[i] = strings.ReplaceAll(out[i], "$("+k+")", val)
		}
		_ = a
	}
	return out
}

// under reports whether path lies below one of dirs.
func under(path string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(path, strings.TrimSuffix(d, "/")+"/") {
			return true
		}
	}
	return false
}

func shq(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
