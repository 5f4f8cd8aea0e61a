package node

import (
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/riposte-dev/riposte/test/cluster"
)

// ErrMissing is wrapped by every error about a part of the node that is not
// installed or not built; the message names the part and how to get it.
var ErrMissing = errors.New("test node part missing")

// CNIBinDir is where Debian's containernetworking-plugins puts the plugins.
const CNIBinDir = "/usr/lib/cni"

// parts are the paths of the programs a node runs.
type parts struct {
	containerd, ctr, runc, kubelet, busybox, ip string
}

// findParts checks every program the node needs and names each missing one
// with the Debian package or make target that provides it.
func findParts(binDir string) (parts, error) {
	var p parts
	var missing []string
	look := func(dst *string, name, pkg string) {
		path, err := exec.LookPath(name)
		if err != nil {
			for _, dir := range []string{"/usr/bin", "/usr/sbin", "/bin", "/sbin"} {
				if _, serr := os.Stat(filepath.Join(dir, name)); serr == nil {
					path, err = filepath.Join(dir, name), nil
					break
				}
			}
		}
		if err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s: apt-get install %s)", name, pkg, pkg))
			return
		}
		*dst = path
	}
	look(&p.containerd, "containerd", "containerd")
	look(&p.ctr, "ctr", "containerd")
	var shim string
	look(&shim, "containerd-shim-runc-v2", "containerd")
	look(&p.runc, "runc", "runc")
	look(&p.ip, "ip", "iproute2")
	for _, plugin := range []string{"bridge", "host-local", "loopback"} {
		if _, err := os.Stat(filepath.Join(CNIBinDir, plugin)); err != nil {
			missing = append(missing, fmt.Sprintf("CNI plugin %s/%s (Debian package containernetworking-plugins: apt-get install containernetworking-plugins)", CNIBinDir, plugin))
		}
	}
	p.busybox = "/bin/busybox"
	if static, err := isStatic(p.busybox); err != nil || !static {
		missing = append(missing, fmt.Sprintf("a static %s (Debian package busybox-static: apt-get install busybox-static)", p.busybox))
	}
	p.kubelet = filepath.Join(binDir, "kubelet")
	if info, err := os.Stat(p.kubelet); err != nil || info.Mode()&0o111 == 0 {
		missing = append(missing, fmt.Sprintf("kubelet in %s (built by `make testenv`)", binDir))
	}
	if len(missing) > 0 {
		return p, fmt.Errorf("%w: %s (.ci/run installs the Debian packages)", ErrMissing, strings.Join(missing, "; "))
	}
	return p, nil
}

// isStatic reports whether the ELF file at path has no program interpreter,
// i.e. runs in an image without a libc.
func isStatic(path string) (bool, error) {
	f, err := elf.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	for _, prog := range f.Progs {
		if prog.Type == elf.PT_INTERP {
			return false, nil
		}
	}
	return true, nil
}

// binDir is the folder with the kubelet and the control plane.
func binDir(override string) (string, error) {
	if override != "" {
		return override, nil
	}
	dir, err := cluster.BinDir()
	if err != nil {
		return "", fmt.Errorf("%w: %w", ErrMissing, err)
	}
	return dir, nil
}
